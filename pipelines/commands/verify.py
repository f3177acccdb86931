"""``lockgate verify [--source S] [--json]``: exit 0 when the exactly-once invariants hold,
1 with a report when they do not.

``lockgate verify --deep [--source S] [--from DAY --to DAY] [--sample N] [--json]`` re-reads
the committed objects from the landing instead and compares their record counts (counted
without the staging code) with the tables, object by object (``lockgate.pipelines.
verify_deep``); progress goes to stderr. Same exit codes."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from lockgate.pipelines.commands.common import (
    CommandError,
    add_source_argument,
    print_json,
    runtime,
)
from lockgate.pipelines.verify import verify_source
from lockgate.pipelines.verify_deep import DeepReport, Progress, verify_deep

PROGRESS_EVERY_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--deep",
        action="store_true",
        help="re-read the committed objects from the landing and recount their records",
    )
    parser.add_argument("--from", dest="start", help="with --deep: first day, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", help="with --deep: last day, YYYY-MM-DD (inclusive)")
    parser.add_argument(
        "--sample", type=int, help="with --deep: re-read N objects chosen at random"
    )


def _day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{flag}: not a day (YYYY-MM-DD): {text!r}") from None


def _days(args: argparse.Namespace) -> tuple[date, date] | None:
    if args.start is None and args.end is None:
        return None
    if args.start is None or args.end is None:
        raise CommandError("--from and --to go together")
    start, end = _day(args.start, "--from"), _day(args.end, "--to")
    if end < start:
        raise CommandError(f"--to {end} is before --from {start}")
    return start, end


def _progress(source: str) -> Progress:
    """A progress line on stderr, rewritten at most every ``PROGRESS_EVERY_S``."""
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        end = "\n" if done == total else ""
        print(f"\rverify --deep {source}: {done}/{total} objects", end=end, file=sys.stderr)
        sys.stderr.flush()

    return show


def _run_deep(args: argparse.Namespace) -> int:
    if args.sample is not None and args.sample < 1:
        raise CommandError(f"--sample must be at least 1, got {args.sample}")
    rt = runtime(args)
    days = _days(args)
    reports: list[DeepReport] = [
        verify_deep(rt, s, days=days, sample=args.sample, progress=_progress(s.name))
        for s in rt.selected(args.source)
    ]
    return _report(
        reports,
        args.json,
        lambda r: [
            f"{r.source} -> {r.table}: deep {_state(r)}: {r.checked} of {r.objects} objects "
            f"re-read, {r.records} records; {r.not_recounted} quarantined whole, "
            f"{len(r.unavailable)} unavailable"
        ],
    )


def run(args: argparse.Namespace) -> int:
    if args.deep:
        return _run_deep(args)
    if args.start is not None or args.end is not None or args.sample is not None:
        raise CommandError("--from, --to and --sample go with --deep")
    rt = runtime(args)
    reports = [verify_source(rt, s) for s in rt.selected(args.source)]
    return _report(
        reports,
        args.json,
        lambda r: [
            f"{r.source} -> {r.table}: {_state(r)}: {r.rows} rows, {r.quarantined} quarantined, "
            f"{r.committed_batches} batches committed, {r.checked_batches} accounted",
            *(
                f"  not read: batch {b} object {key!r}: {outcome.replace('_', ' ')}"
                for b, key, outcome in r.not_read
            ),
        ],
    )


def _state(report: Any) -> str:
    return "OK" if report.ok else "FAILED"


def _report(reports: Sequence[Any], as_json: bool, lines: Callable[[Any], list[str]]) -> int:
    """Print ``reports`` (JSON, or each one's ``lines`` and its violations); exit 0 only if
    every report is ok."""
    if as_json:
        print_json([r.to_json() for r in reports])
    else:
        for r in reports:
            for line in lines(r):
                print(line)
            for v in r.violations:
                print(f"  - {v}")
    return 0 if all(r.ok for r in reports) else 1
