"""The runtime: what one process needs to run Lockgate -- the config, a way to open landing
stores, the ledger root and the table store.

One way to reach every durable thing: the CLI builds a runtime from the config
(``Runtime.from_config``), Dagster runs from their resources (``Runtime.from_resources``);
both then use the same code. A ``Ledger`` is not thread-safe, so ``ledger()`` opens a fresh
one per call.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lockgate.resources.cleaning import landing_for_rebuild
from lockgate.resources.config import (
    QUARANTINE_SUFFIX,
    LockgateConfig,
    SourceConfig,
    load_config,
)
from lockgate.resources.fingerprint import blocking, read_version
from lockgate.resources.ledger import Claim, FingerprintMismatch, Ledger, LedgerCorrupt
from lockgate.resources.store import ObjectStore, S3Options
from lockgate.resources.stores import open_store

if TYPE_CHECKING:  # importing dagster costs the CLI seconds; only Dagster runs need these
    from lockgate.resources.dagster_resources import (
        LedgerResource,
        Namespace,
        ObjectStoreResource,
        TableStoreResource,
    )
    from lockgate.resources.tables import TableStore


def _table_store(
    warehouse: str, s3: S3Options | None, properties: dict[str, str]
) -> Callable[[], TableStore]:
    """The ``open_tables`` of a runtime: builds the catalog and its ``TableStore`` on the first
    call and returns that same instance on every later one (also to copies of the runtime).

    Lazy because the catalog and the table module import pyiceberg (about 0.5 s of CPU per
    process): a run that touches no table (``lockgate ingest`` with nothing pending, a sensor
    tick) never loads it. ``properties`` are resolved by the caller, at start, so that a
    missing environment reference is still refused before anything is claimed or read."""

    @functools.cache
    def open_tables() -> TableStore:
        from lockgate.resources.catalog import make_catalog
        from lockgate.resources.tables import TableStore

        return TableStore(make_catalog(warehouse, s3, properties))

    return open_tables


@dataclass
class Runtime:
    config: LockgateConfig
    open_landing: Callable[[str], ObjectStore]
    ledger_store: ObjectStore
    # the table store, made on first use (``tables``); see ``_table_store``
    open_tables: Callable[[], TableStore]
    _landing: dict[str, ObjectStore] = field(default_factory=dict, repr=False)
    _claimed_at: dict[tuple[str, int], str] = field(default_factory=dict, repr=False)
    _read_from: dict[tuple[str, int], ObjectStore] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: LockgateConfig | str | None = None) -> Runtime:
        """From a config object, a config path, or the default config lookup."""
        if not isinstance(config, LockgateConfig):
            config = load_config(config)
        s3 = config.s3
        return cls(
            config=config,
            open_landing=lambda url: open_store(url, s3),
            ledger_store=open_store(config.ledger, s3),
            open_tables=_table_store(config.warehouse, s3, config.catalog_properties()),
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
        tables = _table_store(
            table_store.warehouse,
            table_store.s3_options(),
            {**table_store.catalog, **config.catalog_properties(given=table_store.catalog)},
        )
        return cls(config, object_store.open, ledger.store(), tables)

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

    @property
    def tables(self) -> TableStore:
        """The table store (one per runtime and its copies; made on first use)."""
        return self.open_tables()

    def source(self, name: str) -> SourceConfig:
        return self.config.source(name)

    def selected(self, name: str | None) -> list[SourceConfig]:
        """One named source, or all of them in config order."""
        return [self.source(name)] if name else list(self.config.sources.values())

    def landing(self, source: SourceConfig) -> ObjectStore:
        if source.name not in self._landing:
            self._landing[source.name] = self.open_landing(source.landing)
        return self._landing[source.name]

    def claim_landing(self, source: SourceConfig, claim: Claim) -> ObjectStore:
        """The landing store ``claim``'s objects were listed in: the landing URL of the
        fingerprint version it was made under. After a move of the source (a new ``landing``,
        then ``lockgate ledger reset``) a claim made before it is still read where it was
        claimed, never under its relative key in the new landing. ``LedgerCorrupt`` if the
        claim's fingerprint version is not stored."""
        override = self._read_from.get((source.name, claim.batch_id))
        if override is not None:
            return override
        where = (source.name, claim.fingerprint_version)
        if where not in self._claimed_at:
            fp = read_version(self.ledger_store, source.name, claim.fingerprint_version)
            if fp is None:
                raise LedgerCorrupt(
                    f"{source.name}: batch {claim.batch_id} names fingerprint version "
                    f"{claim.fingerprint_version}, which is not stored"
                )
            self._claimed_at[where] = fp.values.get("landing", source.landing)
        url = self._claimed_at[where]
        if url == source.landing:
            return self.landing(source)
        if url not in self._landing:
            self._landing[url] = self.open_landing(url)
        return self._landing[url]

    def archive_aware(
        self, source: SourceConfig, ledger: Ledger, claims: Sequence[Claim]
    ) -> tuple[Runtime, dict[int, tuple[str, ...]]]:
        """A runtime whose ``claim_landing`` of each of ``claims`` reads the landing the claim
        was made in, with objects archived by ``clean_source: archive`` read from their recorded
        copies (etag checked), whatever the mode is now; and the objects deleted by
        ``clean_source: delete`` (batch id -> keys), which cannot be read."""
        groups: dict[int, tuple[ObjectStore, list[Claim]]] = {}
        for claim in claims:
            base = self.claim_landing(source, claim)
            groups.setdefault(id(base), (base, []))[1].append(claim)
        read_from: dict[tuple[str, int], ObjectStore] = {}
        deleted: dict[int, tuple[str, ...]] = {}
        for base, group in groups.values():
            where = landing_for_rebuild(ledger, base, self.open_landing, group)
            deleted.update(where.deleted)
            read_from.update(((source.name, c.batch_id), where.landing) for c in group)
        return dataclasses.replace(self, _read_from={**self._read_from, **read_from}), deleted

    def ledger(self, source: SourceConfig, reset: bool = False) -> Ledger:
        """A fresh ``Ledger`` of ``source`` (``FingerprintMismatch`` if the source changed)."""
        return Ledger.open(self.ledger_store, source.name, source.fingerprint(), reset=reset)

    def run_ledger(self, source: SourceConfig) -> Ledger:
        """The ``Ledger`` a batch run executes a claim with. Like ``ledger``, except that a
        declaration whose only change is a moved ``landing`` (edited, ``lockgate ledger reset``
        not run yet) opens the ledger at its stored fingerprint: a run claims nothing, and
        reads each claim where it was claimed (``claim_landing``). Discovery never uses it: it
        must not claim until the move is accepted."""
        try:
            return self.ledger(source)
        except FingerprintMismatch as e:
            if blocking(e.changes):
                raise
            stored = Ledger.read_fingerprint(self.ledger_store, source.name)
            assert stored is not None  # a mismatch means there is a stored fingerprint
            return Ledger(self.ledger_store, source.name, stored)


def quarantine_table(source: SourceConfig) -> str:
    """The quarantine table of a source's table: ``<namespace>.<table>__quarantine``."""
    return source.table + QUARANTINE_SUFFIX
