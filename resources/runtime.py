"""The runtime: what one process needs to run Lockgate -- the config, a way to open landing
stores, the ledger root and the table store.

One way to reach every durable thing: the CLI builds a runtime from the config
(``Runtime.from_config``), Dagster runs from their resources (``Runtime.from_resources``);
both then use the same code. A ``Ledger`` is not thread-safe, so ``ledger()`` opens a fresh
one per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lockgate.resources.catalog import make_catalog
from lockgate.resources.config import (
    QUARANTINE_SUFFIX,
    LockgateConfig,
    SourceConfig,
    load_config,
)
from lockgate.resources.ledger import Ledger
from lockgate.resources.store import ObjectStore
from lockgate.resources.stores import open_store
from lockgate.resources.tables import TableStore

if TYPE_CHECKING:  # importing dagster costs the CLI seconds; only Dagster runs need these
    from lockgate.resources.dagster_resources import (
        LedgerResource,
        Namespace,
        ObjectStoreResource,
        TableStoreResource,
    )


@dataclass
class Runtime:
    config: LockgateConfig
    open_landing: Callable[[str], ObjectStore]
    ledger_store: ObjectStore
    tables: TableStore
    _landing: dict[str, ObjectStore] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: LockgateConfig | str | None = None) -> Runtime:
        """From a config object, a config path, or the default config lookup."""
        if not isinstance(config, LockgateConfig):
            config = load_config(config)
        catalog = make_catalog(config.warehouse, config.s3, config.catalog_properties())
        return cls(
            config=config,
            open_landing=lambda url: open_store(url, config.s3),
            ledger_store=open_store(config.ledger, config.s3),
            tables=TableStore(catalog),
        )

    @classmethod
    def from_resources(
        cls,
        config: LockgateConfig,
        object_store: ObjectStoreResource,
        ledger: LedgerResource,
        table_store: TableStoreResource,
    ) -> Runtime:
        """Plain catalog properties come from ``config`` (they may hold secrets, so they are
        not resource config); environment references from the resource, where Dagster resolved
        them (``dg.EnvVar``), else from the environment."""
        catalog = make_catalog(
            table_store.warehouse,
            table_store.s3_options(),
            {**table_store.catalog, **config.catalog_properties(given=table_store.catalog)},
        )
        return cls(config, object_store.open, ledger.store(), TableStore(catalog))

    @classmethod
    def from_dagster(cls, config: LockgateConfig, ns: Namespace, resources: Any) -> Runtime:
        """From the resources of a Dagster context (``context.resources``) under ``ns``'s
        keys (they are injected by key, so a namespaced component cannot take parameters)."""
        return cls.from_resources(
            config,
            getattr(resources, ns.object_store),
            getattr(resources, ns.ledger),
            getattr(resources, ns.table_store),
        )

    def source(self, name: str) -> SourceConfig:
        return self.config.source(name)

    def selected(self, name: str | None) -> list[SourceConfig]:
        """One named source, or all of them in config order."""
        return [self.source(name)] if name else list(self.config.sources.values())

    def landing(self, source: SourceConfig) -> ObjectStore:
        if source.name not in self._landing:
            self._landing[source.name] = self.open_landing(source.landing)
        return self._landing[source.name]

    def ledger(self, source: SourceConfig, reset: bool = False) -> Ledger:
        """A fresh ``Ledger`` of ``source`` (``FingerprintMismatch`` if the source changed)."""
        return Ledger.open(self.ledger_store, source.name, source.fingerprint(), reset=reset)


def quarantine_table(source: SourceConfig) -> str:
    """The quarantine table of a source's table: ``<namespace>.<table>__quarantine``."""
    return source.table + QUARANTINE_SUFFIX
