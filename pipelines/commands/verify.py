"""``lockgate verify [--source S] [--json]``: exit 0 when the exactly-once invariants hold,
1 with a report when they do not."""

from __future__ import annotations

import argparse

from lockgate.pipelines.commands.common import add_source_argument, print_json, runtime
from lockgate.pipelines.verify import verify_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    reports = [verify_source(rt, s) for s in rt.selected(args.source)]
    if args.json:
        print_json([r.to_json() for r in reports])
    else:
        for r in reports:
            state = "OK" if r.ok else "FAILED"
            print(
                f"{r.source} -> {r.table}: {state}: {r.rows} rows, {r.quarantined} quarantined, "
                f"{r.committed_batches} batches committed, {r.checked_batches} accounted"
            )
            for b, key, outcome in r.not_read:
                print(f"  not read: batch {b} object {key!r}: {outcome.replace('_', ' ')}")
            for v in r.violations:
                print(f"  - {v}")
    return 0 if all(r.ok for r in reports) else 1
