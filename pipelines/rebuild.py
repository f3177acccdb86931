"""Rebuilding days (backfill): every claimed object of those days is staged again and
committed as ONE overwrite of exactly those partitions, whose marker includes every batch read.

Contract: a rebuild never duplicates incremental appends (a batch of those days committed
meanwhile makes the commit conflict, and the rebuild re-plans), and never silently shrinks a
partition (an object that cannot be read exactly as claimed -- gone or changed before the
presence check, or between it and the read -- makes it refuse, changing nothing). Objects that
their batch's latest accounting lists as not read (changed/gone before read) contributed no
rows: the rebuild does not expect them, and reads one only if its claimed version is back in
the landing (restored), so its rows return. Objects archived by ``clean_source: archive`` are
read from their recorded copies (etag checked); objects deleted by ``clean_source: delete``
make it refuse, naming the day and the mode.

Accounting: after the overwrite commit the rebuild writes a rebuild record to the ledger
(create-only, named by the commit's table version) holding, per batch read, what it read; it
supersedes the batches' commit records (``Ledger.account``), which are never rewritten, so
``verify`` checks the table against what the table now holds. A crash between the commit and
the record leaves the commit records in force: run the backfill again.

Conflicts: a batch committed meanwhile to one of the rebuilt days makes the commit conflict
(the rebuild re-plans); batches of other days never do, so a rebuild converges while ingest
continues on other days. Each claim is read in the landing it was claimed in
(``Runtime.claim_landing``), so a moved source rebuilds its earlier days from the old landing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar

from lockgate.pipelines.formats import VersionNotRead
from lockgate.pipelines.stage import (
    Staged,
    ensure_main_table,
    ensure_quarantine_table,
    stage_claims,
)
from lockgate.resources.cleaning import head_version
from lockgate.resources.config import SourceConfig
from lockgate.resources.crashpoints import crash_point
from lockgate.resources.errors import ExitCode, TerminalError
from lockgate.resources.fingerprint import blocking
from lockgate.resources.ledger import GONE_BEFORE_READ, Claim, CommitRecord, Ledger, RebuildRecord
from lockgate.resources.runtime import Runtime, quarantine_table
from lockgate.resources.store import NotFound, NotRegularFile
from lockgate.resources.store_s3 import S3Error
from lockgate.resources.tables import RebuildConflict

REBUILD_ATTEMPTS = 5


class RebuildRefused(TerminalError):
    """A rebuild would silently shrink a partition (a claimed object is gone or changed)."""

    exit_code: ClassVar[ExitCode] = ExitCode.REBUILD_REFUSED


@dataclass
class RebuildOutcome:
    source: str
    days: list[str]
    batches: list[int]
    objects: int
    rows: int
    quarantined: int
    snapshot_id: int | None
    table_version: int | None
    attempts: int
    duration_s: float

    def metadata(self) -> dict[str, Any]:
        return {
            "days": ", ".join(self.days),
            "batches": len(self.batches),
            "objects": self.objects,
            "rows": self.rows,
            "quarantined": self.quarantined,
            "snapshot_id": str(self.snapshot_id) if self.snapshot_id is not None else "none",
            "table_version": self.table_version or 0,
            "attempts": self.attempts,
            "duration_s": round(self.duration_s, 3),
            "dagster/row_count": self.rows,
        }


def _check_same_declaration(source: SourceConfig, ledger: Ledger, claims: list[Claim]) -> None:
    """Refuse when a batch was claimed under another format or table: reading its objects
    under the current declaration would not reproduce what was ingested. (A batch claimed in
    an earlier landing is read there: ``Runtime.claim_landing``.)"""
    for claim in claims:
        changes = blocking(ledger.fingerprint_changes(claim))
        if changes:
            detail = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
            raise RebuildRefused(
                f"source {source.name!r}: cannot rebuild {claim.partition}: batch "
                f"{claim.batch_id} was claimed under fingerprint version "
                f"{claim.fingerprint_version} and the declaration has changed since ({detail}); "
                "nothing was changed"
            )


def _not_read(ledger: Ledger, claims: list[Claim]) -> dict[tuple[int, str], str]:
    """``(batch id, key) -> outcome`` of the objects recorded as not read by the latest
    accounting of their batch (its latest rebuild record, else its commit record)."""
    out: dict[tuple[int, str], str] = {}
    for claim in claims:
        rec = ledger.account(claim.batch_id)
        if rec is not None and rec.unread:
            out.update(((claim.batch_id, k), v) for k, v in rec.unread.items())
    return out


def _refused(source: SourceConfig, claim: Claim, key: str, what: str) -> RebuildRefused:
    return RebuildRefused(
        f"source {source.name!r}: cannot rebuild {claim.partition}: object "
        f"{key!r} of batch {claim.batch_id} was {what} since it was claimed "
        f"(clean_source: {source.clean_source}); a rebuild would silently drop its "
        "rows, so nothing was changed"
    )


def _archive_aware(
    rt: Runtime, source: SourceConfig, ledger: Ledger, claims: list[Claim]
) -> Runtime:
    """``rt`` reading each claim where it was claimed, archived objects from their recorded
    copies (``Runtime.archive_aware``); refuses when objects of a batch were deleted by
    ``clean_source: delete``."""
    read_rt, deleted = rt.archive_aware(source, ledger, claims)
    for claim in claims:
        gone = deleted.get(claim.batch_id)
        if gone:
            raise RebuildRefused(
                f"source {source.name!r}: cannot rebuild {claim.partition}: {len(gone)} objects "
                f"of batch {claim.batch_id} (e.g. {gone[0]!r}) were deleted from the landing by "
                "clean_source: delete after their commit; a rebuild would silently drop their "
                "rows, so nothing was changed (use clean_source: {mode: archive, archive_to: "
                "...} to keep rebuildable copies)"
            )
    return read_rt


def _check_objects_present(
    rt: Runtime, source: SourceConfig, claims: list[Claim], not_read: dict[tuple[int, str], str]
) -> dict[tuple[int, str], str]:
    """Refuse unless every claimed object can be read as claimed: present with its claimed
    etag in the landing it was claimed in, under a key the store accepts (a key it refuses as
    malformed would be quarantined whole, i.e. the partition would change). Returns the
    objects of ``not_read`` still not to read: one whose claimed version is back (restored) is
    read, so its rows return."""
    skip = dict(not_read)
    for claim in claims:
        landing = rt.claim_landing(source, claim)
        for obj in claim.objects:
            if (claim.batch_id, obj.key) in not_read:
                try:
                    back = landing.head(obj.key).etag == obj.etag
                except (NotFound, NotRegularFile, ValueError):
                    back = False
                except S3Error as e:
                    if e.status != 400:
                        raise  # not about the object (throttling, permissions): no decision
                    back = False
                if back:
                    del skip[(claim.batch_id, obj.key)]
                continue
            try:
                info = head_version(landing, obj.key, obj.etag)
            except (NotFound, NotRegularFile):  # a link or special file is not the object
                info = None
            except (ValueError, S3Error) as e:
                if isinstance(e, S3Error) and e.status != 400:
                    raise  # not about the key (throttling, permissions, ...): not a refusal
                raise RebuildRefused(
                    f"source {source.name!r}: cannot rebuild {claim.partition}: the store "
                    f"refuses the key of object {obj.key!r} of batch {claim.batch_id} as "
                    f"malformed ({e}); nothing was changed"
                ) from e
            if info is None or info.etag != obj.etag:
                what = "deleted (or replaced by a link)" if info is None else "re-written"
                raise _refused(source, claim, obj.key, what)
    return skip


def rebuild(
    rt: Runtime,
    source: SourceConfig,
    days: list[date],
    progress: Callable[[str], None] | None = None,
) -> RebuildOutcome:
    """Rebuild ``days`` of ``source`` from every claimed object of those days: one overwrite
    of exactly those partitions whose marker includes every batch read, then a rebuild record
    (its accounting of every batch read, superseding their commit records). Re-plans only when
    a batch of one of those days commits meanwhile (``RebuildConflict``); batches of other
    days never make it re-plan."""
    started = time.monotonic()
    tables = rt.tables
    say = progress or (lambda _msg: None)
    days_of: dict[int, str] = {}

    def day_of(batch_id: int) -> str:
        """The day of a batch committed since the base (claims never change: cached)."""
        if batch_id not in days_of:
            days_of[batch_id] = rt.ledger(source).get_claim(batch_id).partition
        return days_of[batch_id]

    for attempt in range(1, REBUILD_ATTEMPTS + 1):
        base = tables.rebuild_base(source.table, source.name)
        q_ident = quarantine_table(source)
        q_base = tables.rebuild_base(q_ident, source.name)
        ledger = rt.ledger(source)
        claims = [c for d in days for c in ledger.claims_for_partition(d.isoformat())]
        ids = [c.batch_id for c in claims]
        say(f"attempt {attempt}: {len(claims)} batches over {len(days)} days")
        if not claims:
            return RebuildOutcome(
                source.name,
                [d.isoformat() for d in days],
                [],
                0,
                0,
                0,
                None,
                None,
                attempt,
                time.monotonic() - started,
            )
        _check_same_declaration(source, ledger, claims)
        read_rt = _archive_aware(rt, source, ledger, claims)
        skipped = _check_objects_present(read_rt, source, claims, _not_read(ledger, claims))
        skip = frozenset(skipped)
        try:
            staged = stage_claims(read_rt, source, claims, strict=True, skip=skip)
        except VersionNotRead as e:
            claim = next(
                c for c in claims if any((o.key, o.etag) == (e.key, e.etag) for o in c.objects)
            )
            what = "deleted" if e.outcome == GONE_BEFORE_READ else "re-written"
            raise _refused(source, claim, e.key, f"{what} while the rebuild read it") from e
        crash_point("backfill.after_stage")
        try:
            if staged.quarantine_files or q_base.table_version:
                ensure_quarantine_table(tables, source)
                tables.rebuild_partitions(
                    q_ident, source.name, days, staged.quarantine_files, ids, q_base, None, day_of
                )
            ensure_main_table(tables, source)
            result = tables.rebuild_partitions(
                source.table,
                source.name,
                days,
                staged.files,
                ids,
                base,
                summary={"lockgate.rows": str(staged.rows)},
                day_of=day_of,
            )
        except RebuildConflict as e:
            say(f"conflict, re-planning: {e}")
            continue
        crash_point("backfill.after_commit")
        _record_rebuilt(
            ledger, days, claims, staged, skipped, result.snapshot_id, result.table_version
        )
        return RebuildOutcome(
            source=source.name,
            days=[d.isoformat() for d in days],
            batches=ids,
            objects=sum(len(c.objects) for c in claims),
            rows=staged.rows,
            quarantined=staged.quarantined,
            snapshot_id=result.snapshot_id,
            table_version=result.table_version,
            attempts=attempt,
            duration_s=time.monotonic() - started,
        )
    raise RebuildConflict(
        f"source {source.name!r}: rebuild of {len(days)} days lost {REBUILD_ATTEMPTS} races to "
        "incremental batches of those days; try again when they are quieter"
    )


def _account(
    claim: Claim,
    staged: Staged,
    skipped: dict[tuple[int, str], str],
    snapshot_id: int | None,
    version: int,
) -> CommitRecord:
    """The accounting of ``claim`` as the rebuild committed it."""
    unread = {k: v for (b, k), v in skipped.items() if b == claim.batch_id}
    return CommitRecord(
        batch_id=claim.batch_id,
        snapshot_id=snapshot_id,
        table_version=version,
        rows=staged.batch_rows.get(claim.batch_id, 0),
        quarantined=staged.batch_quarantined.get(claim.batch_id, 0),
        bytes=claim.bytes,
        objects=len(claim.objects),
        duplicate=True,
        record_counts={
            o.key: staged.object_records.get((claim.batch_id, o.key), 0) for o in claim.objects
        },
        unread=unread or None,
        bytes_read={
            o.key: staged.object_bytes_read[(claim.batch_id, o.key)]
            for o in claim.objects
            if (claim.batch_id, o.key) in staged.object_bytes_read
        },
    )


def _record_rebuilt(
    ledger: Ledger,
    days: list[date],
    claims: list[Claim],
    staged: Staged,
    skipped: dict[tuple[int, str], str],
    snapshot_id: int | None,
    version: int,
) -> None:
    """Commit records for batches that the rebuild committed first (their own run will find
    the batch marked and stop), then the rebuild record: the accounting of every batch read,
    which supersedes their commit records (``Ledger.account``; ``verify`` honours it)."""
    accounts = {c.batch_id: _account(c, staged, skipped, snapshot_id, version) for c in claims}
    for claim in claims:
        if ledger.commit_record(claim.batch_id) is None:
            ledger.record_commit(accounts[claim.batch_id])
    rebuilt = tuple(d.isoformat() for d in days)
    ledger.record_rebuild(RebuildRecord(version, snapshot_id, rebuilt, accounts))
