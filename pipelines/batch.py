"""Batch execution: read -> stage -> commit -> record, for one claimed batch (incremental) or
for every claimed batch of some days (rebuild). The CLI, the sensors' runs and backfills all
go through here.

Invariants:

* A batch's rows become visible only through ``TableStore.commit_batch`` /
  ``rebuild_partitions``, each one atomic commit that also marks the batch; a batch already
  marked commits nothing. So re-running a batch any number of times, after a crash anywhere,
  converges to the same table.
* Quarantine entries of a batch are committed (with the same marker) to
  ``<table>__quarantine`` BEFORE the batch's rows, so a committed batch always has its
  quarantine. A batch with no bad record writes nothing there.
* The commit record is written after the table commit. A batch that is marked in the table
  but has no commit record is repaired from the table (counts re-read), never re-run.
* Every record of every object is a row or a quarantine entry: ``records(object) = rows +
  quarantined`` is stored per object in the commit record (``record_counts``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import NoSuchTableError

from pipelines.config import SourceConfig
from pipelines.formats import (
    QUARANTINE_SCHEMA,
    FormatOptions,
    QuarantineRecord,
    quarantine_batch,
    read_object,
)
from pipelines.rescue import RESCUED, RESCUED_FIELD, convert_rescuing, merge_column
from pipelines.runtime import Runtime, quarantine_table
from resources.crashpoints import crash_point
from resources.ledger import Claim, CommitRecord, Ledger
from resources.store import NotFound
from resources.tables import RebuildConflict, StagedFile, TableStore

log = logging.getLogger(__name__)

SOURCE_ROW = "_source_row"
DAY = "_day"
LINEAGE_SCHEMA = pa.schema(
    [
        RESCUED_FIELD,
        pa.field("_source_key", pa.string()),
        pa.field("_source_etag", pa.string()),
        pa.field(SOURCE_ROW, pa.int64()),
        pa.field("_batch_id", pa.int64()),
        pa.field("_ingested_at", pa.timestamp("us", tz="UTC")),
        pa.field(DAY, pa.date32()),
    ]
)
QUARANTINE_TABLE_SCHEMA = pa.schema(
    [
        *QUARANTINE_SCHEMA,
        *(f for f in LINEAGE_SCHEMA if f.name in ("_batch_id", "_ingested_at", DAY)),
    ]
)
STAGE_BUFFER_BYTES = 64 * 1024 * 1024
REBUILD_ATTEMPTS = 5


class RebuildRefused(Exception):
    """A rebuild would silently shrink a partition (a claimed object is gone or changed)."""


@dataclass
class BatchOutcome:
    """What executing one batch did (``already_committed``: nothing was written)."""

    source: str
    batch_id: int
    partition: str
    objects: int
    rows: int
    quarantined: int
    bytes: int
    snapshot_id: int | None
    table_version: int | None
    duplicate: bool
    already_committed: bool
    duration_s: float
    record_counts: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.duration_s if self.duration_s > 0 else 0.0

    def metadata(self) -> dict[str, Any]:
        """Dagster materialization metadata (no secrets: only ids and counts)."""
        return {
            "batch_id": self.batch_id,
            "objects": self.objects,
            "rows": self.rows,
            "quarantined": self.quarantined,
            "bytes": self.bytes,
            "snapshot_id": str(self.snapshot_id) if self.snapshot_id is not None else "none",
            "table_version": self.table_version or 0,
            "duplicate": self.duplicate or self.already_committed,
            "duration_s": round(self.duration_s, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "dagster/row_count": self.rows,
        }


# ---- conforming chunks to the table ------------------------------------------------------


def _normalise_types(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Inferred types Iceberg cannot hold as they are: timestamps become microseconds, null
    columns (all values null) are dropped (nothing to keep; the column appears once a value
    does)."""
    fields, arrays = [], []
    for f, col in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_null(f.type):
            continue
        if pa.types.is_timestamp(f.type) and f.type.unit != "us":
            target = pa.timestamp("us", tz=f.type.tz)
            col = pc.cast(col, target, safe=False)
            f = pa.field(f.name, target)
        fields.append(f)
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _widens(old: pa.DataType, new: pa.DataType) -> bool:
    return (pa.types.is_int32(old) and pa.types.is_int64(new)) or (
        pa.types.is_float32(old) and pa.types.is_float64(new)
    )


class _Conformer:
    """Brings data chunks to a table's schema; evolves the schema (inferred sources) when a
    chunk brings new columns (added nullable; int->long, float->double widened). A value that
    does not fit its column is null there and rescued, with its field name, into the row's
    ``_rescued_data`` (merged with what the reader rescued). Every table gets
    ``_rescued_data`` (added to tables created before it existed)."""

    def __init__(self, tables: TableStore, identifier: str, declared: pa.Schema | None):
        self.tables = tables
        self.identifier = identifier
        self.declared = declared
        self.schema: pa.Schema | None = None  # the table's Arrow schema

    def _ensure(self, data_schema: pa.Schema) -> None:
        if self.schema is None:
            try:
                table = self.tables.load(self.identifier)
            except NoSuchTableError:
                base = self.declared if self.declared is not None else data_schema
                table = self.tables.ensure_table(
                    self.identifier, pa.schema([*base, *LINEAGE_SCHEMA]), DAY
                )
            self.schema = table.schema().as_arrow()
            if self.schema.get_field_index(RESCUED) < 0:
                self.schema = self.tables.evolve(
                    self.identifier, pa.schema([RESCUED_FIELD])
                ).as_arrow()
        assert self.schema is not None
        if self.declared is not None:
            return
        grow = [
            f
            for f in data_schema
            if self.schema.get_field_index(f.name) < 0
            or _widens(self.schema.field(f.name).type, f.type)
        ]
        if grow:
            self.schema = self.tables.evolve(self.identifier, pa.schema(grow)).as_arrow()

    def conform(self, data: pa.RecordBatch, lineage: dict[str, pa.Array]) -> pa.RecordBatch:
        """``data`` (data columns, ``_rescued_data``, ``_source_row``) with lineage, in table
        order; values that do not fit the table are rescued (every row is kept)."""
        data = _normalise_types(data)
        own = [n for n in (SOURCE_ROW, RESCUED) if n in data.schema.names]
        data_only = data.drop_columns(own) if own else data
        self._ensure(data_only.schema)
        assert self.schema is not None
        n = data.num_rows
        columns: list[pa.Array] = []
        rescued: dict[int, dict[str, object]] = {}
        rescued_at: int | None = None
        for f in self.schema:
            if f.name in lineage:
                columns.append(lineage[f.name])
                continue
            if f.name == RESCUED:
                rescued_at = len(columns)
                columns.append(pa.nulls(n, pa.string()))  # filled in below
                continue
            if f.name == SOURCE_ROW:
                columns.append(data.column(SOURCE_ROW))
                continue
            idx = data_only.schema.get_field_index(f.name)
            if idx < 0:
                columns.append(pa.nulls(n, f.type))
                continue
            col = data_only.column(idx)
            if col.type == f.type:
                columns.append(col)
                continue

            def convert(a: pa.Array, t: pa.DataType = f.type) -> pa.Array:
                return pc.cast(a, t)

            columns.append(convert_rescuing(col, convert, f.type, f.name, rescued))
        assert rescued_at is not None
        own_rescued = data.column(RESCUED) if RESCUED in data.schema.names else None
        rescued_type = self.schema.field(RESCUED).type
        if rescued:
            columns[rescued_at] = merge_column(own_rescued, n, rescued).cast(rescued_type)
        elif own_rescued is not None:
            columns[rescued_at] = own_rescued.cast(rescued_type)
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


# ---- staging -------------------------------------------------------------------------------


@dataclass
class _Staged:
    files: list[StagedFile] = field(default_factory=list)
    quarantine: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    quarantined: int = 0
    bytes: int = 0
    record_counts: dict[str, int] = field(default_factory=dict)
    batch_rows: dict[int, int] = field(default_factory=dict)
    batch_quarantined: dict[int, int] = field(default_factory=dict)


def _chunked(batches: Iterable[pa.RecordBatch], limit: int) -> Iterator[list[pa.RecordBatch]]:
    buf: list[pa.RecordBatch] = []
    size = 0
    for b in batches:
        buf.append(b)
        size += b.nbytes
        if size >= limit:
            yield buf
            buf, size = [], 0
    if buf:
        yield buf


def stage_claims(rt: Runtime, source: SourceConfig, claims: list[Claim]) -> _Staged:
    """Read every object of ``claims`` and stage its rows (invisible until committed); keep its
    quarantine entries in memory (bounded by the number of bad records)."""
    tables = rt.tables
    landing = rt.landing(source)
    fmt = FormatOptions.from_source(source)
    declared = source.arrow_schema()
    conformer = _Conformer(tables, source.table, declared)
    out = _Staged()
    ingested_at = datetime.now(UTC)

    def quarantine(claim: Claim, records: list[QuarantineRecord]) -> None:
        if not records:
            return
        qb = quarantine_batch(records)
        n = qb.num_rows
        extra = _lineage_arrays(claim, n, ingested_at, key=None, etag=None)
        out.quarantine.append(
            pa.RecordBatch.from_arrays(
                [*qb.columns, extra["_batch_id"], extra["_ingested_at"], extra[DAY]],
                schema=QUARANTINE_TABLE_SCHEMA,
            )
        )
        out.quarantined += n
        out.batch_quarantined[claim.batch_id] = out.batch_quarantined.get(claim.batch_id, 0) + n
        crash_point("stage.after_quarantine")

    def rows() -> Iterator[pa.RecordBatch]:
        for claim in claims:
            for obj in claim.objects:
                records = 0
                out.bytes += obj.size
                for chunk in read_object(landing, obj.key, obj.etag, fmt, declared):
                    crash_point("stage.after_read")
                    bad = list(chunk.quarantined)
                    records += chunk.batch.num_rows + len(bad)
                    if chunk.batch.num_rows:
                        lineage = _lineage_arrays(
                            claim, chunk.batch.num_rows, ingested_at, obj.key, obj.etag
                        )
                        good = conformer.conform(chunk.batch, lineage)
                        if good.num_rows:
                            out.rows += good.num_rows
                            out.batch_rows[claim.batch_id] = (
                                out.batch_rows.get(claim.batch_id, 0) + good.num_rows
                            )
                            yield good
                    quarantine(claim, bad)
                out.record_counts[obj.key] = out.record_counts.get(obj.key, 0) + records

    for group in _chunked(rows(), STAGE_BUFFER_BYTES):
        out.files += tables.stage(source.table, group)
    return out


def _lineage_arrays(
    claim: Claim, n: int, ingested_at: datetime, key: str | None, etag: str | None
) -> dict[str, pa.Array]:
    # pa.repeat builds each constant column in C: converting n-element Python lists cost
    # ~5 s per million rows (bench/ingest_vs_pyarrow.py profile), more than the JSON parse.
    arrays: dict[str, pa.Array] = {
        "_batch_id": pa.repeat(pa.scalar(claim.batch_id, pa.int64()), n),
        "_ingested_at": pa.repeat(pa.scalar(ingested_at, pa.timestamp("us", tz="UTC")), n),
        DAY: pa.repeat(pa.scalar(date.fromisoformat(claim.partition), pa.date32()), n),
    }
    if key is not None:
        arrays["_source_key"] = pa.repeat(pa.scalar(key, pa.string()), n)
        arrays["_source_etag"] = pa.repeat(pa.scalar(etag, pa.string()), n)
    return arrays


def _ensure_quarantine_table(tables: TableStore, source: SourceConfig) -> str:
    ident = quarantine_table(source)
    tables.ensure_table(ident, QUARANTINE_TABLE_SCHEMA, DAY)
    return ident


def _stage_quarantine(
    tables: TableStore, ident: str, batches: list[pa.RecordBatch]
) -> list[StagedFile]:
    return tables.stage(ident, batches) if batches else []


# ---- incremental batches -------------------------------------------------------------------


def _count_in_table(
    tables: TableStore, identifier: str, batch_id: int
) -> tuple[int, dict[str, int]]:
    """Rows of ``batch_id`` in a table, in total and per source key (for repairs)."""
    try:
        table = tables.load(identifier)
    except NoSuchTableError:
        return 0, {}
    arrow = table.scan(
        row_filter=f"_batch_id == {batch_id}", selected_fields=("_source_key",)
    ).to_arrow()
    counts: dict[str, int] = {}
    if arrow.num_rows:
        for row in arrow.group_by("_source_key").aggregate([("_source_key", "count")]).to_pylist():
            counts[row["_source_key"]] = row["_source_key_count"]
    return arrow.num_rows, counts


def _repair_record(rt: Runtime, source: SourceConfig, ledger: Ledger, claim: Claim) -> CommitRecord:
    """The batch is marked in the table but has no commit record: rebuild it from the tables."""
    tables = rt.tables
    rows, per_key = _count_in_table(tables, source.table, claim.batch_id)
    quarantined, q_per_key = _count_in_table(tables, quarantine_table(source), claim.batch_id)
    counts = {o.key: per_key.get(o.key, 0) + q_per_key.get(o.key, 0) for o in claim.objects}
    table = tables.load(source.table)
    snap = table.current_snapshot()
    return ledger.record_commit(
        CommitRecord(
            batch_id=claim.batch_id,
            snapshot_id=snap.snapshot_id if snap else None,
            table_version=tables.current_version(source.table),
            rows=rows,
            quarantined=quarantined,
            bytes=claim.bytes,
            objects=len(claim.objects),
            duplicate=True,
            record_counts=counts,
        )
    )


def _from_record(
    claim: Claim, rec: CommitRecord, started: float, already_committed: bool = True
) -> BatchOutcome:
    return BatchOutcome(
        source=claim.source,
        batch_id=claim.batch_id,
        partition=claim.partition,
        objects=len(claim.objects),
        rows=rec.rows,
        quarantined=rec.quarantined,
        bytes=rec.bytes,
        snapshot_id=rec.snapshot_id,
        table_version=rec.table_version,
        duplicate=rec.duplicate,
        already_committed=already_committed,
        duration_s=time.monotonic() - started,
        record_counts=dict(rec.record_counts or {}),
    )


def execute_batch(rt: Runtime, source: SourceConfig, ledger: Ledger, claim: Claim) -> BatchOutcome:
    """Bring one claimed batch to committed (idempotent; safe to run concurrently)."""
    started = time.monotonic()
    rec = ledger.commit_record(claim.batch_id)
    if rec is not None:
        return _from_record(claim, rec, started)
    tables = rt.tables
    if claim.batch_id in tables.committed(source.table, source.name):
        return _from_record(claim, _repair_record(rt, source, ledger, claim), started)

    staged = stage_claims(rt, source, [claim])
    summary = {"lockgate.rows": str(staged.rows), "lockgate.quarantined": str(staged.quarantined)}
    if staged.quarantine:
        q_ident = _ensure_quarantine_table(tables, source)
        q_files = _stage_quarantine(tables, q_ident, staged.quarantine)
        tables.commit_batch(q_ident, source.name, claim.batch_id, q_files, summary)
        crash_point("commit.quarantine_committed")
    _ensure_main_table(tables, source)
    result = tables.commit_batch(source.table, source.name, claim.batch_id, staged.files, summary)
    if result.duplicate:
        # Someone else committed it first; their record (or a repair) is the truth.
        rec = ledger.commit_record(claim.batch_id) or _repair_record(rt, source, ledger, claim)
        return _from_record(claim, rec, started)
    rec = ledger.record_commit(
        CommitRecord(
            batch_id=claim.batch_id,
            snapshot_id=result.snapshot_id,
            table_version=result.table_version,
            rows=staged.rows,
            quarantined=staged.quarantined,
            bytes=staged.bytes,
            objects=len(claim.objects),
            record_counts=staged.record_counts,
        )
    )
    return _from_record(claim, rec, started, already_committed=False)


def _ensure_main_table(tables: TableStore, source: SourceConfig) -> None:
    """The source's table exists even when every record of a batch was bad: it carries the
    marker."""
    if not _table_exists(tables, source.table):
        declared = source.arrow_schema() or pa.schema([])
        tables.ensure_table(source.table, pa.schema([*declared, *LINEAGE_SCHEMA]), DAY)


def _table_exists(tables: TableStore, identifier: str) -> bool:
    try:
        tables.load(identifier)
    except NoSuchTableError:
        return False
    return True


# ---- rebuilds (backfill) -------------------------------------------------------------------


@dataclass
class RebuildOutcome:
    source: str
    days: list[str]
    batches: list[int]
    objects: int
    rows: int
    quarantined: int
    snapshot_id: int | None
    table_version: int | None
    attempts: int
    duration_s: float

    def metadata(self) -> dict[str, Any]:
        return {
            "days": ", ".join(self.days),
            "batches": len(self.batches),
            "objects": self.objects,
            "rows": self.rows,
            "quarantined": self.quarantined,
            "snapshot_id": str(self.snapshot_id) if self.snapshot_id is not None else "none",
            "table_version": self.table_version or 0,
            "attempts": self.attempts,
            "duration_s": round(self.duration_s, 3),
            "dagster/row_count": self.rows,
        }


def _check_objects_present(rt: Runtime, source: SourceConfig, claims: list[Claim]) -> None:
    landing = rt.landing(source)
    for claim in claims:
        for obj in claim.objects:
            try:
                info = landing.head(obj.key)
            except NotFound:
                info = None
            if info is None or info.etag != obj.etag:
                what = "deleted" if info is None else "re-written"
                raise RebuildRefused(
                    f"source {source.name!r}: cannot rebuild {claim.partition}: object "
                    f"{obj.key!r} of batch {claim.batch_id} was {what} since it was claimed "
                    f"(clean_source: {source.clean_source}); a rebuild would silently drop its "
                    "rows, so nothing was changed"
                )


def rebuild(
    rt: Runtime,
    source: SourceConfig,
    days: list[date],
    progress: Callable[[str], None] | None = None,
) -> RebuildOutcome:
    """Rebuild ``days`` of ``source`` from every claimed object of those days: one overwrite
    of exactly those partitions whose marker includes every batch read. Re-plans when a batch
    of those days commits meanwhile (``RebuildConflict``)."""
    started = time.monotonic()
    tables = rt.tables
    say = progress or (lambda _msg: None)
    for attempt in range(1, REBUILD_ATTEMPTS + 1):
        base = tables.rebuild_base(source.table, source.name)
        q_ident = quarantine_table(source)
        q_base = tables.rebuild_base(q_ident, source.name)
        ledger = rt.ledger(source)
        claims = [c for d in days for c in ledger.claims_for_partition(d.isoformat())]
        ids = [c.batch_id for c in claims]
        say(f"attempt {attempt}: {len(claims)} batches over {len(days)} days")
        if not claims:
            return RebuildOutcome(
                source.name,
                [d.isoformat() for d in days],
                [],
                0,
                0,
                0,
                None,
                None,
                attempt,
                time.monotonic() - started,
            )
        _check_objects_present(rt, source, claims)
        staged = stage_claims(rt, source, claims)
        crash_point("backfill.after_stage")
        try:
            if staged.quarantine or q_base.table_version:
                _ensure_quarantine_table(tables, source)
                q_files = _stage_quarantine(tables, q_ident, staged.quarantine)
                tables.rebuild_partitions(q_ident, source.name, days, q_files, ids, q_base)
            _ensure_main_table(tables, source)
            result = tables.rebuild_partitions(
                source.table,
                source.name,
                days,
                staged.files,
                ids,
                base,
                summary={"lockgate.rows": str(staged.rows)},
            )
        except RebuildConflict as e:
            say(f"conflict, re-planning: {e}")
            continue
        crash_point("backfill.after_commit")
        _record_rebuilt(ledger, claims, staged, result.snapshot_id, result.table_version)
        return RebuildOutcome(
            source=source.name,
            days=[d.isoformat() for d in days],
            batches=ids,
            objects=sum(len(c.objects) for c in claims),
            rows=staged.rows,
            quarantined=staged.quarantined,
            snapshot_id=result.snapshot_id,
            table_version=result.table_version,
            attempts=attempt,
            duration_s=time.monotonic() - started,
        )
    raise RebuildConflict(
        f"source {source.name!r}: rebuild of {len(days)} days lost {REBUILD_ATTEMPTS} races to "
        "incremental batches; try again when the source is quieter"
    )


def _record_rebuilt(
    ledger: Ledger, claims: list[Claim], staged: _Staged, snapshot_id: int | None, version: int
) -> None:
    """Commit records for batches that the rebuild committed first (their own run will find
    the batch marked and stop)."""
    for claim in claims:
        if ledger.commit_record(claim.batch_id) is not None:
            continue
        counts = {o.key: staged.record_counts.get(o.key, 0) for o in claim.objects}
        ledger.record_commit(
            CommitRecord(
                batch_id=claim.batch_id,
                snapshot_id=snapshot_id,
                table_version=version,
                rows=staged.batch_rows.get(claim.batch_id, 0),
                quarantined=staged.batch_quarantined.get(claim.batch_id, 0),
                bytes=claim.bytes,
                objects=len(claim.objects),
                duplicate=True,
                record_counts=counts,
            )
        )
