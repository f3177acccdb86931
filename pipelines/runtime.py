"""The runtime: what one process needs to run Lockgate, opened from a ``LockgateConfig``.

One way to reach every durable thing: landing stores, ledgers and the table store all come
from here, for the CLI, the sensors and the assets alike. Opening is lazy and cached per
runtime; a ``Ledger`` is not thread-safe, so ``ledger()`` opens a fresh one per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from pipelines.config import LockgateConfig, SourceConfig
from resources.catalog import make_catalog
from resources.ledger import Ledger
from resources.store import ObjectStore, open_store
from resources.tables import TableStore
from sensors.discovery import DiscoveryRule

QUARANTINE_SUFFIX = "__quarantine"


@dataclass
class Runtime:
    config: LockgateConfig
    _landing: dict[str, ObjectStore] = field(default_factory=dict, repr=False)

    def source(self, name: str) -> SourceConfig:
        return self.config.source(name)

    def landing(self, source: SourceConfig) -> ObjectStore:
        if source.name not in self._landing:
            self._landing[source.name] = open_store(source.landing, self.config.s3)
        return self._landing[source.name]

    @cached_property
    def ledger_store(self) -> ObjectStore:
        return open_store(self.config.ledger, self.config.s3)

    def ledger(self, source: SourceConfig, reset: bool = False) -> Ledger:
        """A fresh ``Ledger`` of ``source`` (``FingerprintMismatch`` if the source changed)."""
        return Ledger.open(self.ledger_store, source.name, source.fingerprint(), reset=reset)

    @cached_property
    def tables(self) -> TableStore:
        catalog = make_catalog(self.config.warehouse, self.config.s3, dict(self.config.catalog))
        return TableStore(catalog)


def quarantine_table(source: SourceConfig) -> str:
    """The quarantine table of a source's table: ``<namespace>.<table>__quarantine``."""
    return source.table + QUARANTINE_SUFFIX


def discovery_rule(source: SourceConfig, max_claims_per_tick: int = 100) -> DiscoveryRule:
    """The discovery rule of a source, from its config."""
    return DiscoveryRule(
        partition_regex=source.partition_pattern.pattern if source.partition_pattern else None,
        partition_start=source.partition_start,
        max_files_per_batch=source.max_files_per_batch,
        max_bytes_per_batch=source.max_bytes_per_batch,
        allow_overwrites=source.allow_overwrites,
        max_claims_per_tick=max_claims_per_tick,
    )
