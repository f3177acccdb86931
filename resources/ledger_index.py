"""The in-memory index of claimed keys, apart from the log (like Spark's ``SeenFilesMap``).

``ClaimIndex`` maps ``key -> {etag: batch}`` for the batches it has been fed (``covered``),
from claims read one by one and from compact segments loaded on demand; it also keeps the
highest claimed key and the day of every batch of a loaded segment. It reads nothing itself.

Contract: claims are immutable, so the index only ever grows, and every answer it gave stays
true. ``ClaimState`` is a read-only view of it, complete for the keys ``>= complete_from``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from typing import Any

from lockgate.resources.ledger_records import Claim, LedgerCorrupt, _SegmentRef
from lockgate.resources.markers import IdRanges


class ClaimIndex:
    """Claimed keys of the batches in ``covered`` (see the module contract)."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, int]] = {}
        self.covered = IdRanges()
        self.high_water: str | None = None
        self.segment_days: dict[str, list[tuple[int, str]]] = {}  # loaded segment -> batches

    def add_claim(self, claim: Claim) -> None:
        for o in claim.objects:
            self.keys.setdefault(o.key, {})[o.etag] = claim.batch_id
            self.raise_high_water(o.key)
        self.covered = self.covered.add_range(claim.batch_id, claim.batch_id)

    def add_segment(self, ref: _SegmentRef, data: Mapping[str, Any], what: str) -> None:
        """Add a segment's content (``keys``: ``[key, etag, batch]``; ``batches``: ``[batch,
        day]``); ``LedgerCorrupt`` if it is malformed."""
        try:
            for key, etag, batch in data["keys"]:
                self.keys.setdefault(key, {})[etag] = batch
            self.segment_days[ref.file] = [(int(b), str(d)) for b, d in data["batches"]]
        except (KeyError, TypeError, ValueError) as e:
            raise LedgerCorrupt(f"{what}: malformed segment ({e})") from e
        self.covered = self.covered.add_range(ref.first, ref.upto)

    def raise_high_water(self, key: str | None) -> None:
        if key is not None and (self.high_water is None or key > self.high_water):
            self.high_water = key

    def has_segment(self, ref: _SegmentRef) -> bool:
        """Whether every batch of ``ref`` is already indexed."""
        return self.covered.covers(ref.first, ref.upto)

    def batch_of(self, key: str, etag: str) -> int | None:
        return self.keys.get(key, {}).get(etag)

    def nth_highest_key(self, n: int) -> str | None:
        """The ``n``-th highest indexed key (1-based), or None when fewer are indexed."""
        top = heapq.nlargest(n, self.keys)
        return top[-1] if len(top) == n else None

    def view(self, next_batch_id: int, complete_from: str) -> ClaimState:
        return ClaimState(self.keys, next_batch_id, self.high_water, complete_from)


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
