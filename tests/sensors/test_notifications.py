"""Notification mode (``lockgate.sensors.notifications``) against the moto server over HTTP: S3
and SQS in one server, with real bucket notifications (``put_bucket_notification_configuration``
with a queue), so a ``put_object`` under the landing prefix sends a real S3 event.

Shown: event shapes (S3, EventBridge, SNS-wrapped, test events, URL-encoded keys) and poison;
duplicates, keys outside the prefix, messages deleted before their claim (the backstop listing
catches the object), a burst of 10,000 events, crashes between receive, claim and delete
(redelivery is harmless), and a sensor tick that LISTs nothing between backstops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from lockgate.resources.ledger import Ledger
from lockgate.resources.sqs import QueueRefused, SqsQueue
from lockgate.resources.store import ObjectStore, S3Options
from lockgate.resources.stores import open_store
from lockgate.sensors.discovery import DiscoveryRule, is_hidden
from lockgate.sensors.notifications import (
    DrainResult,
    EventObject,
    LandingScope,
    PoisonMessage,
    backstop_due,
    drain,
    notification_tick,
    parse_body,
    read_cursor,
)
from tests.s3_fault_proxy import FaultProxy

FP = {"landing": "s3://x/landing", "format": "jsonl", "table": "db.t"}
TODAY = date(2026, 3, 10)
REPO = Path(__file__).resolve().parents[2]


def s3_event(key: str, etag: str = "e1", size: int = 3, bucket: str = "bkt", **extra: Any) -> str:
    obj: dict[str, Any] = {"key": key, "size": size, "eTag": etag, **extra}
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventTime": "2026-03-01T10:00:00.000Z",
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": bucket}, "object": obj},
                }
            ]
        }
    )


# -- parsing ------------------------------------------------------------------------------------


def test_s3_event_keys_are_url_decoded() -> None:
    (ev,) = parse_body(s3_event("landing%2F2026-03-01%2Fa+b%2Bc%3D%C3%A9.jsonl", etag='"e1"'))
    assert ev == EventObject(
        bucket="bkt",
        key="landing/2026-03-01/a b+c=é.jsonl",
        etag="e1",
        size=3,
        time=datetime(2026, 3, 1, 10, tzinfo=UTC),
    )


def test_eventbridge_sns_and_test_events() -> None:
    eb = {
        "version": "0",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": "2026-03-01T10:00:00Z",
        "detail": {
            "bucket": {"name": "bkt"},
            "object": {"key": "landing/x+y.jsonl", "size": 5, "etag": "abc", "sequencer": "0A"},
        },
    }
    (ev,) = parse_body(json.dumps(eb))
    assert (ev.key, ev.etag, ev.size, ev.sequencer) == ("landing/x y.jsonl", "abc", 5, "0A")
    assert parse_body(json.dumps({**eb, "detail-type": "Object Deleted"})) == []
    sns = {"Type": "Notification", "Message": s3_event("landing/k.jsonl")}
    assert [e.key for e in parse_body(json.dumps(sns))] == ["landing/k.jsonl"]
    assert parse_body(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
    removed = json.loads(s3_event("landing/k.jsonl"))
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert parse_body(json.dumps(removed)) == []


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        json.dumps({"hello": "world"}),
        json.dumps({"Records": "x"}),
        s3_event("landing/k", size=-1),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}),
        json.dumps({"Type": "Notification", "Message": "{broken"}),
    ],
)
def test_unparseable_bodies_are_poison(body: str) -> None:
    with pytest.raises(PoisonMessage):
        parse_body(body)


def test_scope_keeps_keys_under_the_landing_prefix() -> None:
    scope = LandingScope.of("s3://bkt/landing")
    t = datetime(2026, 3, 1, tzinfo=UTC)

    def ev(key: str, bucket: str = "bkt") -> EventObject:
        return EventObject(bucket, key, "e", 1, t)

    assert scope.relative(ev("landing/a/b.jsonl")) == "a/b.jsonl"
    assert scope.relative(ev("landing2/a.jsonl")) is None
    assert scope.relative(ev("landing/")) is None
    assert scope.relative(ev("landing/a.jsonl", bucket="other")) is None
    assert LandingScope.of("s3://bkt").relative(ev("x.jsonl")) == "x.jsonl"


def test_backstop_due_and_cursor() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert backstop_due(None, 3600, now)
    assert not backstop_due(now - timedelta(minutes=59), 3600, now)
    assert backstop_due(now - timedelta(minutes=60), 3600, now)
    assert backstop_due(now + timedelta(hours=1), 3600, now)  # a clock that jumped back
    assert read_cursor(None) == (None, None, {"notifications": 0, "listing": 0})
    assert read_cursor('{"ticks_since_full": 3}')[1] == 3  # a listing-mode cursor
    raw = json.dumps(
        {"last_full_listing": now.isoformat(), "ticks_since_full": 2, "found": {"listing": 4}}
    )
    assert read_cursor(raw) == (now, 2, {"notifications": 0, "listing": 4})
    assert read_cursor("garbage")[0] is None


# -- against moto: S3 + SQS over HTTP ----------------------------------------------------------


@dataclass
class Wired:
    """A bucket whose ``landing/`` prefix notifies an SQS queue, a landing store, the queue and
    a ledger in the same bucket."""

    endpoint: str
    bucket: str
    landing: ObjectStore
    queue: SqsQueue
    ledger_store: ObjectStore
    options: S3Options

    @property
    def landing_url(self) -> str:
        return f"s3://{self.bucket}/landing"

    def ledger(self) -> Ledger:
        return Ledger.open(self.ledger_store, "src", FP)

    def landed(self) -> set[tuple[str, str]]:
        """``(key, etag)`` of the landing's objects that a source may claim."""
        return {(o.key, o.etag) for o in self.landing.list() if not is_hidden(o.key)}

    def claimed(self) -> Counter[tuple[str, str]]:
        led = self.ledger()
        return Counter(
            (o.key, o.etag) for b in range(led.next_batch_id()) for o in led.get_claim(b).objects
        )

    def visible(self) -> int:
        a = self.queue.attributes(
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"
        )
        return int(a["ApproximateNumberOfMessages"]) + int(
            a["ApproximateNumberOfMessagesNotVisible"]
        )


def wire(endpoint: str, bucket: str, options: S3Options) -> Wired:
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"lg-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1"
    ).put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "landing/"}]}},
                }
            ]
        },
    )
    w = Wired(
        endpoint=endpoint,
        bucket=bucket,
        landing=open_store(f"s3://{bucket}/landing", options),
        queue=SqsQueue(url, options),
        ledger_store=open_store(f"s3://{bucket}/ledger", options),
        options=options,
    )
    # a queue that starts empty: the configuration's s3:TestEvent and the events of the
    # create-only probe's object (written before the first write to a bucket) are removed
    w.landing.put("_ready", b"")
    while batch := w.queue.receive(10):
        w.queue.delete(batch)
    return w


@pytest.fixture
def wired(moto_server: str, s3_options: S3Options, bucket: str) -> Wired:
    return wire(moto_server, bucket, s3_options)


RULE = DiscoveryRule(max_files_per_batch=100)


def test_real_bucket_notifications_are_claimed_once_and_deleted(wired: Wired) -> None:
    for i in range(5):
        wired.landing.put(f"2026-03-01/f {i}+x.jsonl", b"{}\n")  # URL-encoded in the events
    boto3.client("s3", endpoint_url=wired.endpoint, region_name="us-east-1").put_object(
        Bucket=wired.bucket, Key="elsewhere/2026-03-01/g.jsonl", Body=b"{}\n"
    )  # outside the prefix: not even notified
    res = drain(wired.queue, wired.landing_url, wired.ledger(), RULE, today=TODAY)
    assert res.received == res.deleted == 5 and res.kept == 0
    listed = wired.landed()
    assert set(wired.claimed()) == listed and len(listed) == 5
    assert wired.visible() == 0
    assert drain(wired.queue, wired.landing_url, wired.ledger(), RULE, today=TODAY).received == 0


def test_duplicates_and_events_outside_the_source_are_harmless(wired: Wired) -> None:
    wired.landing.put("2026-03-01/a.jsonl", b"{}\n")
    etag = wired.landing.head("2026-03-01/a.jsonl").etag
    b = wired.bucket
    wired.queue.send(
        [s3_event("landing/2026-03-01/a.jsonl", etag, bucket=b)] * 3  # duplicated
        + [s3_event("other/2026-03-01/z.jsonl", "e9", bucket=b)]  # another prefix
        + [s3_event("landing/2026-03-01/z.jsonl", "e9", bucket="another-bucket")]
    )
    res = drain(wired.queue, wired.landing_url, wired.ledger(), RULE, today=TODAY)
    assert res.claimed_objects == 1 and res.outside == 2
    assert res.deleted == res.received == 6 and wired.visible() == 0  # + a.jsonl's real event
    # a late duplicate after the claim: found claimed, deleted, nothing claimed twice
    wired.queue.send([s3_event("landing/2026-03-01/a.jsonl", etag, bucket=b)])
    late = drain(wired.queue, wired.landing_url, wired.ledger(), RULE, today=TODAY)
    assert late.claimed_objects == 0 and late.discovery.skipped_claimed == 1 and late.deleted == 1
    assert wired.claimed() == Counter({("2026-03-01/a.jsonl", etag): 1})


def test_lost_messages_are_caught_by_the_backstop_listing_without_listing_between(
    moto_server: str, s3_options: S3Options, bucket: str
) -> None:
    with FaultProxy(moto_server, history_size=100_000) as proxy:
        opts = S3Options(endpoint_url=proxy.url, region="us-east-1")
        w = wire(moto_server, bucket, opts)
        w.landing.put("2026-03-01/seen.jsonl", b"{}\n")
        w.landing.put("2026-03-01/lost.jsonl", b"{}\n")
        # the event of lost.jsonl is lost: deleted from the queue before any claim
        for m in w.queue.receive(10, visibility_timeout_s=0):
            if "lost.jsonl" in m.body:
                w.queue.delete([m])
        from lockgate.resources.config import DiscoverySettings

        settings = DiscoverySettings(
            mode="notifications", queue_url=w.queue.url, full_listing_every_s=3600
        )
        now = datetime(2026, 3, 10, 12, tzinfo=UTC)
        first = notification_tick(
            w.queue,
            None,
            w.landing,
            w.landing_url,
            w.ledger(),
            RULE,
            settings,
            None,
            now=now,
            visibility_timeout_s=0,
        )
        assert first.backstop is not None  # no cursor: the backstop runs
        lists = proxy.requests_for("GET", "prefix=landing")
        w.landing.put("2026-03-02/late.jsonl", b"{}\n")
        w.landing.put("2026-03-02/lost2.jsonl", b"{}\n")
        for m in w.queue.receive(10, visibility_timeout_s=0):
            if "lost2.jsonl" in m.body:
                w.queue.delete([m])
        cursor = first.cursor
        for minutes in (1, 2, 30):  # ticks between backstops: no LIST at all
            tick = notification_tick(
                w.queue,
                None,
                w.landing,
                w.landing_url,
                w.ledger(),
                RULE,
                settings,
                cursor,
                now=now + timedelta(minutes=minutes),
            )
            assert tick.backstop is None
            cursor = tick.cursor
        assert proxy.requests_for("GET", "prefix=landing") == lists
        assert "2026-03-02/late.jsonl" in {k for k, _ in w.claimed()}
        assert "2026-03-02/lost2.jsonl" not in {k for k, _ in w.claimed()}
        after = notification_tick(
            w.queue,
            None,
            w.landing,
            w.landing_url,
            w.ledger(),
            RULE,
            settings,
            cursor,
            now=now + timedelta(hours=1),
        )
        assert after.backstop is not None and after.backstop.claimed_objects == 1
        assert proxy.requests_for("GET", "prefix=landing") > lists
        assert set(w.claimed()) == w.landed()
        assert max(w.claimed().values()) == 1
        _, _, found = read_cursor(after.cursor)
        assert found == {"notifications": 2, "listing": 2}  # seen+late by events; lost, lost2


def test_poison_is_moved_aside_after_max_receives(
    wired: Wired, moto_server: str, s3_options: S3Options
) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    dlq = SqsQueue(
        sqs.create_queue(QueueName=f"dlq-{uuid.uuid4().hex[:8]}")["QueueUrl"], s3_options
    )
    wired.queue.send(
        ["not json at all", s3_event("landing/2026-03-01/p.jsonl", bucket=wired.bucket)]
    )

    def again() -> DrainResult:
        return drain(
            wired.queue,
            wired.landing_url,
            wired.ledger(),
            RULE,
            max_receives=3,
            dead_letter=dlq,
            visibility_timeout_s=1,
            today=TODAY,
        )

    for attempt in (1, 2):
        res = again()
        assert res.poison_waiting == 1 and res.poison_moved == 0, attempt
        time.sleep(1.2)  # visible again
    assert res.claimed_objects == 0  # the good message was claimed in the first drain
    res = again()
    assert res.poison_moved == 1 and res.poison_examples and "not JSON" in res.poison_examples[0]
    assert wired.visible() == 0
    assert [m.body for m in dlq.receive(10)] == ["not json at all"]
    assert wired.claimed() == Counter({("2026-03-01/p.jsonl", "e1"): 1})


def test_objects_a_later_tick_may_claim_keep_their_message(wired: Wired) -> None:
    b = wired.bucket
    wired.queue.send(
        [
            s3_event("landing/2026-03-01/a.jsonl", "e1", bucket=b),
            s3_event("landing/2026-03-11/future.jsonl", "e2", bucket=b),  # TODAY is 03-10
            s3_event("landing/2026-03-01/_hidden.jsonl", "e3", bucket=b),  # never claimed
            s3_event("landing/2026-03-01/b.jsonl", "e4", bucket=b),
        ]
    )
    rule = DiscoveryRule(max_files_per_batch=1, max_claims_per_tick=1)
    res = drain(wired.queue, wired.landing_url, wired.ledger(), rule, today=TODAY)
    assert res.claimed_objects == 1 and res.discovery.deferred == 1
    assert res.deleted == 2 and res.kept == 2  # a and _hidden settled; future and b wait
    res2 = drain(wired.queue, wired.landing_url, wired.ledger(), rule, today=TODAY)
    assert res2.received == 2 and res2.claimed_objects == 1 and res2.kept == 1
    later = drain(wired.queue, wired.landing_url, wired.ledger(), rule, today=date(2026, 3, 11))
    assert later.claimed_objects == 1 and wired.visible() == 0
    assert len(wired.claimed()) == 3


def test_a_key_named_with_two_etags_keeps_the_newest_and_judges_the_other_later(
    wired: Wired,
) -> None:
    b = wired.bucket
    wired.queue.send(
        [
            s3_event("landing/2026-03-01/k.jsonl", "old", bucket=b, sequencer="0A"),
            s3_event("landing/2026-03-01/k.jsonl", "new", bucket=b, sequencer="0B"),
        ]
    )
    res = drain(wired.queue, wired.landing_url, wired.ledger(), RULE, today=TODAY)
    assert [o.etag for c in res.discovery.claims for o in c.objects] == ["new"]
    assert res.kept == 1
    again = drain(wired.queue, wired.landing_url, wired.ledger(), RULE, today=TODAY)
    assert [o.etag for o in again.discovery.overwritten] == ["old"]  # ignored, logged
    assert again.deleted == 1 and wired.visible() == 0


def burst_bodies(bucket: str, events: int, distinct: int) -> list[str]:
    """``events`` S3 events (10 records per message, as S3 may batch them) naming ``distinct``
    objects; the rest are duplicates."""
    records = [
        json.loads(
            s3_event(f"landing/2026-03-0{1 + i % 3}/f{i:05d}.jsonl", f"e{i}", bucket=bucket)
        )["Records"][0]
        for i in range(distinct)
    ]
    records += records[: events - distinct]
    return [json.dumps({"Records": records[i : i + 10]}) for i in range(0, len(records), 10)]


@pytest.mark.parametrize(
    "events",
    # the 10,000-event burst: sending its 1,100 messages to moto dominates (> 10 min on a
    # loaded 2-core box)
    [1000, pytest.param(10_000, marks=[pytest.mark.slow, pytest.mark.timeout(2400)])],
)
def test_burst_of_events(
    wired: Wired, events: int, moto_server: str, s3_options: S3Options
) -> None:
    """A burst: ``events`` object events (a fifth of them duplicates) in ``events / 10``
    messages, shuffled, plus ``events / 100`` poison messages: every object is claimed exactly
    once, every message is deleted, and the poison is moved to the dead-letter queue."""
    import random

    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    dlq = SqsQueue(
        sqs.create_queue(QueueName=f"dlq-{uuid.uuid4().hex[:8]}")["QueueUrl"], s3_options
    )
    distinct = events * 4 // 5
    poison = [f"poison {i} {{not json" for i in range(events // 100)]
    bodies = burst_bodies(wired.bucket, events, distinct) + poison
    random.Random(events).shuffle(bodies)
    wired.queue.send(bodies)
    started = time.monotonic()
    # drains until the queue is empty: a drain stops at its first empty receive (SQS's short
    # polling may answer empty while messages wait; the next tick goes on)
    drains = []
    while wired.visible() and len(drains) < 50:
        drains.append(
            drain(
                wired.queue,
                wired.landing_url,
                wired.ledger(),
                DiscoveryRule(),
                max_receives=1,
                dead_letter=dlq,
                max_messages=len(bodies),
                today=TODAY,
            )
        )
    elapsed = time.monotonic() - started
    received = sum(r.received for r in drains)
    assert received == len(bodies) and sum(r.objects for r in drains) == events
    assert sum(r.claimed_objects for r in drains) == distinct
    assert sum(r.deleted for r in drains) == received
    assert sum(r.poison_moved for r in drains) == len(poison)
    assert sum(r.poison_waiting for r in drains) == 0
    partitions = {c.partition for r in drains for c in r.discovery.claims}
    assert sorted(partitions) == ["2026-03-01", "2026-03-02", "2026-03-03"]
    claimed = wired.claimed()
    assert len(claimed) == distinct and max(claimed.values()) == 1
    assert wired.visible() == 0
    moved: list[str] = []
    while batch := dlq.receive(10):
        moved += [m.body for m in batch]
        dlq.delete(batch)
    assert sorted(moved) == sorted(poison)
    print(f"burst of {events} events: {len(drains)} drains, {elapsed:.1f} s (wall)")


CRASH_SCRIPT = """
import sys
from datetime import date
from lockgate.resources.ledger import Ledger
from lockgate.resources.sqs import SqsQueue
from lockgate.resources.store import S3Options
from lockgate.resources.stores import open_store
from lockgate.sensors.discovery import DiscoveryRule, is_hidden
from lockgate.sensors.notifications import drain
endpoint, bucket, queue_url = sys.argv[1:4]
opts = S3Options(endpoint_url=endpoint, region="us-east-1")
led = Ledger.open(open_store(f"s3://{bucket}/ledger", opts), "src", %r)
drain(SqsQueue(queue_url, opts), f"s3://{bucket}/landing", led,
      DiscoveryRule(max_files_per_batch=100), visibility_timeout_s=1, today=date(2026, 3, 10))
"""


@pytest.mark.parametrize(
    "point",
    [
        "notifications.after_receive",
        "notifications.after_claim",
        "notifications.after_delete",
        "ledger.claim.after_put",
    ],
)
def test_crash_between_receive_claim_and_delete_is_harmless(wired: Wired, point: str) -> None:
    for i in range(4):
        wired.landing.put(f"2026-03-0{1 + i % 2}/c{i}.jsonl", b"{}\n")
    env = {
        **os.environ,
        "LOCKGATE_CRASH_AT": point,
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT % (FP,), wired.endpoint, wired.bucket, wired.queue.url],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]  # SIGKILL at the point
    time.sleep(1.5)  # the received messages become visible again
    res = drain(wired.queue, wired.landing_url, wired.ledger(), RULE, today=TODAY)
    assert wired.visible() == 0
    listed = wired.landed()
    claimed = wired.claimed()
    assert set(claimed) == listed and max(claimed.values()) == 1
    if point == "notifications.after_delete":
        assert res.received == 0  # everything was settled before the crash
    else:
        assert res.received >= 4


def test_queue_errors_are_clear(s3_options: S3Options, moto_server: str) -> None:
    q = SqsQueue(f"{moto_server}/123456789012/no-such-queue-{uuid.uuid4().hex[:6]}", s3_options)
    with pytest.raises(QueueRefused, match="no such queue"):
        q.receive()


def test_sensor_tick_in_notification_mode(tmp_path: Path, moto_server: str, bucket: str) -> None:
    import dagster as dg

    from lockgate.pipelines.assets import asset_key
    from lockgate.resources.config import load_config
    from lockgate.resources.runtime import Runtime
    from lockgate.sensors.discovery import rule_for_source
    from lockgate.sensors.factory import evaluate_tick
    from tests.platform_helpers import source_spec, write_config

    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"lg-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    landing = f"s3://{bucket}/landing/ev"
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=f"s3://{bucket}/warehouse",
        ledger=f"s3://{bucket}/ledger",
        endpoint=moto_server,
        sources={
            "ev": source_spec("ev", landing, discovery={"mode": "notifications", "queue_url": url})
        },
    )
    cfg = load_config(str(path))
    src = cfg.source("ev")
    rt = Runtime.from_config(cfg)
    store = open_store(landing, cfg.s3)
    store.put("2026-03-01/a.jsonl", b'{"id": 1, "v": "a"}\n')  # before the events: the backstop
    queue = SqsQueue(url, cfg.s3)
    etag = store.head("2026-03-01/a.jsonl").etag
    with dg.instance_for_test() as instance:

        def tick(cursor: str | None) -> dg.SensorResult:
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
            return evaluate_tick(ctx, rt, src, rule_for_source(src), asset_key(src), 10)

        first = tick(None)
        assert [r.run_key for r in first.run_requests or []] == ["ev:0"]
        queue.send([s3_event("landing/ev/2026-03-02/b.jsonl", "eb", bucket=bucket)])
        second = tick(first.cursor)
        assert sorted(r.run_key for r in second.run_requests or []) == ["ev:0", "ev:1"]
        assert read_cursor(second.cursor)[2] == {"notifications": 1, "listing": 1}
        assert read_cursor(second.cursor)[0] == read_cursor(first.cursor)[0]  # no backstop
    led = rt.ledger(src)
    assert [(o.key, o.etag) for o in led.get_claim(0).objects] == [("2026-03-01/a.jsonl", etag)]
    assert [(o.key, o.etag) for o in led.get_claim(1).objects] == [("2026-03-02/b.jsonl", "eb")]
    # status: the objects each path found, from the claims (any process; no sensor cursor)
    from lockgate.pipelines.commands.status import source_status

    status = source_status(Runtime.from_config(cfg), src, list_landing=False)
    assert status["found"] == {"notifications": 1, "listing": 1}


def test_visibility_timeout_setting_brings_unsettled_messages_back(wired: Wired) -> None:
    from lockgate.resources.config import DiscoverySettings, parse_config

    doc: dict[str, Any] = {
        "warehouse": "s3://bkt/wh",
        "sources": {
            "ev": {
                "landing": "s3://bkt/landing",
                "format": "jsonl",
                "table": "db.ev",
                "partition": {"start": "2026-01-01"},
                "discovery": {
                    "mode": "notifications",
                    "queue_url": wired.queue.url,
                    "visibility_timeout": "1s",
                },
            }
        },
    }
    settings = parse_config(doc, "/x/lockgate.yaml").source("ev").discovery
    assert settings.visibility_timeout_s == 1
    for bad, where in ((0, "notifications"), (None, "listing")):
        wrong = json.loads(json.dumps(doc))
        wrong["sources"]["ev"]["discovery"]["visibility_timeout"] = bad if bad is not None else 5
        if where == "listing":
            wrong["sources"]["ev"]["discovery"] = {"mode": "listing", "visibility_timeout": 5}
        with pytest.raises(Exception, match="visibility_timeout"):
            parse_config(wrong, "/x/lockgate.yaml")
    settings = DiscoverySettings(
        mode="notifications", queue_url=wired.queue.url, max_receives=2, visibility_timeout_s=1
    )
    wired.queue.send(["poison body"])
    cursor = None
    moved = []
    for _ in range(2):  # received once (waiting), back after 1 s, received again: moved aside
        tick = notification_tick(
            wired.queue,
            None,
            wired.landing,
            wired.landing_url,
            wired.ledger(),
            RULE,
            settings,
            cursor,
        )
        cursor = tick.cursor
        moved.append(tick.drain.poison_moved)
        time.sleep(1.3)
    assert moved == [0, 1] and wired.visible() == 0
