"""Discovery: list a source's landing store, find objects not claimed yet, cut them into batches
and claim them in the ledger. Pure planning logic: no Dagster imports.

Rules (each is a contract the sensor relies on):

* **Listing.** An incremental tick lists ``landing`` (rooted at the source's landing URL) under
  ``rule.prefix`` with ``start_after`` = the ``lookback_keys + 1``-th highest claimed key, so it
  re-lists the ``lookback_keys`` highest claimed keys and everything after them: O(new objects +
  window). A full listing (``full_listing=True``) lists everything and catches keys that arrived
  out of lexicographic order below the window. When to do a full listing is decided by the
  caller from a tick counter it keeps (``full_listing_due``), never from wall-clock ordering.
* **Skipped names.** A key with any path segment starting with ``.`` or ``_``, or ending with
  ``.tmp`` or ``._COPYING_``, is an in-progress or hidden file: it is never claimed.
* **Identity.** An object is ``(key, etag)``. An object already claimed is skipped. A claimed key
  listed with a new etag is *overwritten*: it is reported, and claimed again only when
  ``rule.allow_overwrites``.
* **Partition.** The day is the first group of ``rule.partition_regex`` searched in the key
  (``YYYY-MM-DD``); a key that does not match takes its last-modified day (UTC). A match that is
  not a valid date is out of range (reason ``invalid_day``).
* **Days out of range.** Days before ``rule.partition_start`` (reason ``before_start``) and after
  ``today`` (UTC; reason ``future``) are not claimed; they are reported each time they are
  listed. Future days wait: they are claimed by the first tick that lists them once the day has
  arrived (an incremental tick lists them again while they are above the claimed window; below
  it, the next full listing finds them).
* **Batches.** Per day, in key order, cut greedily so a batch has at most
  ``max_files_per_batch`` objects and ``max_bytes_per_batch`` bytes; an object larger than
  ``max_bytes_per_batch`` is a batch of its own. Days are claimed in ascending order.
* **Bounded tick.** At most ``max_claims_per_tick`` claims are written per call; the objects left
  over are counted as ``deferred`` and claimed by later ticks.
* **Races.** On ``ClaimConflict`` (another planner took the batch id) the ledger has re-read
  the claims; the remaining plan drops the objects now claimed and is cut again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from resources.ledger import Claim, Ledger
from resources.store import ObjectInfo, ObjectStore

TEMP_SUFFIXES = (".tmp", "._COPYING_")
MAX_CONFLICTS_PER_TICK = 1000


@dataclass(frozen=True)
class DiscoveryRule:
    """How one source's landing objects become batches.

    ``lookback_keys``: an incremental listing re-lists this many of the highest claimed keys
    (a key-count window: independent of key naming, and cheap to find from the compact state).
    ``full_listing_every``: a full listing every N ticks (0: only when the caller asks, e.g. on
    the first tick without a cursor).
    """

    prefix: str = ""
    partition_regex: str | None = r"(\d{4}-\d{2}-\d{2})"
    partition_start: date | None = None
    max_files_per_batch: int = 1000
    max_bytes_per_batch: int = 1 << 30
    allow_overwrites: bool = False
    lookback_keys: int = 1000
    full_listing_every: int = 100
    max_claims_per_tick: int = 100

    def __post_init__(self) -> None:
        raise NotImplementedError

    @property
    def compiled_regex(self) -> re.Pattern[str] | None:
        raise NotImplementedError


@dataclass(frozen=True)
class OutOfRange:
    """An object not claimed because of its day: ``reason`` is ``before_start``, ``future`` or
    ``invalid_day``."""

    key: str
    etag: str
    day: str
    reason: str


@dataclass
class DiscoveryResult:
    """What one discovery call did."""

    claims: list[Claim] = field(default_factory=list)
    listed: int = 0  # objects returned by the listing (hidden names included)
    skipped_hidden: int = 0
    skipped_claimed: int = 0
    overwritten: list[ObjectInfo] = field(default_factory=list)  # claimed key, new etag
    out_of_range: list[OutOfRange] = field(default_factory=list)
    deferred: int = 0  # claimable objects left for later ticks (max_claims_per_tick)
    conflicts: int = 0  # ClaimConflicts met (and re-planned)
    full_listing: bool = False
    start_after: str | None = None
    list_requests: int | None = None  # LIST calls made, if the store counts them

    @property
    def claimed_objects(self) -> int:
        return sum(len(c.objects) for c in self.claims)

    def out_of_range_counts(self) -> dict[str, int]:
        """``reason -> number of objects``."""
        raise NotImplementedError


def is_hidden(key: str) -> bool:
    """True for temporary or hidden names (never claimed)."""
    raise NotImplementedError


def partition_of(info: ObjectInfo, rule: DiscoveryRule) -> str | None:
    """The object's day ``YYYY-MM-DD``, or None if the regex matched an invalid date."""
    raise NotImplementedError


def cut_batches(
    objects: list[ObjectInfo], max_files: int, max_bytes: int
) -> list[list[ObjectInfo]]:
    """Cut ``objects`` (one day, in order) into consecutive batches within the limits; an object
    larger than ``max_bytes`` is a batch of its own."""
    raise NotImplementedError


def full_listing_due(ticks_since_full: int | None, rule: DiscoveryRule) -> bool:
    """Whether this tick should list everything. ``ticks_since_full`` is the number of ticks
    since the last full listing, kept by the caller (e.g. in the sensor cursor); None (no
    cursor, e.g. the first tick) means due."""
    raise NotImplementedError


def discover(
    landing: ObjectStore,
    ledger: Ledger,
    rule: DiscoveryRule,
    full_listing: bool = False,
    today: date | None = None,
) -> DiscoveryResult:
    """List, filter, cut and claim (see the module docstring). Returns the new claims and the
    counts. Raises only on store or ledger errors (a ``ClaimConflict`` is handled)."""
    raise NotImplementedError
