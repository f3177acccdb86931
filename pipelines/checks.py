"""Asset checks per source: the exactly-once invariants, and ledger lag."""

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

LAG_WARN_BATCHES = 50
LAG_WARN_AGE_S = 3600.0


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

    return [exactly_once, ledger_lag]
