"""Dagster definitions, grown from ``lockgate.yaml`` ($LOCKGATE_CONFIG, else ./lockgate.yaml):
per source the landing (an external asset), one partitioned table asset, its checks, an
in-process batch job, its sensor and the schedule of its ``exactly_once`` check, and its
compaction and maintenance jobs with their schedules (``lockgate.pipelines.upkeep_jobs``).

Contract: the definitions merge into a user's project (``dg.Definitions.merge``): every
resource key is namespaced ``lockgate_*``, and there is no Definitions-level executor (the
batch jobs carry their own in-process executor). Several Lockgate configs merge too when
each is built under its own ``name`` (``Namespace``): resource keys, job, sensor and
schedule names, run keys and landing asset keys then differ; table asset keys do not (a
table is one asset), so two configs may not declare the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import dagster as dg

if TYPE_CHECKING:  # type-only: dagster does not export the class
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

from lockgate.pipelines.assets import (
    asset_key,
    build_asset,
    landing_key,
    landing_spec,
    partitions,
)
from lockgate.pipelines.checks import build_checks, exactly_once_schedule
from lockgate.pipelines.io_manager import lockgate_io_manager
from lockgate.pipelines.upkeep_jobs import upkeep_jobs, upkeep_schedules
from lockgate.resources.config import LockgateConfig, SourceConfig, load_config
from lockgate.resources.dagster_resources import (
    LedgerResource,
    Namespace,
    ObjectStoreResource,
    TableStoreResource,
    catalog_env_vars,
)
from lockgate.resources.errors import ExitCode, TerminalError
from lockgate.sensors.factory import build_sensor


def batch_job(source: SourceConfig, ns: Namespace | None = None) -> UnresolvedAssetJobDefinition:
    """The job of ``source``'s batch runs: its table asset only (checks run on their own
    schedule), in the run worker's own process -- one step per run, so a step subprocess
    would only add its start-up time (tens of seconds on a loaded machine)."""
    return dg.define_asset_job(
        name=f"{(ns or Namespace()).label(source.name)}_batches",
        selection=dg.AssetSelection.assets(asset_key(source)).without_checks(),
        partitions_def=partitions(source),
        executor_def=dg.in_process_executor,
    )


def asset_keys(config: LockgateConfig, ns: Namespace | None = None) -> dict[dg.AssetKey, str]:
    """Every asset key the definitions of ``config`` under ``ns`` define -> its source."""
    keys: dict[dg.AssetKey, str] = {}
    for s in config.sources.values():
        keys[asset_key(s)] = s.name
        keys[landing_key(s, ns)] = s.name
    return keys


class ComponentCollision(TerminalError, dg.DagsterInvalidDefinitionError):
    """Two Lockgate components (or configs) of one project would define the same Dagster
    object (a config error, and an invalid definition to Dagster)."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFIG


def check_distinct(
    a: tuple[str, Namespace, LockgateConfig], b: tuple[str, Namespace, LockgateConfig]
) -> None:
    """``ComponentCollision`` naming both components if the definitions of ``a`` and ``b``
    (each: where it is declared, its namespace, its config) cannot live in one project."""
    (where_a, ns_a, cfg_a), (where_b, ns_b, cfg_b) = a, b
    if ns_a.name == ns_b.name:
        named = f"name {ns_a.name!r}" if ns_a.name else "no name"
        raise ComponentCollision(
            f"Lockgate components {where_a} and {where_b} both have {named}, so their resource "
            f"keys ({ns_a.object_store}, ...) and sensor names collide: give each a distinct "
            "`name` attribute (at most one may have none)"
        )
    keys_b = asset_keys(cfg_b, ns_b)
    for key, source in asset_keys(cfg_a, ns_a).items():
        if key in keys_b:
            raise ComponentCollision(
                f"asset key {key.to_user_string()} is defined by both Lockgate components "
                f"{where_a} (source {source}) and {where_b} (source {keys_b[key]}): a table "
                "is one asset, declare it in one component only (or use another table name)"
            )


def build_named_definitions(configs: Mapping[str, LockgateConfig]) -> dg.Definitions:
    """The definitions of several configs in one project, each under its name (the keys of
    ``configs``); ``ComponentCollision`` naming both configs' files if two define the same
    asset key (``dg.Definitions.merge`` would only name the key)."""
    parts = [(f"{cfg.path} (name {name})", Namespace(name), cfg) for name, cfg in configs.items()]
    for i, a in enumerate(parts):
        for b in parts[i + 1 :]:
            check_distinct(a, b)
    return dg.Definitions.merge(*(build_definitions(cfg, name) for name, cfg in configs.items()))


def build_definitions(
    config: LockgateConfig, name: str | None = None, live: bool = True
) -> dg.Definitions:
    """The definitions of ``config``; ``name`` namespaces them (see ``Namespace``) so that
    several configs live in one project. ``ValueError`` for an invalid ``name``. ``live``:
    ``config`` came from a ``lockgate.yaml`` that sensors and runs re-read on every tick and
    run (``lockgate.resources.live_config``); False for a config held elsewhere."""
    ns = Namespace(name)
    s3 = {"s3_endpoint_url": config.s3.endpoint_url, "s3_region": config.s3.region}
    sources = list(config.sources.values())
    jobs = {s.name: batch_job(s, ns) for s in sources}
    upkeep = {s.name: upkeep_jobs(config, s, ns, live) for s in sources}
    return dg.Definitions(
        assets=[
            *(landing_spec(s, ns) for s in sources),
            *(build_asset(config, s, ns, live) for s in sources),
        ],
        asset_checks=[c for s in sources for c in build_checks(config, s, ns, live)],
        jobs=[*jobs.values(), *(j for js in upkeep.values() for j in js)],
        sensors=[
            build_sensor(config, s, asset_key(s), jobs[s.name], landing_key(s, ns), ns, live)
            for s in sources
        ],
        schedules=[
            *(exactly_once_schedule(s, s.exactly_once_cron, ns) for s in sources),
            *(sch for s in sources for sch in upkeep_schedules(s, upkeep[s.name])),
        ],
        resources={
            ns.object_store: ObjectStoreResource(**s3),
            ns.ledger: LedgerResource(url=config.ledger, **s3),
            # Plain catalog properties may hold secrets (tokens, keys): resource config is
            # shown in the UI and stored in the instance, so runs take them from the config
            # (``Runtime.from_resources``); only environment references are resource config,
            # as ``dg.EnvVar`` (the UI shows the variable's name).
            ns.table_store: TableStoreResource(
                warehouse=config.warehouse, catalog=catalog_env_vars(config.catalog_env), **s3
            ),
            ns.io_manager: lockgate_io_manager(config, ns),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded when Dagster loads the code location, not at import: importing this module
    (e.g. for ``build_definitions``) needs no config."""
    return build_definitions(load_config())
