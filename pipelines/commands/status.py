"""``lockgate status [--source S] [--component NAME] [--json] [--no-landing]``: per source,
what the ledger, the table, the landing and the Dagster instance say -- so that "healthy" is
never claimed while something is blocked.

Contract (the ``--json`` schema is documented in docs/operations.md, *Is it healthy?*):

* From the ledger (one read, so counts and pending agree): batches claimed / committed /
  pending, the oldest pending claim's age, the last commit (batch, time, age, rows), and the
  objects of the latest ``NOT_READ_WINDOW`` committed batches whose claimed version was
  changed/gone before read.
* From the table: its version and rows per day (data files' record counts, no scan).
* From the landing (one full listing, claiming nothing; skipped with ``--no-landing``):
  unclaimed objects by reason -- ``before_start``, ``future``, ``invalid_day``, ``rewritten``,
  ``too_young``, ``hidden_name``, the unsafe names' reasons -- and ``claimable`` (the next tick
  claims them).
* From the Dagster instance (``$DAGSTER_HOME``): the sensor's last tick and its result, the
  source's batch runs queued / running / hung (``lockgate.sensors.runs.hang_reason``), and
  stuck batches. Without an instance, every such field is null and ``unknown_reason`` says why
  (stuck batches are still known, as none, when nothing is pending). Dagster names the
  source by its label (``Namespace.label``): ``<component>__<source>`` with ``--component``.
  The instance is not asked either when it has no sensor of that label but has the source's
  sensor of another component: ``unknown_reason`` names those components.
* From the ledger's clean log: objects cleaned / pending clean (``clean_source``).
* From the claims: objects found by each discovery path (``found``: event notifications or a
  listing, including notification mode's backstop), counted from a hint
  (``lockgate.resources.found``: O(claims since the last status)).
* One source's failure never hides the others: its entry carries ``error`` (one line) and
  ``exit_code``, and the command exits with the highest such code after printing every source.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pyiceberg.exceptions import NoSuchTableError

from lockgate.pipelines.commands.common import (
    add_component_argument,
    add_source_argument,
    namespace,
    print_json,
    runtime,
)
from lockgate.resources.cleaning import clean_counts
from lockgate.resources.config import SourceConfig
from lockgate.resources.errors import LockgateError
from lockgate.resources.found import found_counts
from lockgate.resources.ledger import CHANGED_BEFORE_READ, Ledger
from lockgate.resources.runtime import Runtime

if TYPE_CHECKING:
    import dagster as dg

#: How many of the latest batches ``status`` reads commit records of (bounded, not history).
NOT_READ_WINDOW = 100
#: Days of ``rows_per_day`` the text output shows (the JSON has every day).
TEXT_DAYS = 7


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_argument(parser)
    add_component_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument(
        "--no-landing",
        action="store_true",
        help="do not list the landing (unclaimed objects by reason are then not reported)",
    )


class DagsterView:
    """The Dagster instance of ``$DAGSTER_HOME``, or the reason there is none to ask."""

    def __init__(self, instance: dg.DagsterInstance | None, unknown_reason: str | None):
        self.instance = instance
        self.unknown_reason = unknown_reason

    @classmethod
    @contextmanager
    def open(cls) -> Iterator[DagsterView]:
        home = os.environ.get("DAGSTER_HOME")
        if not home:
            yield cls(None, "no DAGSTER_HOME: the Dagster instance (runs, ticks) is unknown")
            return
        if not os.path.isdir(home):
            yield cls(None, f"DAGSTER_HOME={home} is not a folder: runs and ticks are unknown")
            return
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            yield cls(instance, None)

    def for_label(self, label: str, source: str) -> DagsterView:
        """This view for the source labelled ``label``; a view without an instance, saying
        why, if the instance knows no sensor or run of ``label`` but knows ``source`` under
        another component's label (asking it would report that component's source idle)."""
        if self.instance is None:
            return self
        from dagster._core.scheduler.instigation import InstigatorType

        from lockgate.sensors.runs import SOURCE_TAG

        states = self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        labels = {s.instigator_name.removesuffix("_sensor") for s in states}
        for _, values in self.instance.get_run_tags(tag_keys=[SOURCE_TAG]):
            labels |= values
        if label in labels:
            return self
        others = sorted(
            "the unnamed one" if n == source else n.removesuffix(f"__{source}")
            for n in labels
            if n == source or n.endswith(f"__{source}")
        )
        if not others:
            return self
        return DagsterView(
            None,
            f"no sensor or run of {label} in this instance, but of {source} in another "
            f"Lockgate component ({', '.join(others)}): pass --component NAME for a named one",
        )

    def last_tick(self, source: str) -> dict[str, Any] | None:
        """The latest tick of ``<source>_sensor`` (``source``: the source's label): time,
        age, status and its result."""
        assert self.instance is not None
        from dagster._core.scheduler.instigation import InstigatorType

        name = f"{source}_sensor"
        states = self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        for state in states:
            if state.instigator_name != name:
                continue
            ticks = self.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            if not ticks:
                return None
            tick = ticks[0]
            if tick.error is not None:
                result = "error: " + " ".join(tick.error.message.split())[:300]
            elif tick.run_ids:
                result = f"requested {len(tick.run_ids)} runs"
            else:
                result = tick.skip_reason or ""
            return {
                "at": datetime.fromtimestamp(tick.timestamp, UTC).isoformat(),
                "age_s": round(time.time() - tick.timestamp, 1),
                "status": tick.status.value,
                "result": result,
            }
        return None


def _stuck(view: DagsterView, source: str, pending: list[int]) -> dict[int, str] | None:
    if not pending:
        return {}  # nothing pending: nothing can be stuck, with or without an instance
    if view.instance is None:
        return None
    from lockgate.sensors.runs import stuck_batches

    return {b: r.run_id for b, r in stuck_batches(view.instance, source, pending).items()}


def _dagster(view: DagsterView, source: str) -> dict[str, Any]:
    if view.instance is None:
        return {"unknown_reason": view.unknown_reason, "last_tick": None, "runs": None}
    from lockgate.sensors.runs import source_runs

    return {
        "unknown_reason": None,
        "last_tick": view.last_tick(source),
        "runs": source_runs(view.instance, source, time.time()),
    }


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


def _last_commit(ledger: Ledger, claims: int, pending: set[int]) -> dict[str, Any] | None:
    """The commit record of the highest committed batch id (batch ids order commits' claims;
    its ``committed_at`` is the writer's clock)."""
    for b in range(claims - 1, -1, -1):
        if b in pending:
            continue
        rec = ledger.commit_record(b)
        if rec is None:
            continue
        return {
            "batch_id": b,
            "committed_at": rec.committed_at.isoformat(),
            "age_s": round((datetime.now(UTC) - rec.committed_at).total_seconds(), 1),
            "rows": rec.rows,
            "quarantined": rec.quarantined,
        }
    return None


def _rows_per_day(rt: Runtime, source: SourceConfig) -> dict[str, int]:
    """Rows per ``_day`` of the current snapshot, from the data files' record counts."""
    try:
        table = rt.tables.load(source.table)
    except NoSuchTableError:
        return {}
    if table.current_snapshot() is None:
        return {}
    spec = table.spec()
    pos = next((i for i, f in enumerate(spec.fields) if f.name == "_day"), None)
    counts: dict[str, int] = {}
    for task in table.scan().plan_files():
        value = task.file.partition[pos] if pos is not None else None
        if isinstance(value, int):  # days since the epoch
            day = (date(1970, 1, 1) + timedelta(days=value)).isoformat()
        elif isinstance(value, date):
            day = value.isoformat()
        else:
            day = "unknown"
        counts[day] = counts.get(day, 0) + task.file.record_count
    return dict(sorted(counts.items()))


def _unclaimed(rt: Runtime, source: SourceConfig, ledger: Ledger) -> dict[str, int]:
    from lockgate.sensors.discovery import rule_for_source, survey

    found = survey(rt.landing(source), ledger, rule_for_source(source))
    counts = found.out_of_range_counts()
    if found.overwritten:
        counts["rewritten"] = len(found.overwritten)
    if found.too_young:
        counts["too_young"] = found.too_young
    if found.skipped_hidden:
        counts["hidden_name"] = found.skipped_hidden
    counts.update(found.skipped_unsafe)
    counts["claimable"] = found.deferred
    return counts


def source_status(
    rt: Runtime,
    source: SourceConfig,
    view: DagsterView | None = None,
    list_landing: bool = True,
    label: str | None = None,
) -> dict[str, Any]:
    """The status of one source (see the module docstring); raises what reading it raises.
    ``label``: the source's name in Dagster (``Namespace.label``; default: its name)."""
    label = label or source.name
    view = (view or DagsterView(None, "no Dagster instance given")).for_label(label, source.name)
    ledger = rt.ledger(source)
    summary = ledger.summary()
    pending = [ledger.get_claim(b) for b in summary.pending]
    pending_ids = [c.batch_id for c in pending]
    oldest = min((c.created_at for c in pending), default=None)
    stuck = _stuck(view, label, pending_ids)
    return {
        "source": source.name,
        "table": source.table,
        "error": None,
        "claimed_batches": summary.claims,
        "committed_batches": summary.committed,
        "pending_batches": pending_ids,
        "oldest_pending_age_s": (
            round((datetime.now(UTC) - oldest).total_seconds(), 1) if oldest else None
        ),
        "last_commit": _last_commit(ledger, summary.claims, set(summary.pending)),
        "high_water_key": summary.high_water_key,
        "table_version": rt.tables.current_version(source.table),
        "rows_per_day": _rows_per_day(rt, source),
        "unclaimed": _unclaimed(rt, source, ledger) if list_landing else None,
        "dagster": _dagster(view, label),
        "stuck_batches": stuck,
        "stuck_batches_unknown_reason": view.unknown_reason if stuck is None else None,
        "not_read": _not_read(ledger, summary.claims, list(summary.pending)),
        "clean": dataclasses.asdict(clean_counts(ledger, source.clean_source)),
        "found": _found(ledger),
    }


def _found(ledger: Ledger) -> dict[str, int]:
    counts = found_counts(ledger)
    return {"notifications": counts.notifications, "listing": counts.listing}


def _failed(source: SourceConfig, err: LockgateError) -> dict[str, Any]:
    return {
        "source": source.name,
        "table": source.table,
        "error": f"{type(err).__name__}: {err.one_line()}",
        "exit_code": int(err.exit_code),
    }


def _print(r: dict[str, Any], no_landing: bool, component: str | None = None) -> None:
    if r["error"] is not None:
        print(f"{r['source']} -> {r['table']}: ERROR {r['error']}")
        return
    pending = r["pending_batches"]
    print(
        f"{r['source']} -> {r['table']} (v{r['table_version']}): "
        f"{r['committed_batches']}/{r['claimed_batches']} batches committed, "
        f"{len(pending)} pending" + (f" (oldest {r['oldest_pending_age_s']}s)" if pending else "")
    )
    last = r["last_commit"]
    print(
        f"  last commit: batch {last['batch_id']} at {last['committed_at']} "
        f"({last['age_s']}s ago, {last['rows']} rows, {last['quarantined']} quarantined)"
        if last
        else "  last commit: none"
    )
    d = r["dagster"]
    if d["unknown_reason"]:
        print(f"  dagster: unknown ({d['unknown_reason']})")
    else:
        tick = d["last_tick"]
        print(
            f"  last tick: {tick['status']} {tick['age_s']}s ago: {tick['result']}"
            if tick
            else "  last tick: none (the sensor has not ticked in this instance)"
        )
        runs = d["runs"]
        print(
            f"  runs: {runs['queued']} queued, {runs['running']} running, {len(runs['hung'])} hung"
        )
        for h in runs["hung"]:
            print(f"  HUNG run {h['run_id']} (batch {h['batch_id']}): {h['reason']}")
    if r["stuck_batches"] is None:
        print(f"  stuck batches: unknown ({r['stuck_batches_unknown_reason']})")
    elif not r["stuck_batches"]:
        print("  stuck batches: none")
    else:
        for b, run_id in r["stuck_batches"].items():
            print(
                f"  STUCK batch {b}: run {run_id} failed with no retry left -> "
                f"lockgate retry --source {r['source']} --batch {b}"
                + (f" --component {component}" if component else "")
            )
    if r["unclaimed"] is None:
        print("  unclaimed: not listed (--no-landing)")
    else:
        parts = [f"{n} {k}" for k, n in r["unclaimed"].items() if n and k != "claimable"]
        print(
            f"  unclaimed: {r['unclaimed']['claimable']} claimable"
            + (f"; never claimed as they are: {', '.join(parts)}" if parts else "")
        )
    found = r["found"]
    if found["notifications"]:
        print(
            f"  found: {found['notifications']} objects by event notifications, "
            f"{found['listing']} by listings"
        )
    c = r["clean"]
    if c["mode"] != "off" or c["cleaned"]:
        print(
            f"  clean_source {c['mode']}: {c['cleaned']} objects cleaned, "
            f"{c['pending']} pending clean"
            + (f", {c['left']} left in the landing" if c["left"] else "")
        )
    days = list(r["rows_per_day"].items())[-TEXT_DAYS:]
    if days:
        print("  rows per day: " + ", ".join(f"{day} {n}" for day, n in days))
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


def run(args: argparse.Namespace) -> int:
    """Exit 0, or the highest exit code of the sources that could not be read."""
    ns = namespace(args)
    rt = runtime(args)
    rows: list[dict[str, Any]] = []
    errors: list[LockgateError] = []
    with DagsterView.open() as view:
        for source in rt.selected(args.source):
            try:
                rows.append(
                    source_status(rt, source, view, not args.no_landing, ns.label(source.name))
                )
            except LockgateError as e:  # one source's failure never hides the others
                errors.append(e)
                rows.append(_failed(source, e))
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            _print(r, args.no_landing, ns.name)
    return max((int(e.exit_code) for e in errors), default=0)
