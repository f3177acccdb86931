"""S3-specific behaviour of ``S3Store``: retries, lost responses, multipart, naming, fork.

All against the moto server over HTTP; faults come from ``tests.s3_fault_proxy`` in front of
it. The retry helper's pure functions are tested directly.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from lockgate.resources.probe import ensure_safe
from lockgate.resources.retry import RetryPolicy, is_transient, retry_call
from lockgate.resources.store import AlreadyExists, S3Options
from lockgate.resources.store_s3 import S3Error, S3Store, parse_s3_url, redact_url
from lockgate.resources.stores import open_store
from tests.conftest import MOTO_ENV
from tests.s3_fault_proxy import FaultProxy, ProxyRequest

MiB = 1024 * 1024
FAST = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05, max_total=30.0)

pytestmark = pytest.mark.s3


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server, seed=1) as p:
        yield p


def _store(endpoint: str, bucket: str, **kwargs: object) -> S3Store:
    store = S3Store(
        f"s3://{bucket}/root",
        S3Options(endpoint_url=endpoint, region="us-east-1"),
        retry=kwargs.pop("retry", FAST),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )
    ensure_safe(store)  # the probe runs before any fault is scripted
    return store


@pytest.fixture
def proxied(proxy: FaultProxy, bucket: str) -> S3Store:
    """An S3Store that talks to moto through the fault proxy."""
    return _store(proxy.url, bucket)


def _boto(endpoint: str) -> object:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


# -- retries ----------------------------------------------------------------------------


def test_transient_errors_are_retried_to_success(proxied: S3Store, proxy: FaultProxy) -> None:
    proxy.inject("slowdown", 2, method="PUT")
    proxied.put("a.txt", b"payload")
    proxy.inject("internal_error", 2, method="GET")
    assert proxied.get("a.txt") == b"payload"
    proxy.inject("drop_request", 1, method="HEAD")
    assert proxied.head("a.txt").size == 7
    proxy.inject("slowdown", 1, method="GET", path_contains="list-type=2")
    assert [o.key for o in proxied.list()] == ["a.txt"]
    assert proxy.pending() == 0
    assert proxy.faults == {"slowdown": 3, "internal_error": 2, "drop_request": 1}


def test_lost_response_on_put_if_absent_resolves_to_success(
    proxied: S3Store, proxy: FaultProxy
) -> None:
    proxy.inject("drop_response", 1, method="PUT", path_contains="claim.json")
    proxied.put_if_absent("claim.json", b"our claim")
    assert proxy.faults["drop_response"] == 1
    # the write happened on the first attempt; the retry met 412 and read the object back
    assert proxy.requests_for("PUT", "claim.json") == 2
    assert proxy.requests_for("GET", "claim.json") >= 1
    assert proxied.get("claim.json") == b"our claim"
    with pytest.raises(AlreadyExists):  # and it is still create-only afterwards
        proxied.put_if_absent("claim.json", b"our claim")


def test_first_attempt_412_is_already_exists(
    proxied: S3Store, proxy: FaultProxy, moto_server: str, bucket: str
) -> None:
    _boto(moto_server).put_object(Bucket=bucket, Key="root/k", Body=b"theirs")  # type: ignore[attr-defined]
    with pytest.raises(AlreadyExists):
        proxied.put_if_absent("k", b"theirs")  # same bytes, but no earlier attempt of ours
    assert proxy.requests_for("PUT", "/root/k") == 1
    assert proxied.get("k") == b"theirs"


def test_retried_412_with_other_bytes_is_already_exists(
    proxied: S3Store, proxy: FaultProxy, moto_server: str, bucket: str
) -> None:
    """Our first attempt failed (503), a competitor's object is there: never "success"."""
    _boto(moto_server).put_object(Bucket=bucket, Key="root/k", Body=b"theirs")  # type: ignore[attr-defined]
    proxy.inject("slowdown", 1, method="PUT")
    with pytest.raises(AlreadyExists):
        proxied.put_if_absent("k", b"ours")
    assert proxy.requests_for("PUT", "/root/k") == 2
    assert proxied.get("k") == b"theirs"


def test_lost_response_and_competitor_is_already_exists(
    proxied: S3Store, proxy: FaultProxy, moto_server: str, bucket: str
) -> None:
    """Our first PUT never arrives (dropped), a competitor wins meanwhile: AlreadyExists."""
    boto = _boto(moto_server)

    def competitor_first(req: ProxyRequest) -> None:
        if req.method == "PUT" and req.path.startswith(f"/{bucket}/root/race"):
            boto.put_object(Bucket=bucket, Key="root/race", Body=b"competitor")  # type: ignore[attr-defined]
            proxy.before_forward = None

    proxy.inject("drop_request", 1, method="PUT", path_contains="/root/race")
    proxy.before_forward = competitor_first
    with pytest.raises(AlreadyExists):
        proxied.put_if_absent("race", b"ours")
    assert proxied.get("race") == b"competitor"


def test_permanent_client_errors_are_not_retried(proxied: S3Store, proxy: FaultProxy) -> None:
    proxy.inject("access_denied", 1, method="PUT")
    with pytest.raises(S3Error) as info:
        proxied.put("denied.txt", b"x")
    assert info.value.code == "AccessDenied"
    assert info.value.status == 403
    assert proxy.requests_for("PUT", "denied.txt") == 1


def test_retries_are_bounded(proxy: FaultProxy, bucket: str) -> None:
    store = _store(proxy.url, bucket, retry=RetryPolicy(max_attempts=3, base_delay=0.01))
    store.put("x", b"1")
    proxy.inject("slowdown", 10, method="GET")
    with pytest.raises(S3Error) as info:
        store.get("x")
    assert info.value.code == "SlowDown"
    assert proxy.requests_for("GET", "/root/x") == 3
    assert proxy.pending() == 7


def test_streaming_read_resumes_after_a_truncated_body(proxied: S3Store, proxy: FaultProxy) -> None:
    data = random.Random(5).randbytes(3 * MiB)
    proxied.put("big.bin", data)
    proxy.inject("truncate_body", 1, method="GET", path_contains="big.bin")
    with proxied.open("big.bin") as f:
        assert f.read() == data
    assert proxy.faults["truncate_body"] == 1
    assert proxy.requests_for("GET", "big.bin") == 2  # the second one ranged, If-Match


def test_random_faults_never_break_create_only(proxy: FaultProxy, bucket: str) -> None:
    """Seeded random faults of every retryable kind: each create-only put either succeeds
    with its bytes stored or raises AlreadyExists because the key holds other bytes."""
    store = _store(proxy.url, bucket, retry=RetryPolicy(max_attempts=12, base_delay=0.005))
    proxy.set_rates(
        {"slowdown": 0.1, "internal_error": 0.05, "drop_request": 0.05, "drop_response": 0.1},
        seed=42,
    )
    results: dict[str, bool] = {}
    for i in range(40):
        key = f"claims/{i % 20:02d}"
        payload = f"attempt {i}".encode()
        try:
            store.put_if_absent(key, payload)
            results[f"{key}@{i}"] = True
        except AlreadyExists:
            results[f"{key}@{i}"] = False
    proxy.clear()
    assert sum(proxy.faults.values()) > 5
    for i in range(20):
        key = f"claims/{i:02d}"
        assert results[f"{key}@{i}"] is True  # the first creator of each key won
        assert results[f"{key}@{i + 20}"] is False
        assert store.get(key) == f"attempt {i}".encode()


# -- multipart ----------------------------------------------------------------------------


def _uploads(endpoint: str, bucket: str) -> list[object]:
    r = _boto(endpoint).list_multipart_uploads(Bucket=bucket)  # type: ignore[attr-defined]
    return list(r.get("Uploads", []))


def _mp_store(endpoint: str, bucket: str) -> S3Store:
    return _store(endpoint, bucket, multipart_threshold=6 * MiB, part_size=5 * MiB)


def test_large_create_only_put_goes_multipart(moto_server: str, bucket: str) -> None:
    store = _mp_store(moto_server, bucket)
    data = random.Random(1).randbytes(11 * MiB)
    store.put_if_absent("large.bin", data)
    assert store.get("large.bin") == data
    assert store.head("large.bin").etag.endswith("-3")  # three parts
    with pytest.raises(AlreadyExists):
        store.put_if_absent("large.bin", b"y" * (7 * MiB))
    assert _uploads(moto_server, bucket) == []
    store.put("large.bin", b"z" * (7 * MiB))  # plain put overwrites, multipart too
    assert store.get("large.bin") == b"z" * (7 * MiB)
    assert _uploads(moto_server, bucket) == []


def test_failed_conditional_multipart_complete_leaves_no_upload(
    proxy: FaultProxy, moto_server: str, bucket: str
) -> None:
    """A competitor creates the key while our parts upload: our complete gets 412, the
    put raises AlreadyExists, and the upload is aborted (no orphan parts)."""
    store = _mp_store(proxy.url, bucket)
    boto = _boto(moto_server)

    def competitor(req: ProxyRequest) -> None:
        if req.method == "POST" and "uploadId=" in req.path:
            boto.put_object(Bucket=bucket, Key="root/big", Body=b"competitor")  # type: ignore[attr-defined]
            proxy.before_forward = None

    proxy.before_forward = competitor
    with pytest.raises(AlreadyExists):
        store.put_if_absent("big", random.Random(2).randbytes(11 * MiB))
    assert store.get("big") == b"competitor"
    assert _uploads(moto_server, bucket) == []
    assert proxy.requests_for("DELETE", "uploadId=") == 1  # the abort


def test_failed_part_upload_aborts(proxy: FaultProxy, moto_server: str, bucket: str) -> None:
    store = _store(
        proxy.url,
        bucket,
        retry=RetryPolicy(max_attempts=2, base_delay=0.01),
        multipart_threshold=6 * MiB,
        part_size=5 * MiB,
    )
    proxy.inject("access_denied", 1, method="PUT", path_contains="partNumber=2")
    with pytest.raises(S3Error):
        store.put_if_absent("big", random.Random(3).randbytes(11 * MiB))
    assert not store.exists("big")
    assert _uploads(moto_server, bucket) == []


def test_lost_response_on_multipart_complete_is_success(
    proxy: FaultProxy, moto_server: str, bucket: str
) -> None:
    store = _mp_store(proxy.url, bucket)
    data = random.Random(4).randbytes(11 * MiB)
    proxy.inject("drop_response", 1, method="POST", path_contains="uploadId=")
    store.put_if_absent("big", data)
    assert proxy.faults["drop_response"] == 1
    assert store.get("big") == data
    assert _uploads(moto_server, bucket) == []


# -- naming, listing, configuration ---------------------------------------------------------


def test_keys_are_relative_to_the_root(s3_store: S3Store, moto_server: str, bucket: str) -> None:
    s3_store.put("x/y.txt", b"1")
    _boto(moto_server).put_object(Bucket=bucket, Key="outside.txt", Body=b"2")  # type: ignore[attr-defined]
    _boto(moto_server).put_object(Bucket=bucket, Key="rootless/z", Body=b"3")  # type: ignore[attr-defined]
    assert [o.key for o in s3_store.list()] == ["x/y.txt"]
    assert s3_store.uri("x/y.txt") == f"s3://{bucket}/root/x/y.txt"
    assert s3_store.uri() == f"s3://{bucket}/root"
    child = s3_store.child("x")
    assert child.url == f"s3://{bucket}/root/x"
    assert [o.key for o in child.list()] == ["y.txt"]
    whole = open_store(f"s3://{bucket}", s3_store.options)
    assert [o.key for o in whole.list()] == ["outside.txt", "root/x/y.txt", "rootless/z"]


def test_etag_has_no_quotes_and_matches_head(s3_store: S3Store) -> None:
    s3_store.put("e", b"hello")
    listed = next(iter(s3_store.list()))
    assert listed.etag == "5d41402abc4b2a76b9719d911017c592"  # md5("hello")
    assert s3_store.head("e").etag == listed.etag
    with s3_store.open("e", etag=listed.etag) as f:
        assert f.read() == b"hello"


def test_list_requests_counts_pages(s3_store: S3Store) -> None:
    s3_store.page_size = 10
    for i in range(25):
        s3_store.put(f"p/{i:02d}", b"")
    before = s3_store.list_requests
    assert len(list(s3_store.list("p/"))) == 25
    assert s3_store.list_requests - before == 3
    assert len(list(s3_store.list("p/", start_after="p/19"))) == 5
    assert s3_store.list_requests - before == 4


def test_url_parsing() -> None:
    assert parse_s3_url("s3://b") == ("b", "")
    assert parse_s3_url("s3://b/") == ("b", "")
    assert parse_s3_url("s3a://b/x/y/") == ("b", "x/y")
    for bad in ("s3://", "s3:///x", "http://b/x", "s3://b/../x", "b/x"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)
    with pytest.raises(ValueError):
        S3Store("s3://b", S3Options(), part_size=MiB)


def test_secrets_stay_out_of_reprs_and_messages() -> None:
    options = S3Options(
        endpoint_url="http://user:hunter2@127.0.0.1:9",
        access_key_id="AKIA1",
        secret_access_key="s3cr3t",
    )
    assert "s3cr3t" not in repr(options) and "AKIA1" not in repr(options)
    store = S3Store("s3://b/x", options)
    assert "hunter2" not in store.endpoint_url
    assert redact_url("http://u:p@h:1/x") == "http://h:1/x"
    assert redact_url("http://h:1") == "http://h:1"


def test_store_pickles_without_secrets_or_sessions(s3_store: S3Store) -> None:
    import pickle

    s3_store.put("p.txt", b"pickled")
    clone = pickle.loads(pickle.dumps(s3_store))
    assert isinstance(clone, S3Store)
    assert clone.get("p.txt") == b"pickled"
    assert "testing" not in repr(clone) and clone.url in repr(clone)


def _child_reads(store: S3Store, queue: multiprocessing.Queue[bytes]) -> None:
    queue.put(store.get("forked.txt"))


def test_store_survives_fork(s3_store: S3Store) -> None:
    """A store created before ``fork`` works in the child (its event loop is rebuilt)."""
    s3_store.put("forked.txt", b"from the parent")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_reads, args=(s3_store, queue))
    proc.start()
    try:
        assert queue.get(timeout=60) == b"from the parent"
        proc.join(timeout=30)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


# -- the retry helper -------------------------------------------------------------------


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def test_transient_classification() -> None:
    assert is_transient(_client_error("SlowDown", 503))
    assert is_transient(_client_error("InternalError", 500))
    assert is_transient(_client_error("ServiceUnavailable", 503))
    assert is_transient(_client_error("Throttling", 400))
    assert is_transient(_client_error("TooManyRequests", 429))
    assert is_transient(_client_error("ConditionalRequestConflict", 409))
    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(ConnectionClosedError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(_client_error("PreconditionFailed", 412))
    assert not is_transient(_client_error("AccessDenied", 403))
    assert not is_transient(_client_error("NoSuchKey", 404))
    assert not is_transient(_client_error("NotImplemented", 501))
    assert not is_transient(ValueError("bad key"))
    # Arrow's S3 filesystem (pyiceberg's FileIO), as it words errors
    arrow = "When completing multiple part upload for key 'k' in bucket 'b': AWS Error {} during"
    for name in ("NETWORK_CONNECTION", "INTERNAL_FAILURE", "SLOW_DOWN", "SERVICE_UNAVAILABLE"):
        assert is_transient(OSError(arrow.format(name) + " CompleteMultipartUpload operation: x"))
    assert is_transient(OSError(arrow.format("UNKNOWN (HTTP status 503)") + " PutObject operation"))
    assert not is_transient(OSError(arrow.format("ACCESS_DENIED") + " PutObject operation: no"))
    assert not is_transient(OSError(arrow.format("UNKNOWN (HTTP status 501)") + " PutObject op"))
    assert not is_transient(OSError("Path does not exist 'b/k'"))


def test_retry_call_backs_off_with_full_jitter_within_bounds() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=2.0, max_total=1000)
    sleeps: list[float] = []
    calls: list[int] = []

    def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 5:
            raise _client_error("SlowDown", 503)
        return "ok"

    assert retry_call(flaky, policy, sleep=sleeps.append, rng=random.Random(0)) == "ok"
    assert calls == [0, 1, 2, 3, 4, 5]
    caps = [0.5, 1.0, 2.0, 2.0, 2.0]
    assert len(sleeps) == 5
    assert all(0 <= s <= cap for s, cap in zip(sleeps, caps, strict=True))


def test_retry_call_stops_at_attempts_time_and_permanent_errors() -> None:
    attempts: list[int] = []

    def always(attempt: int) -> None:
        attempts.append(attempt)
        raise _client_error("InternalError", 500)

    with pytest.raises(ClientError):
        retry_call(always, RetryPolicy(max_attempts=3, base_delay=0), sleep=lambda _s: None)
    assert attempts == [0, 1, 2]

    now = [0.0]
    attempts.clear()

    def tick(seconds: float) -> None:
        now[0] += seconds

    policy = RetryPolicy(max_attempts=100, base_delay=1.0, max_delay=1.0, max_total=3.0)
    with pytest.raises(ClientError):
        retry_call(always, policy, sleep=tick, clock=lambda: now[0], rng=random.Random(1))
    assert now[0] <= 3.0
    assert 2 <= len(attempts) < 100

    attempts.clear()

    def denied(attempt: int) -> None:
        attempts.append(attempt)
        raise _client_error("AccessDenied", 403)

    with pytest.raises(ClientError):
        retry_call(denied, RetryPolicy(), sleep=lambda _s: None)
    assert attempts == [0]


def test_retry_policy_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_RETRY_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("LOCKGATE_RETRY_MAX_TOTAL", "2.5")
    policy = RetryPolicy.from_env()
    assert policy.max_attempts == 4
    assert policy.max_total == 2.5
    monkeypatch.setenv("LOCKGATE_RETRY_BASE_DELAY", "soon")
    with pytest.raises(ValueError, match="LOCKGATE_RETRY_BASE_DELAY"):
        RetryPolicy.from_env()
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_crash_points_fire_on_pipeline_writes_not_on_the_probe(
    s3_store: S3Store, moto_server: str, bucket: str
) -> None:
    """``store.put_if_absent.after`` (1st hit) kills the process after OUR put landed: the
    probe's own create-only puts, which run first, do not count as hits."""
    code = (
        "from lockgate.resources.store import S3Options\n"
        "from lockgate.resources.store_s3 import S3Store\n"
        f"s = S3Store('s3://{bucket}/root', S3Options(endpoint_url='{moto_server}', "
        "region='us-east-1'))\n"
        "s.put_if_absent('crash/claim.json', b'landed')\n"
        "print('not reached')\n"
    )
    env = {**os.environ, **MOTO_ENV, "LOCKGATE_CRASH_AT": "store.put_if_absent.after:1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "not reached" not in result.stdout
    assert s3_store.get("crash/claim.json") == b"landed"


def test_stores_have_their_own_sessions_and_share_the_parsed_service_models(
    moto_server: str, bucket: str
) -> None:
    """Each store's filesystem gets its own aiobotocore session (credentials, config); the
    botocore data loader, which parses the service models, is one per process."""
    a = _store(moto_server, bucket)
    b = S3Store(f"s3://{bucket}/other", S3Options(endpoint_url=moto_server, region="us-east-1"))
    a.put("k", b"from a")
    b.put("k", b"from b")
    assert (a.get("k"), b.get("k")) == (b"from a", b"from b")
    sa, sb = a._conn.fs().session, b._conn.fs().session
    assert sa is not None and sb is not None and sa is not sb
    assert sa.get_component("data_loader") is sb.get_component("data_loader")
