"""Notification mode: discovery from S3 event notifications on an SQS queue. The events are a
hint; the ledger is the truth. No Dagster imports.

Rules (each is a contract the sensor relies on):

* **Shapes.** A message body is an S3 event notification (``{"Records": [...]}``), an
  EventBridge event (``"detail-type": "Object Created"``, ``"source": "aws.s3"``), either of
  them wrapped in an SNS notification (``"Type": "Notification"``), or S3's ``s3:TestEvent``
  (no objects). Records other than ``ObjectCreated:*`` (removals, restores, ...) name no
  object. Keys are URL-encoded in events: they are decoded (``unquote_plus``).
* **Poison.** A body that is not one of these shapes (not JSON, a created record without
  bucket, key, size or etag) is *poison*: it is left in the queue until it has been received
  ``max_receives`` times, then moved aside (sent to the dead-letter queue if one is
  configured, then deleted; else deleted), counted and reported. It never blocks the queue.
* **Scope.** Only objects of the source's bucket under its landing prefix are the source's;
  others are counted as ``outside``.
* **Same claim path.** The source's objects become ``ObjectInfo(key relative to the landing,
  etag, size, event time)`` and go through ``discovery.claim_objects``: the same filters,
  batches and ledger checks as a listing, so duplicated, late and reordered messages are
  harmless (an object already claimed is skipped). In one drain, a key named with several
  etags keeps the newest event (S3's ``sequencer``, else the event time); the messages naming
  the others stay in the queue and are judged by a later drain against the ledger.
* **Delete after claim.** A message is deleted only after each of its objects is claimed
  (the claim is durable), found claimed, outside the source, or refused for good (a hidden
  name, an ignored overwrite, a day before ``partition.start`` ...). A message naming an
  object that a later tick may still claim (too young, a future day, deferred by
  ``max_claims_per_tick``, an older version of a key named twice) stays and is made visible
  again at once. A crash anywhere before the delete redelivers the message (after the
  visibility timeout): harmless, the ledger decides.
* **Bounded.** A drain receives at most ``max_messages``; the rest wait for the next tick.
* **Backstop.** ``backstop_due`` says when the periodic full listing (``full_listing_every``)
  is due; it catches whatever the events missed. Between backstops a tick LISTs nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import unquote_plus

from lockgate.resources.config import DiscoverySettings
from lockgate.resources.crashpoints import crash_point
from lockgate.resources.errors import ExitCode, TerminalError
from lockgate.resources.ledger import FOUND_BY_NOTIFICATIONS, Ledger
from lockgate.resources.sqs import SQS_BATCH, QueueMessage, SqsQueue
from lockgate.resources.store import ObjectInfo, ObjectStore, S3Options
from lockgate.sensors.discovery import DiscoveryResult, DiscoveryRule, claim_objects, discover

#: Messages one drain receives at most (its objects are claimed within ``max_claims_per_tick``).
DEFAULT_MAX_MESSAGES = 1000
#: Seconds a received message stays invisible to other receivers while a tick handles it.
DEFAULT_VISIBILITY_TIMEOUT_S = 300


class PoisonMessage(TerminalError, ValueError):
    """A message body that is not an S3 event, an EventBridge S3 event or an SNS wrapper of
    one: it names no object Lockgate could trust. ``drain`` handles it (it never escapes)."""

    exit_code: ClassVar[ExitCode] = ExitCode.CORRUPT_STATE


@dataclass(frozen=True)
class EventObject:
    """One created object named by an event. ``key`` is the full, decoded key in ``bucket``."""

    bucket: str
    key: str
    etag: str
    size: int
    time: datetime
    sequencer: str = ""

    def order(self) -> tuple[str, datetime]:
        """Sorts events of one key from oldest to newest (S3's sequencer is a hex string of
        growing length; padded, it compares as a number)."""
        return (self.sequencer.upper().rjust(32, "0"), self.time)


def _time(value: object) -> datetime:
    if not isinstance(value, str):
        raise PoisonMessage(f"event time is {type(value).__name__}, not a string")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise PoisonMessage(f"event time {value!r} is not ISO 8601") from e
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _get(d: object, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            raise PoisonMessage(f"no {'.'.join(path)}")
        d = d[p]
    return d


def _object(bucket: object, obj: object, when: object, etag_field: str) -> EventObject:
    key, size, etag = _get(obj, "key"), _get(obj, "size"), _get(obj, etag_field)
    if not isinstance(bucket, str) or not bucket:
        raise PoisonMessage("bucket name is not a string")
    if not isinstance(key, str) or not key:
        raise PoisonMessage("object key is not a string")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise PoisonMessage("object size is not a count of bytes")
    if not isinstance(etag, str) or not etag.strip('"'):
        raise PoisonMessage("object etag is not a string")
    seq = obj.get("sequencer", "") if isinstance(obj, dict) else ""
    return EventObject(
        bucket=bucket,
        key=unquote_plus(key, encoding="utf-8", errors="surrogateescape"),
        etag=etag.strip('"'),
        size=size,
        time=_time(when),
        sequencer=seq if isinstance(seq, str) else "",
    )


def parse_body(body: str) -> list[EventObject]:
    """The created objects a message names (``[]`` for a test event or other event kinds);
    ``PoisonMessage`` if the body is not a known shape (module docstring)."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise PoisonMessage(f"not JSON: {e}") from e
    return _parse_doc(doc, wrapped=False)


def _parse_doc(doc: object, wrapped: bool) -> list[EventObject]:
    if not isinstance(doc, dict):
        raise PoisonMessage(f"a JSON {type(doc).__name__}, not an object")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str) and not wrapped:
        try:
            inner = json.loads(doc["Message"])
        except ValueError as e:
            raise PoisonMessage(f"SNS message is not JSON: {e}") from e
        return _parse_doc(inner, wrapped=True)
    if doc.get("Event") == "s3:TestEvent":
        return []
    if "Records" in doc:
        records = doc["Records"]
        if not isinstance(records, list):
            raise PoisonMessage("Records is not a list")
        out = []
        for rec in records:
            name = _get(rec, "eventName")
            if not isinstance(name, str):
                raise PoisonMessage("eventName is not a string")
            if rec.get("eventSource", "aws:s3") != "aws:s3" or not name.startswith(
                "ObjectCreated:"
            ):
                continue
            s3 = _get(rec, "s3")
            out.append(
                _object(
                    _get(s3, "bucket", "name"), _get(s3, "object"), _get(rec, "eventTime"), "eTag"
                )
            )
        return out
    if "detail-type" in doc and doc.get("source") == "aws.s3":
        if doc["detail-type"] != "Object Created":
            return []
        detail = _get(doc, "detail")
        return [
            _object(
                _get(detail, "bucket", "name"), _get(detail, "object"), _get(doc, "time"), "etag"
            )
        ]
    raise PoisonMessage("neither an S3 event, an EventBridge S3 event nor an SNS notification")


@dataclass(frozen=True)
class LandingScope:
    """Which event objects belong to a source: its bucket, under its landing prefix."""

    bucket: str
    prefix: str  # without a trailing slash; "" for the whole bucket

    @classmethod
    def of(cls, landing_url: str) -> LandingScope:
        rest = landing_url.split("://", 1)[1]
        bucket, _, prefix = rest.partition("/")
        return cls(bucket, prefix.strip("/"))

    def relative(self, ev: EventObject) -> str | None:
        """The key relative to the landing, or None when ``ev`` is not under it."""
        if ev.bucket != self.bucket:
            return None
        if not self.prefix:
            return ev.key
        head = self.prefix + "/"
        if not ev.key.startswith(head) or len(ev.key) == len(head):
            return None
        return ev.key[len(head) :]


@dataclass
class DrainResult:
    """What one drain did. ``discovery`` holds the claims and the planner's counts."""

    discovery: DiscoveryResult = field(default_factory=DiscoveryResult)
    received: int = 0  # messages received
    deleted: int = 0  # messages deleted (their objects are settled)
    kept: int = 0  # messages left in the queue (an object may still be claimed later)
    objects: int = 0  # object events of the source (duplicates included)
    outside: int = 0  # object events outside the source's bucket/prefix
    ignored: int = 0  # messages naming no created object (test events, removals, ...)
    poison_waiting: int = 0  # unparseable, left until max_receives
    poison_moved: int = 0  # unparseable, moved aside now
    poison_examples: list[str] = field(default_factory=list)  # reasons (no bodies)
    delete_failed: int = 0  # deletes SQS refused (expired receipt: the message comes back)
    receive_requests: int = 0

    @property
    def claimed_objects(self) -> int:
        return self.discovery.claimed_objects


def _receive(
    queue: SqsQueue, max_messages: int, visibility_timeout_s: int
) -> tuple[list[QueueMessage], int]:
    msgs: list[QueueMessage] = []
    seen: set[str] = set()
    calls = 0
    while len(msgs) < max_messages:
        batch = queue.receive(min(SQS_BATCH, max_messages - len(msgs)), visibility_timeout_s)
        calls += 1
        fresh = [m for m in batch if m.message_id not in seen]  # not a redelivery
        if not fresh:
            break
        seen.update(m.message_id for m in fresh)
        msgs += fresh
    return msgs, calls


def drain(
    queue: SqsQueue,
    landing_url: str,
    ledger: Ledger,
    rule: DiscoveryRule,
    *,
    max_receives: int = 5,
    dead_letter: SqsQueue | None = None,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S,
    today: date | None = None,
    now: datetime | None = None,
) -> DrainResult:
    """Receive, claim, delete (see the module docstring). Raises on queue, store or ledger
    errors; every message not deleted by then is received again later."""
    if max_receives < 1:
        raise ValueError("max_receives must be >= 1")
    scope = LandingScope.of(landing_url)
    out = DrainResult()
    msgs, out.receive_requests = _receive(queue, max_messages, visibility_timeout_s)
    out.received = len(msgs)
    crash_point("notifications.after_receive")

    poison: list[QueueMessage] = []
    settled: list[QueueMessage] = []  # name nothing the drain must claim
    named: dict[str, list[tuple[str, str]]] = {}  # message id -> (key, etag) of the source
    newest: dict[str, EventObject] = {}  # relative key -> newest event of this drain
    for m in msgs:
        try:
            events = parse_body(m.body)
        except PoisonMessage as e:
            if m.receive_count >= max_receives:
                poison.append(m)
                if len(out.poison_examples) < 5:
                    out.poison_examples.append(f"message {m.message_id}: {e}")
            else:
                out.poison_waiting += 1
            continue
        mine: list[tuple[str, str]] = []
        for ev in events:
            rel = scope.relative(ev)
            if rel is None:
                out.outside += 1
                continue
            out.objects += 1
            mine.append((rel, ev.etag))
            cur = newest.get(rel)
            if cur is None or ev.order() > cur.order():
                newest[rel] = ev
        if not events:
            out.ignored += 1
        if mine:
            named[m.message_id] = mine
        else:
            settled.append(m)

    infos = [
        ObjectInfo(key=k, size=ev.size, etag=ev.etag, last_modified=ev.time)
        for k, ev in newest.items()
    ]
    if infos:
        out.discovery = claim_objects(
            infos,
            ledger,
            rule,
            today=today,
            now=now,
            track_waiting=True,
            found_by=FOUND_BY_NOTIFICATIONS,
        )
    crash_point("notifications.after_claim")

    chosen = {(k, ev.etag) for k, ev in newest.items()}
    waiting = out.discovery.waiting
    later: list[QueueMessage] = []
    for m in msgs:
        objs = named.get(m.message_id)
        if objs is None:
            continue
        # an older version of a key named twice, or an object a later tick may claim
        if any(o not in chosen or o in waiting for o in objs):
            later.append(m)
        else:
            settled.append(m)
    if poison:
        if dead_letter is not None:
            dead_letter.send([m.body for m in poison])
        settled += poison
        out.poison_moved = len(poison)
    failed = set(queue.delete(settled)) if settled else set()
    out.delete_failed = len(failed)
    out.deleted = len(settled) - len(failed)
    crash_point("notifications.after_delete")
    if later:
        queue.change_visibility(later, 0)
    out.kept = len(later) + out.poison_waiting
    return out


def backstop_due(last_full: datetime | None, every_s: int, now: datetime) -> bool:
    """Whether the backstop full listing is due: never done (no cursor), or done at least
    ``every_s`` seconds ago, or "done" in the future (a clock that jumped back)."""
    if last_full is None:
        return True
    return now - last_full >= timedelta(seconds=every_s) or last_full > now


def open_queues(
    settings: DiscoverySettings, options: S3Options
) -> tuple[SqsQueue, SqsQueue | None]:
    """A notification source's queue and its dead-letter queue (if configured)."""
    if settings.queue_url is None:
        raise ValueError("discovery.queue_url is not set (mode: listing)")
    dlq = settings.dead_letter_queue_url
    return SqsQueue(settings.queue_url, options), (SqsQueue(dlq, options) if dlq else None)


def merge(a: DiscoveryResult, b: DiscoveryResult) -> DiscoveryResult:
    """The counts of two discovery calls of one tick, added (``b``'s listing facts kept)."""
    out = DiscoveryResult(
        claims=a.claims + b.claims,
        listed=a.listed + b.listed,
        skipped_hidden=a.skipped_hidden + b.skipped_hidden,
        skipped_examples=(a.skipped_examples + b.skipped_examples)[:5],
        overwritten=a.overwritten + b.overwritten,
        out_of_range=a.out_of_range + b.out_of_range,
        deferred=a.deferred + b.deferred,
        too_young=a.too_young + b.too_young,
        reclaimed_unread=a.reclaimed_unread + b.reclaimed_unread,
        conflicts=a.conflicts + b.conflicts,
        full_listing=a.full_listing or b.full_listing,
        start_after=b.start_after,
        list_requests=b.list_requests,
    )
    for r in (a, b):
        for reason, n in r.skipped_unsafe.items():
            out.skip(reason, n=n)
    return out


@dataclass
class NotificationTick:
    """One sensor tick in notification mode: the drain, the backstop listing if it was due,
    and the next cursor. ``found`` counts the objects each path claimed, over all ticks."""

    drain: DrainResult
    backstop: DiscoveryResult | None
    cursor: str
    found: dict[str, int]

    @property
    def discovery(self) -> DiscoveryResult:
        if self.backstop is None:
            return self.drain.discovery
        return merge(self.drain.discovery, self.backstop)


def read_cursor(raw: str | None) -> tuple[datetime | None, int | None, dict[str, int]]:
    """``(time of the last backstop listing, ticks since it, objects claimed per path)`` from a
    sensor cursor; ``None``s (a backstop is due) and zeros for none or an unreadable one."""
    found = {"notifications": 0, "listing": 0}
    try:
        doc = json.loads(raw) if raw else {}
        if not isinstance(doc, dict):
            return None, None, found
        when = doc.get("last_full_listing")
        last = _time(when) if when is not None else None
        ticks = doc.get("ticks_since_full")
        for k in found:
            found[k] = int(doc.get("found", {}).get(k, 0))
    except (ValueError, TypeError, AttributeError):
        return None, None, {"notifications": 0, "listing": 0}
    return last, ticks if isinstance(ticks, int) else None, found


def notification_tick(
    queue: SqsQueue,
    dead_letter: SqsQueue | None,
    landing: ObjectStore,
    landing_url: str,
    ledger: Ledger,
    rule: DiscoveryRule,
    settings: DiscoverySettings,
    cursor: str | None,
    now: datetime | None = None,
    **drain_options: Any,
) -> NotificationTick:
    """Drain the queue, then run the backstop full listing when it is due (``backstop_due``:
    its time is kept in the cursor). The cursor also keeps ``ticks_since_full`` (0 after a
    backstop) and the running count of objects each path claimed."""
    now = now or datetime.now(UTC)
    last, ticks, found = read_cursor(cursor)
    drain_options.setdefault("visibility_timeout_s", settings.visibility_timeout_s)
    drained = drain(
        queue,
        landing_url,
        ledger,
        rule,
        max_receives=settings.max_receives,
        dead_letter=dead_letter,
        now=now,
        **drain_options,
    )
    found["notifications"] += drained.claimed_objects
    backstop = None
    ticks = ticks + 1 if ticks is not None else 0
    if backstop_due(last, settings.full_listing_every_s, now):
        # one whole listing: the notification cursor keeps no listing continuation, so a
        # bounded pass (max_keys_listed_per_tick, max_listing_s) would re-list only the first
        # keys each time
        whole = replace(rule, max_keys_listed_per_tick=0, max_listing_s=0)
        backstop = discover(landing, ledger, whole, full_listing=True, now=now)
        found["listing"] += backstop.claimed_objects
        last, ticks = now, 0
    new = {
        "ticks_since_full": ticks,
        "last_full_listing": last.isoformat() if last else None,
        "found": found,
    }
    return NotificationTick(drained, backstop, json.dumps(new), found)


def describe(r: DrainResult) -> str:
    """One line for the tick log."""
    parts = [
        f"received {r.received} messages ({r.objects} object events",
        f"{r.outside} outside the source)" if r.outside else "none outside the source)",
        f"claimed {r.claimed_objects} objects in {len(r.discovery.claims)} batches",
        f"deleted {r.deleted}, kept {r.kept}",
    ]
    if r.poison_moved or r.poison_waiting:
        parts.append(f"poison: {r.poison_moved} moved aside, {r.poison_waiting} waiting")
    if r.delete_failed:
        parts.append(f"{r.delete_failed} deletes refused (redelivered)")
    return ", ".join(parts)
