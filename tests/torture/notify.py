"""The ``notify`` trial kind (issue 15): both sources in notification mode (S3 backend only).

Moto serves S3 and SQS in one process; each source's landing prefix has a real bucket
notification (``s3:ObjectCreated:*``) to its own queue, so every object the harness writes
(new, late, hidden, re-written) sends a real S3 event. Lockgate reaches S3 through the fault
proxy and the queues directly (a queue URL names its own endpoint).

Between landing the round's objects and running ``lockgate``, the harness **scrambles** each
queue: it receives every message and deletes it, then sends each body back dropped (15%: the
backstop listing must find its objects), duplicated (25%: 2-3 copies), delayed (30% of the
copies: 1-2 s) and in a shuffled order, plus (50% of the rounds) a poison body, an event for
another bucket's key and an ``ObjectRemoved`` event. Runs are ``lockgate ingest`` (one or two
in a row, or two at once racing on the same queue), crash-killed at
``notifications.after_receive`` / ``after_claim`` / ``after_delete``, at a ``clean.*`` point
(``cs`` archives its committed objects), at a claim or commit point, or by an external
SIGKILL. The sources use ``visibility_timeout: 2`` so that the messages of a killed run come
back within the trial, and ``max_receives`` 1 or 2.

The end: wait until every message is visible, ``lockgate ingest --full-listing`` (the
backstop), then a second one (a stale event can claim an older version of a re-written key:
that claim reads nothing, and only the next backstop claims the key's current version), then
the standard checks (every row exactly once in DuckDB and pyiceberg, ``verify`` 0) and the
queue checks: no message left in either queue (``[queue-left]``) and the dead-letter queue
holds every poison body sent (but those a scramble dropped: a waiting poison message is
received again by the next scramble) and nothing else (``[dead-letter]``). ``data`` counts the
messages dropped / duplicated / delayed / poison, and the objects each discovery path found
(from the claims' ``found_by``).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.torture.trial import TrialEnv

VISIBILITY_S = 2
MAX_DELAY_S = 2
#: crash points of the notify kind's runs (with the claim/commit points of every ingest)
NOTIFY_POINTS = (
    "notifications.after_receive",
    "notifications.after_claim",
    "notifications.after_delete",
)
CLEAN_POINTS = (
    "clean.after_copy",
    "clean.after_archive_record",
    "clean.after_delete",
    "clean.after_marker",
)
OTHER_POINTS = (
    "ledger.claim.after_put",
    "ledger.claim.before_put",
    "commit.after_metadata_put",
    "ledger.commit_record.before_put",
    "stage.after_read",
)


def pick_point(rng: random.Random) -> tuple[str, int]:
    """A crash target of a notify-kind run: half notification points, a quarter clean points."""
    r = rng.random()
    if r < 0.5:
        return rng.choice(NOTIFY_POINTS), rng.randint(1, 2)
    if r < 0.75:
        return rng.choice(CLEAN_POINTS), 1
    return rng.choice(OTHER_POINTS), rng.randint(1, 2)


class NotifyQueues:
    """The queues of one trial's bucket (one per source, plus a dead-letter queue each)."""

    def __init__(self, env: TrialEnv, rng: random.Random, sources: tuple[str, ...]) -> None:
        import boto3

        assert env.ctx.moto is not None, "notify trials need the S3 backend (moto)"
        self.env = env
        self.rng = rng
        self.sources = sources
        self.sqs = boto3.client("sqs", endpoint_url=env.ctx.moto, region_name="us-east-1")
        self.stats: Counter[str] = Counter()
        self.poison: dict[str, set[str]] = {s: set() for s in sources}
        # poison bodies a scramble dropped (a waiting one was received again): they may never
        # reach the dead-letter queue
        self.poison_dropped: dict[str, set[str]] = {s: set() for s in sources}
        self.max_receives = rng.choice((1, 2))
        tag = uuid.uuid4().hex[:8]
        self.url: dict[str, str] = {}
        self.dlq: dict[str, str] = {}
        configs = []
        for s in sources:
            self.url[s] = self.sqs.create_queue(QueueName=f"tq-{tag}-{s}")["QueueUrl"]
            self.dlq[s] = self.sqs.create_queue(QueueName=f"tq-{tag}-{s}-dlq")["QueueUrl"]
            arn = self.sqs.get_queue_attributes(QueueUrl=self.url[s], AttributeNames=["QueueArn"])
            configs.append(
                {
                    "QueueArn": arn["Attributes"]["QueueArn"],
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": f"landing/{s}/"}]}
                    },
                }
            )
        s3 = boto3.client("s3", endpoint_url=env.ctx.moto, region_name="us-east-1")
        s3.put_bucket_notification_configuration(
            Bucket=env.bucket, NotificationConfiguration={"QueueConfigurations": configs}
        )
        for s in sources:  # the configuration's s3:TestEvent: not part of the trial
            self.sqs.purge_queue(QueueUrl=self.url[s])

    def discovery_yaml(self, source: str) -> str:
        """The ``discovery:`` entry of ``source`` in ``lockgate.yaml`` (4-space indented)."""
        return (
            f"    discovery: {{mode: notifications, queue_url: {self.url[source]}, "
            f"dead_letter_queue_url: {self.dlq[source]}, full_listing_every: 6h, "
            f"max_receives: {self.max_receives}, visibility_timeout: {VISIBILITY_S}}}\n"
        )

    def _drain(self, url: str, visibility: int = 30) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        empty = 0
        while empty < 2:
            got = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=visibility
            ).get("Messages", [])
            if not got:
                empty += 1
                continue
            out += got
        return out

    def scramble(self) -> None:
        """Drop, duplicate, delay and reorder every message now in the queues; sometimes add
        a poison body, an event of another bucket and a removal event (module docstring)."""
        rng = self.rng
        for s in self.sources:
            url = self.url[s]
            msgs = self._drain(url)
            for i in range(0, len(msgs), 10):
                self.sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]}
                        for j, m in enumerate(msgs[i : i + 10])
                    ],
                )
            out: list[tuple[str, int]] = []
            for m in msgs:
                r = rng.random()
                if r < 0.15:
                    self.stats["msg_dropped"] += 1
                    if m["Body"] in self.poison[s]:
                        self.poison_dropped[s].add(m["Body"])
                    continue
                copies = rng.randint(2, 3) if r < 0.4 else 1
                if copies > 1:
                    self.stats["msg_duplicated"] += 1
                for _ in range(copies):
                    delay = rng.randint(1, MAX_DELAY_S) if rng.random() < 0.3 else 0
                    self.stats["msg_delayed"] += bool(delay)
                    out.append((m["Body"], delay))
            if rng.random() < 0.5:
                body = f"torture poison {uuid.uuid4().hex}"
                self.poison[s].add(body)
                self.stats["msg_poison"] += 1
                out.append((body, 0))
                events = [m["Body"] for m in msgs if m["Body"] not in self.poison[s]]
                if events:  # (a poison body left waiting is not an event to copy)
                    doc = json.loads(events[0])
                    if "Records" in doc:
                        other = json.loads(json.dumps(doc))
                        other["Records"][0]["s3"]["bucket"]["name"] = "another-bucket"
                        removed = json.loads(json.dumps(doc))
                        removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
                        out += [(json.dumps(other), 0), (json.dumps(removed), 0)]
                        self.stats["msg_outside_or_removed"] += 2
            rng.shuffle(out)
            self.stats["msg_reordered"] += len(out)
            for body, delay in out:
                self.sqs.send_message(QueueUrl=url, MessageBody=body, DelaySeconds=delay)

    def wait_visible(self) -> None:
        """Until every in-flight (a killed run's) and delayed message is visible again."""
        time.sleep(VISIBILITY_S + MAX_DELAY_S + 0.5)

    def left(self, source: str) -> int:
        a = self.sqs.get_queue_attributes(
            QueueUrl=self.url[source],
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in a.values())

    def dead_letters(self, source: str) -> Counter[str]:
        return Counter(m["Body"] for m in self._drain(self.dlq[source], visibility=60))

    def cleanup(self) -> None:
        for url in (*self.url.values(), *self.dlq.values()):
            # best effort: moto is stopped with the harness anyway
            with contextlib.suppress(Exception):
                self.sqs.delete_queue(QueueUrl=url)


def found_by(env: TrialEnv, source: str) -> Counter[str]:
    """Objects claimed by each discovery path (the claims' ``found_by``)."""
    led = env.ledger
    out: Counter[str] = Counter()
    for info in led.list(f"{source}/offsets/"):
        claim = json.loads(led.get(info.key))
        out[claim.get("found_by", "listing")] += len(claim["objects"])
    return out
