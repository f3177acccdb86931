"""Notification mode in the config and the CLI: ``discovery`` validation, ``lockgate
notifications setup [--apply]`` (real bucket notification and queue policy on moto over HTTP,
then a real put reaches the queue) and ``lockgate doctor``'s queue check."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from lockgate.pipelines.cli import main as lockgate_main
from lockgate.resources.config import ConfigError, load_config
from lockgate.resources.sqs import SqsQueue
from lockgate.resources.stores import open_store
from lockgate.sensors.notifications import parse_body
from tests.conftest import create_bucket
from tests.platform_helpers import source_spec, write_config


def _config(
    tmp_path: Path, landing: str, discovery: dict[str, Any], endpoint: str | None = None
) -> Path:
    return write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={"ev": source_spec("ev", landing, discovery=discovery)},
        endpoint=endpoint,
    )


def test_discovery_config(tmp_path: Path) -> None:
    q = "https://sqs.eu-west-1.amazonaws.com/123456789012/lockgate-events"
    cfg = load_config(
        str(
            _config(
                tmp_path,
                "s3://bkt/landing",
                {"mode": "notifications", "queue_url": q, "full_listing_every": "2h"},
            )
        )
    )
    d = cfg.source("ev").discovery
    assert (d.mode, d.queue_url, d.full_listing_every_s, d.max_receives) == (
        "notifications",
        q,
        7200,
        5,
    )
    assert (
        load_config(str(_config(tmp_path, "s3://bkt/landing", {}))).source("ev").discovery.mode
        == "listing"
    )
    bad = [
        ("s3://bkt/landing", {"mode": "notifications"}, "needs the SQS queue URL"),
        (str(tmp_path / "in"), {"mode": "notifications", "queue_url": q}, "need an s3:// landing"),
        ("s3://bkt/landing", {"queue_url": q}, "only used with mode: notifications"),
        ("s3://bkt/landing", {"mode": "notifications", "queue_url": "sqs://x"}, "SQS queue URL"),
        ("s3://bkt/landing", {"mode": "push", "queue_url": q}, "discovery.mode"),
        (
            "s3://bkt/landing",
            {"mode": "notifications", "queue_url": q, "dead_letter_queue_url": q},
            "must differ",
        ),
    ]
    for landing, disc, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_config(str(_config(tmp_path, landing, disc)))


def test_setup_applies_notification_and_policy_then_doctor_checks_the_queue(
    tmp_path: Path, moto_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = create_bucket(moto_server)
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"lg-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    other = {
        "Id": "someone-else",
        "QueueArn": "arn:aws:sqs:us-east-1:123456789012:other",
        "Events": ["s3:ObjectRemoved:*"],
    }
    sqs.create_queue(QueueName="other")
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [other]}
    )
    path = _config(
        tmp_path,
        f"s3://{bucket}/landing/ev",
        {"mode": "notifications", "queue_url": url},
        endpoint=moto_server,
    )
    # printed only: nothing changes
    assert lockgate_main(["--config", str(path), "notifications", "setup", "--source", "ev"]) == 0
    out = capsys.readouterr().out
    assert '"prefix"' in out and "landing/ev/" in out and "not applied" in out
    assert [
        q["Id"]
        for q in s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    ] == ["someone-else"]

    assert (
        lockgate_main(
            ["--config", str(path), "notifications", "setup", "--source", "ev", "--apply"]
        )
        == 0
    )
    conf = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert sorted(q["Id"] for q in conf) == ["lockgate-ev", "someone-else"]
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    assert (
        policy["Statement"][0]["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{bucket}"
    )
    # a real put under the landing now reaches the queue
    cfg = load_config(str(path))
    open_store(f"s3://{bucket}/landing/ev", cfg.s3).put("2026-03-01/a.jsonl", b"{}\n")
    queue = SqsQueue(url, cfg.s3)
    keys = [e.key for m in queue.receive(10) for e in parse_body(m.body)]
    assert "landing/ev/2026-03-01/a.jsonl" in keys

    capsys.readouterr()
    lockgate_main(["--config", str(path), "doctor"])
    out = capsys.readouterr().out
    assert "queue of source ev" in out
    assert any(line.strip().startswith("PASS  queue") for line in out.splitlines()), out

    missing = _config(
        tmp_path,
        f"s3://{bucket}/landing/ev",
        {
            "mode": "notifications",
            "queue_url": f"{moto_server}/123456789012/missing-{uuid.uuid4().hex[:6]}",
        },
        endpoint=moto_server,
    )
    assert lockgate_main(["--config", str(missing), "doctor"]) == 1
    assert "FAIL  queue" in capsys.readouterr().out
    assert (
        lockgate_main(["--config", str(missing), "notifications", "setup", "--source", "ev"]) == 12
    )
