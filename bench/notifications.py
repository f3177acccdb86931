"""Notification mode: one sensor tick on a landing of N existing (claimed) keys plus 1,000 new
ones whose S3 events wait on an SQS queue. Prints (and with ``--append`` adds to
BENCHMARKS.md) the tick's time, the landing LIST requests it made (goal: 0 between backstops),
the ledger's own requests and the objects it claimed (goal: exactly the new ones).

``python -m bench.notifications [--existing 100000] [--new 1000] [--append]``

moto (``ThreadedMotoServer`` in a child process, ``bench.discovery.moto_server``) serves S3
and SQS. Existing keys are landed straight into moto's backend and claimed in claims of 1,000
(compacted as the ledger does); the new keys are landed the same way and their S3 events
(the S3 event JSON, one record per message) are sent to the queue with ``send_message_batch``.
The tick is ``notification_tick`` with a cursor whose backstop listing is recent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime

from bench.common import append_section, command_line, markdown_table
from bench.discovery import BODY, FINGERPRINT, SOURCE, claim_all, key, moto_server
from lockgate.resources.config import DiscoverySettings
from lockgate.resources.ledger import Ledger
from lockgate.resources.sqs import SqsQueue
from lockgate.resources.store import S3Options
from lockgate.resources.stores import open_store
from lockgate.sensors.discovery import DiscoveryRule
from lockgate.sensors.notifications import notification_tick


def event(bucket: str, full_key: str, etag: str) -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "eventTime": datetime.now(UTC).isoformat(),
                    "s3": {
                        "bucket": {"name": bucket},
                        "object": {"key": full_key, "size": len(BODY), "eTag": etag},
                    },
                }
            ]
        }
    )


def run(existing: int, new: int) -> dict[str, object]:
    import boto3

    with moto_server() as server:
        opts = S3Options(endpoint_url=server.endpoint, region="us-east-1")
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        s3.create_bucket(Bucket=f"{bucket}-ledger")
        landing = open_store(f"s3://{bucket}/landing", opts)
        ledger_store = open_store(f"s3://{bucket}-ledger/ledger", opts)
        t0 = time.perf_counter()
        server.put(bucket, "landing", range(existing))
        claim_all(ledger_store, existing)
        server.put(bucket, "landing", range(existing, existing + new))
        sqs = boto3.client("sqs", endpoint_url=server.endpoint, region_name="us-east-1")
        queue = SqsQueue(sqs.create_queue(QueueName=f"q-{bucket}")["QueueUrl"], opts)
        etag = hashlib.md5(BODY).hexdigest()
        queue.send(
            [event(bucket, f"landing/{key(i)}", etag) for i in range(existing, existing + new)]
        )
        setup_s = time.perf_counter() - t0

        settings = DiscoverySettings(mode="notifications", queue_url=queue.url)
        now = datetime.now(UTC)
        cursor = json.dumps({"ticks_since_full": 0, "last_full_listing": now.isoformat()})
        rule = DiscoveryRule(partition_regex=r"(\d{4}-\d{2}-\d{2})", max_claims_per_tick=100)
        lists_before = landing.list_requests  # type: ignore[attr-defined]
        ledger_lists_before = ledger_store.list_requests  # type: ignore[attr-defined]
        c1 = time.process_time()
        t1 = time.perf_counter()
        ledger = Ledger.open(ledger_store, SOURCE, FINGERPRINT)
        tick = notification_tick(
            queue,
            None,
            landing,
            f"s3://{bucket}/landing",
            ledger,
            rule,
            settings,
            cursor,
            now=now,
            max_messages=new,
        )
        tick_s = time.perf_counter() - t1
        tick_cpu_s = time.process_time() - c1
        return {
            "existing": existing,
            "new": new,
            "tick_s": tick_s,
            "tick_cpu_s": tick_cpu_s,
            "landing_lists": landing.list_requests - lists_before,  # type: ignore[attr-defined]
            "ledger_lists": ledger_store.list_requests - ledger_lists_before,  # type: ignore[attr-defined]
            "sqs_requests": sum(queue.requests.values()),
            "claimed": tick.drain.claimed_objects,
            "received": tick.drain.received,
            "left_in_queue": int(
                queue.attributes("ApproximateNumberOfMessages")["ApproximateNumberOfMessages"]
            ),
            "backstop": tick.backstop is not None,
            "setup_s": setup_s,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--existing", type=int, default=100_000)
    p.add_argument("--new", type=int, default=1000)
    p.add_argument("--append", action="store_true", help="append the result to BENCHMARKS.md")
    args = p.parse_args(argv)
    r = run(args.existing, args.new)
    print(json.dumps(r, indent=2))
    ok = r["landing_lists"] == 0 and r["claimed"] == args.new
    table = markdown_table(
        [
            "existing claimed keys",
            "new keys (events)",
            "tick s",
            "tick CPU s (this process)",
            "landing LIST requests",
            "ledger LIST requests",
            "SQS requests",
            "objects claimed",
            "left in queue",
            "backstop ran",
            "setup s",
        ],
        [
            [
                r["existing"],
                r["new"],
                f"{r['tick_s']:.2f}",
                f"{r['tick_cpu_s']:.2f}",
                r["landing_lists"],
                r["ledger_lists"],
                r["sqs_requests"],
                r["claimed"],
                r["left_in_queue"],
                r["backstop"],
                f"{r['setup_s']:.0f}",
            ]
        ],
    )
    print(table)
    if args.append:
        append_section(
            "Notification mode: one tick, N existing keys + new keys by S3 events",
            command_line("bench.notifications", argv),
            table,
            notes=[
                "moto (ThreadedMotoServer in a child process) serves S3 and SQS; a tick = "
                "Ledger.open + notification_tick (drain; backstop listing not due). Goal: 0 "
                "landing LIST requests and exactly the new keys claimed "
                + ("(met)." if ok else "(NOT met)."),
                "moto's SQS scans the whole queue for every message it receives or deletes "
                "(O(queue) per message; SQS is not), so the tick's wall time here is mostly "
                "moto's; the tick's CPU time in this process is Lockgate's share.",
                "The ledger's LIST requests read its own compact/ folder (O(1) per tick, not "
                "O(landing)). Compare: the listing mode's tick on the same landing "
                "(`bench.discovery`) makes (new + look-back)/1000 landing LISTs per tick and a "
                "full listing every 20 ticks.",
            ],
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
