"""Discovery: list a source's landing store, find objects not claimed yet, cut them into batches
and claim them in the ledger. Pure planning logic: no Dagster imports.

Rules (each is a contract the sensor relies on):

* **Listing.** An incremental tick lists ``landing`` (rooted at the source's landing URL) under
  ``rule.prefix`` with ``start_after`` = the ``lookback_keys + 1``-th highest claimed key, so it
  re-lists the ``lookback_keys`` highest claimed keys and everything after them: O(new objects +
  window). A full listing (``full_listing=True``) lists everything and catches keys that arrived
  out of lexicographic order below the window. When to do a full listing is decided by the
  caller from a tick counter it keeps (``full_listing_due``), never from wall-clock ordering.
* **Bounded listings.** With ``rule.max_keys_listed_per_tick`` (``N``; 0: unbounded) a call lists
  at most ``N`` keys in each of its listings, so its time is bounded whatever the bucket size.
  A full listing is then a *pass* spread over calls: each call lists the next ``N`` keys after
  ``full_from`` (None: from the first key) and returns the continuation in ``full_next`` (None
  once the pass reached the last key), which the caller keeps (the sensor cursor) and hands to
  the next call. A call of a pass also lists incrementally (O(new), keys listed by both are
  taken once), so new objects never wait for a pass to end; it skips that listing only when
  its pass listing already covered every key from the window on. A key that lands ahead of the
  continuation is found by this pass, one behind it by the incremental listing (above the
  window) or the next pass. An incremental listing cut at ``N`` keys (``truncated``) resumes
  from the window next time: the claims it made move the window up; keys it never reaches
  (e.g. ``N`` unclaimable keys in a row) are found by the next pass.
* **Listings bounded in time.** With ``rule.max_listing_s`` (``T``; 0: no time bound) each
  listing of a call also stops at the first page boundary (every ``page_size`` keys of the
  store; 1 for a store without pages) reached once ``T`` seconds have passed since that listing
  began, exactly as if the key bound had been hit there (``full_next``, ``truncated``): on a
  store whose LIST pages are slow (an S3 imitation scanning the whole bucket per page, a
  throttled bucket) a tick lists what fits in ``T`` plus at most one page per listing, and the
  pass continues on the next tick. A pass listing always takes at least its first page, and an
  incremental listing is never cut by time inside its look-back window (at least one page past
  ``lookback_keys``), so both make progress. ``result.cut_by_time`` says a listing of the call
  stopped at the time bound.
* **Skipped names.** A key with any path segment starting with ``.`` or ``_``, or ending with
  ``.tmp`` or ``._COPYING_``, is an in-progress or hidden file: it is never claimed.
* **Names that cannot be claimed.** A key that is not valid Unicode (a local file name that is
  not UTF-8 comes back with surrogate escapes) cannot be written into a claim: it is skipped
  and counted in ``skipped_unsafe`` (with a few examples), never blocking the other objects.
  Entries a store leaves out of its listing (a local folder's symbolic links and special
  files: ``LocalStore.skipped``) are counted there too.
* **Identity.** An object is ``(key, etag)``. An object already claimed is skipped. A claimed key
  listed with a new etag is *overwritten*: it is reported, and claimed again only when
  ``rule.allow_overwrites``. Except: when every claimed version of the key was recorded by its
  batch as *changed before read* or *gone before read* (``Ledger.was_read`` is False), none of
  them counts as ingested, so the listed version is a NEW object and is claimed (DESIGN, "When
  the world changes under a batch"). While a claimed version's batch has no commit record yet,
  the key stays *overwritten* until the batch records what it read.
* **Stability.** An object whose ``last_modified`` is less than ``rule.min_age_s`` before
  ``now`` may still be being written: it is not claimed (counted as ``too_young``) and is
  listed again by a later tick.
* **Partition.** The day is ``rule.partition_day(key, last_modified)`` when given (the
  configured source's rule: ``rule_for_source``); otherwise ``rule.partition_regex`` searched in
  the key: named groups ``year``/``month``/``day``, else the first group (``YYYY-MM-DD``,
  ``YYYYMMDD`` or ``YYYY/MM/DD``); a key that does not match takes its last-modified day (UTC).
  A match that is not a valid date is out of range (reason ``invalid_day``).
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
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from lockgate.resources.crashpoints import crash_point
from lockgate.resources.days import day_from_match, utc_day
from lockgate.resources.ledger import (
    FOUND_BY_LISTING,
    FOUND_BY_NOTIFICATIONS,
    Claim,
    ClaimConflict,
    ClaimState,
    Ledger,
)
from lockgate.resources.store import ObjectInfo, ObjectStore

TEMP_SUFFIXES = (".tmp", "._COPYING_")
MAX_CONFLICTS_PER_TICK = 1000
OUT_OF_RANGE_REASONS = ("before_start", "future", "invalid_day")
MAX_SKIPPED_EXAMPLES = 5
SKIPPED_NOT_UTF8 = "name is not valid UTF-8"


@dataclass(frozen=True)
class DiscoveryRule:
    """How one source's landing objects become batches.

    ``prefix``: only keys under it (relative to the landing root) are listed; "" lists all.
    ``partition_regex``: searched in the key; its first group is the day (``YYYY-MM-DD``);
    None: always the last-modified day (UTC).
    ``lookback_keys``: an incremental listing re-lists this many of the highest claimed keys
    (a key-count window: independent of key naming, and cheap to find from the compact state).
    ``full_listing_every``: a full listing every N ticks (0: only when the caller asks, e.g. on
    the first tick without a cursor).
    """

    prefix: str = ""
    partition_regex: str | None = r"(\d{4}-\d{2}-\d{2})"
    # When set, it decides the day instead of ``partition_regex`` (e.g. the configured
    # ``SourceConfig.partition_day``, so discovery and the config agree by construction).
    partition_day: Callable[[str, datetime], date] | None = field(default=None, compare=False)
    partition_start: date | None = None
    max_files_per_batch: int = 1000
    max_bytes_per_batch: int = 1 << 30
    allow_overwrites: bool = False
    lookback_keys: int = 1000
    full_listing_every: int = 100
    max_claims_per_tick: int = 100
    min_age_s: float = 0.0
    max_keys_listed_per_tick: int = 0  # per listing of one call; 0: unbounded
    max_listing_s: float = 0.0  # seconds per listing of one call, at page boundaries; 0: none

    def __post_init__(self) -> None:
        if not self.min_age_s >= 0:
            raise ValueError("min_age_s must be >= 0")
        if self.max_files_per_batch < 1:
            raise ValueError("max_files_per_batch must be >= 1")
        if self.max_bytes_per_batch < 1:
            raise ValueError("max_bytes_per_batch must be >= 1")
        if self.lookback_keys < 0:
            raise ValueError("lookback_keys must be >= 0")
        if self.full_listing_every < 0:
            raise ValueError("full_listing_every must be >= 0")
        if self.max_claims_per_tick < 1:
            raise ValueError("max_claims_per_tick must be >= 1")
        if self.max_keys_listed_per_tick < 0:
            raise ValueError("max_keys_listed_per_tick must be >= 0")
        if not self.max_listing_s >= 0:
            raise ValueError("max_listing_s must be >= 0")
        if self.prefix.startswith("/"):
            raise ValueError(f"prefix {self.prefix!r} must be relative to the landing root")
        if self.partition_regex is not None:
            try:
                rx = re.compile(self.partition_regex)
            except re.error as e:
                raise ValueError(f"partition_regex {self.partition_regex!r}: {e}") from e
            if rx.groups < 1 and not {"year", "month", "day"} <= set(rx.groupindex):
                raise ValueError(
                    f"partition_regex {self.partition_regex!r} needs a group capturing the day"
                )

    @property
    def compiled_regex(self) -> re.Pattern[str] | None:
        # not cached on the instance: ``rule.__dict__`` holds exactly the fields (callers
        # rebuild rules with ``DiscoveryRule(**{**rule.__dict__, ...})``); ``re`` caches.
        return re.compile(self.partition_regex) if self.partition_regex is not None else None


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
    #: Objects that can never be claimed, by reason (names not UTF-8, symbolic links, ...).
    skipped_unsafe: dict[str, int] = field(default_factory=dict)
    skipped_examples: list[str] = field(default_factory=list)  # ASCII renderings, at most 5
    overwritten: list[ObjectInfo] = field(default_factory=list)  # claimed key, new etag
    out_of_range: list[OutOfRange] = field(default_factory=list)
    deferred: int = 0  # claimable objects left for later ticks (max_claims_per_tick)
    too_young: int = 0  # changed less than min_age_s ago: listed again by a later tick
    reclaimed_unread: int = 0  # new versions of keys whose claimed versions were never read
    conflicts: int = 0  # ClaimConflicts met (and re-planned)
    full_listing: bool = False
    start_after: str | None = None  # where the incremental listing started (see discover)
    list_requests: int | None = None  # LIST calls made, if the store counts them
    #: ``(key, etag)`` of the objects a later call may still claim (too young, a future day,
    #: deferred); filled only when the caller asks (``claim_objects(track_waiting=True)``).
    waiting: set[tuple[str, str]] = field(default_factory=set)
    full_from: str | None = None  # where this call's part of a full-listing pass started
    #: The continuation of an unfinished full-listing pass (the last key it listed); None when
    #: the pass is complete or this call did no full listing.
    full_next: str | None = None
    truncated: bool = False  # the incremental listing stopped at max_keys_listed_per_tick
    #: A listing of this call stopped at ``max_listing_s`` (before the key bound, if any).
    cut_by_time: bool = False

    @property
    def claimed_objects(self) -> int:
        return sum(len(c.objects) for c in self.claims)

    def skip(self, reason: str, key: str | None = None, n: int = 1) -> None:
        """Count ``n`` objects that cannot be claimed for ``reason``."""
        self.skipped_unsafe[reason] = self.skipped_unsafe.get(reason, 0) + n
        if key is not None and len(self.skipped_examples) < MAX_SKIPPED_EXAMPLES:
            self.skipped_examples.append(ascii(key))

    def out_of_range_counts(self) -> dict[str, int]:
        """``reason -> number of objects``."""
        counts: dict[str, int] = {}
        for o in self.out_of_range:
            counts[o.reason] = counts.get(o.reason, 0) + 1
        return counts


def is_hidden(key: str) -> bool:
    """True for temporary or hidden names (never claimed): any path segment starting with
    ``.`` or ``_``, or a name ending with ``.tmp`` / ``._COPYING_``."""
    if key.endswith(TEMP_SUFFIXES):
        return True
    return any(part.startswith((".", "_")) for part in key.split("/"))


def representable(key: str) -> bool:
    """Whether ``key`` can be written into a claim (UTF-8; no surrogate escapes)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def partition_of(info: ObjectInfo, rule: DiscoveryRule) -> str | None:
    """The object's day ``YYYY-MM-DD``, or None if the regex matched an invalid date."""
    if rule.partition_day is not None:
        try:
            return rule.partition_day(info.key, info.last_modified).isoformat()
        except ValueError:
            return None
    rx = rule.compiled_regex
    m = rx.search(info.key) if rx is not None else None
    if m is None:
        return utc_day(info.last_modified).isoformat()
    day = day_from_match(m)
    return day.isoformat() if day is not None else None


def rule_for_source(source: Any, **overrides: Any) -> DiscoveryRule:
    """The rule of a configured source (``SourceConfig``): its partition rule
    (``partition_day``, so both agree), start day, batch limits and overwrite policy;
    ``overrides`` set the remaining fields (``lookback_keys``, ``max_claims_per_tick``, ...)."""
    fields: dict[str, Any] = {
        "partition_regex": None,
        "partition_day": source.partition_day,
        "partition_start": source.partition_start,
        "max_files_per_batch": source.max_files_per_batch,
        "max_bytes_per_batch": source.max_bytes_per_batch,
        "allow_overwrites": source.allow_overwrites,
        "min_age_s": source.effective_min_age_s,
    }
    fields.update(overrides)
    return DiscoveryRule(**fields)


def cut_batches(
    objects: list[ObjectInfo], max_files: int, max_bytes: int
) -> list[list[ObjectInfo]]:
    """Cut ``objects`` (one day, in order) into consecutive batches within the limits; an object
    larger than ``max_bytes`` is a batch of its own."""
    batches: list[list[ObjectInfo]] = []
    cur: list[ObjectInfo] = []
    cur_bytes = 0
    for o in objects:
        if cur and (len(cur) >= max_files or cur_bytes + o.size > max_bytes):
            batches.append(cur)
            cur, cur_bytes = [], 0
        cur.append(o)
        cur_bytes += o.size
    if cur:
        batches.append(cur)
    return batches


def full_listing_due(ticks_since_full: int | None, rule: DiscoveryRule) -> bool:
    """Whether this tick should list everything. ``ticks_since_full`` is the number of ticks
    since the last full listing, kept by the caller (e.g. in the sensor cursor); None (no
    cursor, e.g. the first tick) means due."""
    if ticks_since_full is None:
        return True
    return rule.full_listing_every > 0 and ticks_since_full + 1 >= rule.full_listing_every


def _listing_timer(
    store: ObjectStore, budget_s: float, clock: Callable[[], float]
) -> Callable[[int], bool]:
    """``out_of_time(n)``: whether a listing that began now and has taken ``n`` keys should
    stop there: ``budget_s`` has passed and ``n`` ends a page of ``store`` (its ``page_size``;
    1 for a store without pages), so no page is fetched and then dropped. Never with
    ``budget_s`` 0."""
    if budget_s <= 0:
        return lambda n: False
    page = getattr(store, "page_size", 1)
    page = page if isinstance(page, int) and page > 0 else 1
    deadline = clock() + budget_s
    return lambda n: n % page == 0 and clock() >= deadline


def _list_count(store: ObjectStore) -> int | None:
    n = getattr(store, "list_requests", None)
    return n if isinstance(n, int) else None


def _store_skipped(store: ObjectStore) -> dict[str, int]:
    """The store's cumulative ``skipped`` counts (``LocalStore``), else none."""
    skipped = getattr(store, "skipped", None)
    return dict(skipped) if isinstance(skipped, dict) else {}


class _Planner:
    """Classifies listed objects against the claim state and keeps the claimable ones per day."""

    def __init__(
        self,
        rule: DiscoveryRule,
        today: date,
        now: datetime,
        result: DiscoveryResult,
        was_read: Callable[[str, str], bool | None],
        track_waiting: bool = False,
    ):
        self.rule = rule
        self.today = today
        self.now = now
        self.result = result
        self.was_read = was_read
        self.track_waiting = track_waiting
        self.by_day: dict[str, list[ObjectInfo]] = defaultdict(list)

    def wait(self, objs: list[ObjectInfo]) -> None:
        """Note ``objs`` as claimable by a later call (when tracked)."""
        if self.track_waiting:
            self.result.waiting.update((o.key, o.etag) for o in objs)

    def _never_read(self, key: str, etags: frozenset[str]) -> bool:
        """Every claimed version of ``key`` was recorded as not read (changed/gone before
        read); False while any of them is pending or was read."""
        return all(self.was_read(key, e) is False for e in etags)

    def claimable(self, info: ObjectInfo, state: ClaimState) -> bool:
        """Whether ``info`` may still be claimed; counts it when it may not."""
        etags = state.etags(info.key)
        if info.etag in etags:
            self.result.skipped_claimed += 1
            return False
        if etags:
            if self._never_read(info.key, etags):
                self.result.reclaimed_unread += 1
                return True
            self.result.overwritten.append(info)
            if not self.rule.allow_overwrites:
                return False
        return True

    def add(self, info: ObjectInfo, state: ClaimState) -> None:
        self.result.listed += 1
        if not representable(info.key):
            self.result.skip(SKIPPED_NOT_UTF8, info.key)
            return
        if is_hidden(info.key):
            self.result.skipped_hidden += 1
            return
        if self.rule.min_age_s > 0 and (
            (self.now - info.last_modified).total_seconds() < self.rule.min_age_s
        ):
            self.result.too_young += 1
            self.wait([info])
            return
        if not self.claimable(info, state):
            return
        day = partition_of(info, self.rule)
        reason = None
        if day is None:
            reason, day = "invalid_day", ""
        elif self.rule.partition_start is not None and day < self.rule.partition_start.isoformat():
            reason = "before_start"
        elif day > self.today.isoformat():
            reason = "future"
        if reason is not None:
            self.result.out_of_range.append(OutOfRange(info.key, info.etag, day, reason))
            if reason == "future":
                self.wait([info])
            return
        self.by_day[day].append(info)

    def drop_claimed(self, objs: list[ObjectInfo], state: ClaimState) -> list[ObjectInfo]:
        """After a conflict: the objects of ``objs`` nobody has claimed meanwhile."""
        keep = []
        for o in objs:
            etags = state.etags(o.key)
            if o.etag in etags:
                self.result.skipped_claimed += 1
            elif etags and not self.rule.allow_overwrites and not self._never_read(o.key, etags):
                self.result.overwritten.append(o)
            else:
                keep.append(o)
        return keep


def discover(
    landing: ObjectStore,
    ledger: Ledger,
    rule: DiscoveryRule,
    full_listing: bool = False,
    today: date | None = None,
    now: datetime | None = None,
    full_from: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> DiscoveryResult:
    """List, filter, cut and claim (see the module docstring). Returns the new claims and the
    counts. ``now`` (default: the current time) is what ``min_age_s`` is measured against.
    ``full_from``: with ``full_listing``, the continuation of the pass (``full_next`` of the
    previous call; None starts a pass). ``clock``: seconds, for ``rule.max_listing_s`` only.
    Raises only on store or ledger errors (a ``ClaimConflict`` is handled)."""
    now = now or datetime.now(UTC)
    today = today or now.astimezone(UTC).date()
    result = DiscoveryResult(full_listing=full_listing, full_from=full_from)
    lists_before = _list_count(landing)
    start_after = ledger.lookback_start(rule.lookback_keys)
    result.start_after = start_after
    window = min(start_after or "", full_from or "") if full_listing else start_after or ""
    state = ledger.claim_state(window)
    planner = _Planner(rule, today, now, result, ledger.was_read)
    skipped_before = _store_skipped(landing)
    limit = rule.max_keys_listed_per_tick
    out_of_time = _listing_timer(landing, rule.max_listing_s, clock)
    seen: set[str] = set()
    incremental = True
    if full_listing:
        last, stopped = None, False
        for n, info in enumerate(landing.list(rule.prefix, start_after=full_from), start=1):
            last = info.key
            seen.add(info.key)
            planner.add(info, state)
            if n == limit:
                stopped = True
                break
            if out_of_time(n):
                stopped = result.cut_by_time = True
                break
        done = not stopped
        result.full_next = None if done else last
        # the pass listed every key from the window on: listing them again finds nothing
        incremental = not (done and (full_from or "") <= (start_after or ""))
        if not incremental:
            result.start_after = full_from  # one listing, from the pass's start
    if incremental:
        n = 0
        out_of_time = _listing_timer(landing, rule.max_listing_s, clock)
        for listed, info in enumerate(landing.list(rule.prefix, start_after=start_after), 1):
            if info.key not in seen:
                n += 1
                planner.add(info, state)
                if n == limit:
                    result.truncated = True
                    break
            # never inside the look-back window: the claims of the keys after it move the
            # window up, so the next call goes further (a cut within it would repeat forever)
            if listed > rule.lookback_keys and out_of_time(listed):
                result.truncated = result.cut_by_time = True
                break
    for reason, n in _store_skipped(landing).items():
        if n > skipped_before.get(reason, 0):
            result.skip(reason, n=n - skipped_before.get(reason, 0))
    lists_after = _list_count(landing)
    if lists_before is not None and lists_after is not None:
        result.list_requests = lists_after - lists_before
    crash_point("discovery.after_list")
    _claim_planned(planner, ledger, window, state)
    return result


def claim_objects(
    objects: Iterable[ObjectInfo],
    ledger: Ledger,
    rule: DiscoveryRule,
    today: date | None = None,
    now: datetime | None = None,
    track_waiting: bool = False,
    found_by: str = FOUND_BY_NOTIFICATIONS,
) -> DiscoveryResult:
    """Classify, cut and claim ``objects`` found by other means than a listing (e.g. event
    notifications) exactly as ``discover`` does with listed ones: same filters, same batches,
    same ledger checks, so an object found both ways is claimed once. ``objects`` must not
    name a key twice. With ``track_waiting``, ``result.waiting`` names the objects a later
    call may still claim. ``found_by``: the path recorded in the claims."""
    now = now or datetime.now(UTC)
    today = today or now.astimezone(UTC).date()
    objs = sorted(objects, key=lambda o: o.key)  # batches are cut in key order, as listed
    if len({o.key for o in objs}) != len(objs):
        raise ValueError("claim_objects: a key may appear only once")
    result = DiscoveryResult()
    window = min((o.key for o in objs), default="")
    state = ledger.claim_state(window)
    planner = _Planner(rule, today, now, result, ledger.was_read, track_waiting)
    for info in objs:
        planner.add(info, state)
    _claim_planned(planner, ledger, window, state, found_by)
    return result


def _claim_planned(
    planner: _Planner,
    ledger: Ledger,
    window: str,
    state: ClaimState,
    found_by: str = FOUND_BY_LISTING,
) -> None:
    """Claim the planner's objects day by day within the tick's budget (module docstring:
    Batches, Bounded tick, Races)."""
    rule, result = planner.rule, planner.result
    budget = rule.max_claims_per_tick
    for day in sorted(planner.by_day):
        objs = planner.by_day[day]
        if result.conflicts:  # other planners claimed meanwhile: drop what they took
            objs = planner.drop_claimed(objs, state)
        while objs and budget > 0 and result.conflicts <= MAX_CONFLICTS_PER_TICK:
            batch = cut_batches(objs, rule.max_files_per_batch, rule.max_bytes_per_batch)[0]
            try:
                claim = ledger.claim(day, batch, found_by)
            except ClaimConflict:
                result.conflicts += 1
                state = ledger.claim_state(window)  # the ledger has re-read the new claims
                objs = planner.drop_claimed(objs, state)
                continue
            result.claims.append(claim)
            budget -= 1
            objs = objs[len(batch) :]
        result.deferred += len(objs)
        planner.wait(objs)
    ledger.maybe_compact()


def survey(
    landing: ObjectStore,
    ledger: Ledger,
    rule: DiscoveryRule,
    today: date | None = None,
    now: datetime | None = None,
) -> DiscoveryResult:
    """What a full listing finds, claiming nothing (for ``lockgate status``): the same
    classification as ``discover`` (hidden, unsafe, too young, re-written, out of range by
    reason), with the objects a tick would claim counted in ``deferred``. O(objects listed)."""
    now = now or datetime.now(UTC)
    today = today or now.astimezone(UTC).date()
    result = DiscoveryResult(full_listing=True)
    state = ledger.claim_state("")
    planner = _Planner(rule, today, now, result, ledger.was_read)
    skipped_before = _store_skipped(landing)
    for info in landing.list(rule.prefix):
        planner.add(info, state)
    for reason, n in _store_skipped(landing).items():
        if n > skipped_before.get(reason, 0):
            result.skip(reason, n=n - skipped_before.get(reason, 0))
    result.deferred = sum(len(objs) for objs in planner.by_day.values())
    return result
