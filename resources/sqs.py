"""A thin SQS client: the queue that S3 event notifications of a landing arrive on.

Contract:

* One queue per ``SqsQueue``, named by its URL. The endpoint is the queue URL's own
  ``scheme://host[:port]`` (an SQS queue URL names the endpoint that serves it, on AWS and on
  any imitation alike); the region is ``S3Options.region``, else the one in an AWS queue
  host (``sqs.<region>.amazonaws.com``), else ``us-east-1``. Credentials are those of the
  S3 store: ``S3Options``' explicit fields, else the usual AWS chain. They are never logged.
* Every request is one botocore call (botocore's own retries off), retried on transient
  failures (throttling, 5xx, dropped connections) with ``lockgate.resources.retry`` only;
  what is left is ``QueueUnavailable`` (transient) or ``QueueRefused`` (no such queue,
  access denied, a bad request).
* ``receive`` does not long-poll unless ``wait_time_s`` is set; it asks for
  ``ApproximateReceiveCount`` so that a caller can set poison messages aside.
* ``delete`` and ``change_visibility`` take any number of messages (batches of 10) and
  return the ids SQS did not accept (an expired receipt handle: the message comes back).
* ``requests`` counts the calls made, by operation name.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from lockgate.resources.errors import ExitCode, LockgateError, TerminalError, TransientError
from lockgate.resources.retry import RetryPolicy, error_code, is_transient, retry_call
from lockgate.resources.store import S3Options

T = TypeVar("T")

#: SQS's most messages per receive and per batch request.
SQS_BATCH = 10
_AWS_HOST = re.compile(r"sqs[.-]([a-z0-9-]+)\.amazonaws\.com(\.cn)?")
_NO_QUEUE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)


class QueueError(LockgateError):
    """An SQS request failed (family base; ``QueueRefused`` or ``QueueUnavailable``)."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class QueueRefused(QueueError, TerminalError):
    """The queue endpoint refused the request (no such queue, access denied, bad request)."""

    exit_code: ClassVar[ExitCode] = ExitCode.STORE_REFUSED
    hint: str | None = (
        "check discovery.queue_url, the credentials and `lockgate notifications setup`"
    )


class QueueUnavailable(QueueError, TransientError):
    """The queue endpoint did not answer or throttled, and the retry policy gave up."""

    exit_code: ClassVar[ExitCode] = ExitCode.STORE_UNAVAILABLE


@dataclass(frozen=True)
class QueueMessage:
    """One received message. ``receive_count`` is SQS's ``ApproximateReceiveCount`` (1 the
    first time)."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


def queue_endpoint(queue_url: str) -> str:
    """``scheme://host[:port]`` of a queue URL (no credentials, no path)."""
    parts = urlsplit(queue_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an SQS queue URL: {queue_url!r}")
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def queue_region(queue_url: str, options: S3Options) -> str:
    """The region to sign requests for (see the module contract)."""
    if options.region:
        return options.region
    m = _AWS_HOST.fullmatch(urlsplit(queue_url).hostname or "")
    return m.group(1) if m else "us-east-1"


class SqsQueue:
    """One SQS queue; see the module contract. Safe to share between threads; a forked child
    makes its own client."""

    def __init__(
        self,
        queue_url: str,
        options: S3Options,
        *,
        retry: RetryPolicy | None = None,
        wait_time_s: int = 0,
    ):
        self.url = queue_url
        self.endpoint = queue_endpoint(queue_url)
        self.region = queue_region(queue_url, options)
        self.options = options
        self.retry_policy = retry or RetryPolicy.from_env()
        if not 0 <= wait_time_s <= 20:
            raise ValueError("wait_time_s must be between 0 and 20 (SQS's long-poll limit)")
        self.wait_time_s = wait_time_s
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid = -1

    def __repr__(self) -> str:
        return f"SqsQueue({self.url!r})"

    def _make_client(self) -> Any:
        import botocore.session
        from botocore.config import Config

        o = self.options
        creds: dict[str, Any] = {}
        if o.access_key_id and o.secret_access_key:
            creds = {
                "aws_access_key_id": o.access_key_id,
                "aws_secret_access_key": o.secret_access_key,
                "aws_session_token": o.session_token,
            }
        return botocore.session.get_session().create_client(
            "sqs",
            region_name=self.region,
            endpoint_url=self.endpoint,
            config=Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=10,
                read_timeout=30 + self.wait_time_s,
            ),
            **creds,
        )

    def client(self) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = self._make_client()
                self._pid = os.getpid()
            return self._client

    def _call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        def once(_attempt: int) -> dict[str, Any]:
            with self._lock:
                self.requests[op] += 1
            result: dict[str, Any] = getattr(self.client(), op)(QueueUrl=self.url, **kwargs)
            return result

        return self._guard(op, lambda: retry_call(once, self.retry_policy, what=f"sqs {op}"))

    def _guard(self, op: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            code = error_code(exc)
            if code is None and not is_transient(exc):
                raise
            cls = QueueUnavailable if is_transient(exc) else QueueRefused
            what = "no such queue" if code in _NO_QUEUE_CODES else f"{type(exc).__name__}: {exc}"
            raise cls(f"SQS {op} on {self.url}: {what}", code) from exc

    # -- operations -----------------------------------------------------------------------

    def receive(
        self, max_messages: int = SQS_BATCH, visibility_timeout_s: int | None = None
    ) -> list[QueueMessage]:
        """At most ``max_messages`` (1..10) messages, hidden from other receivers for
        ``visibility_timeout_s`` (default: the queue's). Empty when none is visible."""
        if not 1 <= max_messages <= SQS_BATCH:
            raise ValueError(f"max_messages must be between 1 and {SQS_BATCH}")
        kwargs: dict[str, Any] = {
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": self.wait_time_s,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if visibility_timeout_s is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout_s
        r = self._call("receive_message", **kwargs)
        return [
            QueueMessage(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m.get("Body", ""),
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for m in r.get("Messages", [])
        ]

    def delete(self, messages: Sequence[QueueMessage]) -> list[str]:
        """Delete ``messages``; the ids SQS did not delete (they will be received again)."""
        failed: list[str] = []
        for i in range(0, len(messages), SQS_BATCH):
            chunk = messages[i : i + SQS_BATCH]
            r = self._call(
                "delete_message_batch",
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m.receipt_handle} for n, m in enumerate(chunk)
                ],
            )
            failed += [chunk[int(f["Id"])].message_id for f in r.get("Failed", [])]
        return failed

    def change_visibility(self, messages: Sequence[QueueMessage], timeout_s: int) -> list[str]:
        """Make ``messages`` visible again after ``timeout_s`` seconds (0: now); the ids SQS
        did not accept."""
        failed: list[str] = []
        for i in range(0, len(messages), SQS_BATCH):
            chunk = messages[i : i + SQS_BATCH]
            r = self._call(
                "change_message_visibility_batch",
                Entries=[
                    {
                        "Id": str(n),
                        "ReceiptHandle": m.receipt_handle,
                        "VisibilityTimeout": timeout_s,
                    }
                    for n, m in enumerate(chunk)
                ],
            )
            failed += [chunk[int(f["Id"])].message_id for f in r.get("Failed", [])]
        return failed

    def send(self, bodies: Sequence[str]) -> int:
        """Send ``bodies`` (batches of 10); the number SQS accepted. ``QueueRefused`` if any
        was refused (the caller must not drop what it could not send)."""
        sent = 0
        for i in range(0, len(bodies), SQS_BATCH):
            chunk = bodies[i : i + SQS_BATCH]
            r = self._call(
                "send_message_batch",
                Entries=[{"Id": str(n), "MessageBody": b} for n, b in enumerate(chunk)],
            )
            if r.get("Failed"):
                codes = sorted({str(f.get("Code")) for f in r["Failed"]})
                raise QueueRefused(
                    f"SQS send_message_batch on {self.url}: {len(r['Failed'])} messages "
                    f"refused ({', '.join(codes)})"
                )
            sent += len(r.get("Successful", []))
        return sent

    def attributes(self, *names: str) -> dict[str, str]:
        """The queue's attributes (``QueueArn``, ``ApproximateNumberOfMessages``, ...; all
        when none is named). ``QueueRefused`` if the queue does not exist."""
        r = self._call("get_queue_attributes", AttributeNames=list(names) or ["All"])
        return {str(k): str(v) for k, v in r.get("Attributes", {}).items()}

    def set_attributes(self, attributes: dict[str, str]) -> None:
        """Set queue attributes (e.g. ``Policy``)."""
        self._call("set_queue_attributes", Attributes=attributes)
