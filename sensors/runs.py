"""What Dagster knows about a batch's runs: tags, and which pending batches are stuck.

``source`` here is the source's label (``Namespace.label``): its name, or
``<component>__<source>`` in a named Lockgate component, so that two components with a
source of the same name never see each other's runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

SOURCE_TAG = "lockgate/source"
BATCH_TAG = "lockgate/batch"
MAX_RETRIES_TAG = "dagster/max_retries"
RETRY_NUMBER_TAG = "dagster/retry_number"
WILL_RETRY_TAG = "dagster/will_retry"
RUN_KEY_TAG = "dagster/run_key"
MAX_RUNTIME_TAG = "dagster/max_runtime"
#: Set (to the error's class name) on a run that failed with a ``TerminalError``: together
#: with ``dagster/max_retries=0`` it keeps run retries from repeating that failure.
TERMINAL_TAG = "lockgate/terminal"
DEFAULT_MAX_RETRIES = 2

_FINISHED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def table_pool(table: str) -> str:
    """The Dagster concurrency pool of a table's runs (every asset of the table uses it)."""
    return f"lockgate/{table}"


def ensure_pool_limit(instance: dg.DagsterInstance, pool: str, limit: int) -> bool:
    """Make ``pool``'s limit ``limit`` in the instance (an explicit limit, not the instance's
    ``default_limit``): a setting of lockgate.yaml, so the sensor applies it on every tick and
    a limit changed elsewhere is set back. Returns whether it changed anything. One read per
    call when nothing changes."""
    storage = instance.event_log_storage
    for current in storage.get_pool_limits():
        if current.name == pool:
            if current.limit == limit and not current.from_default:
                return False
            break
    storage.set_concurrency_slots(pool, limit)
    return True


def batch_tags(
    source: str,
    batch_id: int,
    max_runtime_s: int,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> dict[str, str]:
    """Tags of a batch run: which batch it is, its retries, and the runtime after which run
    monitoring fails it (a run whose worker died never finishes on its own)."""
    return {
        SOURCE_TAG: source,
        BATCH_TAG: str(batch_id),
        MAX_RETRIES_TAG: str(max_retries),
        MAX_RUNTIME_TAG: str(max_runtime_s),
    }


def stuck_batches(
    instance: dg.DagsterInstance, source: str, pending: list[int]
) -> dict[int, dg.DagsterRun]:
    """Pending batches whose latest run failed (or was canceled) with no retry left."""
    stuck: dict[int, dg.DagsterRun] = {}
    for batch_id in pending:
        runs = instance.get_runs(
            filters=dg.RunsFilter(tags={SOURCE_TAG: source, BATCH_TAG: str(batch_id)}), limit=1
        )
        if not runs or runs[0].status not in _FINISHED:
            continue
        run = runs[0]
        retries = int(run.tags.get(MAX_RETRIES_TAG, DEFAULT_MAX_RETRIES))
        if (
            run.status == dg.DagsterRunStatus.CANCELED
            # an instance without run retries never retries, whatever the run's tags say
            or not instance.run_retries_enabled
            or run.tags.get(WILL_RETRY_TAG) == "false"
            or int(run.tags.get(RETRY_NUMBER_TAG, 0)) >= retries
        ):
            stuck[batch_id] = run
    return stuck


def launched_run_keys(instance: dg.DagsterInstance, run_keys: list[str]) -> set[str]:
    """The run keys that already have a launched run (any status but NOT_STARTED). Dagster
    skips a sensor's request for such a key, so requesting it again only takes a slot of the
    bounded tick away from a batch that can run."""
    launched: set[str] = set()
    for key in run_keys:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: key}), limit=1)
        if runs and runs[0].status != dg.DagsterRunStatus.NOT_STARTED:
            launched.add(key)
    return launched


#: Set by a running batch run every ``HEARTBEAT_S`` seconds (Unix time): a run whose worker is
#: frozen or dead stops beating long before run monitoring fails it at its limit.
HEARTBEAT_TAG = "lockgate/heartbeat"
HEARTBEAT_S = 5
#: A STARTED batch run is reported hung after this long without a heartbeat.
HUNG_SILENCE_S = 30.0

_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def hang_reason(
    status: dg.DagsterRunStatus, tags: Mapping[str, str], start_time: float | None, now: float
) -> str | None:
    """Why a batch run counts as hung, or None: STARTED and silent (no heartbeat) for more than
    ``HUNG_SILENCE_S``, or running past its ``dagster/max_runtime`` limit."""
    if status != dg.DagsterRunStatus.STARTED or start_time is None:
        return None
    limit = float(tags.get(MAX_RUNTIME_TAG, 0) or 0)
    running = now - start_time
    beat = tags.get(HEARTBEAT_TAG)
    silent = now - float(beat) if beat else running
    if limit and running > limit:
        return f"running {running:.0f}s, past its limit of {limit:.0f}s: run monitoring fails it"
    if silent > HUNG_SILENCE_S:
        left = f"; run monitoring fails it in {limit - running:.0f}s" if limit else ""
        return f"no heartbeat for {silent:.0f}s (worker frozen or dead){left}"
    return None


def source_runs(instance: dg.DagsterInstance, source: str, now: float) -> dict[str, Any]:
    """The source's unfinished batch runs: ``queued`` (queued or not started), ``running``
    (starting, started or canceling; hung ones included) and ``hung`` (one entry per hung
    run: ``run_id``, ``batch_id``, ``reason``)."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={SOURCE_TAG: source}, statuses=_ACTIVE)
    )
    queued = running = 0
    hung: list[dict[str, Any]] = []
    for rec in records:
        run = rec.dagster_run
        if run.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
            queued += 1
            continue
        running += 1
        reason = hang_reason(run.status, run.tags, rec.start_time, now)
        if reason is not None:
            batch = run.tags.get(BATCH_TAG)
            hung.append(
                {
                    "run_id": run.run_id,
                    "batch_id": int(batch) if batch is not None else None,
                    "reason": reason,
                }
            )
    return {"queued": queued, "running": running, "hung": hung}
