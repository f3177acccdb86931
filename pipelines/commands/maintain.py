"""``lockgate maintain [--source S | --table T] [--no-orphans]``: the scheduled maintenance,
now: for each source's table and quarantine table expire old snapshots, record the maintenance
state in the table's properties, retire old metadata versions, and delete files no snapshot
references once older than ``maintenance.orphan_older_than`` (any catalog: through the
catalog's FileIO when it is not the object-store catalog). One line per table on stdout.
"""

from __future__ import annotations

import argparse

from lockgate.pipelines.commands.common import add_source_argument, print_json
from lockgate.pipelines.commands.common import runtime as open_runtime
from lockgate.pipelines.commands.compact import selected


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_argument(parser)
    parser.add_argument("--table", help="namespace.table of a source (instead of --source)")
    parser.add_argument("--no-orphans", action="store_true", help="skip the orphan-file cleanup")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def run(args: argparse.Namespace) -> int:
    from lockgate.pipelines.upkeep import maintain_source

    rt = open_runtime(args)
    out = []
    for source in selected(args, rt.selected(args.source)):
        for m in maintain_source(rt, source, orphans=not args.no_orphans):
            if args.json:
                r = m.report
                out.append(
                    {
                        "table": m.table,
                        "exists": r is not None,
                        "expired_snapshots": r.expired_snapshots if r else 0,
                        "retired_versions": r.retired_versions if r else 0,
                        "orphans_deleted": len(r.orphans.deleted) if r and r.orphans else 0,
                    }
                )
            else:
                print(m.line())
    if args.json:
        print_json(out)
    return 0
