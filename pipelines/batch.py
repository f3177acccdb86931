"""Executing one claimed batch: read -> stage -> commit -> record. The CLI and the sensors'
runs go through here; rebuilds of whole days are ``lockgate.pipelines.rebuild``.

Invariants:

* A batch's rows become visible only through ``TableStore.commit_batch``, one atomic commit
  that also marks the batch; a batch already marked commits nothing. So re-running a batch
  any number of times, after a crash anywhere, converges to the same table.
* Quarantine entries of a batch are committed (with the same marker) to
  ``<table>__quarantine`` BEFORE the batch's rows, so a committed batch always has its
  quarantine. A batch with no bad record writes nothing there. A re-run after a crash between
  the two commits may find an object's claimed version gone that the crashed attempt read:
  that object is recorded as not read, so the entries the crashed attempt committed for it
  are deleted from the quarantine table before the rows commit (no record of a version that
  was not read counts, in either table).
* The commit record is written after the table commit. A batch that is marked in the table
  but has no commit record is repaired from the table (counts re-read), never re-run.
* Every record of every object is a row or a quarantine entry: ``records(object) = rows +
  quarantined`` is stored per object in the commit record (``record_counts``), and so are the
  bytes consumed of each object read to its end (``bytes_read``, equal to its claimed size).
* An object whose claimed version was gone when the run opened it is recorded in the commit
  record's ``unread`` (changed/gone before read) with 0 records: that version does not count
  as ingested, and discovery claims the key's current version as a new object. A repaired
  record (crash between table commit and record) re-derives it: an object with no row and no
  quarantine entry whose claimed version is no longer in the landing is recorded as not read
  (if it was read, it held no records, so claiming its new version loses and duplicates
  nothing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pyiceberg.exceptions import NoSuchTableError

from lockgate.pipelines.prefetch import Prefetch
from lockgate.pipelines.stage import ensure_main_table, stage_claims
from lockgate.resources.config import SourceConfig
from lockgate.resources.crashpoints import crash_point
from lockgate.resources.errors import ExitCode, TerminalError
from lockgate.resources.fingerprint import blocking
from lockgate.resources.ledger import (
    CHANGED_BEFORE_READ,
    GONE_BEFORE_READ,
    Claim,
    ClaimedObject,
    CommitRecord,
    Ledger,
)
from lockgate.resources.runtime import Runtime, quarantine_table
from lockgate.resources.store import NotFound, ObjectChanged
from lockgate.resources.tables import TableStore


class ClaimFingerprintChanged(TerminalError):
    """A pending batch was claimed under another source fingerprint than the current one, and
    a field other than ``landing`` changed (format, table): running it under the new
    declaration could read its objects wrongly or write them elsewhere, so it is not run. (A
    changed landing alone is not refused: the claim is read in the landing it was made in.)"""

    exit_code: ClassVar[ExitCode] = ExitCode.FINGERPRINT_MISMATCH

    def __init__(
        self, source: str, claim: Claim, changes: dict[str, tuple[str | None, str | None]]
    ):
        self.source = source
        self.batch_id = claim.batch_id
        self.changes = changes
        detail = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
        super().__init__(
            f"source {source!r}: batch {claim.batch_id} ({claim.partition}) was claimed under "
            f"fingerprint version {claim.fingerprint_version} and the source's declaration has "
            f"changed since ({detail}); it was not run under the new declaration. To run it, "
            "restore the earlier declaration (`lockgate ledger reset` back to it), let the "
            "pending batches commit, then change it again."
        )


@dataclass
class BatchOutcome:
    """What executing one batch did (``already_committed``: nothing was written)."""

    source: str
    batch_id: int
    partition: str
    objects: int
    rows: int
    quarantined: int
    bytes: int
    snapshot_id: int | None
    table_version: int | None
    duplicate: bool
    already_committed: bool
    duration_s: float
    record_counts: dict[str, int] = field(default_factory=dict)
    unread: dict[str, str] = field(default_factory=dict)  # key -> changed/gone before read
    # this execution's commit attempts on the table (1: no lost race; 0: it committed nothing)
    commit_attempts: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.duration_s if self.duration_s > 0 else 0.0

    def metadata(self) -> dict[str, Any]:
        """Dagster materialization metadata (no secrets: only ids and counts)."""
        return {
            "batch_id": self.batch_id,
            "objects": self.objects,
            "rows": self.rows,
            "quarantined": self.quarantined,
            "bytes": self.bytes,
            "snapshot_id": str(self.snapshot_id) if self.snapshot_id is not None else "none",
            "table_version": self.table_version or 0,
            "duplicate": self.duplicate or self.already_committed,
            "duration_s": round(self.duration_s, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "changed_before_read": sum(o == CHANGED_BEFORE_READ for o in self.unread.values()),
            "gone_before_read": sum(o == GONE_BEFORE_READ for o in self.unread.values()),
            "dagster/row_count": self.rows,
            "commit_attempts": self.commit_attempts,
        }


def _count_in_table(
    tables: TableStore, identifier: str, batch_id: int
) -> tuple[int, dict[str, int]]:
    """Rows of ``batch_id`` in a table, in total and per source key (for repairs)."""
    try:
        table = tables.load(identifier)
    except NoSuchTableError:
        return 0, {}
    arrow = table.scan(
        row_filter=f"_batch_id == {batch_id}", selected_fields=("_source_key",)
    ).to_arrow()
    counts: dict[str, int] = {}
    if arrow.num_rows:
        for row in arrow.group_by("_source_key").aggregate([("_source_key", "count")]).to_pylist():
            counts[row["_source_key"]] = row["_source_key_count"]
    return arrow.num_rows, counts


def _repair_record(rt: Runtime, source: SourceConfig, ledger: Ledger, claim: Claim) -> CommitRecord:
    """The batch is marked in the table but has no commit record: rebuild it from the tables."""
    tables = rt.tables
    rows, per_key = _count_in_table(tables, source.table, claim.batch_id)
    quarantined, q_per_key = _count_in_table(tables, quarantine_table(source), claim.batch_id)
    counts = {o.key: per_key.get(o.key, 0) + q_per_key.get(o.key, 0) for o in claim.objects}
    unread = _unread_now(rt, source, claim, [o for o in claim.objects if not counts[o.key]])
    table = tables.load(source.table)
    snap = table.current_snapshot()
    return ledger.record_commit(
        CommitRecord(
            batch_id=claim.batch_id,
            snapshot_id=snap.snapshot_id if snap else None,
            table_version=tables.current_version(source.table),
            rows=rows,
            quarantined=quarantined,
            bytes=claim.bytes,
            objects=len(claim.objects),
            duplicate=True,
            record_counts=counts,
            unread=unread or None,
        )
    )


def _unread_now(
    rt: Runtime, source: SourceConfig, claim: Claim, objects: list[ClaimedObject]
) -> dict[str, str]:
    """``key -> outcome`` of the ``objects`` of ``claim`` whose claimed version is no longer in
    the landing they were claimed in."""
    landing = rt.claim_landing(source, claim)
    out: dict[str, str] = {}
    for o in objects:
        try:
            if landing.head(o.key).etag != o.etag:
                out[o.key] = CHANGED_BEFORE_READ
        except NotFound:
            out[o.key] = GONE_BEFORE_READ
        except ObjectChanged:  # e.g. replaced by a symbolic link (NotRegularFile)
            out[o.key] = CHANGED_BEFORE_READ
        except ValueError:
            continue  # an unsafe key is never opened: it was quarantined, not "not read"
    return out


def _from_record(
    claim: Claim, rec: CommitRecord, started: float, already_committed: bool = True
) -> BatchOutcome:
    return BatchOutcome(
        source=claim.source,
        batch_id=claim.batch_id,
        partition=claim.partition,
        objects=len(claim.objects),
        rows=rec.rows,
        quarantined=rec.quarantined,
        bytes=rec.bytes,
        snapshot_id=rec.snapshot_id,
        table_version=rec.table_version,
        duplicate=rec.duplicate,
        already_committed=already_committed,
        duration_s=time.monotonic() - started,
        record_counts=dict(rec.record_counts or {}),
        unread=dict(rec.unread or {}),
    )


def execute_batch(
    rt: Runtime,
    source: SourceConfig,
    ledger: Ledger,
    claim: Claim,
    prefetch: Prefetch | None = None,
) -> BatchOutcome:
    """Bring one claimed batch to committed (idempotent; safe to run concurrently). A batch
    already committed is reported as it is; an uncommitted one claimed under a fingerprint
    whose format or table differ from the current one raises ``ClaimFingerprintChanged``
    before any read; one claimed in an earlier landing is read there. ``prefetch``: the read
    of one of its objects, already begun (``Prefetch.first_of``); closed when unused."""
    try:
        return _execute(rt, source, ledger, claim, prefetch)
    finally:
        if prefetch is not None:
            prefetch.close()


def _execute(
    rt: Runtime, source: SourceConfig, ledger: Ledger, claim: Claim, prefetch: Prefetch | None
) -> BatchOutcome:
    started = time.monotonic()
    rec = ledger.commit_record(claim.batch_id)
    if rec is not None:
        return _from_record(claim, rec, started)
    tables = rt.tables
    if claim.batch_id in tables.committed(source.table, source.name):
        return _from_record(claim, _repair_record(rt, source, ledger, claim), started)
    changes = blocking(ledger.fingerprint_changes(claim))
    if changes:  # a moved landing alone is no obstacle: the claim is read where it was made
        raise ClaimFingerprintChanged(source.name, claim, changes)

    staged = stage_claims(rt, source, [claim], prefetch=prefetch)
    summary = {"lockgate.rows": str(staged.rows), "lockgate.quarantined": str(staged.quarantined)}
    q_ident = quarantine_table(source)
    if staged.quarantine_files:
        tables.commit_batch(q_ident, source.name, claim.batch_id, staged.quarantine_files, summary)
        crash_point("commit.quarantine_committed")
    unread = staged.unread_of(claim.batch_id)
    if unread and claim.batch_id in tables.committed(q_ident, source.name):
        # An earlier attempt read these objects and committed their quarantine entries, then
        # died before the table commit; their versions are gone now, so none of their records
        # may count: the entries go before the rows commit (which records them as not read).
        tables.delete_batch_objects(q_ident, source.name, claim.batch_id, unread, summary)
    ensure_main_table(tables, source)
    result = tables.commit_batch(source.table, source.name, claim.batch_id, staged.files, summary)
    if result.duplicate:
        # Someone else committed it first; their record (or a repair) is the truth.
        rec = ledger.commit_record(claim.batch_id) or _repair_record(rt, source, ledger, claim)
        outcome = _from_record(claim, rec, started)
        outcome.commit_attempts = result.attempts
        return outcome
    rec = ledger.record_commit(
        CommitRecord(
            batch_id=claim.batch_id,
            snapshot_id=result.snapshot_id,
            table_version=result.table_version,
            rows=staged.rows,
            quarantined=staged.quarantined,
            bytes=staged.bytes,
            objects=len(claim.objects),
            record_counts=staged.record_counts,
            unread=staged.unread_of(claim.batch_id) or None,
            bytes_read=staged.bytes_read,
        )
    )
    outcome = _from_record(claim, rec, started, already_committed=False)
    outcome.commit_attempts = result.attempts
    return outcome
