"""``lockgate compact [--source S | --table T] [--day D] [--target-file-size 128MiB]
[--min-files 8]``: rewrite the small data files of each day into files of the target size,
one ``replace`` commit per day (rows, markers, lineage and quarantine unchanged).

Defaults come from each source's ``compaction`` settings. Progress goes to stderr, one line
per compacted (or skipped) day to stdout. Exits 7 (``CompactionStale`` / ``CommitConflict``,
transient) when the day kept changing under every re-plan.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from lockgate.pipelines.commands.common import CommandError, add_source_argument, print_json
from lockgate.pipelines.commands.common import runtime as open_runtime
from lockgate.resources.config import SourceConfig, parse_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_argument(parser)
    parser.add_argument("--table", help="namespace.table of a source (instead of --source)")
    parser.add_argument("--day", action="append", help="YYYY-MM-DD (repeatable; default: all)")
    parser.add_argument(
        "--target-file-size", help="size of a compacted file, e.g. 128MiB (default: config)"
    )
    parser.add_argument(
        "--min-files", type=int, help="compact a day with at least this many small files"
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def selected(args: argparse.Namespace, sources: list[SourceConfig]) -> list[SourceConfig]:
    """The sources named by ``--table`` (one) or all of ``sources``."""
    if not args.table:
        return sources
    found = [s for s in sources if s.table.casefold() == args.table.casefold()]
    if not found:
        known = ", ".join(s.table for s in sources) or "none"
        raise CommandError(f"--table {args.table}: not the table of a source (known: {known})")
    return found


def run(args: argparse.Namespace) -> int:
    from lockgate.pipelines.upkeep import compact_source

    try:
        days = [date.fromisoformat(d) for d in args.day] if args.day else None
        target = parse_size(args.target_file_size) if args.target_file_size else None
    except ValueError as e:
        raise CommandError(str(e)) from None
    if args.min_files is not None and args.min_files < 2:
        raise CommandError(f"--min-files must be at least 2, got {args.min_files}")
    rt = open_runtime(args)
    results = []
    for source in selected(args, rt.selected(args.source)):
        print(f"{source.name}: compacting {source.table}", file=sys.stderr)
        done = compact_source(
            rt,
            source,
            days=days,
            target_file_size=target,
            min_files=args.min_files,
            progress=lambda m: print(m, file=sys.stderr),
        )
        if not done and not args.json:
            print(f"{source.table}: nothing to compact")
        for r in done:
            results.append({"source": source.name, **r.__dict__, "files_after": r.files_after})
            if not args.json:
                print(r.line())
    if args.json:
        print_json(results)
    return 0
