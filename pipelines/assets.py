"""One daily-partitioned asset per source, keyed by its table (``[namespace, table]``).

A run carrying the ``lockgate/batch`` tag (requested by the sensor) executes that batch:
read -> stage -> commit -> record. Any other run -- a UI backfill, ``dagster asset
materialize --partition-range``, ``lockgate backfill`` -- rebuilds its partitions
(DESIGN.md, *Backfill*). ``BackfillPolicy.single_run()`` makes a range one run, i.e. one
overwrite commit.
"""

from datetime import date

import dagster as dg
from dagster import AssetExecutionContext

from lockgate.pipelines.batch import execute_batch
from lockgate.pipelines.rebuild import rebuild
from lockgate.resources.config import LockgateConfig, SourceConfig
from lockgate.resources.dagster_resources import (
    LedgerResource,
    ObjectStoreResource,
    TableStoreResource,
)
from lockgate.resources.runtime import Runtime
from lockgate.sensors.runs import BATCH_TAG


def asset_key(source: SourceConfig) -> dg.AssetKey:
    return dg.AssetKey([source.namespace, source.table_name])


def partitions(source: SourceConfig) -> dg.DailyPartitionsDefinition:
    """Days from the source's ``start`` up to and including today (UTC)."""
    return dg.DailyPartitionsDefinition(
        start_date=source.partition_start.isoformat(), end_offset=1, timezone="UTC"
    )


def pool(source: SourceConfig) -> str:
    """The concurrency pool of the source's table: bounds commit contention per table."""
    return f"lockgate/{source.table}"


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
        metadata={"landing": source.landing, "format": source.format, "table": source.table},
    )
    def _asset(
        context: AssetExecutionContext,
        object_store: ObjectStoreResource,
        ledger: LedgerResource,
        table_store: TableStoreResource,
    ) -> dg.MaterializeResult:
        rt = Runtime.from_resources(config, object_store, ledger, table_store)
        batch = context.run.tags.get(BATCH_TAG)
        if batch is not None:
            led = rt.ledger(source)
            claim = led.get_claim(int(batch))
            outcome = execute_batch(rt, source, led, claim)
            context.log.info(
                f"batch {claim.batch_id}: {outcome.rows} rows, {outcome.quarantined} quarantined"
                + (" (already committed)" if outcome.already_committed else "")
            )
            return dg.MaterializeResult(metadata=outcome.metadata())
        days = [date.fromisoformat(k) for k in context.partition_keys]
        result = rebuild(rt, source, days, progress=context.log.info)
        return dg.MaterializeResult(metadata=result.metadata())

    return _asset
