"""The ledger: a per-source write-ahead log of claims and commit records on an object store.

Layout under the ledger root (``store``), for one ``source``::

    <source>/_source.json                  fingerprint version 0 (landing URL, format, table, ...)
    <source>/fingerprints/<version:06d>.json   fingerprint versions written by a reset (1, 2, ...)
    <source>/offsets/<batch:020d>.json     claims (write-ahead: what a batch will ingest)
    <source>/commits/<batch:020d>.json     commit records (what a batch produced)
    <source>/rebuilds/<version:020d>.json  rebuild records (what a rebuild committed at that
                                           table version re-read; supersede commit records)
    <source>/compact/<upto:020d>.json      compact snapshot (manifest) of the claims 0..upto
    <source>/segments/<from:020d>-<upto:020d>.json   claimed keys of the batches from..upto

Invariants (the facade and its parts are built to keep them):

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

``Ledger`` is a thin facade over one idea per module: ``ledger_log`` (the claim and commit logs,
create-only ``add``), ``ledger_compaction`` (compact snapshots), ``ledger_index`` (the in-memory
index of claimed keys) and ``fingerprint`` (what the ledger was written for); the records are
in ``ledger_records``.

A ``Ledger`` instance is not thread-safe; use one per thread (or per tick).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lockgate.resources import fingerprint as fingerprints
from lockgate.resources.crashpoints import crash_point
from lockgate.resources.days import check_day
from lockgate.resources.fingerprint import FINGERPRINTS, SOURCE_FILE
from lockgate.resources.ledger_compaction import COMPACT, SEGMENTS, Compaction
from lockgate.resources.ledger_index import ClaimIndex, ClaimState
from lockgate.resources.ledger_log import (
    COMMITS,
    OFFSETS,
    REBUILDS,
    ClaimLog,
    CommitLog,
    RebuildLog,
)
from lockgate.resources.ledger_records import (
    CHANGED_BEFORE_READ,
    DEFAULT_COMPACT_INTERVAL,
    FORMAT_VERSION,
    FOUND_BY,
    FOUND_BY_LISTING,
    FOUND_BY_NOTIFICATIONS,
    GONE_BEFORE_READ,
    UNREAD_OUTCOMES,
    AlreadyClaimed,
    Claim,
    ClaimConflict,
    ClaimedObject,
    CommitRecord,
    Fingerprint,
    FingerprintMismatch,
    LedgerCorrupt,
    LedgerError,
    LedgerSummary,
    RebuildRecord,
    UnknownBatch,
    _dumps,
    _loads,
    _Manifest,
    _parallel,
    _SegmentRef,
    batch_name,
    check_source,
    utcnow,
)
from lockgate.resources.store import ObjectInfo, ObjectStore

# The facade re-exports the ledger's vocabulary and layout (callers import from here).
__all__ = [
    "CHANGED_BEFORE_READ",
    "COMMITS",
    "COMPACT",
    "DEFAULT_COMPACT_INTERVAL",
    "FINGERPRINTS",
    "FORMAT_VERSION",
    "FOUND_BY",
    "FOUND_BY_LISTING",
    "FOUND_BY_NOTIFICATIONS",
    "GONE_BEFORE_READ",
    "OFFSETS",
    "REBUILDS",
    "SEGMENTS",
    "SOURCE_FILE",
    "UNREAD_OUTCOMES",
    "AlreadyClaimed",
    "Claim",
    "ClaimConflict",
    "ClaimState",
    "ClaimedObject",
    "CommitRecord",
    "Fingerprint",
    "FingerprintMismatch",
    "Ledger",
    "LedgerCorrupt",
    "LedgerError",
    "LedgerSummary",
    "RebuildRecord",
    "UnknownBatch",
    "_dumps",
    "_loads",
    "batch_name",
    "check_day",
    "check_source",
]

PROBE_CHUNK = 8


class Ledger:
    """One source's ledger. Create with ``Ledger.open``.

    In-memory state: every claim ``< _next`` exists; the index holds the keys of the batches
    it covers, which always include every batch after the latest manifest read (the tail), so
    a window query only has to add segments.
    """

    def __init__(
        self,
        store: ObjectStore,
        source: str,
        fingerprint: Fingerprint,
        compact_interval: int = DEFAULT_COMPACT_INTERVAL,
    ):
        self.source = check_source(source)
        self.root = store
        self.store = store.child(source)
        self._compaction = Compaction(self.store, self.source, compact_interval)
        self.compact_interval = compact_interval
        self._claims = ClaimLog(self.store, self.source)
        self._commits = CommitLog(self.store, self.source)
        self._rebuild_log = RebuildLog(self.store, self.source)
        self._accounts: dict[int, CommitRecord] | None = None  # batch -> latest rebuild's
        self._index = ClaimIndex()
        self._fingerprint = fingerprint
        self._versions: dict[int, Fingerprint] = {}  # earlier fingerprint versions read
        self._manifest: _Manifest | None = None
        self._manifest_read = False
        self._next = 0
        self._tail: dict[int, Claim] = {}  # claims read after the latest manifest
        self._committed: set[int] = set()  # batches known to have a commit record
        self._unread: dict[int, frozenset[str]] = {}  # batch -> keys it recorded as not read
        self._refreshed = False

    # -- fingerprint -----------------------------------------------------------------------

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
        check_source(source)

        def next_id(current: Fingerprint) -> int:
            return cls(store, source, current, compact_interval).next_batch_id()

        current = fingerprints.settle(store, source, fingerprint, reset, next_id)
        return cls(store, source, current, compact_interval)

    @staticmethod
    def read_fingerprint(store: ObjectStore, source: str) -> Fingerprint | None:
        """The latest fingerprint version of ``source``, or None if the source has no ledger.
        Does not check anything (for inspection tools)."""
        return fingerprints.read_fingerprint(store, source)

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    def fingerprint_changes(self, claim: Claim) -> dict[str, tuple[str | None, str | None]]:
        """What differs between the fingerprint ``claim`` was made under and the ledger's
        current one: ``field -> (then, now)``; empty when equal (same version, or a reset back
        to the same declaration). ``LedgerCorrupt`` if the claim's version is not stored."""
        if claim.fingerprint_version == self._fingerprint.version:
            return {}
        then = self.fingerprint_of(claim)
        return fingerprints.changes(then.values, self._fingerprint.values)

    def fingerprint_of(self, claim: Claim) -> Fingerprint:
        """The fingerprint version ``claim`` was made under (``LedgerCorrupt`` if it is not
        stored)."""
        v = claim.fingerprint_version
        if v == self._fingerprint.version:
            return self._fingerprint
        if v not in self._versions:
            then = fingerprints.read_version(self.root, self.source, v)
            if then is None:
                raise LedgerCorrupt(
                    f"{self.source}: batch {claim.batch_id} names fingerprint version {v}, "
                    "which is not stored"
                )
            self._versions[v] = then
        return self._versions[v]

    # -- reading claims --------------------------------------------------------------------

    def _apply(self, claim: Claim) -> None:
        """Add a claim read (or written) at id ``_next`` to the in-memory state."""
        assert claim.batch_id == self._next
        self._index.add_claim(claim)
        self._tail[claim.batch_id] = claim
        self._next = claim.batch_id + 1

    def _refresh_manifest(self) -> None:
        """Switch to the latest compact snapshot (only ever forward)."""
        m = self._compaction.latest(self._manifest)
        self._manifest_read = True
        if m is None:
            return
        self._manifest = m
        self._index.raise_high_water(m.high_water_key)
        if self._next <= m.upto:
            # Everything up to m.upto exists; what we had read is still covered (and the tail
            # we had not read is covered by m's segments, loaded on demand).
            self._next = m.upto + 1
        for b in [b for b in self._tail if b <= m.upto]:
            del self._tail[b]
        self._committed = {b for b in self._committed if b > m.upto or b in m.uncommitted}

    def _ensure_manifest(self) -> None:
        if not self._manifest_read:
            self._refresh_manifest()

    def refresh(self) -> None:
        """Read the claims created since the last read (O(new claims))."""
        self._ensure_manifest()
        self._refreshed = True
        chunk = 1  # an idle refresh costs one GET; a busy one reads PROBE_CHUNK at a time
        while True:
            found = _parallel(self._claims.get, range(self._next, self._next + chunk))
            for claim in found:
                if claim is None:
                    return
                self._apply(claim)
            chunk = PROBE_CHUNK

    def next_batch_id(self) -> int:
        """The id the next claim will take (after reading new claims)."""
        self.refresh()
        return self._next

    def _load_segment(self, ref: _SegmentRef, raw: bytes | None = None) -> None:
        data = self._compaction.read_segment(ref, raw)
        self._index.add_segment(ref, data, f"{self.source}/{ref.file}")

    def _missing_segments(self, start_key: str) -> list[_SegmentRef]:
        if self._manifest is None:
            return []
        return [
            s
            for s in self._manifest.segments
            if s.max_key >= start_key and not self._index.has_segment(s)
        ]

    def _ensure_from(self, start_key: str) -> None:
        """Load every segment that may hold a key ``>= start_key`` (reading the claims once if
        this ledger has not read them yet)."""
        if not self._refreshed:
            self.refresh()
        self._ensure_manifest()
        missing = self._missing_segments(start_key)
        raws = self._compaction.fetch_segments(missing)
        for ref, raw in zip(missing, raws, strict=True):
            self._load_segment(ref, raw)

    def claim_state(self, start_key: str = "") -> ClaimState:
        """The claim state, refreshed, complete for every key ``>= start_key``.

        Reads the latest compact snapshot's manifest, the segments whose key range reaches
        ``>= start_key`` and the claims after the snapshot. ``start_key=""`` loads the whole
        state (O(claimed keys); for full listings).
        """
        self.refresh()
        self._ensure_from(start_key)
        return self._index.view(self._next, start_key)

    def lookback_start(self, keys: int) -> str | None:
        """The ``start_after`` key for an incremental listing that re-lists the ``keys`` highest
        claimed keys: the ``keys+1``-th highest claimed key, or None when fewer are claimed
        (list everything). Afterwards ``claim_state(result or "")`` is already loaded."""
        if keys < 0:
            raise ValueError("lookback must be >= 0")
        self.refresh()
        while True:
            cand = self._index.nth_highest_key(keys + 1)
            missing = self._missing_segments(cand if cand is not None else "")
            if not missing:
                return cand
            self._load_segment(max(missing, key=lambda s: s.max_key))

    def is_claimed(self, key: str, etag: str) -> bool:
        """Whether ``(key, etag)`` is claimed, as of this ledger's last read of the claims (the
        first call reads them; ``refresh`` or ``claim_state`` read newer ones)."""
        self._ensure_from(key)
        return self._index.batch_of(key, etag) is not None

    # -- writing claims --------------------------------------------------------------------

    def claim(
        self,
        partition: str,
        objects: Sequence[ObjectInfo | ClaimedObject],
        found_by: str = FOUND_BY_LISTING,
    ) -> Claim:
        """Claim ``objects`` as the next batch of ``partition`` (a ``YYYY-MM-DD`` day);
        ``found_by`` (recorded in the claim) is the discovery path that found them.

        Create-only put of ``offsets/<next id>``. Raises ``ClaimConflict`` if another planner
        took that id (the state is then refreshed from it on: re-plan with ``claim_state``),
        ``AlreadyClaimed`` if an object ``(key, etag)`` is already claimed, ``ValueError`` on an
        empty batch, a duplicate key or a malformed day.
        """
        check_day(partition)
        objs = tuple(
            o if isinstance(o, ClaimedObject) else ClaimedObject.from_info(o) for o in objects
        )
        if not objs:
            raise ValueError("a claim needs at least one object")
        keys = [o.key for o in objs]
        if len(set(keys)) != len(keys):
            raise ValueError("a claim may not hold the same key twice")
        self._ensure_from(min(keys))
        for o in objs:
            batch = self._index.batch_of(o.key, o.etag)
            if batch is not None:
                raise AlreadyClaimed(
                    f"source {self.source!r}: {o.key!r} (etag {o.etag}) is already claimed by "
                    f"batch {batch}"
                )
        claim = Claim(
            self.source,
            self._next,
            partition,
            objs,
            utcnow(),
            self._fingerprint.version,
            found_by,
        )
        crash_point("ledger.claim.before_put")
        if not self._claims.add(claim):
            self.refresh()
            raise ClaimConflict(self.source, claim.batch_id)
        crash_point("ledger.claim.after_put")
        self._apply(claim)
        return claim

    def get_claim(self, batch_id: int) -> Claim:
        """The claim of ``batch_id``; ``UnknownBatch`` if there is none."""
        if batch_id in self._tail:
            return self._tail[batch_id]
        claim = self._claims.get(batch_id)
        if claim is None:
            raise UnknownBatch(f"source {self.source!r} has no batch {batch_id}")
        return claim

    def _get_claims(self, ids: Sequence[int]) -> list[Claim]:
        return _parallel(self.get_claim, ids)

    def claims_for_partition(self, day: str) -> list[Claim]:
        """Every claim of partition ``day``, in batch order (for backfill). Uses the compact
        segments' day index, so it reads only the claims of that day plus the claims after the
        latest snapshot."""
        check_day(day)
        self._refresh_manifest()
        self.refresh()
        ids: set[int] = set()
        if self._manifest is not None:
            for ref in self._manifest.segments:
                if day not in ref.days:
                    continue
                if ref.file not in self._index.segment_days:
                    self._load_segment(ref)
                ids.update(b for b, d in self._index.segment_days[ref.file] if d == day)
        ids.update(b for b, c in self._tail.items() if c.partition == day)
        return self._get_claims(sorted(ids))

    # -- commits ---------------------------------------------------------------------------

    def commit_record(self, batch_id: int) -> CommitRecord | None:
        rec = self._commits.get(batch_id)
        if rec is not None:
            self._committed.add(batch_id)
        return rec

    # -- rebuild records ---------------------------------------------------------------------

    def record_rebuild(self, rec: RebuildRecord) -> RebuildRecord:
        """Write ``rebuilds/<table version>.json`` create-only and return the stored record
        (an existing one is returned unchanged)."""
        crash_point("ledger.rebuild_record.before_put")
        stored = self._rebuild_log.add(rec)
        if stored is rec:
            crash_point("ledger.rebuild_record.after_put")
        self._accounts = None
        return stored

    def rebuild_records(self) -> list[RebuildRecord]:
        """Every rebuild record, by ascending table version (O(rebuilds))."""
        recs = [self._rebuild_log.get(v) for v in self._rebuild_log.versions()]
        return [r for r in recs if r is not None]

    def rebuilt_accounts(self) -> dict[int, CommitRecord]:
        """``batch id -> accounting`` from the latest rebuild record (highest table version)
        that re-read the batch; batches never rebuilt are absent. Read once per instance."""
        if self._accounts is None:
            accounts: dict[int, CommitRecord] = {}
            for rec in self.rebuild_records():
                accounts.update(rec.batches)
            self._accounts = accounts
        return self._accounts

    def account(self, batch_id: int) -> CommitRecord | None:
        """What the batch's objects contributed as the table holds them now: the latest
        rebuild record's accounting of the batch, else its commit record, else None."""
        rebuilt = self.rebuilt_accounts().get(batch_id)
        return rebuilt if rebuilt is not None else self.commit_record(batch_id)

    def was_read(self, key: str, etag: str) -> bool | None:
        """Whether the claimed version ``(key, etag)`` was read by its batch: None if it is not
        claimed (as of the last read of the claims) or its batch has no commit record yet;
        False if the batch (or the latest rebuild that re-read it) recorded it as changed/gone
        before read. Answers are cached per instance."""
        batch = self._index.batch_of(key, etag)
        if batch is None:
            return None
        if batch not in self._unread:
            if self.commit_record(batch) is None:
                return None
            rec = self.account(batch)
            assert rec is not None
            self._unread[batch] = frozenset(rec.unread or ())
        return key not in self._unread[batch]

    def record_commit(self, rec: CommitRecord) -> CommitRecord:
        """Write ``commits/<batch>.json`` create-only and return the stored record. If a record
        already exists it is returned unchanged (never overwritten). ``UnknownBatch`` if the
        batch was never claimed."""
        if rec.batch_id >= self._next:
            self.get_claim(rec.batch_id)  # UnknownBatch if it was never claimed
        crash_point("ledger.commit_record.before_put")
        stored = self._commits.add(rec)
        if stored is rec:
            crash_point("ledger.commit_record.after_put")
        self._committed.add(rec.batch_id)
        return stored

    def _has_commit(self, batch_id: int) -> bool:
        if batch_id in self._committed:
            return True
        if self._commits.exists(batch_id):
            self._committed.add(batch_id)
            return True
        return False

    def _uncommitted_ids(self) -> list[int]:
        """Batch ids without a commit record (after refreshing the manifest and the claims)."""
        self._refresh_manifest()
        self.refresh()
        m = self._manifest
        candidates = list(m.uncommitted) if m else []
        candidates += range(m.upto + 1 if m else 0, self._next)
        candidates = [b for b in candidates if b not in self._committed]
        done = _parallel(self._has_commit, candidates)
        return [b for b, d in zip(candidates, done, strict=True) if not d]

    def pending(self) -> list[Claim]:
        """Claims without a commit record, in batch order. Reads the uncommitted ids listed in
        the latest compact snapshot and the commit records after it, not the whole history."""
        return self._get_claims(self._uncommitted_ids())

    # -- compaction ------------------------------------------------------------------------

    def maybe_compact(self) -> int | None:
        """Write a compact snapshot at the latest multiple of ``compact_interval`` (``upto`` =
        k*interval - 1) if it is newer than the latest one; returns its ``upto`` or None.
        Create-only: a concurrent compactor of the same ``upto`` wins harmlessly."""
        self.refresh()
        upto = self._compaction.due(self._next)
        if upto < 0 or (self._manifest is not None and self._manifest.upto >= upto):
            return None
        self._refresh_manifest()
        if self._manifest is not None and self._manifest.upto >= upto:
            return None
        return self.compact(upto)

    def compact(self, upto: int) -> int:
        """Write a compact snapshot of the claims ``0..upto`` (which must all exist) unless one
        at ``upto`` or later exists; returns ``upto``. See ``ledger_compaction``."""
        self._refresh_manifest()
        self.refresh()
        base = self._manifest
        if base is not None and base.upto >= upto:
            return upto
        if upto >= self._next:
            raise ValueError(
                f"source {self.source!r}: cannot compact up to batch {upto}: "
                f"only {self._next} batches are claimed"
            )
        self._compaction.compact(base, upto, self._get_claims, self._has_commit)
        self._refresh_manifest()
        return upto

    def last_compaction(self) -> int | None:
        """``upto`` of the latest compact snapshot, or None."""
        self._refresh_manifest()
        return self._manifest.upto if self._manifest else None

    def summary(self) -> LedgerSummary:
        pending = tuple(self._uncommitted_ids())
        m = self._manifest
        return LedgerSummary(
            source=self.source,
            claims=self._next,
            committed=self._next - len(pending),
            pending=pending,
            high_water_key=self._index.high_water,
            last_compaction=m.upto if m else None,
            compacted_claimed_objects=m.claimed_objects if m else 0,
            fingerprint=self._fingerprint,
        )
