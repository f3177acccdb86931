"""Asset checks per source: the exactly-once invariants, ledger lag, and the deep audit.

``deep_verify`` re-reads committed objects from the landing (``lockgate verify --deep``). Its
cost is the size of what it re-reads, so it never runs per batch (sensor runs select no
checks). Run on demand (the asset's Checks tab: Execute, or a job or schedule that selects
it) it re-reads every committed object; run with a partitioned materialization (a backfill
that includes it) it re-reads only the run's days."""

from collections.abc import Mapping
from datetime import UTC, date, datetime

import dagster as dg

from lockgate.pipelines.assets import asset_key
from lockgate.pipelines.verify import verify_source
from lockgate.pipelines.verify_deep import verify_deep
from lockgate.resources.config import LockgateConfig, SourceConfig
from lockgate.resources.dagster_resources import (
    LedgerResource,
    ObjectStoreResource,
    TableStoreResource,
)
from lockgate.resources.runtime import Runtime

LAG_WARN_BATCHES = 50
LAG_WARN_AGE_S = 3600.0


def run_days(tags: Mapping[str, str]) -> tuple[date, date] | None:
    """The days a run's tags name (one partition, or a partition range); None: no partition."""
    if "dagster/partition" in tags:
        day = date.fromisoformat(tags["dagster/partition"])
        return day, day
    start = tags.get("dagster/asset_partition_range_start")
    end = tags.get("dagster/asset_partition_range_end")
    if start and end:
        return date.fromisoformat(start), date.fromisoformat(end)
    return None


def build_checks(config: LockgateConfig, source: SourceConfig) -> list[dg.AssetChecksDefinition]:
    key = asset_key(source)

    @dg.asset_check(
        asset=key,
        name="exactly_once",
        description="No duplicate lineage; every claimed record is a row or in quarantine.",
    )
    def exactly_once(
        object_store: ObjectStoreResource, ledger: LedgerResource, table_store: TableStoreResource
    ) -> dg.AssetCheckResult:
        rt = Runtime.from_resources(config, object_store, ledger, table_store)
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
        name="ledger_lag",
        description="Claimed batches not committed yet, and the age of the oldest one.",
    )
    def ledger_lag(
        object_store: ObjectStoreResource, ledger: LedgerResource, table_store: TableStoreResource
    ) -> dg.AssetCheckResult:
        rt = Runtime.from_resources(config, object_store, ledger, table_store)
        pending = rt.ledger(source).pending()
        oldest = min((c.created_at for c in pending), default=None)
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        return dg.AssetCheckResult(
            passed=len(pending) < LAG_WARN_BATCHES and age < LAG_WARN_AGE_S,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"pending_batches": len(pending), "oldest_pending_age_s": round(age, 1)},
        )

    @dg.asset_check(
        asset=key,
        name="deep_verify",
        description=(
            "Re-reads every committed object from the landing and recounts its records "
            "(independently of staging): each must equal its rows + quarantine entries. "
            "On demand only: it reads the whole landing."
        ),
    )
    def deep_verify(
        context: dg.AssetCheckExecutionContext,
        object_store: ObjectStoreResource,
        ledger: LedgerResource,
        table_store: TableStoreResource,
    ) -> dg.AssetCheckResult:
        rt = Runtime.from_resources(config, object_store, ledger, table_store)
        days = run_days(context.run.tags)
        report = verify_deep(rt, source, days=days)
        return dg.AssetCheckResult(
            passed=report.ok,
            metadata={
                "days": f"{days[0]}..{days[1]}" if days else "all",
                "objects": report.objects,
                "checked": report.checked,
                "records": report.records,
                "not_recounted": report.not_recounted,
                "unavailable": len(report.unavailable),
                "violations": "\n".join(report.violations[:20]) or "none",
            },
        )

    return [exactly_once, ledger_lag, deep_verify]
