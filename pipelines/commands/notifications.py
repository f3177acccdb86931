"""``lockgate notifications setup --source S [--apply]``: the S3 bucket notification and the SQS
queue policy that feed a notification-mode source (``discovery.mode: notifications``).

Prints both as JSON. With ``--apply`` it also applies them: the queue policy (allowing S3 to
send the bucket's events, and nothing else) replaces the queue's ``Policy``; the bucket's
notification configuration keeps every other entry and adds or replaces only the one with Id
``lockgate-<source>`` (``s3:ObjectCreated:*`` under the landing prefix). Exits with
``ExitCode.USAGE`` for a source in listing mode, ``STORE_REFUSED`` if the queue does not exist.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lockgate.pipelines.commands.common import CommandError, runtime
from lockgate.resources.config import SourceConfig
from lockgate.resources.sqs import SqsQueue
from lockgate.resources.store import S3Options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("setup",))
    parser.add_argument(
        "--source", required=True, help="a source with discovery.mode: notifications"
    )
    parser.add_argument("--apply", action="store_true", help="apply the configuration and policy")


def queue_arn(queue: SqsQueue) -> str:
    """The queue's ARN, as the queue reports it (``QueueRefused`` if it does not exist)."""
    return queue.attributes("QueueArn")["QueueArn"]


def landing_filter(source: SourceConfig) -> tuple[str, str]:
    """``(bucket, key prefix with a trailing slash or "")`` of an S3 landing."""
    bucket, _, prefix = source.landing.split("://", 1)[1].partition("/")
    return bucket, (prefix.strip("/") + "/") if prefix.strip("/") else ""


def notification_entry(source: SourceConfig, arn: str) -> dict[str, Any]:
    """The bucket's ``QueueConfigurations`` entry of ``source``."""
    _, prefix = landing_filter(source)
    entry: dict[str, Any] = {
        "Id": f"lockgate-{source.name}",
        "QueueArn": arn,
        "Events": ["s3:ObjectCreated:*"],
    }
    if prefix:
        entry["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    return entry


def queue_policy(source: SourceConfig, arn: str) -> dict[str, Any]:
    """A queue policy letting S3 send the landing bucket's events to the queue."""
    bucket, _ = landing_filter(source)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": f"lockgate-{source.name}-s3-events",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
            }
        ],
    }


def _s3_client(options: S3Options) -> Any:
    import botocore.session

    kwargs: dict[str, Any] = {"region_name": options.region or "us-east-1"}
    if options.endpoint_url:
        kwargs["endpoint_url"] = options.endpoint_url
    if options.access_key_id and options.secret_access_key:
        kwargs["aws_access_key_id"] = options.access_key_id
        kwargs["aws_secret_access_key"] = options.secret_access_key
        kwargs["aws_session_token"] = options.session_token
    return botocore.session.get_session().create_client("s3", **kwargs)


def apply(source: SourceConfig, options: S3Options, queue: SqsQueue, arn: str) -> dict[str, Any]:
    """Apply the queue policy and the bucket notification entry; the bucket's resulting
    notification configuration."""
    queue.set_attributes({"Policy": json.dumps(queue_policy(source, arn))})
    bucket, _ = landing_filter(source)
    s3 = _s3_client(options)
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    mine = notification_entry(source, arn)
    queues = [q for q in current.get("QueueConfigurations", []) if q.get("Id") != mine["Id"]]
    current["QueueConfigurations"] = [*queues, mine]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=current)
    return dict(current)


def run(args: argparse.Namespace) -> int:
    rt = runtime(args)
    source = rt.config.source(args.source)
    settings = source.discovery
    if settings.mode != "notifications" or settings.queue_url is None:
        raise CommandError(
            f"source {source.name!r} is in listing mode: set discovery.mode: notifications "
            "and discovery.queue_url first"
        )
    queue = SqsQueue(settings.queue_url, rt.config.s3)
    arn = queue_arn(queue)
    bucket, _ = landing_filter(source)
    print(f"# bucket {bucket}: notification configuration entry (QueueConfigurations)")
    print(json.dumps(notification_entry(source, arn), indent=2))
    print(f"# queue {settings.queue_url}: policy")
    print(json.dumps(queue_policy(source, arn), indent=2))
    if args.apply:
        result = apply(source, rt.config.s3, queue, arn)
        entries = len(result.get("QueueConfigurations", []))
        print(f"# applied: queue policy set; bucket {bucket} has {entries} queue notifications")
    else:
        print("# not applied (pass --apply)")
    return 0
