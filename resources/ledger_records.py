"""The ledger's records and their JSON form: claims, commit records, fingerprints, compact
snapshots (manifest and segment references), and the ledger's errors.

Every record is immutable once written (create-only); ``from_json`` raises ``LedgerCorrupt`` on
malformed content instead of guessing. ``FORMAT_VERSION`` is written into every file; a file
with a higher version was written by a newer Lockgate and is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from lockgate.resources.days import check_day as check_day  # re-export: one day parser
from lockgate.resources.errors import ExitCode, LockgateError, TerminalError, TransientError
from lockgate.resources.store import ObjectInfo

T = TypeVar("T")

FORMAT_VERSION = 1
DEFAULT_COMPACT_INTERVAL = 100
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: What a run found instead of an object's claimed version (``CommitRecord.unread``).
CHANGED_BEFORE_READ = "changed_before_read"
GONE_BEFORE_READ = "gone_before_read"
UNREAD_OUTCOMES = (CHANGED_BEFORE_READ, GONE_BEFORE_READ)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# errors


class LedgerError(LockgateError):
    """Base of the ledger's errors (a family: never raised itself)."""


class FingerprintMismatch(LedgerError, TerminalError):
    """The source's declaration (landing URL, format, table, ...) differs from the one its ledger
    was written for. ``changes`` maps each changed field to ``(stored, requested)``."""

    exit_code: ClassVar[ExitCode] = ExitCode.FINGERPRINT_MISMATCH

    def __init__(self, source: str, changes: Mapping[str, tuple[str | None, str | None]]):
        self.source = source
        self.changes = dict(changes)
        detail = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changes.items()))
        super().__init__(
            f"source {source!r}: its declaration changed since the ledger was written ({detail}). "
            "Refusing to serve it: the recorded claims may not mean the same objects any more. "
            "If the change is intended, reset the fingerprint (Ledger.open(..., reset=True), or "
            f"`lockgate ledger reset --source {source}`): every existing claim is kept, so an "
            "object (key, etag) already claimed is never ingested again. To re-ingest from "
            "scratch, use a new source name or a new ledger root instead."
            + (
                " A moved landing: the reset also claims what is left in the earlier one, whose "
                "batches keep reading it (docs/operations.md, 'Moving a source')."
                if "landing" in changes
                else ""
            )
        )


class ClaimConflict(LedgerError, TransientError):
    """Another planner created claim ``batch_id`` first. The ledger has re-read the claims from
    ``batch_id`` on; the caller drops the objects now claimed and re-plans."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFLICT

    def __init__(self, source: str, batch_id: int):
        self.source = source
        self.batch_id = batch_id
        super().__init__(f"source {source!r}: batch {batch_id} was claimed by another planner")


class AlreadyClaimed(LedgerError, TerminalError, ValueError):
    """``claim`` was given an object (key, etag) that is already claimed: a planning bug; the
    ledger refused to claim an object twice."""

    exit_code: ClassVar[ExitCode] = ExitCode.CORRUPT_STATE


class UnknownBatch(LedgerError, TerminalError, KeyError):
    """No claim exists for this batch id."""

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE
    hint: str | None = "`lockgate ledger show --source <source>` lists the batches"


class LedgerCorrupt(LedgerError, TerminalError):
    """The ledger's files break an invariant (a gap in batch ids, unreadable JSON, ...)."""

    exit_code: ClassVar[ExitCode] = ExitCode.CORRUPT_STATE
    hint: str | None = (
        "Lockgate never changes a ledger file once written: restore it (e.g. from bucket "
        "versioning), or upgrade if a newer Lockgate wrote it"
    )


# --------------------------------------------------------------------------------------------
# helpers


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _loads(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise LedgerCorrupt(f"{what}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise LedgerCorrupt(f"{what}: expected a JSON object")
    fmt = obj.get("format", FORMAT_VERSION)
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        raise LedgerCorrupt(
            f"{what}: format {fmt!r} was written by a newer Lockgate (this one reads <= "
            f"{FORMAT_VERSION}); upgrade before serving this ledger"
        )
    return obj


def _dt(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise LedgerCorrupt(f"{what}: expected an ISO timestamp, got {value!r}")
    d = datetime.fromisoformat(value)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LedgerCorrupt(f"{what}: expected an integer, got {value!r}")
    return value


def _opt_int(value: object, what: str) -> int | None:
    return None if value is None else _int(value, what)


def check_source(source: str) -> str:
    if not SOURCE_NAME.match(source):
        raise ValueError(
            f"invalid source name {source!r}: letters, digits, '_', '.', '-' (starting with a "
            "letter or digit), at most 128 characters"
        )
    return source


def batch_name(batch_id: int) -> str:
    if batch_id < 0:
        raise ValueError(f"negative batch id {batch_id}")
    return f"{batch_id:020d}.json"


def _parallel(fn: Callable[[int], T], items: Sequence[int], workers: int = 8) -> list[T]:
    """``[fn(i) for i in items]``, up to ``workers`` at a time (I/O bound store calls)."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as ex:
        return list(ex.map(fn, items))


# --------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class ClaimedObject:
    """One landed object as claimed: identity is ``(key, etag)``; ``key`` is relative to the
    source's landing root."""

    key: str
    etag: str
    size: int
    last_modified: datetime  # timezone-aware, UTC

    @classmethod
    def from_info(cls, info: ObjectInfo) -> ClaimedObject:
        return cls(info.key, info.etag, info.size, info.last_modified)

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "etag": self.etag,
            "size": self.size,
            "last_modified": self.last_modified.isoformat(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> ClaimedObject:
        key, etag = d.get("key"), d.get("etag")
        if not isinstance(key, str) or not isinstance(etag, str):
            raise LedgerCorrupt(f"claimed object without key/etag: {d!r}")
        return cls(key, etag, _int(d.get("size"), "size"), _dt(d.get("last_modified"), key))


#: ``Claim.found_by``: the discovery paths that find objects.
FOUND_BY_LISTING = "listing"
FOUND_BY_NOTIFICATIONS = "notifications"
FOUND_BY = (FOUND_BY_NOTIFICATIONS, FOUND_BY_LISTING)


def _found_by(value: object) -> str:
    if value not in FOUND_BY:
        raise LedgerCorrupt(f"claim found_by {value!r} is not one of {', '.join(FOUND_BY)}")
    return str(value)


@dataclass(frozen=True)
class Claim:
    """A batch: objects of one source and one partition day, claimed together."""

    source: str
    batch_id: int
    partition: str  # YYYY-MM-DD
    objects: tuple[ClaimedObject, ...]
    created_at: datetime
    fingerprint_version: int = 0
    #: the discovery path that found the objects: ``FOUND_BY_LISTING`` (also every claim
    #: written before the field existed) or ``FOUND_BY_NOTIFICATIONS``
    found_by: str = "listing"

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "format": FORMAT_VERSION,
            "source": self.source,
            "batch_id": self.batch_id,
            "partition": self.partition,
            "objects": [o.to_json() for o in self.objects],
            "created_at": self.created_at.isoformat(),
            "fingerprint_version": self.fingerprint_version,
        }
        if self.found_by != FOUND_BY_LISTING:  # absent: a listing (as in older claims)
            out["found_by"] = self.found_by
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Claim:
        objs = d.get("objects")
        source, partition = d.get("source"), d.get("partition")
        if not isinstance(objs, list) or not isinstance(source, str):
            raise LedgerCorrupt(f"malformed claim: {d!r}"[:300])
        if not isinstance(partition, str):
            raise LedgerCorrupt(f"claim without partition: {d!r}"[:300])
        return cls(
            source=source,
            batch_id=_int(d.get("batch_id"), "batch_id"),
            partition=partition,
            objects=tuple(ClaimedObject.from_json(o) for o in objs),
            created_at=_dt(d.get("created_at"), "created_at"),
            fingerprint_version=_int(d.get("fingerprint_version", 0), "fingerprint_version"),
            found_by=_found_by(d.get("found_by", FOUND_BY_LISTING)),
        )


@dataclass(frozen=True)
class CommitRecord:
    """What a batch produced. ``duplicate`` is true when the batch was found already marked in
    the table (nothing was committed by this writer). ``record_counts`` optionally maps each
    object key of the batch to its record count (rows + quarantined). ``unread`` maps each
    object whose claimed version was no longer there when the run opened it to its outcome
    (``UNREAD_OUTCOMES``): it contributed no rows and no quarantine entries (record count 0),
    and that version does not count as ingested. Absent from records written before it
    existed (read as None: every object was read). ``bytes_read``
    optionally maps each object key read to its end to the bytes consumed of it as stored
    (``lockgate verify`` checks each against the claimed size); records written before it
    existed load with None."""

    batch_id: int
    snapshot_id: int | None
    table_version: int | None
    rows: int
    quarantined: int
    bytes: int
    objects: int
    committed_at: datetime = field(default_factory=utcnow)
    duplicate: bool = False
    record_counts: Mapping[str, int] | None = None
    unread: Mapping[str, str] | None = None
    bytes_read: Mapping[str, int] | None = None

    def to_json(self, source: str) -> dict[str, object]:
        return {
            "format": FORMAT_VERSION,
            "source": source,
            "batch_id": self.batch_id,
            "snapshot_id": self.snapshot_id,
            "table_version": self.table_version,
            "rows": self.rows,
            "quarantined": self.quarantined,
            "bytes": self.bytes,
            "objects": self.objects,
            "committed_at": self.committed_at.isoformat(),
            "duplicate": self.duplicate,
            "record_counts": dict(self.record_counts) if self.record_counts is not None else None,
            **({"unread": dict(self.unread)} if self.unread else {}),
            **({"bytes_read": dict(self.bytes_read)} if self.bytes_read is not None else {}),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> CommitRecord:
        rc = d.get("record_counts")
        if rc is not None and not isinstance(rc, dict):
            raise LedgerCorrupt(f"commit record: bad record_counts {rc!r}"[:300])
        unread = d.get("unread")
        if unread is not None and (
            not isinstance(unread, dict)
            or not all(isinstance(v, str) and v in UNREAD_OUTCOMES for v in unread.values())
        ):
            raise LedgerCorrupt(f"commit record: bad unread {unread!r}"[:300])
        br = d.get("bytes_read")
        if br is not None and not isinstance(br, dict):
            raise LedgerCorrupt(f"commit record: bad bytes_read {br!r}"[:300])
        return cls(
            batch_id=_int(d.get("batch_id"), "batch_id"),
            snapshot_id=_opt_int(d.get("snapshot_id"), "snapshot_id"),
            table_version=_opt_int(d.get("table_version"), "table_version"),
            rows=_int(d.get("rows"), "rows"),
            quarantined=_int(d.get("quarantined"), "quarantined"),
            bytes=_int(d.get("bytes"), "bytes"),
            objects=_int(d.get("objects"), "objects"),
            committed_at=_dt(d.get("committed_at"), "committed_at"),
            duplicate=bool(d.get("duplicate", False)),
            record_counts={str(k): _int(v, str(k)) for k, v in rc.items()} if rc else rc,
            unread={str(k): str(v) for k, v in unread.items()} if unread else None,
            bytes_read={str(k): _int(v, str(k)) for k, v in br.items()} if br is not None else None,
        )


@dataclass(frozen=True)
class RebuildRecord:
    """What one rebuild (backfill) of ``days`` committed, written after its overwrite commit
    (create-only, named by the table version of that commit). ``batches`` maps every batch the
    rebuild read to its accounting as a ``CommitRecord`` (rows, quarantined, record_counts,
    unread, bytes_read of that re-read): for those batches it supersedes their own commit
    record and every earlier rebuild record (ordered by ``table_version``, never by clock)."""

    table_version: int
    snapshot_id: int | None
    days: tuple[str, ...]
    batches: Mapping[int, CommitRecord]
    created_at: datetime = field(default_factory=utcnow)

    def to_json(self, source: str) -> dict[str, object]:
        return {
            "format": FORMAT_VERSION,
            "source": source,
            "table_version": self.table_version,
            "snapshot_id": self.snapshot_id,
            "days": list(self.days),
            "batches": [r.to_json(source) for _, r in sorted(self.batches.items())],
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> RebuildRecord:
        batches, days = d.get("batches"), d.get("days")
        if not isinstance(batches, list) or not isinstance(days, list):
            raise LedgerCorrupt(f"malformed rebuild record: {d!r}"[:300])
        recs = [CommitRecord.from_json(b) for b in batches if isinstance(b, dict)]
        if len(recs) != len(batches):
            raise LedgerCorrupt(f"rebuild record: malformed batch entry in {batches!r}"[:300])
        return cls(
            table_version=_int(d.get("table_version"), "table_version"),
            snapshot_id=_opt_int(d.get("snapshot_id"), "snapshot_id"),
            days=tuple(str(x) for x in days),
            batches={r.batch_id: r for r in recs},
            created_at=_dt(d.get("created_at"), "created_at"),
        )


@dataclass(frozen=True)
class Fingerprint:
    """One version of a source's fingerprint. ``from_batch`` is the first batch id claimed under
    it (0 for version 0)."""

    version: int
    values: Mapping[str, str]
    from_batch: int
    created_at: datetime

    def to_json(self, source: str) -> dict[str, object]:
        return {
            "format": FORMAT_VERSION,
            "source": source,
            "version": self.version,
            "fingerprint": dict(self.values),
            "from_batch": self.from_batch,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Fingerprint:
        values = d.get("fingerprint")
        if not isinstance(values, dict):
            raise LedgerCorrupt(f"fingerprint file without fingerprint: {d!r}"[:300])
        return cls(
            version=_int(d.get("version"), "version"),
            values={str(k): str(v) for k, v in values.items()},
            from_batch=_int(d.get("from_batch", 0), "from_batch"),
            created_at=_dt(d.get("created_at"), "created_at"),
        )


@dataclass(frozen=True)
class LedgerSummary:
    """A readable overview (``lockgate ledger show``)."""

    source: str
    claims: int  # = next batch id
    committed: int
    pending: tuple[int, ...]
    high_water_key: str | None
    last_compaction: int | None  # ``upto`` of the latest compact snapshot
    compacted_claimed_objects: int
    fingerprint: Fingerprint


@dataclass(frozen=True)
class _SegmentRef:
    file: str
    first: int
    upto: int
    min_key: str
    max_key: str
    objects: int
    days: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "from": self.first,
            "upto": self.upto,
            "min_key": self.min_key,
            "max_key": self.max_key,
            "objects": self.objects,
            "days": list(self.days),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> _SegmentRef:
        return cls(
            file=str(d["file"]),
            first=_int(d["from"], "from"),
            upto=_int(d["upto"], "upto"),
            min_key=str(d["min_key"]),
            max_key=str(d["max_key"]),
            objects=_int(d["objects"], "objects"),
            days=tuple(str(x) for x in d["days"]),
        )


@dataclass(frozen=True)
class _Manifest:
    """A compact snapshot of claims ``0..upto``: their segments, the high-water key and the
    commit low-water mark (every batch ``< committed_below`` is committed; ``uncommitted`` lists
    the batches ``<= upto`` that had no commit record when the snapshot was written)."""

    upto: int
    high_water_key: str | None
    committed_below: int
    uncommitted: tuple[int, ...]
    segments: tuple[_SegmentRef, ...]
    created_at: datetime

    @property
    def claimed_objects(self) -> int:
        return sum(s.objects for s in self.segments)

    def to_json(self, source: str) -> dict[str, object]:
        return {
            "format": FORMAT_VERSION,
            "source": source,
            "upto": self.upto,
            "high_water_key": self.high_water_key,
            "committed_below": self.committed_below,
            "uncommitted": list(self.uncommitted),
            "segments": [s.to_json() for s in self.segments],
            "claimed_objects": self.claimed_objects,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> _Manifest:
        try:
            return cls(
                upto=_int(d["upto"], "upto"),
                high_water_key=d.get("high_water_key"),
                committed_below=_int(d["committed_below"], "committed_below"),
                uncommitted=tuple(_int(x, "uncommitted") for x in d["uncommitted"]),
                segments=tuple(_SegmentRef.from_json(s) for s in d["segments"]),
                created_at=_dt(d["created_at"], "created_at"),
            )
        except (KeyError, TypeError) as e:
            raise LedgerCorrupt(f"malformed compact snapshot: {e}") from e
