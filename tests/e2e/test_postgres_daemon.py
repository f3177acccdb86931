"""End to end on Dagster's production stack: the real ``dagster-daemon`` on PostgreSQL storage
(a real server, ``tests/postgres_server.py``) with the ``QueuedRunCoordinator`` launching
several runs at once (``dagster.table_concurrency: 2``: two per table), for two S3 sources on
moto over HTTP (a third source only added two run processes). Every landed record is in its
table exactly once, ``verify`` is ok, runs really overlapped in time, and each table's pool
admits two runs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
import pytest
import yaml

from lockgate.pipelines.commands.status import source_status
from lockgate.pipelines.dagster_yaml import write_dagster_yaml
from lockgate.resources.runtime import Runtime
from tests.conftest import create_bucket, free_port
from tests.e2e.test_platform_e2e_daemon import _stop_group, _tail, dagster_daemon
from tests.platform_helpers import (
    REPO,
    VENV_BIN,
    Lander,
    landing_store,
    s3_config,
    s3_env,
    table_ids,
    verify,
)
from tests.postgres_server import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]  # fixtures

pytestmark = pytest.mark.s3

URL_ENV = "LOCKGATE_TEST_DAGSTER_PG_URL"
SOURCES = ("events", "orders")
# Idle 2-core machine: about two minutes; a loaded one (8 test suites at once) can take 8.
TIMEOUT_S = 720.0
SERVER_START_S = 300.0
POLL_S = 2.0


def postgres_instance(folder: Path, url_env: str, code_port: int) -> tuple[Path, Path]:
    """``(home, workspace)``: a Dagster home with PostgreSQL storage whose URL the daemon
    reads from ``$url_env``, and a workspace naming a code server on ``127.0.0.1:code_port``
    (started on its own, as a deployment runs it: not a child the daemon restarts when a
    heartbeat is late on a loaded machine)."""
    home = folder / "dagster_home"
    # retries: on a loaded machine a launch can still fail; Dagster retries it like a run
    write_dagster_yaml(home, postgres_url_env=url_env, max_concurrent_runs=4, max_retries=5)
    workspace = folder / "workspace.yaml"
    server = {"host": "127.0.0.1", "port": code_port, "location_name": "lockgate"}
    workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": server}]}))
    return home, workspace


@contextlib.contextmanager
def code_server(port: int, env: dict[str, str], log: Path) -> Iterator[None]:
    """``dagster api grpc`` serving ``lockgate.pipelines.definitions`` on ``127.0.0.1:port``
    in its own process group, up (health check) before the daemon starts; stopped on exit
    with everything it started (the run workers)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "dagster"),
                "api",
                "grpc",
                "--module-name",
                "lockgate.pipelines.definitions",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=str(REPO),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert proc.poll() is None, f"code server exited:\n{_tail(log)}"
            if _serving(port):
                break
            assert time.monotonic() < deadline, f"code server not up:\n{_tail(log)}"
            time.sleep(2)
        yield
    finally:
        _stop_group(proc)


def _serving(port: int) -> bool:
    """What ``dagster api grpc-health-check`` asks, from this process (a CLI process per
    poll paid ~1-2 CPU s of imports while the code server was still starting)."""
    from dagster._grpc.client import DagsterGrpcClient

    return bool(DagsterGrpcClient(port=port, host="127.0.0.1").health_check_query() == "SERVING")


def max_overlap(records: list[dg.RunRecord]) -> int:
    """The largest number of runs that were running at one instant."""
    edges: list[tuple[float, int]] = []
    for r in records:
        if r.start_time is not None and r.end_time is not None:
            edges += [(r.start_time, 1), (r.end_time, -1)]
    best = cur = 0
    for _, step in sorted(edges):  # an end before a start at the same instant
        cur += step
        best = max(best, cur)
    return best


def _all_committed(rt: Runtime, landers: Mapping[str, Lander]) -> bool:
    for name, lander in landers.items():
        if table_ids(rt, name) != lander.landed:
            return False
        status = source_status(rt, rt.source(name))
        if not status["claimed_batches"] or status["pending_batches"]:
            return False
    return True


@pytest.mark.timeout(900)
def test_daemon_on_postgres_runs_concurrently_exactly_once(
    tmp_path: Path, moto_server: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = create_bucket(moto_server)
    cfg = s3_config(
        tmp_path / "lockgate.yaml",
        moto_server,
        bucket,
        SOURCES,
        sensor_interval_seconds=5,
        table_concurrency=2,
    )
    home, workspace = postgres_instance(tmp_path, URL_ENV, free_port())
    text = (home / "dagster.yaml").read_text()
    assert "postgres" in text and postgres_url not in text  # the URL stays in the environment
    monkeypatch.setenv(URL_ENV, postgres_url)
    env = {
        **os.environ,
        **s3_env(moto_server),
        "DAGSTER_HOME": str(home),
        "LOCKGATE_CONFIG": cfg.path,
    }
    env.pop("LOCKGATE_CRASH_AT", None)
    env.setdefault("DAGSTER_GRPC_TIMEOUT_SECONDS", "300")  # a busy code server answers late
    rt = Runtime.from_config(cfg)
    landers = {
        name: Lander(landing_store(cfg, name), start=i * 10_000) for i, name in enumerate(SOURCES)
    }
    for lander in landers.values():
        for day, key in (("01", "a"), ("01", "b"), ("02", "c"), ("02", "d")):
            lander.land(f"2026-07-{day}/{key}.jsonl", n=5)
    log = tmp_path / "daemon.log"

    port = yaml.safe_load(workspace.read_text())["load_from"][0]["grpc_server"]["port"]
    with (
        code_server(port, env, tmp_path / "code_server.log"),
        dagster_daemon(workspace, env, log) as proc,
    ):
        deadline = time.monotonic() + TIMEOUT_S
        while not _all_committed(rt, landers):
            assert proc.poll() is None, f"dagster-daemon exited early:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"not committed in time\n{_tail(log)}"
            time.sleep(POLL_S)

    for name, lander in landers.items():
        report = verify(rt, name)
        assert report.ok, (name, report.violations)
        assert report.rows == sum(lander.landed.values()) == 20
        assert table_ids(rt, name) == lander.landed

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        records = instance.get_run_records(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS])
        )
        # 2 sources x (1 batch of day 01 + 1 of day 02): max_files_per_batch 2
        assert len(records) >= 4
        assert max_overlap(list(records)) >= 2, "the queued coordinator never ran two at once"
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
        assert {f"lockgate/lake.{n}": 2 for n in SOURCES}.items() <= limits.items()
    finally:
        instance.dispose()
