"""One daily-partitioned asset per source, keyed by its table (``[namespace, table]``).

A run carrying the ``lockgate/batch`` tag (requested by the sensor) executes that batch:
read -> stage -> commit -> record. Any other run -- a UI backfill, ``dagster asset
materialize --partition-range``, ``lockgate backfill`` -- rebuilds its partitions
(DESIGN.md, *Backfill*). ``BackfillPolicy.single_run()`` makes a range one run, i.e. one
overwrite commit.

A run's days are checked before anything is read: a run without a partition, or for a day
before the source's ``partition.start`` or after today (UTC), fails with ``DayOutOfRange``.
Any ``TerminalError`` (that one, a changed fingerprint, a refused rebuild, ...) marks its run
``dagster/max_retries=0`` and ``lockgate/terminal=<error>`` before failing it, so run retries
do not repeat a failure that cannot change; the batch is then reported stuck until
``lockgate retry``.
"""

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from pyiceberg.exceptions import NoSuchTableError

from lockgate.pipelines.batch import execute_batch
from lockgate.pipelines.rebuild import rebuild
from lockgate.pipelines.table_metadata import table_metadata
from lockgate.resources.config import LockgateConfig, SourceConfig
from lockgate.resources.dagster_resources import Namespace
from lockgate.resources.days import DayOutOfRange, check_days_in_range, parse_day
from lockgate.resources.errors import TerminalError
from lockgate.resources.live_config import current_source
from lockgate.resources.runtime import Runtime
from lockgate.sensors.runs import (
    BATCH_TAG,
    HEARTBEAT_S,
    HEARTBEAT_TAG,
    MAX_RETRIES_TAG,
    TERMINAL_TAG,
    table_pool,
)

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

IO_MANAGER_KEY = Namespace().io_manager


def asset_key(source: SourceConfig) -> dg.AssetKey:
    return dg.AssetKey([source.namespace, source.table_name])


def landing_key(source: SourceConfig, ns: Namespace | None = None) -> dg.AssetKey:
    """The external asset of a source's landing prefix (upstream of its table):
    ``landing/<source>``, or ``landing/<name>/<source>`` in a named component."""
    name = ns.name if ns is not None else None
    return dg.AssetKey(["landing", source.name] if name is None else ["landing", name, source.name])


def landing_spec(source: SourceConfig, ns: Namespace | None = None) -> dg.AssetSpec:
    """The landing prefix as an external asset, observed by the source's sensor."""
    ns = ns or Namespace()
    return dg.AssetSpec(
        key=landing_key(source, ns),
        group_name=ns.label(source.name),
        kinds={"s3" if source.landing.startswith("s3") else "file"},
        description=f"Objects landing under {source.landing} ({source.format}).",
        metadata={"dagster/uri": source.landing, "format": source.format},
    )


def partitions(source: SourceConfig) -> dg.DailyPartitionsDefinition:
    """Days from the source's ``start`` up to and including today (UTC)."""
    return dg.DailyPartitionsDefinition(
        start_date=source.partition_start.isoformat(), end_offset=1, timezone="UTC"
    )


def pool(source: SourceConfig) -> str:
    """The concurrency pool of the source's table: bounds commit contention per table (its limit
    is ``dagster.table_concurrency``, set by the source's sensor)."""
    return table_pool(source.table)


@contextlib.contextmanager
def heartbeat(instance: dg.DagsterInstance, run_id: str) -> Iterator[None]:
    """While the body runs, a thread sets the run's ``lockgate/heartbeat`` tag to the current
    Unix time every ``HEARTBEAT_S`` seconds (``lockgate status`` reports a STARTED run whose
    heartbeat stopped as hung). A failed beat is skipped, never raised."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):
                run = instance.get_run_by_id(run_id)
                if run is None or run.status != dg.DagsterRunStatus.STARTED:
                    return  # finished (e.g. failed by run monitoring): leave its tags alone
                instance.add_run_tags(run_id, {HEARTBEAT_TAG: str(int(time.time()))})
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name=f"lockgate-heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=HEARTBEAT_S)


def run_days(source: SourceConfig, tags: Mapping[str, str], today: date | None = None) -> list[str]:
    """The days a run's tags ask for (one partition, or a range), read from the tags rather
    than from Dagster's partitions (a run launched with a partition tag is not validated).
    ``DayOutOfRange`` when there is no partition, a day is not ``YYYY-MM-DD``, or a day lies
    outside ``[partition.start, today]``."""
    if tags.get(PARTITION_TAG):
        first = last = tags[PARTITION_TAG]
    elif tags.get(RANGE_START_TAG) and tags.get(RANGE_END_TAG):
        first, last = tags[RANGE_START_TAG], tags[RANGE_END_TAG]
    else:
        raise DayOutOfRange(
            f"source {source.name!r}: a run of {source.table} needs a partition (a day, or a "
            "range of days); this run has none, so nothing was done"
        )
    try:
        lo, hi = parse_day(first), parse_day(last)
    except ValueError:
        raise DayOutOfRange(
            f"source {source.name!r}: invalid partition day in {first}...{last} (expected "
            "YYYY-MM-DD dates); nothing was done"
        ) from None
    if hi < lo:
        raise DayOutOfRange(f"source {source.name!r}: partition range {first}...{last} is empty")
    days = [lo + timedelta(days=i) for i in range((hi - lo).days + 1)]
    check_days_in_range(source.name, source.partition_start, days, today)
    return [d.isoformat() for d in days]


def _table_metadata(rt: Runtime, source: SourceConfig, days: list[str]) -> dict[str, Any]:
    try:
        table = rt.tables.load(source.table)
    except NoSuchTableError:  # a rebuild of days that never had a batch
        return {"dagster/table_name": source.table, "dagster/row_count": 0}
    return table_metadata(source, table, days)


def build_asset(
    config: LockgateConfig,
    source: SourceConfig,
    ns: Namespace | None = None,
    live: bool = True,
) -> dg.AssetsDefinition:
    """``live`` (``config`` came from a file): every run acts on the file as it is now
    (``lockgate.resources.live_config``); a batch run executes its claim even while a moved
    landing awaits ``lockgate ledger reset`` (the claim is read where it was made)."""
    ns = ns or Namespace()

    @dg.asset(
        key=asset_key(source),
        partitions_def=partitions(source),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=pool(source),
        group_name=ns.label(source.name),
        kinds={"iceberg", "parquet"},
        description=(
            f"Iceberg table {source.table}: every record of the {source.format} objects under "
            f"{source.landing}, exactly once, partitioned by day (_day)."
        ),
        metadata={
            "landing": source.landing,
            "format": source.format,
            "table": source.table,
            "dagster/table_name": source.table,
        },
        deps=[landing_key(source, ns)],
        io_manager_key=ns.io_manager,
        required_resource_keys=ns.required_keys,
        owners=list(source.owners) or None,
        tags=dict(source.tags) or None,
        freshness_policy=(
            dg.FreshnessPolicy.time_window(
                fail_window=timedelta(seconds=source.freshness_max_lag_s)
            )
            if source.freshness_max_lag_s
            else None
        ),
    )
    def _asset(context: AssetExecutionContext) -> dg.MaterializeResult:
        try:
            with heartbeat(context.instance, context.run_id):
                cfg, src = current_source(config, source) if live else (config, source)
                rt = Runtime.from_dagster(cfg, ns, context.resources)
                return _materialize(context, rt, src)
        except TerminalError as e:
            # retrying cannot help: make the failure final (no run retry) and say why
            context.instance.add_run_tags(
                context.run_id, {MAX_RETRIES_TAG: "0", TERMINAL_TAG: type(e).__name__}
            )
            context.log.error(f"{type(e).__name__} (not retried): {e.one_line()}")
            raise

    return _asset


def _materialize(
    context: AssetExecutionContext, rt: Runtime, source: SourceConfig
) -> dg.MaterializeResult:
    """A batch run (``lockgate/batch`` tag) executes its batch; any other run rebuilds its
    days. Both only after ``run_days`` accepted the run's days."""
    days_asked = run_days(source, context.run.tags)
    batch = context.run.tags.get(BATCH_TAG)
    if batch is not None:
        led = rt.run_ledger(source)
        claim = led.get_claim(int(batch))
        outcome = execute_batch(rt, source, led, claim)
        context.log.info(
            f"batch {claim.batch_id}: {outcome.rows} rows, {outcome.quarantined} quarantined"
            + (" (already committed)" if outcome.already_committed else "")
        )
        meta = {**outcome.metadata(), "batch_rows": outcome.rows}
        meta.update(_table_metadata(rt, source, [claim.partition]))
        return dg.MaterializeResult(metadata=meta)
    days = [date.fromisoformat(k) for k in days_asked]
    result = rebuild(rt, source, days, progress=context.log.info)
    meta = dict(result.metadata())
    meta.update(_table_metadata(rt, source, days_asked))
    return dg.MaterializeResult(metadata=meta)
