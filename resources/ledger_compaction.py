"""Compaction of the claim log, like Spark's ``CompactibleFileStreamLog``.

Layout on the source's sub-store of the ledger root::

    compact/<upto:020d>.json                     manifest of the compact snapshot of 0..upto
    segments/<from:020d>-<upto:020d>.json        claimed keys and days of the batches from..upto

Contract:

* Compaction only summarises immutable claims (and commit records, which only ever appear), so
  a compact snapshot is valid forever. Every write is create-only.
* A segment's content is a pure function of its claims: an existing segment (a crashed
  compaction's) is reused when identical and reported ``LedgerCorrupt`` when not. A crash
  between the segments and the manifest leaves at worst unreferenced segments.
* Segments never span more than ``interval`` batches (cut at multiples of it), even when
  compaction lagged, so a window query reads a bounded amount of state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from lockgate.resources.crashpoints import crash_point
from lockgate.resources.ledger_records import (
    FORMAT_VERSION,
    Claim,
    LedgerCorrupt,
    _dumps,
    _loads,
    _Manifest,
    _parallel,
    _SegmentRef,
    batch_name,
    utcnow,
)
from lockgate.resources.store import AlreadyExists, ObjectStore

COMPACT = "compact/"
SEGMENTS = "segments/"


class Compaction:
    """Reads and writes the compact snapshots of one source's claims (see the module
    contract). Holds no state besides its store and interval."""

    def __init__(self, store: ObjectStore, source: str, interval: int) -> None:
        if interval < 1:
            raise ValueError("compact_interval must be >= 1")
        self.store = store
        self.source = source
        self.interval = interval

    def due(self, next_batch_id: int) -> int:
        """``upto`` of the latest snapshot the claims ``< next_batch_id`` allow (the latest
        multiple of ``interval``, minus one; -1: none yet)."""
        return (next_batch_id // self.interval) * self.interval - 1

    def latest(self, after: _Manifest | None = None) -> _Manifest | None:
        """The latest manifest newer than ``after`` (listing only names after it), or None."""
        start = COMPACT + batch_name(after.upto) if after is not None else None
        names = [o.key for o in self.store.list(COMPACT, start_after=start)]
        names = [n for n in names if n.endswith(".json")]
        if not names:
            return None
        name = max(names)
        m = _Manifest.from_json(_loads(self.store.get(name), f"{self.source}/{name}"))
        return m if after is None or m.upto > after.upto else None

    def read_segment(self, ref: _SegmentRef, raw: bytes | None = None) -> dict[str, Any]:
        """The content of the segment ``ref`` (``raw``: its bytes, when already fetched)."""
        return _loads(raw or self.store.get(ref.file), f"{self.source}/{ref.file}")

    def fetch_segments(self, refs: Sequence[_SegmentRef]) -> list[bytes]:
        """The bytes of ``refs``, fetched in parallel."""
        return _parallel(lambda i: self.store.get(refs[i].file), range(len(refs)))

    def compact(
        self,
        base: _Manifest | None,
        upto: int,
        get_claims: Callable[[Sequence[int]], list[Claim]],
        has_commit: Callable[[int], bool],
    ) -> None:
        """Write the snapshot of the claims ``0..upto`` on top of ``base`` (the latest one,
        ``upto`` > its own): the segments of the claims after ``base``, then the manifest."""
        first = base.upto + 1 if base else 0
        refs: list[_SegmentRef] = []
        lo = first
        while lo <= upto:
            hi = min(upto, (lo // self.interval + 1) * self.interval - 1)
            refs.append(self.write_segment(get_claims(range(lo, hi + 1))))
            lo = hi + 1
        crash_point("ledger.compact.after_segment")
        candidates = (list(base.uncommitted) if base else []) + list(range(first, upto + 1))
        done = _parallel(has_commit, candidates)
        uncommitted = tuple(b for b, d in zip(candidates, done, strict=True) if not d)
        high = max(
            k for k in (base.high_water_key if base else None, *(r.max_key for r in refs)) if k
        )
        manifest = _Manifest(
            upto=upto,
            high_water_key=high,
            committed_below=min(uncommitted) if uncommitted else upto + 1,
            uncommitted=uncommitted,
            segments=(*(base.segments if base else ()), *refs),
            created_at=utcnow(),
        )
        # AlreadyExists: a concurrent compactor wrote an equivalent snapshot first.
        with contextlib.suppress(AlreadyExists):
            self.store.put_if_absent(
                COMPACT + batch_name(upto), _dumps(manifest.to_json(self.source))
            )
        crash_point("ledger.compact.after_put")

    def write_segment(self, claims: Sequence[Claim]) -> _SegmentRef:
        """Create-only put of the segment of ``claims`` (consecutive batches), or reuse of an
        identical existing one."""
        first, upto = claims[0].batch_id, claims[-1].batch_id
        entries = sorted((o.key, o.etag, c.batch_id) for c in claims for o in c.objects)
        seg_file = f"{SEGMENTS}{first:020d}-{upto:020d}.json"
        seg_body = _dumps(
            {
                "format": FORMAT_VERSION,
                "source": self.source,
                "from": first,
                "upto": upto,
                "keys": [list(e) for e in entries],
                "batches": [[c.batch_id, c.partition] for c in claims],
            }
        )
        crash_point("ledger.compact.before_put")
        try:
            self.store.put_if_absent(seg_file, seg_body)
        except AlreadyExists:
            if self.store.get(seg_file) != seg_body:
                raise LedgerCorrupt(
                    f"{self.source}/{seg_file} differs from the claims it summarises"
                ) from None
        return _SegmentRef(
            file=seg_file,
            first=first,
            upto=upto,
            min_key=entries[0][0],
            max_key=entries[-1][0],
            objects=len(entries),
            days=tuple(sorted({c.partition for c in claims})),
        )
