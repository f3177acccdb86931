"""On call: a frozen batch worker (SIGSTOP) with the real ``dagster-daemon``.

The first batch run to read an object freezes itself (``LOCKGATE_CRASH_SIGNAL=STOP`` at the
``stage.after_read`` crash point; its PID lands in a file). While it is frozen, ``status``
reports it hung (its heartbeat stopped) and the table's other batch queued behind it; run
monitoring fails it at its limit (short here: ``max_runtime_seconds``), which releases the
table's pool; run retries then commit its batch, exactly once -- also after the frozen worker
is continued. Whatever happens, the stopped process is continued and killed in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lockgate.pipelines.commands.status import DagsterView, source_status
from lockgate.resources.runtime import Runtime
from lockgate.sensors.runs import BATCH_TAG, HEARTBEAT_TAG, SOURCE_TAG
from tests.conftest import create_bucket
from tests.e2e.test_platform_e2e_daemon import _tail, dagster_daemon
from tests.platform_helpers import (
    Lander,
    dagster_instance,
    landing_store,
    run_lockgate,
    s3_config,
    s3_env,
    table_ids,
    verify,
)

# `slow` (7-8.5 min: a real daemon waits out the hang limit): `make test-all` runs it; the
# hang detection itself is in make test's slice (tests/pipelines/test_hung_run_limit.py).
pytestmark = [pytest.mark.s3, pytest.mark.slow]

# the test's hung-run limit (dagster.max_runtime_seconds): long enough for a `lockgate status`
# process (slow to start on a loaded machine) to see the hang before run monitoring ends it
LIMIT_S = 150
POLL_S = 2.0
# run monitoring polls every 15 s; a loaded machine adds its own delays
RELEASE_SLACK_S = 15 + 45
START_TIMEOUT_S = 300.0


def _frozen_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def _status(rt: Runtime, instance: dg.DagsterInstance) -> dict[str, Any]:
    return source_status(rt, rt.source("events"), DagsterView(instance, None), list_landing=False)


def _batch_runs(instance: dg.DagsterInstance, batch: int) -> list[dg.DagsterRun]:
    tags = {SOURCE_TAG: "events", BATCH_TAG: str(batch)}
    return list(instance.get_runs(filters=dg.RunsFilter(tags=tags)))


def test_a_frozen_batch_worker_releases_its_table_and_its_batch_commits_once(
    tmp_path: Path, moto_server: str
) -> None:
    bucket = create_bucket(moto_server)
    cfg = s3_config(
        tmp_path / "lockgate.yaml",
        moto_server,
        bucket,
        ["events"],
        sensor_interval_seconds=5,
        max_runtime_seconds=LIMIT_S,
    )
    home, workspace = dagster_instance(tmp_path)
    pid_file = tmp_path / "frozen.pid"
    env = {
        **os.environ,
        **s3_env(moto_server),
        "DAGSTER_HOME": str(home),
        "LOCKGATE_CONFIG": cfg.path,
        "LOCKGATE_CRASH_AT": "stage.after_read",
        "LOCKGATE_CRASH_SIGNAL": "STOP",
        "LOCKGATE_CRASH_ONCE": str(pid_file),
    }
    rt = Runtime.from_config(cfg)
    lander = Lander(landing_store(cfg, "events"))
    lander.land("2026-07-01/a.jsonl", n=10)  # two days: two batches, one table pool
    lander.land("2026-07-02/b.jsonl", n=10)
    log = tmp_path / "daemon.log"
    frozen: int | None = None
    try:
        with (
            dagster_daemon(workspace, env, log) as proc,
            dg.DagsterInstance.from_config(str(home)) as instance,
        ):
            deadline = time.monotonic() + START_TIMEOUT_S
            while (frozen := _frozen_pid(pid_file)) is None:
                assert proc.poll() is None, _tail(log)
                assert time.monotonic() < deadline, f"no run froze:\n{_tail(log)}"
                time.sleep(0.5)
            frozen_at = time.monotonic()

            # while it lasts, status reports the hang (and the batch queued behind it)
            hung: list[dict[str, Any]] = []
            seen: dict[str, Any] = {}
            while not hung:
                assert time.monotonic() < frozen_at + LIMIT_S + RELEASE_SLACK_S, (
                    f"the hang was never reported: {seen}\n{_tail(log)}"
                )
                seen = _status(rt, instance)
                hung = seen["dagster"]["runs"]["hung"]
                time.sleep(POLL_S)
            assert "no heartbeat" in hung[0]["reason"], hung
            # the sensor's tick says so too (not "waiting", like a normal wait)
            while not (seen["dagster"]["last_tick"] or {}).get("result", "").startswith("HUNG"):
                assert time.monotonic() < frozen_at + LIMIT_S, (
                    f"no HUNG tick: {seen['dagster']}\n{_tail(log)}"
                )
                time.sleep(POLL_S)
                seen = _status(rt, instance)
            batch = hung[0]["batch_id"]
            assert batch in seen["pending_batches"]
            text = run_lockgate(
                cfg.path,
                "status",
                "--no-landing",
                env={**s3_env(moto_server), "DAGSTER_HOME": str(home)},
            )
            assert text.returncode == 0, text.stderr
            assert f"HUNG run {hung[0]['run_id']} (batch {batch})" in text.stdout, text.stdout

            # run monitoring fails it at its limit: the table's pool is released
            while any(
                r.status == dg.DagsterRunStatus.STARTED for r in _batch_runs(instance, batch)
            ):
                assert time.monotonic() < frozen_at + LIMIT_S + RELEASE_SLACK_S, (
                    f"the frozen run still holds its table\n{_tail(log)}"
                )
                time.sleep(POLL_S)
            released_after = time.monotonic() - frozen_at
            assert released_after <= LIMIT_S + RELEASE_SLACK_S

            # its retry and the other batch commit
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                st = _status(rt, instance)
                if not st["pending_batches"] and table_ids(rt, "events") == lander.landed:
                    break
                assert time.monotonic() < deadline, f"not committed: {st}\n{_tail(log)}"
                time.sleep(POLL_S)
            assert st["dagster"]["runs"]["hung"] == []
            # the batch's successful run beat its heartbeat; the frozen one stopped beating
            done = [r for r in _batch_runs(instance, batch) if r.is_success]
            assert len(done) == 1 and HEARTBEAT_TAG in done[0].tags, done
            assert st["committed_batches"] == st["claimed_batches"] == 2

            # the frozen worker, continued, commits nothing more
            os.kill(frozen, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                for _ in range(60):
                    os.kill(frozen, 0)
                    time.sleep(0.5)
            assert table_ids(rt, "events") == lander.landed
    finally:
        if frozen is not None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(frozen, sig)
    report = verify(rt, "events")
    assert report.ok, report.violations
    assert report.rows == sum(lander.landed.values()) == 20
    print(json.dumps({"released_after_s": round(released_after, 1)}))
