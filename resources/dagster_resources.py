"""Thin Dagster resources over the object store, the ledger and the table store.

They hold only locations and endpoint settings (shown in the Dagster UI); credentials come
from the usual AWS variables at run time and never enter resource config or metadata.
"""

from __future__ import annotations

from collections.abc import Mapping

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
