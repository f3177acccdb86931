"""``lockgate status [--source S] [--json]``: per source, batches claimed / committed /
pending, the oldest pending batch, stuck batches (from the Dagster instance when
$DAGSTER_HOME is set), the objects of the latest ``NOT_READ_WINDOW`` committed batches whose
claimed version was changed/gone before read, the table's version, and the objects cleaned /
pending clean (``clean_source``). A source that cannot be read (e.g. its declaration changed
and awaits ``lockgate ledger reset``) gets a row with ``error`` and ``exit_code`` instead; the
others are shown as usual, and the command exits with the highest such code (0 when every
source could be read)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from lockgate.pipelines.commands.common import add_source_argument, print_json, runtime
from lockgate.resources.cleaning import clean_counts
from lockgate.resources.config import SourceConfig
from lockgate.resources.errors import LockgateError
from lockgate.resources.ledger import CHANGED_BEFORE_READ, Ledger
from lockgate.resources.runtime import Runtime

#: How many of the latest batches ``status`` reads commit records of (bounded, not history).
NOT_READ_WINDOW = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def _stuck(source: str, pending: list[int]) -> dict[int, str] | None:
    home = os.environ.get("DAGSTER_HOME")
    if not home or not os.path.isdir(home) or not pending:
        return None  # no Dagster instance to ask: stuck batches are unknown
    import dagster as dg

    from lockgate.sensors.runs import stuck_batches

    with dg.DagsterInstance.get() as instance:
        return {b: r.run_id for b, r in stuck_batches(instance, source, pending).items()}


def _not_read(ledger: Ledger, claims: int, pending: list[int]) -> list[dict[str, Any]]:
    """Objects recorded as changed/gone before read by the latest ``NOT_READ_WINDOW``
    committed batches (by their latest accounting: a rebuild that read a restored object
    supersedes the commit record)."""
    ids = [b for b in range(max(0, claims - NOT_READ_WINDOW), claims) if b not in pending]
    ledger.rebuilt_accounts()  # a later rebuild's accounting supersedes: read once, up front
    with ThreadPoolExecutor(max_workers=8) as pool:  # I/O bound GETs
        records = list(pool.map(ledger.account, ids))
    out: list[dict[str, Any]] = []
    for b, rec in zip(ids, records, strict=True):
        if rec is not None and rec.unread:
            out += [{"batch_id": b, "key": k, "outcome": o} for k, o in sorted(rec.unread.items())]
    return out


def source_status(rt: Runtime, source: SourceConfig) -> dict[str, Any]:
    """Counts and pending batches from one read of the ledger, so they agree with each other
    (the table's version is read after it and may be newer)."""
    ledger = rt.ledger(source)
    summary = ledger.summary()
    pending = [ledger.get_claim(b) for b in summary.pending]
    oldest = min((c.created_at for c in pending), default=None)
    return {
        "source": source.name,
        "table": source.table,
        "claimed_batches": summary.claims,
        "committed_batches": summary.committed,
        "pending_batches": [c.batch_id for c in pending],
        "oldest_pending_age_s": (
            round((datetime.now(UTC) - oldest).total_seconds(), 1) if oldest else None
        ),
        "high_water_key": summary.high_water_key,
        "table_version": rt.tables.current_version(source.table),
        "stuck_batches": _stuck(source.name, [c.batch_id for c in pending]),
        "not_read": _not_read(ledger, summary.claims, list(summary.pending)),
        "clean": dataclasses.asdict(clean_counts(ledger, source.clean_source)),
    }


def status_or_error(rt: Runtime, source: SourceConfig) -> dict[str, Any]:
    """``source_status``, or, when the source cannot be read (its declaration changed, its
    ledger or table is unreadable, ...), a row with ``error`` (the message) and
    ``exit_code``: one broken source never hides the others."""
    try:
        return source_status(rt, source)
    except LockgateError as e:
        return {
            "source": source.name,
            "table": source.table,
            "error": f"{type(e).__name__}: {e}",
            "exit_code": int(e.exit_code),
        }


def run(args: argparse.Namespace) -> int:
    """Exit 0, or the highest exit code of the sources that could not be read."""
    rt = runtime(args)
    rows = [status_or_error(rt, s) for s in rt.selected(args.source)]
    worst = max((int(r.get("exit_code", 0)) for r in rows), default=0)
    if args.json:
        print_json(rows)
        return worst
    for r in rows:
        if "error" in r:
            print(f"{r['source']} -> {r['table']}: ERROR {r['error']}")
            continue
        pending = r["pending_batches"]
        print(
            f"{r['source']} -> {r['table']} (v{r['table_version']}): "
            f"{r['committed_batches']}/{r['claimed_batches']} batches committed, "
            f"{len(pending)} pending"
            + (f" (oldest {r['oldest_pending_age_s']}s)" if pending else "")
        )
        if r["clean"]["mode"] != "off" or r["clean"]["cleaned"]:
            c = r["clean"]
            print(
                f"  clean_source {c['mode']}: {c['cleaned']} objects cleaned, "
                f"{c['pending']} pending clean"
                + (f", {c['left']} left in the landing" if c["left"] else "")
            )
        for n in r["not_read"]:
            print(
                f"  not read: batch {n['batch_id']} object {n['key']!r}: "
                f"{n['outcome'].replace('_', ' ')}"
                + (
                    " (its current version is claimed as a new object)"
                    if n["outcome"] == CHANGED_BEFORE_READ
                    else ""
                )
            )
        if r["stuck_batches"]:
            for b, run_id in r["stuck_batches"].items():
                print(
                    f"  STUCK batch {b}: run {run_id} failed with no retry left -> "
                    f"lockgate retry --source {r['source']} --batch {b}"
                )
    return worst
