"""The batch marker: a compact set of committed batch ids, stored as a table property.

``IdRanges`` is Lockgate's one range set (also the ledger's set of batches it has read).

A source's committed batch ids live in the table property ``lockgate.committed.<source>``
as sorted, disjoint, non-adjacent inclusive ranges: ``"0-811,813-900"`` (a single id is
written ``"812"``; the empty set is ``""``). Markers live in table properties, not in
snapshot summaries, so snapshot expiry never erases them.

Invariant: an ``IdRanges`` is always normalised (sorted, merged), so two equal sets have
equal text and the text's length is O(number of gaps), not O(number of ids).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MARKER_PREFIX = "lockgate.committed."
_SOURCE_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_RANGE_RE = re.compile(r"^(\d+)(?:-(\d+))?$")


def marker_property(source: str) -> str:
    """The table property that holds ``source``'s marker; ``ValueError`` on a bad name."""
    if not _SOURCE_RE.match(source):
        raise ValueError(f"invalid source name {source!r} (letters, digits, '_', '.', '-')")
    return MARKER_PREFIX + source


@dataclass(frozen=True)
class IdRanges:
    """An immutable set of non-negative integer ids as inclusive ``(lo, hi)`` ranges."""

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> IdRanges:
        """Parse ``"0-811,813-900"``; ``None``/``""`` is the empty set.

        Raises ``ValueError`` on malformed text (a corrupt marker must never read as empty).
        """
        if text is None or not text.strip():
            return cls()
        pairs: list[tuple[int, int]] = []
        for part in text.split(","):
            m = _RANGE_RE.match(part.strip())
            if not m:
                raise ValueError(f"malformed id range {part!r} in marker {text!r}")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                raise ValueError(f"descending id range {part!r} in marker {text!r}")
            pairs.append((lo, hi))
        return cls(_normalise(pairs))

    @classmethod
    def of(cls, ids: Iterable[int]) -> IdRanges:
        """The set of ``ids``."""
        out = cls()
        pairs: list[tuple[int, int]] = []
        for i in ids:
            _check_id(i)
            pairs.append((i, i))
        return cls(_normalise(pairs)) if pairs else out

    def format(self) -> str:
        """The canonical text form (the inverse of ``parse``)."""
        return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)

    def __str__(self) -> str:
        return self.format()

    def add(self, id_: int) -> IdRanges:
        """A new set with ``id_`` added."""
        _check_id(id_)
        if id_ in self:
            return self
        return IdRanges(_normalise([*self.ranges, (id_, id_)]))

    def add_range(self, lo: int, hi: int) -> IdRanges:
        """A new set with every id of ``lo..hi`` (inclusive) added; an empty range adds none."""
        if hi < lo:
            return self
        _check_id(lo)
        if self.covers(lo, hi):
            return self
        return IdRanges(_normalise([*self.ranges, (lo, hi)]))

    def covers(self, lo: int, hi: int) -> bool:
        """Whether every id of ``lo..hi`` (inclusive, non-empty) is in the set."""
        i = bisect.bisect_right(self.ranges, (lo, float("inf"))) - 1
        return i >= 0 and self.ranges[i][0] <= lo and hi <= self.ranges[i][1]

    def union(self, other: IdRanges | Iterable[int]) -> IdRanges:
        """A new set with every id of ``self`` and ``other``."""
        if not isinstance(other, IdRanges):
            other = IdRanges.of(other)
        return IdRanges(_normalise([*self.ranges, *other.ranges]))

    def difference(self, other: IdRanges | Iterable[int]) -> IdRanges:
        """A new set with the ids of ``self`` that are not in ``other``."""
        if not isinstance(other, IdRanges):
            other = IdRanges.of(other)
        out: list[tuple[int, int]] = []
        for lo, hi in self.ranges:
            cur = lo
            for olo, ohi in other.ranges:
                if ohi < cur or olo > hi:
                    continue
                if olo > cur:
                    out.append((cur, olo - 1))
                cur = max(cur, ohi + 1)
                if cur > hi:
                    break
            if cur <= hi:
                out.append((cur, hi))
        return IdRanges(_normalise(out))

    def issubset(self, other: IdRanges) -> bool:
        return not self.difference(other)

    def __contains__(self, id_: object) -> bool:
        if not isinstance(id_, int):
            return False
        i = bisect.bisect_right(self.ranges, (id_, float("inf"))) - 1
        return i >= 0 and self.ranges[i][0] <= id_ <= self.ranges[i][1]

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)

    def max(self) -> int | None:
        """The highest id, or ``None`` for the empty set."""
        return self.ranges[-1][1] if self.ranges else None


def _check_id(id_: int) -> None:
    if not isinstance(id_, int) or isinstance(id_, bool) or id_ < 0:
        raise ValueError(f"batch id must be a non-negative int, got {id_!r}")


def _normalise(pairs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(pairs):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)
