"""``lockgate quarantine show --source S [--day D] [--batch N] [--limit N] [--json]``: the
entries of a source's quarantine table (``<table>__quarantine``), i.e. the records that could
not be parsed or did not fit the schema, each with its batch, object, record index and reason.

Contract: read-only. At most ``--limit`` entries are printed (ordered by batch, key, record
index), with ``total`` the number of entries that match; ``raw`` is cut to ``--width``
characters (``raw_truncated`` says so). A source whose quarantine table does not exist yet
(no bad record so far) shows no entries and exits 0; a day that is not ``YYYY-MM-DD`` exits 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from pyiceberg.exceptions import NoSuchTableError

from lockgate.pipelines.commands.common import CommandError, print_json, runtime
from lockgate.resources.config import SourceConfig
from lockgate.resources.days import parse_day
from lockgate.resources.runtime import Runtime, quarantine_table

DEFAULT_LIMIT = 20
DEFAULT_WIDTH = 200
_FIELDS = ("_batch_id", "_day", "_source_key", "_source_etag", "_source_row", "reason", "raw")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="print quarantine entries", description=__doc__)
    show.add_argument("--source", required=True, help="source name from lockgate.yaml")
    show.add_argument("--day", help="only entries of this day (YYYY-MM-DD)")
    show.add_argument("--batch", type=int, help="only entries of this batch id")
    show.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"most entries shown ({DEFAULT_LIMIT})"
    )
    show.add_argument(
        "--width",
        type=int,
        default=DEFAULT_WIDTH,
        help=f"characters of each raw record shown ({DEFAULT_WIDTH})",
    )
    show.add_argument("--json", action="store_true", help="print the entries as JSON")


def _filter(day: str | None, batch: int | None) -> str:
    parts = []
    if day is not None:
        parts.append(f"_day == '{day}'")
    if batch is not None:
        parts.append(f"_batch_id == {batch}")
    return " and ".join(parts) or "true"


def quarantine_entries(
    rt: Runtime,
    source: SourceConfig,
    day: str | None = None,
    batch: int | None = None,
    limit: int = DEFAULT_LIMIT,
    width: int = DEFAULT_WIDTH,
) -> dict[str, Any]:
    """The matching entries (at most ``limit``, ordered by batch, key, record) and their total."""
    ident = quarantine_table(source)
    out: dict[str, Any] = {
        "source": source.name,
        "table": ident,
        "day": day,
        "batch": batch,
        "total": 0,
        "entries": [],
    }
    try:
        table = rt.tables.load(ident)
    except NoSuchTableError:
        return out  # no bad record so far: the table appears with the first one
    flt = _filter(day, batch)
    out["total"] = table.scan(row_filter=flt, selected_fields=("_batch_id",)).to_arrow().num_rows
    arrow = table.scan(row_filter=flt, selected_fields=_FIELDS).to_arrow()
    arrow = arrow.sort_by(
        [("_batch_id", "ascending"), ("_source_key", "ascending"), ("_source_row", "ascending")]
    )
    for r in arrow.slice(0, max(0, limit)).to_pylist():
        raw = r["raw"] or ""
        out["entries"].append(
            {
                "batch_id": r["_batch_id"],
                "day": r["_day"].isoformat() if r["_day"] is not None else None,
                "key": r["_source_key"],
                "etag": r["_source_etag"],
                "row": r["_source_row"],
                "reason": r["reason"],
                "raw": raw[:width],
                "raw_truncated": len(raw) > width,
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    if args.day is not None:
        try:
            parse_day(args.day)
        except ValueError:
            raise CommandError(f"not a day (YYYY-MM-DD): {args.day!r}") from None
    if args.limit < 0 or args.width < 1:
        raise CommandError("--limit must be >= 0 and --width >= 1")
    rt = runtime(args)
    source = rt.source(args.source)
    out = quarantine_entries(rt, source, args.day, args.batch, args.limit, args.width)
    if args.json:
        print_json(out)
        return 0
    where = "".join(
        f" {k} {v}" for k, v in (("day", args.day), ("batch", args.batch)) if v is not None
    )
    print(
        f"{source.name}: {out['total']} quarantine entries{where} in {out['table']}"
        + (f", showing {len(out['entries'])}" if out["total"] > len(out["entries"]) else "")
    )
    for e in out["entries"]:
        row = "whole object" if e["row"] is None else f"record {e['row']}"
        raw = repr(e["raw"]) + ("..." if e["raw_truncated"] else "")
        print(f"  batch {e['batch_id']} {e['day']} {e['key']!r} {row}: {e['reason']}")
        print(f"    raw: {raw}")
    return 0
