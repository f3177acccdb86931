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
  batch not in its plan was committed to one of those days since its base (the caller
  re-plans); batches of other days committed meanwhile survive untouched.
* The duplicate-file check of pyiceberg's ``add_files`` (O(table) per commit) is never run:
  the marker already guarantees idempotence.
* ``delete_batch_objects`` removes a batch's rows of given objects (copy-on-write, marker
  unchanged; used on the quarantine table, see ``lockgate.pipelines.batch``).
* Every commit (batch, rebuild, delete, schema evolution) goes through ONE loop,
  ``TableStore._commit``: reload, let the update (``AppendBatch``, ``OverwritePartitions``,
  ``DeleteBatchObjects``, ``EvolveSchema``) check its own requirements against that base and
  plan a transaction, commit it strictly
  (``iceberg_private.commit_strict``), and on a lost race back off (full jitter, the one
  ``RetryPolicy``) and start again from a reload.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, ClassVar, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchTableError,
    TableAlreadyExistsError,
    ValidationException,
)
from pyiceberg.expressions import And, BooleanExpression, EqualTo, In
from pyiceberg.io.pyarrow import pyarrow_to_schema
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionField, PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema, assign_fresh_schema_ids
from pyiceberg.table import Table, Transaction, WriteTask
from pyiceberg.transforms import IdentityTransform

from lockgate.resources.catalog import ObjectStoreCatalog, parse_metadata_version
from lockgate.resources.crashpoints import crash_point
from lockgate.resources.errors import ExitCode, LockgateError, TerminalError, TransientError
from lockgate.resources.iceberg_private import (
    MemoTransaction,
    commit_strict,
    has_updates,
    iceberg_schema,
)
from lockgate.resources.markers import IdRanges, marker_property
from lockgate.resources.parquet_writer import write_data_file
from lockgate.resources.retry import RetryPolicy, retry_call
from lockgate.resources.widening import PROMOTIONS, compatible, plain_schema

if TYPE_CHECKING:
    from lockgate.resources.maintenance import MaintenancePolicy, MaintenanceReport, VacuumReport

log = logging.getLogger(__name__)

DEFAULT_PARTITION_COLUMN = "_day"
DEFAULT_TARGET_FILE_SIZE = 128 * 1024 * 1024
#: Files ``TableStore.stage`` writes at once (Parquet encoding is one thread per file; on D4
#: one writer was the bottleneck once the rows were parsed).
STAGE_WRITERS = 2


class TablesError(LockgateError):
    """Base of the table store's errors (a family: never raised itself)."""


class IncompatibleSchema(TablesError, TerminalError):
    """A column's new type cannot be reached from the table's type by safe widening
    (only int->long and float->double are allowed), or a required column is missing."""

    exit_code: ClassVar[ExitCode] = ExitCode.INCOMPATIBLE_SCHEMA
    hint: str | None = (
        "declare a type the column can widen to (int -> long, float -> double), or a new table"
    )


class RebuildConflict(TablesError, TransientError):
    """A batch outside the rebuild's plan committed to the table since the rebuild's base:
    the rebuild would drop or duplicate it. Re-plan from a fresh base."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFLICT
    hint: str | None = "run the backfill again (it re-plans from the table's current state)"


class CommitConflict(TablesError, TransientError):
    """Commit attempts were exhausted by concurrent writers (nothing was committed)."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFLICT
    hint: str | None = "run again: the batch commits at most once whatever the attempts"


@dataclass(frozen=True)
class TableSettings:
    """Tuning of the table store.

    ``target_file_size_bytes`` is measured in uncompressed Arrow bytes (as pyiceberg does);
    ``commit_attempts`` bounds retries on conflicts, sleeping ``retry_base_s * 2**k`` (capped
    at ``retry_max_s``) with full jitter. Maintenance runs in the process whose commit
    produced a table version divisible by ``maintenance_every`` (object-store catalog; other
    catalogs: a last sequence number divisible by it; both are the table's own counters, so
    any process may be the one; 0: never automatically), or when the maintenance state the
    table records is several intervals behind (``maintenance.maintenance_due``).
    Tables are created with merge-append (manifests merged once ``manifest_min_merge_count``
    accumulate) and a metadata log of ``metadata_log_max`` entries.
    """

    target_file_size_bytes: int = DEFAULT_TARGET_FILE_SIZE
    commit_attempts: int = 50
    retry_base_s: float = 0.02
    retry_max_s: float = 1.0
    maintenance_every: int = 10
    maintenance: MaintenancePolicy | None = None  # None: MaintenancePolicy()
    manifest_min_merge_count: int = 20
    metadata_log_max: int = 20

    @property
    def backoff(self) -> RetryPolicy:
        """The commit loop's backoff, as the one retry policy (``lockgate.resources.retry``)."""
        return RetryPolicy(
            max_attempts=max(1, self.commit_attempts),
            base_delay=self.retry_base_s,
            max_delay=self.retry_max_s,
            max_total=float("inf"),
        )


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


# ---- updates: what one commit does, and what it requires of the table it commits on ----


class TableUpdate(Protocol):
    """One table change, in the style of pyiceberg's snapshot producers: given the freshly
    loaded table, it checks its own requirements and stages itself in a transaction.

    ``plan`` returns the transaction to commit strictly against ``table``, or None when the
    change is already in ``table`` (nothing to commit); it raises when a requirement can never
    be met by retrying. The commit loop (``TableStore._commit``) calls it once per attempt.
    """

    @property
    def what(self) -> str:
        """How a lost-races error names the change."""
        ...

    def plan(self, identifier: str, table: Table) -> Transaction | None: ...


@dataclass(frozen=True)
class AppendBatch:
    """Append ``staged`` and add ``batch_id`` to ``source``'s marker. Requires the batch
    unmarked (a marked batch plans nothing: idempotence). ``empty_snapshot``: write a snapshot
    even for no files, so that catalogs re-validating against their newest version (SQL,
    REST) see the marker change assert ``main``'s head."""

    source: str
    batch_id: int
    staged: list[StagedFile]
    summary: dict[str, str]
    empty_snapshot: bool = False

    def __post_init__(self) -> None:
        if self.batch_id < 0:
            raise ValueError(f"batch id must be >= 0, got {self.batch_id}")
        marker_property(self.source)  # ValueError on a bad source name

    @property
    def what(self) -> str:
        return f"batch {self.source}:{self.batch_id}"

    def plan(self, identifier: str, table: Table) -> Transaction | None:
        marker = _marker(table, self.source)
        if self.batch_id in marker:
            return None
        txn = MemoTransaction(table)
        txn.set_properties({marker_property(self.source): marker.add(self.batch_id).format()})
        if self.staged or self.empty_snapshot:
            props = {
                **self.summary,
                "lockgate.source": self.source,
                "lockgate.batch": str(self.batch_id),
            }
            with txn.update_snapshot(snapshot_properties=props).merge_append() as app:
                for f in self.staged:
                    app.append_data_file(f.data_file)
        return txn


@dataclass(frozen=True)
class OverwritePartitions:
    """Replace every data file of ``days`` by ``staged``; the marker becomes ``marker |
    batch_ids``. Requires that the marker gained no id outside ``batch_ids`` since ``base``
    that touches ``days`` (else ``RebuildConflict``: a batch the rebuild did not read has rows
    in these days). ``day_of(batch id)`` names a batch's day (``YYYY-MM-DD``); without it,
    every id gained since ``base`` conflicts. A batch of another day keeps its files (only
    files of ``days`` are replaced) and its marker id (the marker is a union). Plans nothing
    when that is the table already: the marker holds ``batch_ids`` and the files of ``days``
    are exactly ``staged`` (idempotence)."""

    source: str
    days: list[date]
    staged: list[StagedFile]
    batch_ids: list[int]
    base: RebuildBase
    summary: dict[str, str]
    what: str = "rebuild"
    day_of: Callable[[int], str] | None = None

    def __post_init__(self) -> None:
        marker_property(self.source)
        if not self.days:
            raise ValueError("rebuild_partitions needs at least one day")
        day_set = set(self.days)
        stray = [f.path for f in self.staged if f.day not in day_set]
        if stray:
            raise ValueError(f"staged files outside the rebuilt days: {stray[:3]}")

    def plan(self, identifier: str, table: Table) -> Transaction | None:
        planned = IdRanges.of(self.batch_ids)
        marker = _marker(table, self.source)
        foreign = marker.difference(self.base.marker).difference(planned)
        if foreign and self.day_of is not None:
            rebuilt = {d.isoformat() for d in self.days}
            foreign = IdRanges.of(b for b in foreign if self.day_of(b) in rebuilt)
        if foreign:
            raise RebuildConflict(
                f"{identifier}: batches {foreign.format()} of {self.source} committed since the "
                f"rebuild's base (v{self.base.table_version}); re-plan"
            )
        spec = table.spec()
        if len(spec.fields) != 1:
            raise ValueError(f"{identifier}: rebuilds need identity partitioning on one day")
        part_name = table.schema().find_column_name(spec.fields[0].source_id)
        days = sorted(set(self.days))
        props = {
            **self.summary,
            "lockgate.source": self.source,
            "lockgate.rebuild": ",".join(d.isoformat() for d in days),
            "lockgate.batches": planned.format(),
        }
        live: list[DataFile] = []
        if table.current_snapshot() is not None:
            values = ", ".join(repr(d.isoformat()) for d in days)
            live = [
                t.file for t in table.scan(row_filter=f"{part_name} IN ({values})").plan_files()
            ]
        if not planned.difference(marker) and {f.file_path for f in live} == {
            f.path for f in self.staged
        }:
            return None  # already applied (a retry after a commit whose answer was lost)
        txn = MemoTransaction(table)
        txn.set_properties({marker_property(self.source): marker.union(planned).format()})
        with txn.update_snapshot(snapshot_properties=props).overwrite() as ow:
            for old in live:
                ow.delete_data_file(old)
            for new in self.staged:
                ow.append_data_file(new.data_file)
        return txn


@dataclass(frozen=True)
class DeleteBatchObjects:
    """Delete the rows of ``batch_id`` whose ``_source_key`` is one of ``keys`` (copy-on-write:
    data files holding them are rewritten without them). The marker is unchanged. Plans
    nothing when no such row is in the table (idempotence)."""

    source: str
    batch_id: int
    keys: tuple[str, ...]
    summary: dict[str, str]

    @property
    def what(self) -> str:
        return f"delete of batch {self.source}:{self.batch_id} rows of {len(self.keys)} objects"

    def filter(self) -> BooleanExpression:
        # (mypy sees the pydantic fields of these models, not their positional __init__)
        batch = EqualTo("_batch_id", self.batch_id)  # type: ignore[call-arg, arg-type]
        keys = In("_source_key", self.keys)  # type: ignore[call-arg, arg-type]
        return And(batch, keys)

    def plan(self, identifier: str, table: Table) -> Transaction | None:
        if not self.keys or table.current_snapshot() is None:
            return None
        found = table.scan(row_filter=self.filter(), selected_fields=("_source_key",))
        if not found.to_arrow().num_rows:
            return None
        props = {
            **self.summary,
            "lockgate.source": self.source,
            "lockgate.batch": str(self.batch_id),
        }
        txn = MemoTransaction(table)
        txn.delete(self.filter(), snapshot_properties=props)
        return txn


@dataclass(frozen=True)
class EvolveSchema:
    """Bring the schema up to ``arrow_schema`` (new columns nullable, promotions of the
    widening rule). Requires every change to be allowed (else ``IncompatibleSchema``); plans
    nothing when the schema already holds ``arrow_schema``."""

    arrow_schema: pa.Schema
    what: str = "schema evolution"

    def plan(self, identifier: str, table: Table) -> Transaction | None:
        _check_compatible(identifier, table.schema(), self.arrow_schema)
        txn = MemoTransaction(table)
        try:
            with txn.update_schema() as upd:
                upd.union_by_name(_as_optional(table.schema(), self.arrow_schema))
        except (ValidationError, ValueError, TypeError) as e:
            raise IncompatibleSchema(f"{identifier}: {e}") from e
        return txn if has_updates(txn) else None


class TableStore:
    """Stage and commit batches to Iceberg tables of one catalog (any pyiceberg catalog;
    ``ObjectStoreCatalog`` by default). Thread-compatible, not thread-safe per instance."""

    def __init__(self, catalog: Catalog, settings: TableSettings | None = None) -> None:
        self.catalog = catalog
        self.settings = settings or TableSettings()

    # ---- reading -----------------------------------------------------------------------

    def load(self, identifier: str) -> Table:
        """The table at its current version (``NoSuchTableError`` if missing)."""
        return self.catalog.load_table(identifier)

    def committed(self, identifier: str, source: str) -> IdRanges:
        """The batch ids of ``source`` committed to the table (empty if no table)."""
        try:
            table = self.load(identifier)
        except NoSuchTableError:
            return IdRanges()
        return _marker(table, source)

    def current_version(self, identifier: str) -> int:
        """The table's current metadata version (object-store catalog: N of v<N>; other
        catalogs: the number of metadata-log entries + 1; 0: no table)."""
        if isinstance(self.catalog, ObjectStoreCatalog):
            return self.catalog.current_version(identifier)
        try:
            return _version_of(self.load(identifier))
        except NoSuchTableError:
            return 0

    # ---- creating and evolving ---------------------------------------------------------

    def ensure_table(
        self, identifier: str, schema: pa.Schema, partition_column: str = DEFAULT_PARTITION_COLUMN
    ) -> Table:
        """The table, created if missing: Iceberg v2, identity-partitioned on
        ``partition_column`` (type date), Parquet zstd, target file size from settings.
        Race-safe: of concurrent creators one creates, the others load that table.
        An existing table is returned as is (use ``evolve`` for schema changes)."""
        try:
            return self.load(identifier)
        except NoSuchTableError:
            pass
        idx = schema.get_field_index(partition_column)
        if idx < 0:
            raise ValueError(f"{identifier}: partition column {partition_column!r} not in schema")
        if not pa.types.is_date32(schema.field(idx).type):
            raise ValueError(
                f"{identifier}: partition column {partition_column!r} must be date32, "
                f"got {schema.field(idx).type}"
            )
        ice = assign_fresh_schema_ids(iceberg_schema(schema))
        spec = PartitionSpec(
            PartitionField(
                source_id=ice.find_field(partition_column).field_id,
                field_id=1000,
                transform=IdentityTransform(),
                name=partition_column,
            )
        )
        ns = Catalog.namespace_from(identifier)
        if not isinstance(self.catalog, ObjectStoreCatalog):
            self.catalog.create_namespace_if_not_exists(ns)
        try:
            return self.catalog.create_table(
                identifier, schema=ice, partition_spec=spec, properties=self._table_properties()
            )
        except TableAlreadyExistsError:
            return self.load(identifier)

    def _table_properties(self) -> dict[str, str]:
        return {
            "format-version": "2",
            "write.format.default": "parquet",
            "write.parquet.compression-codec": "zstd",
            "write.target-file-size-bytes": str(self.settings.target_file_size_bytes),
            "commit.manifest-merge.enabled": "true",
            "commit.manifest.min-count-to-merge": str(self.settings.manifest_min_merge_count),
            "write.metadata.previous-versions-max": str(self.settings.metadata_log_max),
            "commit.retry.num-retries": "0",
        }

    def evolve(self, identifier: str, arrow_schema: pa.Schema) -> Schema:
        """Bring the table schema up to ``arrow_schema`` and return the resulting schema.

        New columns are added by name, nullable; int->long and float->double are widened;
        columns absent from ``arrow_schema`` stay (readers see nulls for new rows).
        Any other type change raises ``IncompatibleSchema``. Idempotent; a no-op commits
        nothing.
        """
        table, _committed, _attempts = self._commit(identifier, EvolveSchema(arrow_schema))
        return table.schema()

    # ---- staging -----------------------------------------------------------------------

    def stage(
        self,
        identifier: str,
        batches: Iterable[pa.RecordBatch],
        target_bytes: int | None = None,
    ) -> list[StagedFile]:
        """Write ``batches`` as Parquet data files under the table's ``data/``.

        Rows are split by partition value and rolled into files of about ``target_bytes``
        (uncompressed Arrow bytes; default ``TableSettings.target_file_size_bytes``); memory
        holds at most one target size per open partition. ``batches`` may be a generator that
        parses as it goes: files are written while it produces the next rows, and a batch
        whose schema was not seen before makes the table be loaded again (its schema may have
        evolved since the call began).
        Batches must match the table schema by name (missing nullable columns are written as
        nulls; unknown columns raise ``IncompatibleSchema``: call ``evolve`` first). Rows with
        a null partition value raise ``ValueError``. Returns one ``StagedFile`` per file, in
        the order the files were cut.

        Files are written by ``STAGE_WRITERS`` background threads while the next rows are parsed
        (both run outside the GIL); at most ``STAGE_WRITERS`` files are being written while the
        next ones fill, so memory holds at most that many target sizes more than the open
        partitions' buffers.
        """
        rest = iter(batches)
        first = next((b for b in rest if b.num_rows), None)
        if first is None:
            return []
        table = self.load(identifier)  # after the first rows: producing them may create it
        meta = table.metadata
        spec = meta.spec()
        schema = meta.schema()
        part_name: str | None = None
        part_field: PartitionField | None = None
        if not spec.is_unpartitioned():
            if len(spec.fields) != 1 or not isinstance(spec.fields[0].transform, IdentityTransform):
                raise ValueError(f"{identifier}: only identity partitioning on one column")
            part_field = spec.fields[0]
            part_name = schema.find_column_name(part_field.source_id)
        target = target_bytes if target_bytes is not None else self.settings.target_file_size_bytes
        if target < 1:
            raise ValueError(f"target_bytes must be >= 1, got {target}")
        write_uuid = uuid.uuid4()
        counter = itertools.count(0)
        buffers: dict[date | None, list[pa.RecordBatch]] = {}
        sizes: dict[date | None, int] = {}
        written: deque[Future[list[StagedFile]]] = deque()
        staged: list[StagedFile] = []
        checked: set[pa.Schema] = set()

        def flush(day: date | None) -> None:
            buf = buffers.pop(day, [])
            sizes.pop(day, None)
            if not buf:
                return
            while len(written) >= STAGE_WRITERS:  # a writer must be free before this is queued
                staged.extend(written.popleft().result())
            written.append(writer.submit(write, table, day, buf))

        def write(table: Table, day: date | None, buf: list[pa.RecordBatch]) -> list[StagedFile]:
            meta = table.metadata
            schema = meta.schema()
            task_schema = pyarrow_to_schema(
                plain_schema(buf[0].schema),
                name_mapping=schema.name_mapping,
                format_version=meta.format_version,
            )
            pkey = None
            if part_field is not None:
                pkey = PartitionKey(
                    field_values=[PartitionFieldValue(part_field, day)],
                    partition_spec=spec,
                    schema=schema,
                )
            task = WriteTask(
                write_uuid=write_uuid,
                task_id=next(counter),
                schema=task_schema,
                record_batches=buf,
                partition_key=pkey,
            )
            # a transient error past the FileIO's own retries: the same task again (same
            # path, overwritten; nothing refers to the file until the commit)
            df = retry_call(
                lambda _attempt: write_data_file(table.io, meta, task),
                RetryPolicy.from_env(),
                what=f"write a data file of {identifier}",
            )
            files = [
                StagedFile(
                    path=df.file_path,
                    day=day,
                    record_count=df.record_count,
                    file_size_in_bytes=df.file_size_in_bytes,
                    data_file=df,
                )
            ]
            crash_point("stage.after_write_file")
            return files

        with ThreadPoolExecutor(
            max_workers=STAGE_WRITERS, thread_name_prefix="lockgate-stage"
        ) as writer:
            for batch in itertools.chain([first], rest):
                if batch.num_rows == 0:
                    continue
                if batch.schema not in checked:
                    if checked:  # a new schema: the table may have evolved meanwhile
                        table = self.load(identifier)
                        schema = table.metadata.schema()
                    _check_batch_schema(identifier, schema, batch.schema)
                    checked.add(batch.schema)
                for day, part in _split_by_day(batch, part_name):
                    if buffers.get(day) and buffers[day][0].schema != part.schema:
                        flush(day)  # one file, one arrow schema
                    buffers.setdefault(day, []).append(part)
                    sizes[day] = sizes.get(day, 0) + part.nbytes
                    if sizes[day] >= target:
                        flush(day)
            for day in list(buffers):
                flush(day)
            while written:
                staged.extend(written.popleft().result())
        return staged

    # ---- committing --------------------------------------------------------------------

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
        update = AppendBatch(
            source,
            batch_id,
            staged,
            summary or {},
            empty_snapshot=not isinstance(self.catalog, ObjectStoreCatalog),
        )
        table, committed, attempts = self._commit(identifier, update)
        result = _result(table, duplicate=not committed, attempts=attempts)
        if committed:
            self._after_commit(identifier, table)
        return result

    def delete_batch_objects(
        self,
        identifier: str,
        source: str,
        batch_id: int,
        keys: Iterable[str],
        summary: dict[str, str] | None = None,
    ) -> CommitResult | None:
        """Delete the rows of ``batch_id`` read from the objects ``keys`` (one commit; the
        marker is unchanged). Returns None when there was no such row (nothing committed).
        Raises ``CommitConflict`` after ``commit_attempts`` lost races."""
        update = DeleteBatchObjects(source, batch_id, tuple(sorted(set(keys))), summary or {})
        table, committed, attempts = self._commit(identifier, update)
        if not committed:
            return None
        result = _result(table, duplicate=False, attempts=attempts)
        self._after_commit(identifier, table)
        return result

    def rebuild_base(self, identifier: str, source: str) -> RebuildBase:
        """Read the base a rebuild plans against (call BEFORE reading the ledger)."""
        try:
            table = self.load(identifier)
        except NoSuchTableError:
            return RebuildBase(snapshot_id=None, marker=IdRanges(), table_version=0)
        snap = table.current_snapshot()
        return RebuildBase(
            snapshot_id=snap.snapshot_id if snap else None,
            marker=_marker(table, source),
            table_version=_version_of(table),
        )

    def rebuild_partitions(
        self,
        identifier: str,
        source: str,
        days: list[date],
        staged: list[StagedFile],
        batch_ids: list[int],
        base: RebuildBase,
        summary: dict[str, str] | None = None,
        day_of: Callable[[int], str] | None = None,
    ) -> CommitResult:
        """ONE overwrite: delete every data file of ``days`` and add ``staged``; the marker
        becomes ``marker | batch_ids`` (union).

        Raises ``RebuildConflict`` if the marker gained an id outside ``batch_ids`` since
        ``base`` whose day (``day_of``; every such id without it) is one of ``days`` (a batch
        the rebuild did not read has rows in these days). Concurrent commits
        that only add ids in ``batch_ids`` are retried against. ``staged`` files must all
        belong to ``days``.
        """
        update = OverwritePartitions(
            source, days, staged, batch_ids, base, summary or {}, day_of=day_of
        )
        table, _committed, attempts = self._commit(identifier, update)
        result = _result(table, duplicate=False, attempts=attempts)
        self._after_commit(identifier, table)
        return result

    def commit_update(self, identifier: str, update: TableUpdate) -> tuple[Table, bool, int]:
        """Commit ``update`` through the one commit loop (see ``_commit``); for updates defined
        outside this module (e.g. ``lockgate.resources.compaction``)."""
        return self._commit(identifier, update)

    def _commit(self, identifier: str, update: TableUpdate) -> tuple[Table, bool, int]:
        """The one commit loop: reload the table, let ``update`` check its requirements and
        plan a transaction, commit it strictly against that base; on a lost race back off
        (``TableSettings.backoff``) and start again from a reload.

        Returns ``(table, committed, attempts)``: the committed table, or the table as found
        when ``update`` had nothing to commit. Raises what ``update.plan`` raises, except
        pyiceberg's ``ValidationException`` (a plan pyiceberg refuses against the table it was
        made from), which counts as a lost race; ``CommitConflict`` after ``commit_attempts``
        lost races (nothing was committed).

        A transient error (``retry.is_transient``: e.g. a manifest list whose upload failed
        past the FileIO's own retries) starts the loop again under ``RetryPolicy.from_env()``
        (then it propagates). That is safe wherever the error came from: before the table's
        metadata was swapped nothing is committed, and after it the reload shows the update
        applied, whose plan is then None (every producer states its requirements).
        """
        return retry_call(
            lambda _attempt: self._commit_races(identifier, update),
            RetryPolicy.from_env(),
            what=f"{identifier}: {update.what}",
        )

    def _commit_races(self, identifier: str, update: TableUpdate) -> tuple[Table, bool, int]:
        """``_commit`` without its retry of transient errors."""
        attempts = self.settings.commit_attempts
        invalid: ValidationException | None = None
        for attempt in range(1, attempts + 1):
            table = self.load(identifier)
            try:
                txn = update.plan(identifier, table)
            except ValidationException as e:
                # pyiceberg refused the plan (e.g. "Missing required files to delete" while a
                # compaction raced a backfill): nothing was committed; plan again from a reload
                log.warning("%s: %s: %s; planning again", identifier, update.what, e)
                invalid = e
                time.sleep(self.settings.backoff.backoff(attempt - 1))
                continue
            if txn is None:
                return table, False, attempt
            try:
                return commit_strict(txn), True, attempt
            except CommitFailedException:
                time.sleep(self.settings.backoff.backoff(attempt - 1))
        raise CommitConflict(f"{identifier}: {update.what} lost {attempts} races") from invalid

    # ---- maintenance -------------------------------------------------------------------

    def _after_commit(self, identifier: str, table: Table) -> None:
        """Run maintenance when ``maintenance_due`` says this commit's turn came (the table's
        own counters: its metadata version on the object-store catalog, else its last
        sequence number; so exactly one committer per interval, in whatever process), never
        failing the landed commit."""
        from lockgate.resources.maintenance import maintenance_due, sequence_of

        if isinstance(self.catalog, ObjectStoreCatalog):
            turn = _version_of(table)
        else:
            turn = sequence_of(table)
        if not maintenance_due(table, turn, self.settings.maintenance_every):
            return
        try:
            self.maintain(identifier)
        except Exception as e:  # maintenance is optional: the next interval retries
            log.warning("maintenance of %s failed: %s: %s", identifier, type(e).__name__, e)

    def maintain(self, identifier: str) -> MaintenanceReport:
        """Run maintenance now (expire snapshots, retire metadata versions)."""
        from lockgate.resources.maintenance import MaintenancePolicy, maintain

        return maintain(self.catalog, identifier, self.settings.maintenance or MaintenancePolicy())

    def vacuum(
        self, identifier: str, older_than: timedelta = timedelta(days=3), dry_run: bool = False
    ) -> VacuumReport:
        """Delete unreferenced files older than ``older_than`` (see ``maintenance.vacuum``)."""
        from lockgate.resources.maintenance import vacuum

        return vacuum(self.catalog, identifier, older_than=older_than, dry_run=dry_run)


# ---- helpers ---------------------------------------------------------------------------


def _marker(table: Table, source: str) -> IdRanges:
    return IdRanges.parse(table.properties.get(marker_property(source)))


def _version_of(table: Table) -> int:
    try:
        return parse_metadata_version(table.metadata_location)
    except ValueError:
        return len(table.metadata.metadata_log) + 1


def _result(table: Table, duplicate: bool, attempts: int) -> CommitResult:
    snap = table.current_snapshot()
    return CommitResult(
        snapshot_id=snap.snapshot_id if snap else None,
        table_version=_version_of(table),
        duplicate=duplicate,
        attempts=attempts,
    )


def _check_compatible(identifier: str, current: Schema, arrow_schema: pa.Schema) -> None:
    """Reject type changes the widening rule (``lockgate.resources.widening``) does not allow
    before pyiceberg sees them (its messages are less specific)."""
    table_arrow = current.as_arrow()
    for f in arrow_schema:
        idx = table_arrow.get_field_index(f.name)
        if idx < 0:
            continue
        old = table_arrow.field(idx).type
        if not compatible(old, f.type):
            raise IncompatibleSchema(
                f"{identifier}: column {f.name!r} cannot change from {old} to {f.type} "
                f"(only {PROMOTIONS} widen)"
            )


def _as_optional(current: Schema, arrow_schema: pa.Schema) -> pa.Schema:
    """New columns become nullable; existing ones keep the table's nullability (a batch
    never makes a column required)."""
    required = {f.name for f in current.fields if f.required}
    return pa.schema([f.with_nullable(f.name not in required) for f in arrow_schema])


def _check_batch_schema(identifier: str, schema: Schema, batch_schema: pa.Schema) -> None:
    names = {f.name for f in schema.fields}
    unknown = [n for n in batch_schema.names if n not in names]
    if unknown:
        raise IncompatibleSchema(
            f"{identifier}: columns {unknown} are not in the table schema; call evolve() first"
        )
    _check_compatible(identifier, schema, batch_schema)


def _split_by_day(
    batch: pa.RecordBatch, part_name: str | None
) -> Iterable[tuple[date | None, pa.RecordBatch]]:
    if part_name is None:
        yield None, batch
        return
    col = batch.column(batch.schema.get_field_index(part_name))
    if col.null_count:
        raise ValueError(f"{col.null_count} rows have a null partition value {part_name!r}")
    if not pa.types.is_date32(col.type):
        col = pc.cast(col, pa.date32())
    uniques = pc.unique(col)
    if len(uniques) == 1:
        yield uniques[0].as_py(), batch
        return
    for value in uniques:
        yield value.as_py(), batch.filter(pc.equal(col, value))
