"""Rebuilding days (backfill): every claimed object of those days is staged again and
committed as ONE overwrite of exactly those partitions, whose marker includes every batch read.

Contract: a rebuild never duplicates incremental appends (a batch of those days committed
meanwhile makes the commit conflict, and the rebuild re-plans), and never silently shrinks a
partition (an object that cannot be read exactly as claimed -- gone or changed before the
presence check, or between it and the read -- makes it refuse, changing nothing). Objects that
their batch's commit record lists as not read (changed/gone before read) contributed no rows:
the rebuild does not expect them and does not read them. Objects archived by
``clean_source: archive`` are read from their recorded copies (etag checked); objects deleted by
``clean_source: delete`` make it refuse, naming the day and the mode.
"""

from __future__ import annotations

import dataclasses
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
from lockgate.resources.cleaning import head_version, landing_for_rebuild
from lockgate.resources.config import SourceConfig
from lockgate.resources.crashpoints import crash_point
from lockgate.resources.errors import ExitCode, TerminalError
from lockgate.resources.ledger import GONE_BEFORE_READ, Claim, CommitRecord, Ledger
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
    """Refuse when a batch was claimed under another source fingerprint: reading its objects
    under the current declaration (another format, landing or table) would not reproduce
    what was ingested."""
    for claim in claims:
        changes = ledger.fingerprint_changes(claim)
        if changes:
            detail = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
            raise RebuildRefused(
                f"source {source.name!r}: cannot rebuild {claim.partition}: batch "
                f"{claim.batch_id} was claimed under fingerprint version "
                f"{claim.fingerprint_version} and the declaration has changed since ({detail}); "
                "nothing was changed"
            )


def _not_read(ledger: Ledger, claims: list[Claim]) -> frozenset[tuple[int, str]]:
    """``(batch id, key)`` of the objects whose batch recorded them as not read."""
    out: set[tuple[int, str]] = set()
    for claim in claims:
        rec = ledger.commit_record(claim.batch_id)
        if rec is not None and rec.unread:
            out.update((claim.batch_id, k) for k in rec.unread)
    return frozenset(out)


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
    """``rt`` whose landing reads archived objects from their recorded copies
    (``clean_source: archive``); refuses when objects of a batch were deleted by
    ``clean_source: delete``."""
    where = landing_for_rebuild(ledger, rt.landing(source), rt.open_landing, claims)
    for claim in claims:
        gone = where.deleted.get(claim.batch_id)
        if gone:
            raise RebuildRefused(
                f"source {source.name!r}: cannot rebuild {claim.partition}: {len(gone)} objects "
                f"of batch {claim.batch_id} (e.g. {gone[0]!r}) were deleted from the landing by "
                "clean_source: delete after their commit; a rebuild would silently drop their "
                "rows, so nothing was changed (use clean_source: {mode: archive, archive_to: "
                "...} to keep rebuildable copies)"
            )
    return dataclasses.replace(rt, open_landing=lambda _url: where.landing, _landing={})


def _check_objects_present(
    rt: Runtime, source: SourceConfig, claims: list[Claim], skip: frozenset[tuple[int, str]]
) -> None:
    """Refuse unless every claimed object can be read as claimed: present with its claimed
    etag, under a key the store accepts (a key it refuses as malformed would be quarantined
    whole, i.e. the partition would change)."""
    landing = rt.landing(source)
    for claim in claims:
        for obj in claim.objects:
            if (claim.batch_id, obj.key) in skip:
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


def rebuild(
    rt: Runtime,
    source: SourceConfig,
    days: list[date],
    progress: Callable[[str], None] | None = None,
) -> RebuildOutcome:
    """Rebuild ``days`` of ``source`` from every claimed object of those days: one overwrite
    of exactly those partitions whose marker includes every batch read. Re-plans when a batch
    of those days commits meanwhile (``RebuildConflict``)."""
    started = time.monotonic()
    tables = rt.tables
    say = progress or (lambda _msg: None)
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
        skip = _not_read(ledger, claims)
        read_rt = _archive_aware(rt, source, ledger, claims)
        _check_objects_present(read_rt, source, claims, skip)
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
                    q_ident, source.name, days, staged.quarantine_files, ids, q_base
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
            )
        except RebuildConflict as e:
            say(f"conflict, re-planning: {e}")
            continue
        crash_point("backfill.after_commit")
        _record_rebuilt(ledger, claims, staged, result.snapshot_id, result.table_version)
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
        "incremental batches; try again when the source is quieter"
    )


def _record_rebuilt(
    ledger: Ledger, claims: list[Claim], staged: Staged, snapshot_id: int | None, version: int
) -> None:
    """Commit records for batches that the rebuild committed first (their own run will find
    the batch marked and stop)."""
    for claim in claims:
        if ledger.commit_record(claim.batch_id) is not None:
            continue
        counts = {o.key: staged.record_counts.get(o.key, 0) for o in claim.objects}
        consumed = {
            o.key: staged.bytes_read[o.key] for o in claim.objects if o.key in staged.bytes_read
        }
        ledger.record_commit(
            CommitRecord(
                batch_id=claim.batch_id,
                snapshot_id=snapshot_id,
                table_version=version,
                rows=staged.batch_rows.get(claim.batch_id, 0),
                quarantined=staged.batch_quarantined.get(claim.batch_id, 0),
                bytes=claim.bytes,
                objects=len(claim.objects),
                duplicate=True,
                record_counts=counts,
                bytes_read=consumed,
            )
        )
