"""Asset checks per source: the exactly-once invariants (on a schedule and on demand, never
after every batch), ledger lag and stuck batches (also evaluated on every sensor tick),
and the deep audit.

``deep_verify`` re-reads committed objects from the landing (``lockgate verify --deep``). Its
cost is the size of what it re-reads, so it never runs per batch (sensor runs select no
checks). Run on demand (the asset's Checks tab: Execute, or a job or schedule that selects
it) it re-reads every committed object; run with a partitioned materialization (a backfill
that includes it) it re-reads only the run's days."""

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg

from lockgate.pipelines.assets import asset_key
from lockgate.pipelines.verify import verify_source
from lockgate.pipelines.verify_deep import verify_deep
from lockgate.resources.config import LockgateConfig, SourceConfig
from lockgate.resources.dagster_resources import Namespace
from lockgate.resources.live_config import current_source
from lockgate.resources.runtime import Runtime
from lockgate.sensors.health import LEDGER_LAG, STUCK_BATCHES, Lag, stuck_metadata
from lockgate.sensors.runs import stuck_batches


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


def _live(
    config: LockgateConfig, source: SourceConfig, live: bool, ns: Namespace, resources: Any
) -> tuple[Runtime, SourceConfig]:
    """The runtime and source a check acts on: ``lockgate.yaml`` as it is now when ``live``
    (``lockgate.resources.live_config``), else ``config`` as loaded."""
    cfg, src = current_source(config, source) if live else (config, source)
    return Runtime.from_dagster(cfg, ns, resources), src


def build_checks(
    config: LockgateConfig, source: SourceConfig, ns: Namespace | None = None, live: bool = True
) -> list[dg.AssetChecksDefinition]:
    key = asset_key(source)
    ns = ns or Namespace()

    @dg.asset_check(
        asset=key,
        required_resource_keys=ns.required_keys,
        name="exactly_once",
        description="No duplicate lineage; every claimed record is a row or in quarantine.",
    )
    def exactly_once(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        rt, src = _live(config, source, live, ns, context.resources)
        report = verify_source(rt, src)
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
        required_resource_keys=ns.required_keys,
        name=LEDGER_LAG,
        description="Claimed batches not committed yet, and the age of the oldest one.",
    )
    def ledger_lag(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        rt, src = _live(config, source, live, ns, context.resources)
        lag = Lag.of(rt.ledger(src).pending(), datetime.now(UTC))
        return dg.AssetCheckResult(
            passed=lag.ok, severity=dg.AssetCheckSeverity.WARN, metadata=lag.metadata()
        )

    @dg.asset_check(
        asset=key,
        required_resource_keys=ns.required_keys,
        name=STUCK_BATCHES,
        description="Pending batches whose run failed for good (no retry left); evaluated on "
        "every sensor tick. Fix the cause, then `lockgate retry`.",
    )
    def stuck(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        rt, src = _live(config, source, live, ns, context.resources)
        pending = [c.batch_id for c in rt.ledger(src).pending()]
        found = stuck_batches(context.instance, ns.label(source.name), pending) if pending else {}
        return dg.AssetCheckResult(
            passed=not found,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=stuck_metadata({b: r.run_id for b, r in found.items()}),
        )

    @dg.asset_check(
        asset=key,
        required_resource_keys=ns.required_keys,
        name="deep_verify",
        description=(
            "Re-reads every committed object from the landing and recounts its records "
            "(independently of staging): each must equal its rows + quarantine entries. "
            "On demand only: it reads the whole landing."
        ),
    )
    def deep_verify(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        rt, src = _live(config, source, live, ns, context.resources)
        days = run_days(context.run.tags)
        report = verify_deep(rt, src, days=days)
        return dg.AssetCheckResult(
            passed=report.ok,
            metadata={
                "days": f"{days[0]}..{days[1]}" if days else "all",
                "objects": report.objects,
                "checked": report.checked,
                "records": report.records,
                "not_recounted": report.not_recounted,
                "not_read": report.not_read,
                "unavailable": len(report.unavailable),
                "violations": "\n".join(report.violations[:20]) or "none",
            },
        )

    return [exactly_once, ledger_lag, stuck, deep_verify]


def exactly_once_schedule(
    source: SourceConfig, cron: str, ns: Namespace | None = None
) -> dg.ScheduleDefinition:
    """Runs the ``exactly_once`` check of ``source`` on ``cron`` (UTC); it scans the whole
    table, so it does not run after every batch."""
    ns = ns or Namespace()
    label = ns.label(source.name)
    job = dg.define_asset_job(
        # named: ``<name>__<source>_exactly_once`` would be the op name of the check of an
        # asset ``<name>/<source>`` (Dagster joins key parts with ``__``), a common table key
        name=f"{label}_exactly_once" if ns.name is None else f"{label}_exactly_once_job",
        selection=dg.AssetSelection.checks(dg.AssetCheckKey(asset_key(source), "exactly_once")),
    )
    return dg.ScheduleDefinition(
        name=f"{label}_exactly_once_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
