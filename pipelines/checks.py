"""Asset checks per source: the exactly-once invariants (on a schedule and on demand, never
after every batch), ledger lag and stuck batches (also evaluated on every sensor tick)."""

from datetime import UTC, datetime

import dagster as dg

from lockgate.pipelines.assets import asset_key
from lockgate.pipelines.verify import verify_source
from lockgate.resources.config import LockgateConfig, SourceConfig
from lockgate.resources.dagster_resources import (
    LedgerResource,
    ObjectStoreResource,
    TableStoreResource,
)
from lockgate.resources.runtime import Runtime
from lockgate.sensors.health import LEDGER_LAG, STUCK_BATCHES, Lag, stuck_metadata
from lockgate.sensors.runs import stuck_batches


def build_checks(config: LockgateConfig, source: SourceConfig) -> list[dg.AssetChecksDefinition]:
    key = asset_key(source)

    @dg.asset_check(
        asset=key,
        name="exactly_once",
        description="No duplicate lineage; every claimed record is a row or in quarantine.",
    )
    def exactly_once(
        lockgate_object_store: ObjectStoreResource,
        lockgate_ledger: LedgerResource,
        lockgate_table_store: TableStoreResource,
    ) -> dg.AssetCheckResult:
        rt = Runtime.from_resources(
            config, lockgate_object_store, lockgate_ledger, lockgate_table_store
        )
        report = verify_source(rt, source)
        return dg.AssetCheckResult(
            passed=report.ok,
            metadata={
                "rows": report.rows,
                "quarantined": report.quarantined,
                "committed_batches": report.committed_batches,
                "violations": "\n".join(report.violations[:20]) or "none",
            },
        )

    @dg.asset_check(
        asset=key,
        name=LEDGER_LAG,
        description="Claimed batches not committed yet, and the age of the oldest one.",
    )
    def ledger_lag(
        lockgate_object_store: ObjectStoreResource,
        lockgate_ledger: LedgerResource,
        lockgate_table_store: TableStoreResource,
    ) -> dg.AssetCheckResult:
        rt = Runtime.from_resources(
            config, lockgate_object_store, lockgate_ledger, lockgate_table_store
        )
        lag = Lag.of(rt.ledger(source).pending(), datetime.now(UTC))
        return dg.AssetCheckResult(
            passed=lag.ok, severity=dg.AssetCheckSeverity.WARN, metadata=lag.metadata()
        )

    @dg.asset_check(
        asset=key,
        name=STUCK_BATCHES,
        description="Pending batches whose run failed for good (no retry left); evaluated on "
        "every sensor tick. Fix the cause, then `lockgate retry`.",
    )
    def stuck(
        context: dg.AssetCheckExecutionContext,
        lockgate_object_store: ObjectStoreResource,
        lockgate_ledger: LedgerResource,
        lockgate_table_store: TableStoreResource,
    ) -> dg.AssetCheckResult:
        rt = Runtime.from_resources(
            config, lockgate_object_store, lockgate_ledger, lockgate_table_store
        )
        pending = [c.batch_id for c in rt.ledger(source).pending()]
        found = stuck_batches(context.instance, source.name, pending) if pending else {}
        return dg.AssetCheckResult(
            passed=not found,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=stuck_metadata({b: r.run_id for b, r in found.items()}),
        )

    return [exactly_once, ledger_lag, stuck]


def exactly_once_schedule(source: SourceConfig, cron: str) -> dg.ScheduleDefinition:
    """Runs the ``exactly_once`` check of ``source`` on ``cron`` (UTC); it scans the whole
    table, so it does not run after every batch."""
    job = dg.define_asset_job(
        name=f"{source.name}_exactly_once",
        selection=dg.AssetSelection.checks(dg.AssetCheckKey(asset_key(source), "exactly_once")),
    )
    return dg.ScheduleDefinition(
        name=f"{source.name}_exactly_once_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
