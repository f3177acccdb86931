"""The conditional-write probe, its per-process cache, and ``lockgate doctor``.

An endpoint that ignores ``If-None-Match`` is imitated by ``tests.helpers_s3.LaxS3Server``
(loopback HTTP); the honest endpoint is the moto server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockgate.resources.probe import (
    PROBE_PREFIX,
    ensure_safe,
    probe_conditional_writes,
    reset_probe_cache,
)
from lockgate.resources.retry import RetryPolicy
from lockgate.resources.store import LocalStore, S3Options, UnsafeEndpoint
from lockgate.resources.store_s3 import S3Store
from tests.conftest import MOTO_ENV, create_bucket
from tests.helpers_s3 import LaxS3Server
from tests.s3_fault_proxy import FaultProxy

LOCKGATE = str(Path(sys.executable).parent / "lockgate")
SECRET = "do-not-print-this-secret-0123456789"


@pytest.fixture
def lax(monkeypatch: pytest.MonkeyPatch) -> Iterator[LaxS3Server]:
    for k, v in MOTO_ENV.items():  # any credentials: the imitation does not check them
        monkeypatch.setenv(k, v)
    with LaxS3Server() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_probe_cache() -> Iterator[None]:
    reset_probe_cache()
    yield
    reset_probe_cache()


def _s3(endpoint: str, url: str) -> S3Store:
    return S3Store(url, S3Options(endpoint_url=endpoint, region="us-east-1"))


def test_probe_refuses_an_endpoint_that_ignores_if_none_match(lax: LaxS3Server) -> None:
    store = _s3(lax.url, "s3://bucket/x")
    with pytest.raises(UnsafeEndpoint) as info:
        probe_conditional_writes(store)
    message = str(info.value)
    assert lax.url in message
    assert "silently overwrote a create-only put" in message
    assert "exactly-once" in message
    assert "If-None-Match" in message and "MinIO" in message
    assert lax.conditional_puts == 2  # it was asked, and ignored it
    assert lax.objects == {}  # the probe cleaned up after itself


def test_probe_passes_on_moto_and_cleans_up(s3_store: S3Store) -> None:
    probe_conditional_writes(s3_store)
    assert list(s3_store.list(PROBE_PREFIX)) == []


def test_probe_passes_on_a_local_folder(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    probe_conditional_writes(store)
    assert list(store.list(PROBE_PREFIX)) == []
    ensure_safe(LocalStore(tmp_path / "other"))  # a no-op: nothing written
    assert not (tmp_path / "other").exists()


def test_first_write_to_an_unsafe_endpoint_is_refused(lax: LaxS3Server) -> None:
    store = _s3(lax.url, "s3://bucket/x")
    for write in (
        lambda: store.put_if_absent("claim", b"1"),
        lambda: store.put("object", b"2"),
        lambda: store.delete("object"),
    ):
        with pytest.raises(UnsafeEndpoint):
            write()
    assert lax.puts == 2  # one probe (two creates); the verdict is cached, nothing else
    assert lax.objects == {}
    other_root = _s3(lax.url, "s3://bucket/y")  # same endpoint and bucket: same verdict
    with pytest.raises(UnsafeEndpoint):
        other_root.put("z", b"3")
    assert lax.puts == 2


def test_probe_runs_once_per_endpoint_even_under_concurrency(moto_server: str, bucket: str) -> None:
    with FaultProxy(moto_server) as proxy:
        stores = [_s3(proxy.url, f"s3://{bucket}/root{i}") for i in range(8)]
        barrier = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def first_write(i: int) -> None:
            barrier.wait()
            try:
                stores[i].put_if_absent("k", b"v")
            except BaseException as e:  # asserted below
                errors.append(e)

        threads = [threading.Thread(target=first_write, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert proxy.requests_for("PUT", PROBE_PREFIX) == 2
        stores[0].put("again", b"v")
        assert proxy.requests_for("PUT", PROBE_PREFIX) == 2
        other_bucket = create_bucket(moto_server)
        _s3(proxy.url, f"s3://{other_bucket}").put("k", b"v")
        assert proxy.requests_for("PUT", PROBE_PREFIX) == 4


def test_a_failed_probe_is_not_cached_as_safe(moto_server: str, bucket: str) -> None:
    """A probe that could not run (endpoint down) is retried by the next write."""
    with FaultProxy(moto_server) as proxy:
        store = S3Store(
            f"s3://{bucket}/r",
            S3Options(endpoint_url=proxy.url, region="us-east-1"),
            retry=RetryPolicy(max_attempts=1),
        )
        proxy.inject("access_denied", 1, method="PUT")
        with pytest.raises(Exception, match="AccessDenied"):
            store.put("k", b"v")
        store.put("k", b"v")
        assert store.get("k") == b"v"
        assert proxy.requests_for("PUT", PROBE_PREFIX) == 3


# -- lockgate doctor ------------------------------------------------------------------------


def _doctor(*args: str, endpoint: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lockgate doctor`` as a user runs it: the installed command, in a subprocess."""
    env = {
        **os.environ,
        **MOTO_ENV,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ENDPOINT_URL": endpoint,
    }
    env.pop("LOCKGATE_CONFIG", None)
    return subprocess.run(
        [LOCKGATE, "doctor", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _doctor_in_process(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str = "",
) -> tuple[int, str]:
    """``lockgate doctor`` in this process (its own parser: no other command is imported)."""
    import argparse

    from lockgate.pipelines.commands import doctor

    for k, v in MOTO_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("LOCKGATE_CONFIG", raising=False)
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    doctor.add_arguments(parser)
    code = doctor.run(parser.parse_args(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_doctor_fails_on_an_endpoint_that_ignores_if_none_match(
    lax: LaxS3Server, tmp_path: Path
) -> None:
    result = _doctor("--url", "s3://bucket/x", endpoint=lax.url, cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "FAIL  create-only puts" in out
    assert "silently overwrote a create-only put" in out
    assert "cannot guarantee exactly-once" in out
    assert lax.url in out
    assert "PASS  reachable" in out and "PASS  list" in out
    assert SECRET not in out


def test_doctor_passes_on_moto(moto_server: str, bucket: str, tmp_path: Path) -> None:
    result = _doctor(
        "--url",
        f"s3://{bucket}/warehouse",
        "--url",
        str(tmp_path / "local"),
        endpoint=moto_server,
        cwd=tmp_path,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert out.count("PASS  create-only puts") == 2
    assert "FAIL" not in out
    assert "all checks passed" in out
    assert SECRET not in out


def test_doctor_reports_a_missing_bucket(
    moto_server: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = _doctor_in_process(
        ["--url", "s3://no-such-bucket-lockgate/x"], capsys, monkeypatch, moto_server
    )
    assert code == 1, out
    assert "FAIL  reachable" in out and "does not exist" in out
    assert "SKIP  create-only puts" in out


def test_doctor_checks_the_configured_locations(
    moto_server: str,
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "lockgate.yaml"
    config.write_text(
        f"warehouse: s3://{bucket}/warehouse\n"
        f"s3:\n  endpoint_url: {moto_server}\n  region: us-east-1\n"
        "sources:\n"
        "  events:\n"
        f"    landing: s3://{bucket}/landing/events\n"
        "    format: jsonl\n"
        "    table: raw.events\n"
        "    partition:\n      start: 2024-01-01\n"
    )
    code, out = _doctor_in_process(["--config", str(config)], capsys, monkeypatch)
    assert code == 0, out
    assert f"s3://{bucket}/warehouse" in out
    assert f"s3://{bucket}/warehouse/_ledger" in out
    assert f"s3://{bucket}/landing/events" in out
    assert out.count("PASS  create-only puts") == 3


def test_doctor_without_config_or_url_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _doctor_in_process([], capsys, monkeypatch)
    assert code == 1
    assert "FAIL  config" in out and "--url" in out
