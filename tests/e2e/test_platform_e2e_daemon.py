"""End to end with the real ``dagster-daemon``: its sensor daemon ticks the source's sensor
and its queued-run coordinator launches the runs (subprocesses of the code server) for a
small S3 source on moto over HTTP. No webserver. Two waves of landed objects; after each the
table holds every landed record exactly once and ``verify`` is ok.

The daemon runs in its own process group and is stopped by PID in ``finally`` (SIGINT, then
SIGTERM, then SIGKILL), with everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockgate.pipelines.commands.status import source_status
from lockgate.resources.runtime import Runtime
from tests.conftest import create_bucket
from tests.platform_helpers import (
    Lander,
    dagster_instance,
    landing_store,
    run_lockgate,
    s3_config,
    s3_env,
    start_daemon,
    table_ids,
    verify,
)

pytestmark = pytest.mark.s3

# Bound per wave. Idle 2-core machine: a wave takes well under a minute; on a loaded CI box
# a run subprocess alone can take a minute to import and start.
WAVE_TIMEOUT_S = 300.0
POLL_S = 2.0


@contextlib.contextmanager
def dagster_daemon(
    workspace: Path, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``dagster-daemon run -w workspace`` in a new process group; stopped on exit."""
    proc = start_daemon(workspace, env, log)
    try:
        yield proc
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, then SIGTERM, then SIGKILL to the daemon's process group (its pgid is its PID:
    it was started in a new session), waiting for the daemon between steps."""
    pgid = proc.pid
    for sig, grace in ((signal.SIGINT, 20.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # the daemon is gone; its children (code server, run workers) share the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        return


def _tail(log: Path, n: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no daemon log)"


def _wait_all_committed(
    rt: Runtime, lander: Lander, proc: subprocess.Popen[bytes], log: Path
) -> dict[str, Any]:
    """Poll what ``lockgate status --json`` reports (the same function, in-process) until no
    batch is pending and the table holds every landed id; fail with the daemon's log after
    ``WAVE_TIMEOUT_S``."""
    source = rt.source("events")
    deadline = time.monotonic() + WAVE_TIMEOUT_S
    while True:
        assert proc.poll() is None, f"dagster-daemon exited early:\n{_tail(log)}"
        # the table first: once it holds every landed id, a status read after it counts every
        # batch that committed them
        complete = table_ids(rt, "events") == lander.landed
        status = source_status(rt, source)
        if complete and status["claimed_batches"] and not status["pending_batches"]:
            return status
        assert time.monotonic() < deadline, f"not committed in time: {status}\n{_tail(log)}"
        time.sleep(POLL_S)


def test_dagster_daemon_ingests_two_waves_exactly_once(tmp_path: Path, moto_server: str) -> None:
    bucket = create_bucket(moto_server)
    cfg = s3_config(
        tmp_path / "lockgate.yaml", moto_server, bucket, ["events"], sensor_interval_seconds=5
    )
    home, workspace = dagster_instance(tmp_path)
    env = {
        **os.environ,
        **s3_env(moto_server),
        "DAGSTER_HOME": str(home),
        "LOCKGATE_CONFIG": cfg.path,
    }
    env.pop("LOCKGATE_CRASH_AT", None)
    rt = Runtime.from_config(cfg)
    lander = Lander(landing_store(cfg, "events"))
    lander.land("2026-07-01/a.jsonl", n=10)
    lander.land("2026-07-01/b.jsonl", n=10)
    lander.land("2026-07-02/c.jsonl", n=10)
    log = tmp_path / "daemon.log"

    with dagster_daemon(workspace, env, log) as proc:
        first = _wait_all_committed(rt, lander, proc, log)
        assert first["committed_batches"] == first["claimed_batches"] == 2
        lander.land("2026-07-02/d.jsonl", n=7)
        lander.land("2026-07-03/e.jsonl", n=7)
        second = _wait_all_committed(rt, lander, proc, log)
        assert second["committed_batches"] == second["claimed_batches"] >= 4
    assert proc.returncode is not None

    report = verify(rt, "events")
    assert report.ok, report.violations
    assert report.rows == sum(lander.landed.values()) == 44
    assert table_ids(rt, "events") == lander.landed

    # the console script, reading the daemon's instance: nothing pending, nothing stuck
    st = run_lockgate(
        cfg.path, "status", "--json", env={**s3_env(moto_server), "DAGSTER_HOME": str(home)}
    )
    assert st.returncode == 0, st.stderr
    (status,) = json.loads(st.stdout)
    assert status["pending_batches"] == [] and status["stuck_batches"] == {}
    assert status["committed_batches"] == status["claimed_batches"]
