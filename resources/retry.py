"""One retry helper for transient object-store errors.

Contract:

* ``retry_call(fn, policy)`` calls ``fn(attempt)`` (``attempt`` counts from 0) until it
  returns, or raises an error that ``policy.is_transient`` rejects, or the policy's
  attempts or total time are used up; then the last error propagates unchanged.
* Waits are exponential backoff with full jitter: attempt ``n`` sleeps a uniform random time
  in ``[0, min(max_delay, base_delay * 2**n)]``, never past the ``max_total`` budget.
* Transient means: HTTP 5xx (except 501 Not Implemented), throttling (``SlowDown``,
  ``Throttling``, HTTP 429 ...), request timeouts, S3's 409 ``ConditionalRequestConflict``
  (concurrent conditional writes), and connection failures (refused, reset,
  closed mid-response, connect/read timeouts). Any other 4xx is permanent, in particular
  412 Precondition Failed: it is never retried here. Arrow's S3 filesystem (pyiceberg's
  FileIO writes data files, manifests and manifest lists through it) reports an error only
  as ``OSError`` text, ``... AWS Error NETWORK_CONNECTION during CompleteMultipartUpload
  operation: ...``, after its own retries: the same cases there (``ARROW_TRANSIENT_ERRORS``,
  or an ``UNKNOWN`` error whose HTTP status is 5xx or 429) are transient.
* ``fn`` learns from ``attempt`` whether an earlier attempt may have reached the server, so
  a create-only put can tell "my lost earlier attempt wrote this" from "someone else did".
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "EC2ThrottledException",
    }
)
TRANSIENT_CODES = THROTTLING_CODES | frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        # S3: concurrent conditional writes to one key; AWS asks to retry (the retry then
        # meets 412 if another writer won)
        "ConditionalRequestConflict",
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry. ``max_attempts`` counts the first call; ``max_total`` (seconds)
    bounds the time spent sleeping plus calling before a new attempt may start."""

    max_attempts: int = 8
    base_delay: float = 0.1
    max_delay: float = 5.0
    max_total: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_total < 0:
            raise ValueError("RetryPolicy delays must be >= 0")

    @classmethod
    def from_env(cls, prefix: str = "LOCKGATE_RETRY_") -> RetryPolicy:
        """The default policy, overridden by ``LOCKGATE_RETRY_MAX_ATTEMPTS``,
        ``..._BASE_DELAY``, ``..._MAX_DELAY`` and ``..._MAX_TOTAL`` when set."""
        d = cls()

        def num(name: str, default: float) -> float:
            raw = os.environ.get(prefix + name)
            if raw is None or raw == "":
                return default
            try:
                return float(raw)
            except ValueError as e:
                raise ValueError(f"{prefix}{name}={raw!r} is not a number") from e

        return cls(
            max_attempts=int(num("MAX_ATTEMPTS", d.max_attempts)),
            base_delay=num("BASE_DELAY", d.base_delay),
            max_delay=num("MAX_DELAY", d.max_delay),
            max_total=num("MAX_TOTAL", d.max_total),
        )

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter delay before retry number ``attempt + 1``."""
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        return (rng or random).uniform(0.0, cap)


NO_RETRY = RetryPolicy(max_attempts=1)


#: The AWS SDK error names that Arrow's S3 filesystem reports for connection failures,
#: server errors, throttling and timeouts (``AWS Error <NAME> during <operation> ...``).
ARROW_TRANSIENT_ERRORS = frozenset(
    {
        "NETWORK_CONNECTION",
        "INTERNAL_FAILURE",
        "SERVICE_UNAVAILABLE",
        "SLOW_DOWN",
        "THROTTLING",
        "REQUEST_TIMEOUT",
    }
)
_ARROW_AWS_ERROR = re.compile(r"AWS Error ([A-Z_]+)(?: \(HTTP status (\d{3})\))? during ")


def _arrow_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is Arrow's S3 ``OSError`` for a transient failure."""
    if not isinstance(exc, OSError):
        return False
    m = _ARROW_AWS_ERROR.search(str(exc))
    if m is None:
        return False
    if m.group(1) in ARROW_TRANSIENT_ERRORS:
        return True
    status = int(m.group(2)) if m.group(2) else None
    return status is not None and (status == 429 or (status >= 500 and status != 501))


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError`` (e.g. ``NoSuchKey``), else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ``ClientError``, else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return None


def _connection_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from botocore import exceptions as be

        types += [
            be.EndpointConnectionError,
            be.ConnectionClosedError,
            be.ConnectTimeoutError,
            be.ReadTimeoutError,
            be.ResponseStreamingError,
            be.IncompleteReadError,
        ]
    except ImportError:  # pragma: no cover - botocore is a dependency
        pass
    try:
        import aiohttp

        types += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    except ImportError:  # pragma: no cover - aiohttp comes with s3fs
        pass
    return tuple(types)


_CONNECTION_ERRORS: tuple[type[BaseException], ...] | None = None  # on first use: aiohttp is
# a heavy import (~0.3 s) that a run on a local warehouse never needs


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same request may succeed (see the module contract)."""
    code = error_code(exc)
    status = http_status(exc)
    if code is not None or status is not None:
        if code in TRANSIENT_CODES:
            return True
        if status == 429:
            return True
        return status is not None and status >= 500 and status != 501
    if _arrow_transient(exc):
        return True
    global _CONNECTION_ERRORS
    if _CONNECTION_ERRORS is None:
        _CONNECTION_ERRORS = _connection_error_types()
    return isinstance(exc, _CONNECTION_ERRORS)


def retry_call(
    fn: Callable[[int], T],
    policy: RetryPolicy,
    *,
    what: str = "request",
    transient: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn(attempt)`` under ``policy``; see the module contract."""
    start = clock()
    attempt = 0
    while True:
        try:
            return fn(attempt)
        except Exception as exc:
            if not transient(exc):
                raise
            attempt += 1
            if attempt >= policy.max_attempts:
                log.warning("%s: giving up after %d attempts: %s", what, attempt, exc)
                raise
            delay = policy.backoff(attempt - 1, rng)
            if clock() - start + delay > policy.max_total:
                log.warning("%s: giving up after %.1f s: %s", what, clock() - start, exc)
                raise
            log.info("%s: transient error (attempt %d), retrying: %s", what, attempt, exc)
            sleep(delay)
