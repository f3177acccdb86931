"""Shared fixtures: a real moto S3 server over HTTP on 127.0.0.1, and store factories."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockgate.resources.store import LocalStore, ObjectStore, S3Options
from lockgate.resources.stores import open_store

MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto S3 server on a free loopback port, reached over real HTTP, whose create-only
    puts are atomic as on S3 (see ``tests/moto_atomic.py``). Yields its URL."""
    from tests.moto_atomic import start

    for k, v in MOTO_ENV.items():
        os.environ.setdefault(k, v)
    port = free_port()
    stop = start(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop()


@pytest.fixture(scope="session")
def s3_options(moto_server: str) -> S3Options:
    return S3Options(endpoint_url=moto_server, region="us-east-1")


def create_bucket(endpoint: str, name: str | None = None) -> str:
    """Create a fresh bucket on the moto server and return its name."""
    import boto3

    name = name or f"lg-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def bucket(moto_server: str) -> str:
    return create_bucket(moto_server)


@pytest.fixture
def s3_store(moto_server: str, s3_options: S3Options, bucket: str) -> ObjectStore:
    return open_store(f"s3://{bucket}/root", s3_options)


@pytest.fixture
def local_store(tmp_path: Path) -> ObjectStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """The same test on both backends."""
    name = "local_store" if request.param == "local" else "s3_store"
    store: ObjectStore = request.getfixturevalue(name)
    return store


#: Seconds the heaviest test files take in ``make test`` (2-core CI: the slowest tests of a
#: ``--durations`` run, summed per file, estimated where a file's smaller tests were not
#: listed, or a file's own run under load scaled by one of its tests; only the order
#: matters). Under ``--dist loadfile`` a file runs
#: whole on one worker, so these go first (longest first) and the many short files fill in
#: behind them: a heavy file started last would leave the other worker idle for its length.
#: A stale or missing entry only costs balance, never a test.
HEAVY_FILES: dict[str, int] = {
    "tests/torture/test_slice.py": 195,
    "tests/e2e/test_docs_commands.py": 110,
    "tests/e2e/test_postgres_daemon.py": 100,
    "tests/e2e/test_make_run.py": 80,
    "tests/e2e/test_platform_e2e_daemon.py": 80,
    "tests/pipelines/test_component.py": 70,
    "tests/sensors/test_move_source.py": 55,
    "tests/resources/test_tables_concurrency.py": 45,
    "tests/pipelines/test_bytes_accounting.py": 37,
    "tests/pipelines/test_platform_cli.py": 35,
    "tests/resources/test_compaction.py": 35,
    "tests/sensors/test_platform_sensor_runs.py": 35,
    "tests/sensors/test_platform_sensor.py": 34,
    "tests/sensors/test_table_concurrency.py": 25,
    "tests/pipelines/test_hostile_input.py": 22,
    "tests/pipelines/test_reader_fuzz.py": 19,
    "tests/resources/test_compaction_memory.py": 16,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order files for ``--dist loadfile`` (with ``--no-loadscope-reorder``, which keeps this
    order): the ``HEAVY_FILES`` longest first, then the others with the most tests first (as
    xdist's default reorder would). Each file's tests stay together and in their order."""
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    for i, item in enumerate(items):
        path = item.nodeid.split("::", 1)[0]
        first.setdefault(path, i)
        count[path] = count.get(path, 0) + 1

    def key(item: pytest.Item) -> tuple[int, int, int]:
        path = item.nodeid.split("::", 1)[0]
        return (-HEAVY_FILES.get(path, 0), -count[path], first[path])

    items.sort(key=key)  # stable: a file's tests keep their order
