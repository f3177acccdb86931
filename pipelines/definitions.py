"""Dagster definitions, grown from ``lockgate.yaml`` ($LOCKGATE_CONFIG, else ./lockgate.yaml):
per source the landing (an external asset), one partitioned table asset, its checks, an
in-process batch job, its sensor and the schedule of its ``exactly_once`` check, and its
compaction and maintenance jobs with their schedules (``lockgate.pipelines.upkeep_jobs``).

Contract: the definitions merge into a user's project (``dg.Definitions.merge``): every
resource key is namespaced ``lockgate_*``, and there is no Definitions-level executor (the
batch jobs carry their own in-process executor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # type-only: dagster does not export the class
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

from lockgate.pipelines.assets import (
    IO_MANAGER_KEY,
    asset_key,
    build_asset,
    landing_key,
    landing_spec,
    partitions,
)
from lockgate.pipelines.checks import build_checks, exactly_once_schedule
from lockgate.pipelines.io_manager import LockgateIOManager
from lockgate.pipelines.upkeep_jobs import upkeep_jobs, upkeep_schedules
from lockgate.resources.config import LockgateConfig, SourceConfig, load_config
from lockgate.resources.dagster_resources import (
    LedgerResource,
    ObjectStoreResource,
    TableStoreResource,
)
from lockgate.sensors.factory import build_sensor


def batch_job(source: SourceConfig) -> UnresolvedAssetJobDefinition:
    """The job of ``source``'s batch runs: its table asset only (checks run on their own
    schedule), in the run worker's own process -- one step per run, so a step subprocess
    would only add its start-up time (tens of seconds on a loaded machine)."""
    return dg.define_asset_job(
        name=f"{source.name}_batches",
        selection=dg.AssetSelection.assets(asset_key(source)).without_checks(),
        partitions_def=partitions(source),
        executor_def=dg.in_process_executor,
    )


def build_definitions(config: LockgateConfig) -> dg.Definitions:
    s3 = {"s3_endpoint_url": config.s3.endpoint_url, "s3_region": config.s3.region}
    sources = list(config.sources.values())
    jobs = {s.name: batch_job(s) for s in sources}
    upkeep = {s.name: upkeep_jobs(config, s) for s in sources}
    return dg.Definitions(
        assets=[
            *(landing_spec(s) for s in sources),
            *(build_asset(config, s) for s in sources),
        ],
        asset_checks=[c for s in sources for c in build_checks(config, s)],
        jobs=[*jobs.values(), *(j for js in upkeep.values() for j in js)],
        sensors=[
            build_sensor(config, s, asset_key(s), jobs[s.name], landing_key(s)) for s in sources
        ],
        schedules=[
            *(exactly_once_schedule(s, s.exactly_once_cron) for s in sources),
            *(sch for s in sources for sch in upkeep_schedules(s, upkeep[s.name])),
        ],
        resources={
            "lockgate_object_store": ObjectStoreResource(**s3),
            "lockgate_ledger": LedgerResource(url=config.ledger, **s3),
            # Catalog properties may hold secrets (tokens, keys): resource config is shown in
            # the UI and stored in the instance, so runs take them from the config instead
            # (``Runtime.from_resources``).
            "lockgate_table_store": TableStoreResource(
                warehouse=config.warehouse, catalog={}, **s3
            ),
            IO_MANAGER_KEY: dg.IOManagerDefinition.hardcoded_io_manager(LockgateIOManager(config)),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded when Dagster loads the code location, not at import: importing this module
    (e.g. for ``build_definitions``) needs no config."""
    return build_definitions(load_config())
