"""The table store: stage Parquet data files, then commit a batch exactly once.

Contract:

* ``stage`` writes data files with unique names (a uuid per call) under the table's
  ``data/``; they are invisible to readers until a commit references them. Memory stays
  bounded by ``TableSettings.target_file_size_bytes`` per open partition.
* ``commit_batch`` is ONE Iceberg transaction: it appends the staged files and adds the batch
  id to the table property ``lockgate.committed.<source>`` (the marker). Before committing,
  and after every lost race, it reloads the table; if the batch is already marked it commits
  nothing and reports ``duplicate=True``. So a batch's rows appear at most once whatever the
  number of concurrent or repeated attempts, and exactly once after any attempt succeeds.
* Every marker change is also a new snapshot (an empty batch commits an empty append), and
  every commit asserts the base snapshot of ``main``: catalogs that re-validate requirements
  against a newer version (SQL, REST) therefore can never rebase a stale marker either.
* ``rebuild_partitions`` overwrites exactly the given days; it raises ``RebuildConflict`` if a
  batch not in its plan was committed since its base (the caller re-plans).
* The duplicate-file check of pyiceberg's ``add_files`` (O(table) per commit) is never run:
  the marker already guarantees idempotence.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from resources.markers import IdRanges, marker_property

if TYPE_CHECKING:
    from resources.maintenance import MaintenancePolicy, VacuumReport

log = logging.getLogger(__name__)

DEFAULT_PARTITION_COLUMN = "_day"
DEFAULT_TARGET_FILE_SIZE = 128 * 1024 * 1024


class TablesError(Exception):
    """Base of the table store's errors."""


class IncompatibleSchema(TablesError):
    """A column's new type cannot be reached from the table's type by safe widening
    (only int->long and float->double are allowed), or a required column is missing."""


class RebuildConflict(TablesError):
    """A batch outside the rebuild's plan committed to the table since the rebuild's base:
    the rebuild would drop or duplicate it. Re-plan from a fresh base."""


class CommitConflict(TablesError):
    """Commit attempts were exhausted by concurrent writers (nothing was committed)."""


@dataclass(frozen=True)
class TableSettings:
    """Tuning of the table store.

    ``target_file_size_bytes`` is measured in uncompressed Arrow bytes (as pyiceberg does);
    ``commit_attempts`` bounds retries on conflicts, sleeping ``retry_base_s * 2**k`` (capped
    at ``retry_max_s``) with full jitter; maintenance runs after every
    ``maintenance_every`` commits of this process (0: never automatically).
    """

    target_file_size_bytes: int = DEFAULT_TARGET_FILE_SIZE
    commit_attempts: int = 50
    retry_base_s: float = 0.02
    retry_max_s: float = 1.0
    maintenance_every: int = 50
    maintenance: MaintenancePolicy | None = None  # None: MaintenancePolicy()


@dataclass(frozen=True)
class StagedFile:
    """One staged (written, not yet committed) Parquet data file.

    ``data_file`` is pyiceberg's ``DataFile`` (field-id based stats, partition record) and is
    only meaningful in the process that staged it, against the same partition spec.
    """

    path: str
    day: date | None
    record_count: int
    file_size_in_bytes: int
    data_file: DataFile = field(repr=False, compare=False)


@dataclass(frozen=True)
class CommitResult:
    """Outcome of ``commit_batch`` / ``rebuild_partitions``.

    ``duplicate``: the batch was already marked, nothing was committed by this call
    (``snapshot_id`` / ``table_version`` then describe the table as found).
    ``attempts``: commit attempts made (1 = no conflict).
    """

    snapshot_id: int | None
    table_version: int
    duplicate: bool
    attempts: int


@dataclass(frozen=True)
class RebuildBase:
    """What a rebuild planned against: the marker and snapshot it read."""

    snapshot_id: int | None
    marker: IdRanges
    table_version: int


class TableStore:
    """Stage and commit batches to Iceberg tables of one catalog (any pyiceberg catalog;
    ``ObjectStoreCatalog`` by default). Thread-compatible, not thread-safe per instance."""

    def __init__(self, catalog: Catalog, settings: TableSettings | None = None) -> None:
        self.catalog = catalog
        self.settings = settings or TableSettings()
        self._commits_since_maintenance: dict[str, int] = {}

    def load(self, identifier: str) -> Table:
        """The table at its current version (``NoSuchTableError`` if missing)."""
        raise NotImplementedError

    def ensure_table(
        self, identifier: str, schema: pa.Schema, partition_column: str = DEFAULT_PARTITION_COLUMN
    ) -> Table:
        """The table, created if missing: Iceberg v2, identity-partitioned on
        ``partition_column`` (type date), Parquet zstd, target file size from settings.
        Race-safe: of concurrent creators one creates, the others load that table.
        An existing table is returned as is (use ``evolve`` for schema changes)."""
        raise NotImplementedError

    def evolve(self, identifier: str, arrow_schema: pa.Schema) -> Schema:
        """Bring the table schema up to ``arrow_schema`` and return the resulting schema.

        New columns are added by name, nullable; int->long and float->double are widened;
        columns absent from ``arrow_schema`` stay (readers see nulls for new rows).
        Any other type change raises ``IncompatibleSchema``. Idempotent; a no-op commits
        nothing.
        """
        raise NotImplementedError

    def stage(self, identifier: str, batches: Iterable[pa.RecordBatch]) -> list[StagedFile]:
        """Write ``batches`` as Parquet data files under the table's ``data/``.

        Rows are split by partition value and rolled into files of about the target size;
        batches must match the table schema by name (extra lineage columns included).
        Rows with a null partition value raise ``ValueError``. Returns one ``StagedFile``
        per file (none for no rows).
        """
        raise NotImplementedError

    def commit_batch(
        self,
        identifier: str,
        source: str,
        batch_id: int,
        staged: list[StagedFile],
        summary: dict[str, str] | None = None,
    ) -> CommitResult:
        """Append ``staged`` and mark ``batch_id`` committed for ``source``, atomically, once.

        ``summary`` goes into the snapshot summary (with ``lockgate.source`` and
        ``lockgate.batch``). Raises ``CommitConflict`` after ``commit_attempts`` lost races.
        """
        raise NotImplementedError

    def rebuild_base(self, identifier: str, source: str) -> RebuildBase:
        """Read the base a rebuild plans against (call BEFORE reading the ledger)."""
        raise NotImplementedError

    def rebuild_partitions(
        self,
        identifier: str,
        source: str,
        days: list[date],
        staged: list[StagedFile],
        batch_ids: list[int],
        base: RebuildBase,
        summary: dict[str, str] | None = None,
    ) -> CommitResult:
        """ONE overwrite: delete every data file of ``days`` and add ``staged``; the marker
        becomes ``marker | batch_ids`` (union).

        Raises ``RebuildConflict`` if the marker gained an id outside ``batch_ids`` since
        ``base`` (a batch the rebuild did not read may touch these days). Concurrent commits
        that only add ids in ``batch_ids`` are retried against. ``staged`` files must all
        belong to ``days``.
        """
        raise NotImplementedError

    def committed(self, identifier: str, source: str) -> IdRanges:
        """The batch ids of ``source`` committed to the table (empty if no table)."""
        raise NotImplementedError

    def current_version(self, identifier: str) -> int:
        """The table's current metadata version (object-store catalog: N of v<N>; other
        catalogs: the number of metadata-log entries + 1)."""
        raise NotImplementedError

    def maintain(self, identifier: str) -> None:
        """Run maintenance now (expire snapshots, retire metadata versions)."""
        raise NotImplementedError

    def vacuum(
        self, identifier: str, older_than: timedelta = timedelta(days=3), dry_run: bool = False
    ) -> VacuumReport:
        """Delete unreferenced files older than ``older_than`` (see ``maintenance.vacuum``)."""
        raise NotImplementedError


def _jitter_sleep(attempt: int, base: float, cap: float) -> None:
    time.sleep(random.uniform(0, min(cap, base * (2**attempt))))


def _marker_key(source: str) -> str:
    return marker_property(source)


def _new_write_id() -> uuid.UUID:
    return uuid.uuid4()
