"""Dagster-level torture: ``python -m tests.torture.dagster_kill --cycles 3 --seed 1``.

A local source is driven by the real ``dagster-daemon`` (sensor daemon + queued run
coordinator; runs are subprocesses of the code server). Each cycle lands a few objects,
starts the daemon with a crash point armed once (``LOCKGATE_CRASH_ONCE``: the first run
worker to reach it SIGKILLs itself mid-step, its run stays STARTED), SIGKILLs a random run
worker from outside (if one is up), then, after a random delay, the daemon's whole process
group (daemon, code server, run workers). A final daemon then gets ``--final-wait`` seconds
to bring every claimed batch to committed. Whatever it leaves pending is reported (with its
Dagster run status), finished by ``lockgate ingest`` (the console script), and the table
must then hold every landed id exactly once with ``lockgate verify`` ok.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from lockgate.resources.runtime import Runtime
from lockgate.resources.store import LocalStore
from tests.platform_helpers import (
    Lander,
    dagster_instance,
    run_lockgate,
    source_spec,
    start_daemon,
    table_ids,
    verify,
    write_config,
)

# Points reached only inside a run's step (the sensor in the code server never gets there).
RUN_POINTS = (
    "stage.after_read",
    "stage.after_write_file",
    "commit.after_metadata_put",
    "ledger.commit_record.before_put",
)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the daemon's process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)


def run_workers(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(k.cmdline())
            # the code server runs each run in a multiprocessing "spawn" child
            if "execute_run" in cmd or ("spawn_main" in cmd and "resource_tracker" not in cmd):
                out.append(k)
    return out


def pending_runs(home: Path, pending: list[int]) -> dict[int, str]:
    """Dagster's status of the latest run of each pending batch (by its tags)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    out: dict[int, str] = {}
    with dg.DagsterInstance.get() as instance:
        for b in pending:
            runs = instance.get_runs(
                filters=dg.RunsFilter(tags={"lockgate/batch": str(b)}), limit=1
            )
            out[b] = runs[0].status.value if runs else "no run"
    return out


def failure_reasons(home: Path) -> dict[str, int]:
    """How the instance's failed runs were failed (first words of the failure message)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    reasons: Counter[str] = Counter()
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
            records = instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
            ).records
            event = records[-1].event_log_entry.dagster_event if records else None
            message = event.message if event else None
            reasons[" ".join(str(message).split()[:6])] += 1
    return dict(reasons)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.torture.dagster_kill")
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--root", default="/tmp/lockgate-torture-dagster")
    p.add_argument("--final-wait", type=float, default=600)
    p.add_argument(
        "--max-runtime",
        type=int,
        default=120,
        help="dagster.max_runtime_seconds of the source: run monitoring fails a batch run whose "
        "worker died after this long (production default 900)",
    )
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    landing = root / "landing" / "events"
    landing.mkdir(parents=True, exist_ok=True)
    cfg_path = write_config(
        root / "lockgate.yaml",
        warehouse=str(root / "wh"),
        sources={"events": source_spec("events", str(landing))},
        dagster={"sensor_interval_seconds": 5, "max_runtime_seconds": args.max_runtime},
    )
    home, workspace = dagster_instance(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKGATE_CRASH", "PYTEST"))}
    env.update({"DAGSTER_HOME": str(home), "LOCKGATE_CONFIG": str(cfg_path)})
    rt = Runtime.from_config(str(cfg_path))
    lander = Lander(LocalStore(landing))
    log = root / "daemon.log"
    kills: Counter[str] = Counter()
    armed = 0
    day = 0
    for cycle in range(args.cycles):
        for _ in range(rng.randint(2, 4)):
            day = day % 5 + 1
            lander.land(f"2026-07-0{day}/c{cycle}-{rng.randrange(10**6)}.jsonl", n=5)
        once = root / f"crashed-{cycle}"
        point = rng.choice(RUN_POINTS)
        armed += 1
        daemon = start_daemon(
            workspace,
            {**env, "LOCKGATE_CRASH_AT": point, "LOCKGATE_CRASH_ONCE": str(once)},
            log,
        )
        try:
            deadline = time.monotonic() + rng.uniform(30, 120)
            killed_worker = False
            while time.monotonic() < deadline:
                workers = run_workers(daemon)
                if workers and not killed_worker and rng.random() < 0.7:
                    victim = rng.choice(workers)
                    with contextlib.suppress(psutil.Error):
                        victim.kill()
                        kills["run worker"] += 1
                        killed_worker = True
                time.sleep(0.5)
        finally:
            kill_group(daemon)
            kills["daemon group"] += 1
            if once.exists():
                kills[f"run worker at {point}"] += 1
        print(f"cycle {cycle}: landed {sum(lander.landed.values())} ids, kills {dict(kills)}")

    daemon = start_daemon(workspace, env, log)
    converged = False
    converged_after: float | None = None
    status: dict[str, Any] = {}
    try:
        from lockgate.pipelines.commands.status import source_status

        started = time.monotonic()
        deadline = started + args.final_wait
        while time.monotonic() < deadline:
            status = source_status(rt, rt.source("events"))
            if not status["pending_batches"] and table_ids(rt, "events") == lander.landed:
                converged = True
                converged_after = round(time.monotonic() - started, 1)
                break
            time.sleep(5)
    finally:
        kill_group(daemon)
    failures = failure_reasons(home)
    left = list(status.get("pending_batches") or [])
    runs = pending_runs(home, left) if left else {}
    fallback = None
    if not converged:
        fallback = run_lockgate(cfg_path, "ingest").returncode
    ids = table_ids(rt, "events")
    lost = sum((lander.landed - ids).values())
    dups = sum((ids - lander.landed).values())
    report = verify(rt, "events")
    summary = {
        "cycles": args.cycles,
        "seed": args.seed,
        "landed_ids": sum(lander.landed.values()),
        "kills": dict(kills),
        "max_runtime_seconds": args.max_runtime,
        "crash_points_armed": armed,
        "failed_runs_by_reason": failures,
        "converged_under_dagster": converged,
        "final_daemon_converged_after_s": converged_after,
        "pending_after_final_wait": left,
        "their_dagster_runs": runs,
        "lockgate_ingest_fallback_rc": fallback,
        "lost": lost,
        "duplicated": dups,
        "verify_ok": report.ok,
    }
    print(json.dumps(summary, indent=1))
    return 0 if lost == 0 and dups == 0 and report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
