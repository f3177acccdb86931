"""The Dagster instance config (``$DAGSTER_HOME/dagster.yaml``) for a local Lockgate instance.

What it sets, and why:

* SQLite storage under ``$DAGSTER_HOME/storage`` (one machine), or, with ``postgres_url_env``,
  PostgreSQL storage (runs, event log, schedules) whose URL Dagster reads from that environment
  variable at start: the file never holds the URL or its password.
* ``QueuedRunCoordinator`` with ``concurrency.runs.max_concurrent_runs`` (default 4). On
  PostgreSQL it launches runs from 4 threads (``dequeue_use_threads``): one slow launch (a busy
  code server) does not hold the others back.
* ``concurrency.pools.default_limit: 1`` with ``granularity: run``: every pool that is not
  configured otherwise admits one run at a time, so the per-table pool that each asset sets
  (``lockgate.pipelines.assets.pool``) keeps two runs from committing to one table at once (commit
  contention, not correctness: commits are create-only and safe anyway). The queue holds the
  others back before they launch. Each source's sensor sets its table's pool limit explicitly to
  ``dagster.table_concurrency`` of lockgate.yaml (default 1).
* ``run_retries`` (2): a run that dies is retried by Dagster with the same batch; the ledger
  and the table marker make the retry idempotent. (A failed run's ``run_key`` is never
  re-launched by a sensor, so retries must come from here.)
* ``run_monitoring``: a run whose worker was killed (kill -9, OOM, a lost node) or froze
  stays STARTED and would hold its table's pool forever; the default run launcher cannot probe
  worker health, so such a run is failed once it exceeds its ``dagster/max_runtime`` tag
  (batch runs: ``dagster.max_runtime_seconds`` of lockgate.yaml, by default derived from the
  source's bytes budget, 120-240 s) or else the instance's ``max_runtime_seconds`` (a
  backstop for other runs, e.g. rebuilds), and then retried like any failed run. The daemon
  checks every ``poll_interval_seconds`` (15), so a hung batch run releases its table within
  its limit + 15 s (under 5 minutes by default). Runs stuck while starting fail after
  ``start_timeout_seconds``.
* Telemetry and the first-visit dialog off.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

#: Seconds between two checks of run monitoring (see the module docstring).
MONITORING_POLL_S = 15

HEADER = (
    "# Written by `python -m lockgate.pipelines.demo` (dagster_yaml.py) because no dagster.yaml\n"
    "# was here. Edit freely (Postgres storage, a run launcher, ...): the demo never rewrites\n"
    "# an existing file; delete it to get the default back.\n"
)


def dagster_instance_config(
    home: str | os.PathLike[str],
    max_concurrent_runs: int = 4,
    max_retries: int = 2,
    postgres_url_env: str | None = None,
) -> dict[str, Any]:
    """The instance config as a mapping (see the module docstring)."""
    storage: dict[str, Any] = (
        {"postgres": {"postgres_url": {"env": postgres_url_env}}}
        if postgres_url_env
        else {"sqlite": {"base_dir": str(Path(home).resolve() / "storage")}}
    )
    return {
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
        "storage": storage,
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            **(
                {"config": {"dequeue_use_threads": True, "dequeue_num_workers": 4}}
                if postgres_url_env
                else {}
            ),
        },
        "concurrency": {
            "runs": {"max_concurrent_runs": max_concurrent_runs},
            "pools": {"default_limit": 1, "granularity": "run"},
        },
        "run_retries": {"enabled": True, "max_retries": max_retries},
        "run_monitoring": {
            "enabled": True,
            "start_timeout_seconds": 300,
            "max_runtime_seconds": 3600,
            "poll_interval_seconds": MONITORING_POLL_S,
        },
    }


def render_dagster_yaml(home: str | os.PathLike[str], **kwargs: Any) -> str:
    return HEADER + yaml.safe_dump(dagster_instance_config(home, **kwargs), sort_keys=False)


def write_dagster_yaml(home: str | os.PathLike[str], **kwargs: Any) -> tuple[Path, bool]:
    """Write ``<home>/dagster.yaml`` if it is absent; return its path and whether it was
    written. An existing file is the operator's and is never touched. The write is atomic:
    a temp file is linked into place, so a concurrent writer's file is never replaced."""
    root = Path(home).resolve()
    root.mkdir(parents=True, exist_ok=True)
    target = root / "dagster.yaml"
    if target.exists():
        return target, False
    tmp = root / f".dagster.yaml.{os.getpid()}.tmp"
    tmp.write_text(render_dagster_yaml(root, **kwargs), encoding="utf-8")
    try:
        os.link(tmp, target)  # fails if another process created it meanwhile: keep theirs
    except FileExistsError:
        return target, False
    finally:
        tmp.unlink(missing_ok=True)
    return target, True
