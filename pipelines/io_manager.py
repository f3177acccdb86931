"""Loading a Lockgate table into downstream assets.

Each table asset carries ``io_manager_key="lockgate_io_manager"``, so a downstream asset
that takes it as an input receives the rows of its partition(s), read through pyiceberg
with the partition filter (``_day``):

    @dg.asset(partitions_def=..., deps=...)
    def daily(events: pd.DataFrame) -> ...     # also pa.Table, or polars.DataFrame

Contract: the rows are those of the committed table version current at load time, for
exactly the partition keys of the input (all days when the input is not partitioned). The
lineage columns (``_source_key``, ``_source_etag``, ``_source_row``, ``_batch_id``,
``_ingested_at``) are left out unless ``include_lineage``; ``_day`` and ``_rescued_data`` stay.
Writing is Lockgate's alone: the assets commit their own data and return no value.

In Dagster (``lockgate_io_manager``) the catalog is the table-store resource's: its
environment references (``{env: NAME}``) are the values Dagster resolved for the resource
(``dg.EnvVar``, or whatever the run's resource config gives), never read from the process
environment behind Dagster's back.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pyarrow as pa

from lockgate.resources.catalog import make_catalog
from lockgate.resources.config import LockgateConfig, SourceConfig
from lockgate.resources.dagster_resources import Namespace, TableStoreResource
from lockgate.resources.runtime import Runtime
from lockgate.resources.tables import TableStore

LINEAGE_ONLY = ("_source_key", "_source_etag", "_source_row", "_batch_id", "_ingested_at")


def _as_requested(table: pa.Table, typing_type: Any) -> Any:
    """``table`` as the input's annotated type: ``pa.Table``, polars, else pandas."""
    if typing_type is pa.Table:
        return table
    module = getattr(typing_type, "__module__", "") or ""
    if module.startswith("polars"):
        import polars as pl

        return pl.from_arrow(table)
    return table.to_pandas()


class LockgateIOManager(dg.IOManager):
    """Reads the partitions of Lockgate tables for downstream assets (read-only)."""

    def __init__(
        self,
        config: LockgateConfig,
        include_lineage: bool = False,
        table_store: TableStoreResource | None = None,
    ) -> None:
        """``table_store``: the resource whose warehouse and catalog (environment references
        as it resolved them) are read; without it (outside Dagster), ``config``'s, with
        environment references read from the environment."""
        self.config = config
        self.include_lineage = include_lineage
        self.table_store = table_store
        self._by_key = {(s.namespace, s.table_name): s for s in config.sources.values()}

    def _source(self, key: dg.AssetKey) -> SourceConfig:
        source = self._by_key.get(tuple(key.path))  # type: ignore[arg-type]
        if source is None:
            raise dg.DagsterInvariantViolationError(
                f"{key.to_user_string()} is not a Lockgate table of this config"
            )
        return source

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is not None:
            raise dg.DagsterInvariantViolationError(
                "Lockgate tables are written by Lockgate only (the asset commits its batch)"
            )

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.upstream_output.asset_key if context.upstream_output else None
        if key is None:
            raise dg.DagsterInvariantViolationError("lockgate_io_manager loads assets only")
        source = self._source(key)
        days = sorted(context.asset_partition_keys) if context.has_asset_partitions else []
        table = self.read(source, days)
        return _as_requested(table, context.dagster_type.typing_type)

    def _tables(self) -> TableStore:
        ts = self.table_store
        if ts is None:
            return Runtime.from_config(self.config).tables
        props = {**ts.catalog, **self.config.catalog_properties(given=ts.catalog)}
        return TableStore(make_catalog(ts.warehouse, ts.s3_options(), props))

    def read(self, source: SourceConfig, days: list[str]) -> pa.Table:
        """The committed rows of ``days`` (all rows when empty) of ``source``'s table."""
        iceberg = self._tables().load(source.table)
        row_filter = (
            " or ".join(f"_day == '{d}'" for d in days) if days else "True"
        )  # days are ISO dates from Dagster's partition keys, never user text
        names = [f.name for f in iceberg.schema().fields]
        if not self.include_lineage:
            names = [n for n in names if n not in LINEAGE_ONLY]
        return iceberg.scan(row_filter=row_filter, selected_fields=tuple(names)).to_arrow()


def lockgate_io_manager(config: LockgateConfig, ns: Namespace) -> dg.IOManagerDefinition:
    """``ns.io_manager``'s definition: a ``LockgateIOManager`` over ``config`` reading through
    the resource ``ns.table_store`` (so Dagster resolves its environment references)."""

    @dg.io_manager(required_resource_keys={ns.table_store})
    def _lockgate_io_manager(init_context: dg.InitResourceContext) -> LockgateIOManager:
        return LockgateIOManager(
            config, table_store=getattr(init_context.resources, ns.table_store)
        )

    return _lockgate_io_manager
