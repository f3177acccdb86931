"""`make run-postgres` really works: the demo on Dagster's PostgreSQL storage runs a batch, and
Ctrl-C stops `dagster dev` AND the local PostgreSQL server it started (which daemonizes out of
make's process group, so only the recipe's EXIT trap can stop it).

Slow (about 3 minutes: server start, first code load, one sensor run, a graceful stop), so it
runs in ``make test-all``; the module that starts the server is tested in ``make test`` by
``tests/pipelines/test_local_postgres.py``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from lockgate.pipelines.local_postgres import PostgresMissing, bin_dir
from lockgate.resources.config import load_config
from tests.conftest import free_port
from tests.e2e.test_make_run import (
    HTTP_TIMEOUT,
    REPO,
    RUN_TIMEOUT,
    MakeRun,
    _http_ok,
    start_make,
)

pytestmark = pytest.mark.slow


def _postgres_on(data: Path) -> list[psutil.Process]:
    """The PostgreSQL server processes serving ``data`` (its postmaster and workers)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmd = p.info["cmdline"] or []
            if any(str(data) == a for a in cmd) and "postgres" in " ".join(cmd):
                found.append(p)
    return found


@pytest.mark.timeout(900)
def test_make_run_postgres_runs_a_batch_and_ctrl_c_stops_the_server(tmp_path: Path) -> None:
    try:
        bin_dir()
    except PostgresMissing as e:
        pytest.skip(f"no PostgreSQL server here: {e}")
    config_path = tmp_path / "lockgate.yaml"
    shutil.copyfile(REPO / "lockgate.yaml", config_path)
    # PG_DATA in a folder the `postgres` user can reach (initdb runs as it when we are root)
    pg_folder = Path(tempfile.mkdtemp(prefix="lockgate-pg-run-"))
    pg_folder.chmod(0o755)
    home, data, port = tmp_path / ".lockgate", pg_folder / "data", free_port()
    log = tmp_path / "make_run_postgres.log"
    variables = [f"PG_PORT={free_port()}", f"PG_DATA={data}", f"LOCKGATE_HOME={home}"]
    proc = start_make("run-postgres", [*variables, f"LOCKGATE_CONFIG={config_path}"], port, log)
    run = MakeRun(
        proc,
        port,
        load_config(str(config_path)),
        home,
        log,
        time.monotonic(),
        dagster_home="dagster_home_postgres",
        stop_grace=240.0,  # dagster dev's own stop, then the server drains (at most 90 s)
    )
    try:
        run.wait_for("HTTP 200", HTTP_TIMEOUT, lambda: _http_ok(f"{run.base}/server_info"))
        assert _postgres_on(data), "make run-postgres started no PostgreSQL server on its PG_DATA"

        def succeeded() -> list[dict[str, Any]] | None:
            runs = run.graphql(
                "{ runsOrError(filter: {statuses: [SUCCESS]}) "
                "{ ... on Runs { results { runId jobName } } } }"
            )["runsOrError"]["results"]
            return runs or None

        runs = run.wait_for("a successful run", RUN_TIMEOUT, succeeded)
        assert any(r["jobName"].endswith("_batches") for r in runs), runs
        assert "postgres_url" in (home / "dagster_home_postgres" / "dagster.yaml").read_text()
    finally:
        outcome = run.stop()
        leftover = _postgres_on(data)
        for p in leftover:  # never leave a server behind, even when the test fails
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGTERM)
        psutil.wait_procs(leftover, timeout=30)
        shutil.rmtree(pg_folder, ignore_errors=True)
    assert outcome == "sigint", "SIGINT did not stop make run-postgres:\n" + run.log_tail()
    assert not run.survivors()
    assert not leftover, (
        "Ctrl-C left the PostgreSQL server running: "
        + str([(p.pid, p.info.get("cmdline")) for p in leftover])
        + "\n"
        + run.log_tail()
    )
