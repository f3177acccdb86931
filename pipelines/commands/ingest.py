"""``lockgate ingest [--source S] [--full-listing]``: discover, claim and commit every pending
batch in this process until idle (the code path of the sensor and the asset)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from lockgate.pipelines.commands.common import add_source_argument, print_json, runtime
from lockgate.pipelines.ingest import ingest_source

if TYPE_CHECKING:
    from lockgate.pipelines.batch import BatchOutcome


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_argument(parser)
    parser.add_argument(
        "--full-listing",
        action="store_true",
        help="list the whole landing prefix (finds keys that arrived out of order; in "
        "notification mode, the objects whose events were lost)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    summary = []
    for source in rt.selected(args.source):

        def show(o: BatchOutcome, name: str = source.name) -> None:
            if args.json:
                return
            state = "already committed" if o.already_committed else f"v{o.table_version}"
            print(
                f"{name}: batch {o.batch_id} [{o.partition}] {o.objects} objects, {o.rows} rows, "
                f"{o.quarantined} quarantined, {o.duration_s:.2f}s ({state})",
                file=sys.stderr,
            )

        report = ingest_source(rt, source, full_listing=args.full_listing, on_batch=show)
        line = {
            "source": source.name,
            "batches": len([b for b in report.batches if not b.already_committed]),
            "rows": report.rows,
            "quarantined": report.quarantined,
            "not_claimed": report.out_of_range,
        }
        summary.append(line)
        if not args.json:
            extra = f", not claimed: {report.out_of_range}" if report.out_of_range else ""
            print(
                f"{source.name}: idle after {line['batches']} batches, {report.rows} rows, "
                f"{report.quarantined} quarantined{extra}"
            )
    if args.json:
        print_json(summary)
    return 0
