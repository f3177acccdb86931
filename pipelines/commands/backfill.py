"""``lockgate backfill --source S --from DAY --to DAY``: rebuild those days from every claimed
object (one overwrite commit; idempotent; never duplicates incremental batches).

Exits 2 (``DayOutOfRange``) when a day is before the source's ``partition.start`` or in the
future, 6 (``RebuildRefused``) when a claimed object is gone or re-written, 7
(``RebuildConflict``, transient) when incremental batches won every re-plan."""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta

from lockgate.pipelines.commands.common import CommandError, print_json, runtime
from lockgate.pipelines.rebuild import rebuild
from lockgate.resources.days import check_days_in_range


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="source name from lockgate.yaml")
    parser.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", required=True, help="last day, YYYY-MM-DD (inclusive)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"not a day (YYYY-MM-DD): {text!r}") from None


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    source = rt.source(args.source)
    start, end = _day(args.start), _day(args.end)
    if end < start:
        raise CommandError(f"--to {end} is before --from {start}")
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    # days before partition.start or in the future are no partition: refuse (exit 2)
    check_days_in_range(source.name, source.partition_start, days)
    # RebuildRefused and RebuildConflict reach the CLI as one line and their exit codes
    out = rebuild(rt, source, days, progress=lambda m: print(m, file=sys.stderr))
    if args.json:
        print_json(out.metadata())
    else:
        print(
            f"{source.name}: rebuilt {len(days)} days from {len(out.batches)} batches "
            f"({out.objects} objects): {out.rows} rows, {out.quarantined} quarantined"
            + (f", table v{out.table_version}" if out.table_version else " (nothing claimed)")
        )
    return 0
