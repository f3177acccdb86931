"""Compaction: rewrite a day's small data files into files of a target size, in ONE ``replace``
commit that changes no row.

Contract (``compact_day``):

* Candidates are the day's live data files smaller than ``target_file_size_bytes`` (on-disk
  Parquet bytes); nothing happens unless there are at least ``min_files`` of them.
* The candidates are read (projected onto the current schema, so files written before a schema
  evolution gain the new columns as nulls) and written again: without ``sort_by`` in bins of
  about the target size, each bin one file, rows in their order; with ``sort_by`` the day's
  candidates are sorted together and cut into consecutive files, so each file covers its own
  range of the sort key. A bin of one file is left as it is.
* Memory of a sorted compaction is bounded by about ``memory_budget_bytes`` (Arrow bytes)
  plus a few times one candidate file (read one at a time): a day that fits is sorted in
  memory; a larger day is read in chunks of half the budget, each sorted and spilled to a
  local temporary Parquet run, and the runs are merged (``merge_sorted_runs``: a bounded
  slice of each run in memory). A sorted file is cut at about the target size or at a
  quarter of the budget in memory,
  whichever comes first.
* The commit (``ReplaceDayFiles`` through ``TableStore.commit_update``, the one commit loop)
  deletes exactly the files read and adds the new ones, as a ``replace`` snapshot. Before every
  attempt it checks, on the freshly loaded table, that every file it removes is still live: a
  batch appended meanwhile survives (its files are not among those read); if a file read is gone
  (a rebuild or another compaction replaced it), the attempt is abandoned, its staged files are
  deleted and the day is planned again (``CompactionStale``). It never drops a file it did not
  read, and rows, lineage columns, batch markers (table properties) and quarantine tables are
  unchanged: readers see the same rows at every version.
* With ``sort_by`` the commit also records the table's Iceberg sort order (ascending, nulls
  first, in ``sort_by``'s order) if it differs.

Crash points: ``compact.after_stage`` (new files written, none committed: orphans for
``vacuum``), ``compact.after_commit`` (committed; nothing else is left to do).
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, EqualTo
from pyiceberg.io.pyarrow import ArrowScan, pyarrow_to_schema, write_file
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import FileScanTask, Table, Transaction, WriteTask
from pyiceberg.table.sorting import NullOrder, SortDirection
from pyiceberg.transforms import IdentityTransform

from lockgate.resources.crashpoints import crash_point
from lockgate.resources.errors import ExitCode, TerminalError, TransientError
from lockgate.resources.iceberg_private import MemoTransaction, replace_files
from lockgate.resources.retry import RetryPolicy, retry_call
from lockgate.resources.tables import DEFAULT_TARGET_FILE_SIZE, TablesError, TableStore

log = logging.getLogger(__name__)

DEFAULT_MIN_FILES = 8
#: Times a day is planned again after its files changed under a compaction.
DEFAULT_REPLANS = 3
#: A sorted compaction's memory budget (Arrow bytes) unless the source's batch budget is given.
DEFAULT_MEMORY_BUDGET = 256 * 1024 * 1024
MIN_MEMORY_BUDGET = 1024 * 1024

Progress = Callable[[str], None]


class CompactionStale(TablesError, TransientError):
    """A file the compaction read is no longer live (a rebuild or another compaction replaced
    it): the compaction's files would resurrect or drop rows. Plan the day again."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFLICT
    hint: str | None = "run the compaction again (it re-plans from the table's current state)"


class BadSortColumn(TablesError, TerminalError):
    """A ``sort_by`` column is not a top-level primitive column of the table."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFIG
    hint: str | None = "sort_by names columns of the table (see `lockgate schema` / the table)"


@dataclass(frozen=True)
class CompactionPolicy:
    """What a compaction rewrites: days with at least ``min_files`` live data files smaller
    than ``target_file_size_bytes`` (on-disk bytes), into files of about that size, sorted by
    ``sort_by`` when given."""

    target_file_size_bytes: int = DEFAULT_TARGET_FILE_SIZE
    min_files: int = DEFAULT_MIN_FILES
    sort_by: tuple[str, ...] = ()
    #: Arrow bytes a sorted compaction holds at most (beyond one candidate file being read).
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET

    def __post_init__(self) -> None:
        if self.target_file_size_bytes < 1:
            raise ValueError("target_file_size_bytes must be >= 1")
        if self.memory_budget_bytes < MIN_MEMORY_BUDGET:
            raise ValueError(f"memory_budget_bytes must be >= {MIN_MEMORY_BUDGET}")
        if self.min_files < 2:
            raise ValueError("min_files must be >= 2 (one file cannot be compacted)")


@dataclass(frozen=True)
class DayCompaction:
    """What ``compact_day`` did to one day. ``skipped`` says why nothing was committed (then
    ``files_read`` is 0). ``replans``: times the day was planned again after a conflict."""

    table: str
    day: date
    files_before: int
    files_read: int = 0
    files_written: int = 0
    rows: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    snapshot_id: int | None = None
    attempts: int = 0
    replans: int = 0
    skipped: str | None = None

    @property
    def files_after(self) -> int:
        return self.files_before - self.files_read + self.files_written

    def line(self) -> str:
        """One human-readable line (``lockgate compact`` prints it)."""
        if self.skipped:
            return f"{self.table} {self.day}: {self.files_before} files, skipped ({self.skipped})"
        return (
            f"{self.table} {self.day}: {self.files_before} -> {self.files_after} files "
            f"({self.files_read} read, {self.files_written} written, {self.rows} rows, "
            f"{self.bytes_read} -> {self.bytes_written} bytes, snapshot {self.snapshot_id})"
        )


@dataclass(frozen=True)
class ReplaceDayFiles:
    """The compaction's commit (a ``TableUpdate``): delete exactly ``removed`` (paths) and add
    ``added``; no property changes, except the default sort order when ``sort_by`` is given.
    Requires every path of ``removed`` live in the table as loaded (else ``CompactionStale``),
    unless the table shows it applied (none of ``removed`` live, all of ``added``): then it
    plans nothing (a retry after a commit whose answer was lost)."""

    day: date
    removed: tuple[str, ...]
    added: list[DataFile] = field(repr=False)
    summary: dict[str, str]
    sort_by: tuple[str, ...] = ()
    what: str = "compaction"

    def plan(self, identifier: str, table: Table) -> Transaction | None:
        live = {f.file_path: f for f in day_files(table, self.day)}
        applied = self.added and all(f.file_path in live for f in self.added)
        if applied and not live.keys() & set(self.removed):
            return None
        gone = [p for p in self.removed if p not in live]
        if gone:
            raise CompactionStale(
                f"{identifier} {self.day}: {len(gone)} of the {len(self.removed)} files read are "
                f"no longer live (e.g. {gone[0]}); re-plan"
            )
        txn = MemoTransaction(table)
        if self.sort_by and not sort_order_matches(table, self.sort_by):
            with txn.update_sort_order() as upd:
                for col in self.sort_by:
                    upd.asc(col, IdentityTransform(), NullOrder.NULLS_FIRST)
        replace_files(txn, [live[p] for p in self.removed], self.added, self.summary)
        return txn


def partition_column(table: Table) -> str:
    """The name of the table's one identity day partition column (``ValueError`` otherwise)."""
    spec = table.spec()
    if len(spec.fields) != 1 or not isinstance(spec.fields[0].transform, IdentityTransform):
        raise ValueError(f"{table.name()}: compaction needs identity partitioning on one day")
    return table.schema().find_column_name(spec.fields[0].source_id) or ""


def day_files(table: Table, day: date) -> list[DataFile]:
    """The live data files of ``day`` (manifest pruning by partition: cheap on a big table)."""
    if table.current_snapshot() is None:
        return []
    part = partition_column(table)
    day_filter = EqualTo(part, day.isoformat())  # type: ignore[call-arg, arg-type]
    return [t.file for t in table.scan(row_filter=day_filter).plan_files()]


def files_per_day(table: Table) -> dict[date, list[DataFile]]:
    """Every live data file of the table, by day (reads every manifest)."""
    if table.current_snapshot() is None:
        return {}
    out: dict[date, list[DataFile]] = {}
    for task in table.scan().plan_files():
        value = task.file.partition[0]
        day = (
            value
            if isinstance(value, date)
            else date.fromordinal(date(1970, 1, 1).toordinal() + int(value))
        )
        out.setdefault(day, []).append(task.file)
    return out


def sort_order_matches(table: Table, sort_by: tuple[str, ...]) -> bool:
    """Whether the table's default sort order is ascending identity on ``sort_by``."""
    order = table.sort_order()
    schema = table.schema()
    if len(order.fields) != len(sort_by):
        return False
    for f, col in zip(order.fields, sort_by, strict=True):
        if schema.find_column_name(f.source_id) != col:
            return False
        if not isinstance(f.transform, IdentityTransform) or f.direction != SortDirection.ASC:
            return False
    return True


def _check_sort_columns(identifier: str, table: Table, sort_by: tuple[str, ...]) -> None:
    names = {f.name for f in table.schema().fields if f.field_type.is_primitive}
    bad = [c for c in sort_by if c not in names]
    if bad:
        raise BadSortColumn(
            f"{identifier}: sort_by columns {bad} are not primitive columns of the table "
            f"(columns: {', '.join(sorted(names))})"
        )


def _bins(files: list[DataFile], target: int) -> list[list[DataFile]]:
    """Consecutive files packed into bins of at most ``target`` bytes (at least one file)."""
    bins: list[list[DataFile]] = []
    size = 0
    for f in files:
        if bins and size + f.file_size_in_bytes <= target:
            bins[-1].append(f)
            size += f.file_size_in_bytes
        else:
            bins.append([f])
            size = f.file_size_in_bytes
    return bins


_FLAG = "__lockgate_merge_flag"


def _sort_keys(sort_by: tuple[str, ...]) -> list[tuple[str, str, str]]:
    return [(c, "ascending", "at_start") for c in sort_by]


def _sorted(rows: pa.Table, sort_by: tuple[str, ...]) -> pa.Table:
    """``rows`` sorted ascending by ``sort_by``, nulls first (stable)."""
    return rows.sort_by(_sort_keys(sort_by))


def merge_sorted_runs(
    runs: list[Iterator[pa.RecordBatch]], sort_by: tuple[str, ...]
) -> Iterator[pa.Table]:
    """K-way merge of ``runs`` (each yields batches sorted ascending by ``sort_by``, nulls
    first, all of one schema) into tables that, concatenated, are sorted the same way.

    Memory: the batches last read from each run plus the rows not yet emitted, which are at
    most one batch per run. Each step takes the run whose last row read is smallest (the
    frontier: every row not yet read is at least as large), emits every row held that sorts at
    or before that row, and reads that run's next batch."""
    keys = [*_sort_keys(sort_by), (_FLAG, "ascending", "at_end")]
    held: list[pa.Table] = []
    last: dict[int, pa.Table] = {}  # run -> its last row read (one-row table)
    live = dict(enumerate(runs))

    def read(i: int) -> None:
        for batch in live[i]:
            if batch.num_rows:
                t = pa.Table.from_batches([batch])
                held.append(t.append_column(_FLAG, pa.array([0] * t.num_rows, pa.int8())))
                last[i] = t.slice(t.num_rows - 1, 1)
                return
        del live[i]
        last.pop(i, None)

    for i in list(live):
        read(i)
    while live:
        # the frontier: the smallest of the runs' last rows read
        tails = pa.concat_tables([last[i] for i in live])
        order = pc.sort_indices(tails, sort_keys=_sort_keys(sort_by))
        frontier_pos = int(order[0].as_py())
        frontier_run = list(live)[frontier_pos]
        sentinel = last[frontier_run]
        sentinel = sentinel.append_column(_FLAG, pa.array([1], pa.int8()))
        pool = pa.concat_tables([*held, sentinel])
        pool = pool.sort_by(keys)
        cut = int(pc.index(pool[_FLAG], pa.scalar(1, pa.int8())).as_py())
        if cut:
            yield pool.slice(0, cut).drop_columns([_FLAG])
        rest = pool.slice(cut + 1)
        held = [rest] if rest.num_rows else []
        read(frontier_run)
    if held:
        rest = _sorted(pa.concat_tables(held), sort_by)
        if rest.num_rows:
            yield rest.drop_columns([_FLAG])


def _write_sorted(
    scan: ArrowScan, files: list[DataFile], policy: CompactionPolicy, writer: _Writer
) -> int:
    """Write the rows of ``files`` sorted by ``policy.sort_by`` into consecutive files of
    about the target size, holding at most about ``policy.memory_budget_bytes`` (see the module
    contract). Returns the rows written."""
    budget = policy.memory_budget_bytes
    disk = sum(f.file_size_in_bytes for f in files)
    disk_per_row = disk / max(sum(f.record_count for f in files), 1)
    out = _FileCutter(writer, policy.target_file_size_bytes, disk_per_row, budget // 4)
    chunk: list[pa.Table] = []
    chunk_bytes = 0
    rows = 0
    with tempfile.TemporaryDirectory(prefix="lockgate-compact-") as tmp:
        spilled: list[Path] = []
        # a run is read back one row group at a time: row groups of 1/32 of the budget keep
        # the merge's slices of up to ~16 runs within a quarter of it

        def spill() -> None:
            nonlocal chunk, chunk_bytes
            data = _sorted(pa.concat_tables(chunk), policy.sort_by)
            per_row = max(1, data.nbytes // max(data.num_rows, 1))
            group_rows = max(1, (budget // 32) // per_row)
            chunk, chunk_bytes = [], 0
            path = Path(tmp) / f"run-{len(spilled):05d}.parquet"
            pq.write_table(data, path, compression="none", row_group_size=group_rows)
            spilled.append(path)

        for f in files:
            data = scan.to_table([FileScanTask(f)])
            rows += data.num_rows
            chunk.append(data)
            chunk_bytes += data.nbytes
            if chunk_bytes >= budget // 2:
                spill()
        if not spilled:  # the day fits in the budget: sort in memory
            if chunk:
                out.add(_sorted(pa.concat_tables(chunk), policy.sort_by))
        else:
            if chunk:
                spill()
            runs = [_run_batches(p) for p in spilled]
            for piece in merge_sorted_runs(runs, policy.sort_by):
                out.add(piece)
        out.close()
    return rows


def _run_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The batches of a spilled run, one row group read at a time (``iter_batches`` reads
    ahead, which would hold every run whole)."""
    run = pq.ParquetFile(path)
    for i in range(run.num_row_groups):
        yield from run.read_row_group(i).to_batches()


class _FileCutter:
    """Collects sorted rows and writes them as consecutive files of about ``target`` on-disk
    bytes (estimated at ``disk_per_row``), or of ``max_bytes`` Arrow bytes if that comes
    first."""

    def __init__(self, writer: _Writer, target: int, disk_per_row: float, max_bytes: int) -> None:
        self.writer = writer
        self.rows_per_file = max(1, int(target / max(disk_per_row, 1e-9)))
        self.max_bytes = max(1, max_bytes)
        self.held: list[pa.Table] = []
        self.held_rows = 0
        self.held_bytes = 0

    def add(self, rows: pa.Table) -> None:
        while rows.num_rows:
            room = self.rows_per_file - self.held_rows
            if rows.nbytes and self.held_bytes + rows.nbytes > self.max_bytes:
                per_row = rows.nbytes / rows.num_rows
                room = min(room, max(1, int((self.max_bytes - self.held_bytes) / per_row)))
            take = rows.slice(0, room)
            self.held.append(take)
            self.held_rows += take.num_rows
            self.held_bytes += take.nbytes
            rows = rows.slice(take.num_rows)
            if self.held_rows >= self.rows_per_file or self.held_bytes >= self.max_bytes:
                self.flush()

    def flush(self) -> None:
        if self.held_rows:
            self.writer.write(pa.concat_tables(self.held).combine_chunks())
        self.held, self.held_rows, self.held_bytes = [], 0, 0

    def close(self) -> None:
        self.flush()


class _Writer:
    """Writes compacted files of one day under the table's ``data/`` (pyiceberg's writer)."""

    def __init__(self, table: Table, day: date) -> None:
        self.table = table
        self.day = day
        meta = table.metadata
        spec = meta.spec()
        self.key = PartitionKey(
            field_values=[PartitionFieldValue(spec.fields[0], day)],
            partition_spec=spec,
            schema=meta.schema(),
        )
        self.uuid = uuid.uuid4()
        self.counter = 0
        self.written: list[DataFile] = []

    def write(self, rows: pa.Table) -> None:
        meta = self.table.metadata
        schema = meta.schema()
        task = WriteTask(
            write_uuid=self.uuid,
            task_id=self.counter,
            schema=pyarrow_to_schema(
                rows.schema, name_mapping=schema.name_mapping, format_version=meta.format_version
            ),
            record_batches=rows.to_batches(),
            partition_key=self.key,
        )
        self.counter += 1
        # a transient error past the FileIO's own retries: the same task again (same path)
        self.written.extend(
            retry_call(
                lambda _attempt: list(write_file(self.table.io, meta, iter([task]))),
                RetryPolicy.from_env(),
                what=f"write a compacted file of {self.day}",
            )
        )

    def discard(self) -> None:
        """Delete the files written (an abandoned attempt; best effort, vacuum finishes it)."""
        for f in self.written:
            try:
                self.table.io.delete(f.file_path)
            except Exception as e:  # an orphan is harmless: vacuum deletes it later
                log.warning("could not delete abandoned file %s: %s", f.file_path, e)
        self.written = []


def compact_day(
    store: TableStore,
    identifier: str,
    day: date,
    policy: CompactionPolicy | None = None,
    progress: Progress | None = None,
    replans: int = DEFAULT_REPLANS,
) -> DayCompaction:
    """Compact one day of ``identifier`` (see the module contract). Raises
    ``CompactionStale`` when the day kept changing under ``replans + 1`` plans,
    ``CommitConflict`` when the commit loop lost every race, ``BadSortColumn`` for an unknown
    ``sort_by`` column, ``NoSuchTableError`` when there is no table."""
    policy = policy or CompactionPolicy()
    for replan in range(replans + 1):
        try:
            return _compact_once(store, identifier, day, policy, progress, replan)
        except CompactionStale as e:
            if replan == replans:
                raise
            if progress:
                progress(f"{identifier} {day}: {e}")
    raise AssertionError("unreachable")


def _compact_once(
    store: TableStore,
    identifier: str,
    day: date,
    policy: CompactionPolicy,
    progress: Progress | None,
    replan: int,
) -> DayCompaction:
    table = store.load(identifier)
    if policy.sort_by:
        _check_sort_columns(identifier, table, policy.sort_by)
    live = day_files(table, day)
    target = policy.target_file_size_bytes
    small = [f for f in live if f.file_size_in_bytes < target]
    base = DayCompaction(table=identifier, day=day, files_before=len(live), replans=replan)
    if len(small) < policy.min_files:
        return _skipped(base, f"{len(small)} small files, fewer than {policy.min_files}")
    small.sort(key=lambda f: f.file_path)
    groups = [small] if policy.sort_by else [b for b in _bins(small, target) if len(b) > 1]
    if not groups:
        return _skipped(base, "no two small files fit in one target-size file")
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    writer = _Writer(table, day)
    read: list[DataFile] = []
    rows = 0
    try:
        for i, group in enumerate(groups, 1):
            if policy.sort_by:
                n = _write_sorted(scan, group, policy, writer)
            else:
                data = scan.to_table([FileScanTask(f) for f in group])
                writer.write(data)
                n = data.num_rows
            read.extend(group)
            rows += n
            if progress:
                progress(
                    f"{identifier} {day}: group {i}/{len(groups)}: read {len(group)} files "
                    f"({n} rows)"
                )
        written_rows = sum(f.record_count for f in writer.written)
        if written_rows != rows or rows != sum(f.record_count for f in read):
            raise AssertionError(
                f"{identifier} {day}: compaction read {rows} rows but wrote {written_rows}"
            )
        crash_point("compact.after_stage")
        update = ReplaceDayFiles(
            day=day,
            removed=tuple(f.file_path for f in read),
            added=list(writer.written),
            summary={
                "lockgate.compaction": day.isoformat(),
                "lockgate.compacted-files": str(len(read)),
            },
            sort_by=policy.sort_by,
        )
        committed, _ok, attempts = store.commit_update(identifier, update)
    except BaseException:
        writer.discard()
        raise
    crash_point("compact.after_commit")
    snap = committed.current_snapshot()
    return DayCompaction(
        table=identifier,
        day=day,
        files_before=len(live),
        files_read=len(read),
        files_written=len(writer.written),
        rows=rows,
        bytes_read=sum(f.file_size_in_bytes for f in read),
        bytes_written=sum(f.file_size_in_bytes for f in writer.written),
        snapshot_id=snap.snapshot_id if snap else None,
        attempts=attempts,
        replans=replan,
    )


def _skipped(base: DayCompaction, reason: str) -> DayCompaction:
    return DayCompaction(
        table=base.table,
        day=base.day,
        files_before=base.files_before,
        replans=base.replans,
        skipped=reason,
    )


def compact_table(
    store: TableStore,
    identifier: str,
    policy: CompactionPolicy | None = None,
    days: Iterable[date] | None = None,
    progress: Progress | None = None,
) -> list[DayCompaction]:
    """Compact ``days`` of ``identifier`` (default: every day with at least ``min_files``
    small files), oldest first; one ``replace`` commit per compacted day. A missing table
    compacts nothing."""
    policy = policy or CompactionPolicy()
    try:
        table = store.load(identifier)
    except NoSuchTableError:
        return []
    if days is None:
        per_day = files_per_day(table)
        target = policy.target_file_size_bytes
        days = [
            d
            for d, files in per_day.items()
            if sum(f.file_size_in_bytes < target for f in files) >= policy.min_files
        ]
    out = []
    for day in sorted(set(days)):
        result = compact_day(store, identifier, day, policy, progress)
        if progress:
            progress(result.line())
        out.append(result)
    return out
