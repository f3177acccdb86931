"""The ledger: a per-source write-ahead log of claims and commit records on an object store.

Layout under the ledger root (``store``), for one ``source``::

    <source>/_source.json                  fingerprint version 0 (landing URL, format, table, ...)
    <source>/_source.<version:06d>.json    fingerprint versions written by a reset (1, 2, ...)
    <source>/offsets/<batch:020d>.json     claims (write-ahead: what a batch will ingest)
    <source>/commits/<batch:020d>.json     commit records (what a batch produced)
    <source>/compact/<upto:020d>.json      compact snapshot (manifest) of the claims 0..upto
    <source>/segments/<from:020d>-<upto:020d>.json   claimed keys of the batches from..upto

Invariants (the whole module is built to keep them):

* Every write is create-only (``put_if_absent``). Nothing is ever overwritten or deleted, so a
  name a stale writer may still target is never freed (DESIGN, Hazards).
* Batch ids are consecutive integers from 0. A claim for id ``N`` is only ever put by a ledger
  whose in-memory state covers every claim ``< N`` and which has checked that none of the
  claim's objects ``(key, etag)`` is already claimed. Since ``N`` can be created once, an object
  can end up in at most one claim, whatever the number of concurrent planners.
* A claim is never changed after it is written; a commit record is never overwritten
  (``record_commit`` of an existing batch returns the stored record).
* Compaction only summarises immutable claims (and commit records, which only ever appear), so a
  compact snapshot is valid forever; a crash mid-compaction leaves at worst an unreferenced
  segment, which the next compaction reuses (segment content is a pure function of the claims).

Reading the state a tick needs is O(batches since the last compaction + the key window), not
O(history): the latest compact manifest lists its segments with their key ranges, and only the
segments whose keys reach into the requested window are read.

A ``Ledger`` instance is not thread-safe; use one per thread (or per tick).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from resources.store import ObjectInfo, ObjectStore

FORMAT_VERSION = 1
DEFAULT_COMPACT_INTERVAL = 100
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# errors


class LedgerError(Exception):
    """Base of the ledger's errors."""


class FingerprintMismatch(LedgerError):
    """The source's declaration (landing URL, format, table, ...) differs from the one its ledger
    was written for. ``changes`` maps each changed field to ``(stored, requested)``."""

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
        )


class ClaimConflict(LedgerError):
    """Another planner created claim ``batch_id`` first. The ledger has re-read the claims from
    ``batch_id`` on; the caller drops the objects now claimed and re-plans."""

    def __init__(self, source: str, batch_id: int):
        self.source = source
        self.batch_id = batch_id
        super().__init__(f"source {source!r}: batch {batch_id} was claimed by another planner")


class AlreadyClaimed(LedgerError, ValueError):
    """``claim`` was given an object (key, etag) that is already claimed: a planning bug."""


class UnknownBatch(LedgerError, KeyError):
    """No claim exists for this batch id."""


class LedgerCorrupt(LedgerError):
    """The ledger's files break an invariant (a gap in batch ids, unreadable JSON, ...)."""


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
        raise NotImplementedError

    def to_json(self) -> dict[str, object]:
        raise NotImplementedError

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> ClaimedObject:
        raise NotImplementedError


@dataclass(frozen=True)
class Claim:
    """A batch: objects of one source and one partition day, claimed together."""

    source: str
    batch_id: int
    partition: str  # YYYY-MM-DD
    objects: tuple[ClaimedObject, ...]
    created_at: datetime
    fingerprint_version: int = 0

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects)

    def to_json(self) -> dict[str, object]:
        raise NotImplementedError

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Claim:
        raise NotImplementedError


@dataclass(frozen=True)
class CommitRecord:
    """What a batch produced. ``duplicate`` is true when the batch was found already marked in
    the table (nothing was committed by this writer). ``record_counts`` optionally maps each
    object key of the batch to its record count (rows + quarantined)."""

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

    def to_json(self, source: str) -> dict[str, object]:
        raise NotImplementedError

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> CommitRecord:
        raise NotImplementedError


@dataclass(frozen=True)
class Fingerprint:
    """One version of a source's fingerprint. ``from_batch`` is the first batch id claimed under
    it (0 for version 0)."""

    version: int
    values: Mapping[str, str]
    from_batch: int
    created_at: datetime


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


# --------------------------------------------------------------------------------------------
# claim state


class ClaimState:
    """The claimed ``key -> {etag: batch_id}`` state, complete for every key ``>= complete_from``
    (``""`` means every key) and for every batch ``< next_batch_id``.

    It is a live view of the ledger's in-memory state: later ledger calls only ever add to it
    (claims are immutable), so an answer it gave stays true. Asking about a key outside the
    complete window raises ``ValueError`` rather than guessing.
    """

    def __init__(
        self,
        keys: Mapping[str, Mapping[str, int]],
        next_batch_id: int,
        high_water_key: str | None,
        complete_from: str,
    ):
        self._keys = keys
        self.next_batch_id = next_batch_id
        self.high_water_key = high_water_key
        self.complete_from = complete_from

    def covers(self, key: str) -> bool:
        """True if the state is complete for ``key``."""
        return key >= self.complete_from

    def _check(self, key: str) -> None:
        if not self.covers(key):
            raise ValueError(
                f"claim state is complete only for keys >= {self.complete_from!r}, not {key!r}"
            )

    def etags(self, key: str) -> frozenset[str]:
        """The etags under which ``key`` is claimed (empty if never)."""
        self._check(key)
        return frozenset(self._keys.get(key, {}))

    def is_claimed(self, key: str, etag: str) -> bool:
        self._check(key)
        return etag in self._keys.get(key, {})

    def batch_of(self, key: str, etag: str) -> int | None:
        """The batch that claimed ``(key, etag)``, or None."""
        self._check(key)
        return self._keys.get(key, {}).get(etag)

    def window(self, start_key: str) -> Iterator[tuple[str, frozenset[str]]]:
        """``(key, etags)`` of every claimed key ``>= start_key``, in key order."""
        self._check(start_key)
        for k in sorted(k for k in self._keys if k >= start_key):
            yield k, frozenset(self._keys[k])

    def __len__(self) -> int:
        """Number of claimed keys loaded (>= the number of claimed keys in the window)."""
        return len(self._keys)


# --------------------------------------------------------------------------------------------
# the ledger


class Ledger:
    """One source's ledger. Create with ``Ledger.open``."""

    def __init__(
        self,
        store: ObjectStore,
        source: str,
        fingerprint: Fingerprint,
        compact_interval: int = DEFAULT_COMPACT_INTERVAL,
    ):
        raise NotImplementedError

    @classmethod
    def open(
        cls,
        store: ObjectStore,
        source: str,
        fingerprint: Mapping[str, str],
        reset: bool = False,
        compact_interval: int = DEFAULT_COMPACT_INTERVAL,
    ) -> Ledger:
        """Open ``source``'s ledger on ``store`` (rooted at the ledger root).

        The first open writes fingerprint version 0. Later opens compare ``fingerprint`` with the
        latest stored version and raise ``FingerprintMismatch`` on any difference, unless
        ``reset``: then a new fingerprint version is written (create-only) and every claim is
        kept -- an object ``(key, etag)`` claimed before the reset is never claimed again, and
        batch ids continue where they were. ``reset`` with an unchanged fingerprint is a no-op.
        """
        raise NotImplementedError

    @staticmethod
    def read_fingerprint(store: ObjectStore, source: str) -> Fingerprint | None:
        """The latest fingerprint version of ``source``, or None if the source has no ledger.
        Does not check anything (for inspection tools)."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> Fingerprint:
        raise NotImplementedError

    # -- claims ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the claims created since the last read (O(new claims))."""
        raise NotImplementedError

    def next_batch_id(self) -> int:
        """The id the next claim will take (after reading new claims)."""
        raise NotImplementedError

    def claim_state(self, start_key: str = "") -> ClaimState:
        """The claim state, refreshed, complete for every key ``>= start_key``.

        Reads the latest compact snapshot's manifest, the segments whose key range reaches
        ``>= start_key`` and the claims after the snapshot. ``start_key=""`` loads the whole
        state (O(claimed keys); for full listings).
        """
        raise NotImplementedError

    def lookback_start(self, keys: int) -> str | None:
        """The ``start_after`` key for an incremental listing that re-lists the ``keys`` highest
        claimed keys: the ``keys+1``-th highest claimed key, or None when fewer are claimed
        (list everything). Afterwards ``claim_state(result or "")`` is already loaded."""
        raise NotImplementedError

    def is_claimed(self, key: str, etag: str) -> bool:
        raise NotImplementedError

    def claim(self, partition: str, objects: Sequence[ObjectInfo | ClaimedObject]) -> Claim:
        """Claim ``objects`` as the next batch of ``partition`` (a ``YYYY-MM-DD`` day).

        Create-only put of ``offsets/<next id>``. Raises ``ClaimConflict`` if another planner
        took that id (the state is then refreshed from it on: re-plan with ``claim_state``),
        ``AlreadyClaimed`` if an object ``(key, etag)`` is already claimed, ``ValueError`` on an
        empty batch, a duplicate key or a malformed day.
        """
        raise NotImplementedError

    def get_claim(self, batch_id: int) -> Claim:
        """The claim of ``batch_id``; ``UnknownBatch`` if there is none."""
        raise NotImplementedError

    def claims_for_partition(self, day: str) -> list[Claim]:
        """Every claim of partition ``day``, in batch order (for backfill). Uses the compact
        segments' day index, so it reads only the claims of that day plus the claims after the
        latest snapshot."""
        raise NotImplementedError

    # -- commits ---------------------------------------------------------------------------

    def commit_record(self, batch_id: int) -> CommitRecord | None:
        raise NotImplementedError

    def record_commit(self, rec: CommitRecord) -> CommitRecord:
        """Write ``commits/<batch>.json`` create-only and return the stored record. If a record
        already exists it is returned unchanged (never overwritten). ``UnknownBatch`` if the
        batch was never claimed."""
        raise NotImplementedError

    def pending(self) -> list[Claim]:
        """Claims without a commit record, in batch order. Reads the uncommitted ids listed in
        the latest compact snapshot and the commit records after it, not the whole history."""
        raise NotImplementedError

    # -- compaction ------------------------------------------------------------------------

    def maybe_compact(self) -> int | None:
        """Write a compact snapshot at the latest multiple of ``compact_interval`` (``upto`` =
        k*interval - 1) if it is newer than the latest one; returns its ``upto`` or None.
        Create-only: a concurrent compactor of the same ``upto`` wins harmlessly."""
        raise NotImplementedError

    def compact(self, upto: int) -> int:
        """Write a compact snapshot of the claims ``0..upto`` (which must all exist) unless one
        exists; returns ``upto``."""
        raise NotImplementedError

    def last_compaction(self) -> int | None:
        """``upto`` of the latest compact snapshot, or None."""
        raise NotImplementedError

    def summary(self) -> LedgerSummary:
        raise NotImplementedError
