"""Dagster jobs and schedules that keep a source's tables fast to read, wherever the runs run:
per source a compaction job (``<source>_compaction``) and a maintenance job
(``<source>_maintenance``), each with a schedule (``compaction.schedule`` /
``maintenance.schedule``, UTC; none when ``off``). Their state lives in the tables, so any run
worker can run them. The jobs run in process, use the ``lockgate_*`` resources (namespaced like
the rest of the definitions), act on ``lockgate.yaml`` as it is now, and carry
``dagster/max_runtime`` (``DagsterSettings.upkeep_runtime_s``).
"""

import dagster as dg

from lockgate.pipelines.upkeep import compact_source, maintain_source
from lockgate.resources.config import LockgateConfig, SourceConfig
from lockgate.resources.dagster_resources import Namespace
from lockgate.resources.live_config import current_source
from lockgate.resources.runtime import Runtime


def _tags(config: LockgateConfig) -> dict[str, str]:
    return {"dagster/max_runtime": str(config.dagster.upkeep_runtime_s())}


def _runtime(
    config: LockgateConfig, source: SourceConfig, ns: Namespace, live: bool, resources: object
) -> tuple[Runtime, SourceConfig]:
    """The runtime and source an upkeep run acts on (``lockgate.yaml`` as it is now when
    ``live``, see ``lockgate.resources.live_config``)."""
    cfg, src = current_source(config, source) if live else (config, source)
    return Runtime.from_dagster(cfg, ns, resources), src


def compaction_job(
    config: LockgateConfig, source: SourceConfig, ns: Namespace, live: bool = True
) -> dg.JobDefinition:
    """Compacts every day of the source's table that has enough small files."""

    @dg.op(
        name=f"{ns.label(source.name)}_compact",
        tags={"kind": "iceberg"},
        required_resource_keys=ns.required_keys,
    )
    def compact(
        context: dg.OpExecutionContext,
    ) -> dg.Output[int]:
        rt, src = _runtime(config, source, ns, live, context.resources)
        done = compact_source(rt, src, progress=context.log.info)
        compacted = [r for r in done if not r.skipped]
        return dg.Output(
            len(compacted),
            metadata={
                "table": source.table,
                "days_compacted": len(compacted),
                "files_read": sum(r.files_read for r in compacted),
                "files_written": sum(r.files_written for r in compacted),
                "days": ", ".join(str(r.day) for r in compacted) or "none",
            },
        )

    @dg.job(
        name=f"{ns.label(source.name)}_compaction",
        description=f"Rewrites small data files of {source.table} (one replace commit per day).",
        executor_def=dg.in_process_executor,
        tags=_tags(config),
    )
    def job() -> None:
        compact()

    return job


def maintenance_job(
    config: LockgateConfig, source: SourceConfig, ns: Namespace, live: bool = True
) -> dg.JobDefinition:
    """Maintains the source's table and quarantine table (``maintain_source``)."""

    @dg.op(
        name=f"{ns.label(source.name)}_maintain",
        tags={"kind": "iceberg"},
        required_resource_keys=ns.required_keys,
    )
    def maintain(
        context: dg.OpExecutionContext,
    ) -> dg.Output[int]:
        rt, src = _runtime(config, source, ns, live, context.resources)
        results = maintain_source(rt, src)
        for m in results:
            context.log.info(m.line())
        reports = [m.report for m in results if m.report is not None]
        return dg.Output(
            len(reports),
            metadata={
                "tables": ", ".join(m.table for m in results),
                "expired_snapshots": sum(r.expired_snapshots for r in reports),
                "retired_versions": sum(r.retired_versions for r in reports),
                "orphans_deleted": sum(len(r.orphans.deleted) for r in reports if r.orphans),
            },
        )

    @dg.job(
        name=f"{ns.label(source.name)}_maintenance",
        description=(
            f"Expires snapshots, retires metadata and deletes orphan files of {source.table} "
            "and its quarantine table."
        ),
        executor_def=dg.in_process_executor,
        tags=_tags(config),
    )
    def job() -> None:
        maintain()

    return job


def upkeep_jobs(
    config: LockgateConfig, source: SourceConfig, ns: Namespace | None = None, live: bool = True
) -> list[dg.JobDefinition]:
    """The compaction and maintenance jobs of ``source``, named and keyed under ``ns``."""
    ns = ns or Namespace()
    return [compaction_job(config, source, ns, live), maintenance_job(config, source, ns, live)]


def upkeep_schedules(
    source: SourceConfig, jobs: list[dg.JobDefinition]
) -> list[dg.ScheduleDefinition]:
    """The schedules of ``upkeep_jobs(source)`` (only those whose cron is not ``off``)."""
    compaction, maintenance = jobs
    out = []
    for job, cron in ((compaction, source.compaction.cron), (maintenance, source.maintenance.cron)):
        if cron is None:
            continue
        out.append(
            dg.ScheduleDefinition(
                name=f"{job.name}_schedule",
                job=job,
                cron_schedule=cron,
                execution_timezone="UTC",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            )
        )
    return out
