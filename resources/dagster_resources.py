"""Thin Dagster resources over the object store, the ledger and the table store.

They hold only locations and endpoint settings (shown in the Dagster UI); credentials come
from the usual AWS variables at run time and never enter resource config or metadata. The
only catalog properties in resource config are environment references, as ``dg.EnvVar``
(the UI shows the variable's name, never its value).

``Namespace`` names one Lockgate component's Dagster objects, so that several components
(several configs: ledgers, warehouses, teams) live in one project without colliding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from lockgate.resources.catalog import make_catalog
from lockgate.resources.ledger import Ledger
from lockgate.resources.store import ObjectStore, S3Options
from lockgate.resources.stores import open_store
from lockgate.resources.tables import TableStore


class _S3Settings(dg.ConfigurableResource):
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint (else AWS_ENDPOINT_URL)"
    )
    s3_region: str | None = Field(default=None, description="S3 region (else AWS_REGION)")

    def s3_options(self) -> S3Options:
        return S3Options.from_env(self.s3_endpoint_url, self.s3_region)


class ObjectStoreResource(_S3Settings):
    """Opens landing stores by URL (``s3://bucket/prefix`` or a local path)."""

    def open(self, url: str) -> ObjectStore:
        return open_store(url, self.s3_options())


class LedgerResource(_S3Settings):
    """The ledger root; ``open`` gives one source's ledger (not thread-safe: one per run)."""

    url: str = Field(description="ledger root: local path or s3://bucket/prefix")

    def store(self) -> ObjectStore:
        return open_store(self.url, self.s3_options())

    def open(self, source: str, fingerprint: Mapping[str, str]) -> Ledger:
        return Ledger.open(self.store(), source, fingerprint)


class TableStoreResource(_S3Settings):
    """The warehouse and its catalog (object-store catalog unless ``catalog`` names one)."""

    warehouse: str = Field(description="warehouse: local path or s3://bucket/prefix")
    catalog: dict[str, str] = Field(default_factory=dict, description="pyiceberg catalog props")

    def table_store(self) -> TableStore:
        return TableStore(make_catalog(self.warehouse, self.s3_options(), dict(self.catalog)))


NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*")


@dataclass(frozen=True)
class Namespace:
    """The names of one Lockgate component's Dagster objects.

    Contract: ``name=None`` gives the default names (resource keys ``lockgate_object_store``,
    ``lockgate_ledger``, ``lockgate_table_store``, ``lockgate_io_manager``; per source the
    label ``<source>``). A ``name`` (letters, digits, single ``_``; no ``__``) gives
    ``lockgate_<name>_<kind>`` and the label ``<name>__<source>``, which prefixes the job,
    sensor and schedule names and the batch run keys and source tag; distinct names never
    collide (the first ``__`` of a label ends the name). The landing asset of a named
    component is ``landing/<name>/<source>``; table asset keys are never namespaced."""

    name: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None and not NAME_RE.fullmatch(self.name):
            raise ValueError(
                f"invalid Lockgate component name {self.name!r}: letters, digits and single "
                "underscores, starting with a letter (e.g. team_a)"
            )

    def resource_key(self, kind: str) -> str:
        return f"lockgate_{kind}" if self.name is None else f"lockgate_{self.name}_{kind}"

    @property
    def object_store(self) -> str:
        return self.resource_key("object_store")

    @property
    def ledger(self) -> str:
        return self.resource_key("ledger")

    @property
    def table_store(self) -> str:
        return self.resource_key("table_store")

    @property
    def io_manager(self) -> str:
        return self.resource_key("io_manager")

    @property
    def required_keys(self) -> set[str]:
        """The resource keys a Lockgate asset, check or sensor needs."""
        return {self.object_store, self.ledger, self.table_store}

    def label(self, source: str) -> str:
        """The Dagster-facing name of ``source`` (job, sensor, schedule, run key, tag)."""
        return source if self.name is None else f"{self.name}__{source}"


def catalog_env_vars(catalog_env: Mapping[str, str]) -> dict[str, str]:
    """Catalog properties given as environment references, as resource config: each value a
    ``dg.EnvVar`` (resolved by Dagster at run time; the UI shows the variable name)."""
    return {key: dg.EnvVar(var) for key, var in catalog_env.items()}
