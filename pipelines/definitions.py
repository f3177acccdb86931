"""Dagster definitions, grown from ``lockgate.yaml`` ($LOCKGATE_CONFIG, else ./lockgate.yaml):
per source one partitioned asset, its checks and its sensor; one set of resources."""

from __future__ import annotations

import dagster as dg

from lockgate.pipelines.assets import asset_key, build_asset
from lockgate.pipelines.checks import build_checks
from lockgate.resources.config import LockgateConfig, load_config
from lockgate.resources.dagster_resources import (
    LedgerResource,
    ObjectStoreResource,
    TableStoreResource,
)
from lockgate.sensors.factory import build_sensor


def build_definitions(config: LockgateConfig) -> dg.Definitions:
    s3 = {"s3_endpoint_url": config.s3.endpoint_url, "s3_region": config.s3.region}
    sources = list(config.sources.values())
    return dg.Definitions(
        assets=[build_asset(config, s) for s in sources],
        asset_checks=[c for s in sources for c in build_checks(config, s)],
        sensors=[build_sensor(config, s, asset_key(s)) for s in sources],
        # One step per run: running it in the run's own process saves a step subprocess
        # (tens of seconds on a loaded machine) per batch.
        executor=dg.in_process_executor,
        resources={
            "object_store": ObjectStoreResource(**s3),
            "ledger": LedgerResource(url=config.ledger, **s3),
            # Catalog properties may hold secrets (tokens, keys): resource config is shown in
            # the UI and stored in the instance, so runs take them from the config instead
            # (``Runtime.from_resources``).
            "table_store": TableStoreResource(warehouse=config.warehouse, catalog={}, **s3),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded when Dagster loads the code location, not at import: importing this module
    (e.g. for ``build_definitions``) needs no config."""
    return build_definitions(load_config())
