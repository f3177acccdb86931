"""One daily-partitioned asset per source, keyed by its table (``[namespace, table]``).

A run carrying the ``lockgate/batch`` tag (requested by the sensor) executes that batch:
read -> stage -> commit -> record. Any other run -- a UI backfill, ``dagster asset
materialize --partition-range``, ``lockgate backfill`` -- rebuilds its partitions
(DESIGN.md, *Backfill*). ``BackfillPolicy.single_run()`` makes a range one run, i.e. one
overwrite commit.
"""

from datetime import date, timedelta
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from pyiceberg.exceptions import NoSuchTableError

from lockgate.pipelines.batch import execute_batch
from lockgate.pipelines.rebuild import rebuild
from lockgate.pipelines.table_metadata import table_metadata
from lockgate.resources.config import LockgateConfig, SourceConfig
from lockgate.resources.dagster_resources import (
    LedgerResource,
    ObjectStoreResource,
    TableStoreResource,
)
from lockgate.resources.runtime import Runtime
from lockgate.sensors.runs import BATCH_TAG, table_pool

IO_MANAGER_KEY = "lockgate_io_manager"


def asset_key(source: SourceConfig) -> dg.AssetKey:
    return dg.AssetKey([source.namespace, source.table_name])


def landing_key(source: SourceConfig) -> dg.AssetKey:
    """The external asset of a source's landing prefix (upstream of its table)."""
    return dg.AssetKey(["landing", source.name])


def landing_spec(source: SourceConfig) -> dg.AssetSpec:
    """The landing prefix as an external asset, observed by the source's sensor."""
    return dg.AssetSpec(
        key=landing_key(source),
        group_name=source.name,
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


def _table_metadata(rt: Runtime, source: SourceConfig, days: list[str]) -> dict[str, Any]:
    try:
        table = rt.tables.load(source.table)
    except NoSuchTableError:  # a rebuild of days that never had a batch
        return {"dagster/table_name": source.table, "dagster/row_count": 0}
    return table_metadata(source, table, days)


def build_asset(config: LockgateConfig, source: SourceConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(source),
        partitions_def=partitions(source),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=pool(source),
        group_name=source.name,
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
        deps=[landing_key(source)],
        io_manager_key=IO_MANAGER_KEY,
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
    def _asset(
        context: AssetExecutionContext,
        lockgate_object_store: ObjectStoreResource,
        lockgate_ledger: LedgerResource,
        lockgate_table_store: TableStoreResource,
    ) -> dg.MaterializeResult:
        rt = Runtime.from_resources(
            config, lockgate_object_store, lockgate_ledger, lockgate_table_store
        )
        batch = context.run.tags.get(BATCH_TAG)
        if batch is not None:
            led = rt.ledger(source)
            claim = led.get_claim(int(batch))
            outcome = execute_batch(rt, source, led, claim)
            context.log.info(
                f"batch {claim.batch_id}: {outcome.rows} rows, {outcome.quarantined} quarantined"
                + (" (already committed)" if outcome.already_committed else "")
            )
            meta = {**outcome.metadata(), "batch_rows": outcome.rows}
            meta.update(_table_metadata(rt, source, [claim.partition]))
            return dg.MaterializeResult(metadata=meta)
        days = [date.fromisoformat(k) for k in context.partition_keys]
        result = rebuild(rt, source, days, progress=context.log.info)
        meta = dict(result.metadata())
        meta.update(_table_metadata(rt, source, list(context.partition_keys)))
        return dg.MaterializeResult(metadata=meta)

    return _asset
