"""Staging: read the objects of claimed batches and write their rows and quarantine entries
as Parquet files under the tables' ``data/`` (invisible to readers until a commit adds them).

Contract: ``records(object) = rows + quarantined`` is counted per object
(``Staged.record_counts``). Memory is bounded by ``STAGE_BUFFER_BYTES`` of rows filling
plus the files being written (files of half of it, ``tables.STAGE_WRITERS`` at a time, so
reading seldom waits for a write), ``READ_AHEAD_BYTES`` of the rows of the next
``READ_AHEAD_OBJECTS`` objects read ahead, and ``STAGE_BUFFER_BYTES`` of quarantine entries
(plus the readers' blocks), whatever the number of bad records: quarantine entries are
staged as files of the quarantine table as they fill their buffer, exactly like rows
(``Staged.quarantine_files``, committed by the caller before the rows).

An object whose claimed version is gone when it is read (``VersionNotRead``) contributes
nothing -- no row, no quarantine entry, record count 0 -- and is listed in ``Staged.unread``
with its outcome. When that is found part-way through the object, after some of its rows were
staged, the whole staging starts over with that object known as not read (the files staged
by the abandoned attempt are never committed; ``lockgate vacuum`` removes them). With
``strict=True`` (rebuilds) ``VersionNotRead`` is raised instead.

Every object read to its end consumed exactly its claimed size
(``Staged.bytes_read``): a count that differs (``SizeMismatch``, a lying or truncating
endpoint) makes the whole staging start again with backoff (``RetryPolicy.from_env``), and
raise once the retries are used up -- a batch is never staged short. Files staged by a failed
attempt stay invisible (``lockgate vacuum`` removes them).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from lockgate.pipelines.conform import Conformer
from lockgate.pipelines.formats import (
    SMALL_GROUP_OBJECTS,
    FormatOptions,
    QuarantineRecord,
    ReadChunk,
    ReadMeter,
    VersionNotRead,
    is_small_object,
    quarantine_batch,
    read_object,
    read_small_objects,
)
from lockgate.pipelines.lineage import (
    DAY,
    LINEAGE_SCHEMA,
    QUARANTINE_TABLE_SCHEMA,
    lineage_arrays,
    repeated,
)
from lockgate.pipelines.prefetch import Prefetch
from lockgate.resources.config import SourceConfig
from lockgate.resources.crashpoints import crash_point
from lockgate.resources.ledger import Claim, ClaimedObject
from lockgate.resources.retry import RetryPolicy, retry_call
from lockgate.resources.runtime import Runtime, quarantine_table
from lockgate.resources.store import SizeMismatch
from lockgate.resources.tables import StagedFile, TableStore

STAGE_BUFFER_BYTES = 64 * 1024 * 1024
#: Objects read alone that are read ahead of the current one. Two: an object of one block
#: parses on one thread, so with one read ahead a parse thread idled while the caller conformed
#: and staged (D2, 100 objects of 2.3 MB, 5 alternating rounds: 2.96 -> 2.67 s, CPU 4.77 ->
#: 4.48 s; three ahead: no further gain, +14 MiB peak RSS).
READ_AHEAD_OBJECTS = 2
#: Parsed rows held ahead of the current object, at most, shared evenly by the objects read
#: ahead.
READ_AHEAD_BYTES = 16 * 1024 * 1024


@dataclass
class Staged:
    """What staging wrote (nothing visible yet): ``files`` of the source's table and
    ``quarantine_files`` of its quarantine table (empty when no record was bad)."""

    files: list[StagedFile] = field(default_factory=list)
    quarantine_files: list[StagedFile] = field(default_factory=list)
    rows: int = 0
    quarantined: int = 0
    bytes: int = 0
    record_counts: dict[str, int] = field(default_factory=dict)
    #: bytes consumed per object key, for the objects read to their end
    bytes_read: dict[str, int] = field(default_factory=dict)
    batch_rows: dict[int, int] = field(default_factory=dict)
    batch_quarantined: dict[int, int] = field(default_factory=dict)
    # (batch id, key) -> outcome (changed_before_read / gone_before_read): read nothing
    unread: dict[tuple[int, str], str] = field(default_factory=dict)
    #: records and bytes consumed per ``(batch id, key)`` (two batches of a rebuild may hold
    #: two versions of one key)
    object_records: dict[tuple[int, str], int] = field(default_factory=dict)
    object_bytes_read: dict[tuple[int, str], int] = field(default_factory=dict)

    def unread_of(self, batch_id: int) -> dict[str, str]:
        """``key -> outcome`` of the objects of ``batch_id`` whose claimed version was not read
        (for ``CommitRecord.unread``)."""
        return {k: o for (b, k), o in self.unread.items() if b == batch_id}


class _Restage(Exception):
    """An object's version vanished after some of its rows were staged: stage again."""

    def __init__(self, batch_id: int, err: VersionNotRead):
        self.batch_id = batch_id
        self.err = err


def stage_claims(
    rt: Runtime,
    source: SourceConfig,
    claims: list[Claim],
    strict: bool = False,
    skip: frozenset[tuple[int, str]] = frozenset(),
    prefetch: Prefetch | None = None,
) -> Staged:
    """Read every object of ``claims`` and stage its rows and its quarantine entries (both
    invisible until committed; the quarantine table is created on the first bad record).
    ``SizeMismatch`` is retried (see the module contract). Objects ``(batch id,
    key)`` in ``skip`` are not read at all (a rebuild skips those recorded as not read).
    ``strict``: raise ``VersionNotRead`` instead of recording an object as not read.
    ``prefetch``: an object's read already begun (``lockgate.pipelines.prefetch``), used in
    place of reading that object again (once: a restaged attempt reads it afresh)."""
    ids = ",".join(str(c.batch_id) for c in claims)
    known: dict[tuple[int, str], str] = {}

    def attempt(_attempt: int) -> Staged:
        while True:
            try:
                return _stage_once(rt, source, claims, strict, skip, known, prefetch)
            except _Restage as r:
                known[(r.batch_id, r.err.key)] = r.err.outcome

    return retry_call(
        attempt,
        RetryPolicy.from_env(),
        what=f"stage {source.name} batch {ids}",
        transient=lambda e: isinstance(e, SizeMismatch),
    )


def _stage_once(
    rt: Runtime,
    source: SourceConfig,
    claims: list[Claim],
    strict: bool,
    skip: frozenset[tuple[int, str]],
    known: dict[tuple[int, str], str],
    prefetch: Prefetch | None = None,
) -> Staged:
    tables = rt.tables
    fmt = FormatOptions.from_source(source)
    declared = source.arrow_schema()
    conformer = Conformer(tables, source.table, declared)
    conformer.prepare()  # a declared schema the table cannot follow is refused before any read
    out = Staged()
    ingested_at = datetime.now(UTC)
    pending: list[pa.RecordBatch] = []  # quarantine entries not staged yet
    pending_bytes = 0

    def flush_quarantine() -> None:
        nonlocal pending, pending_bytes
        if pending:
            ident = ensure_quarantine_table(tables, source)
            # each file written passes the crash point stage.after_write_file
            out.quarantine_files += tables.stage(ident, pending)
        pending, pending_bytes = [], 0

    def quarantine(claim: Claim, records: list[QuarantineRecord]) -> None:
        nonlocal pending_bytes
        if not records:
            return
        qb = quarantine_batch(records)
        n = qb.num_rows
        extra = lineage_arrays(claim, n, ingested_at, key=None, etag=None)
        constants = [extra[name].dictionary_decode() for name in ("_batch_id", "_ingested_at")]
        batch = pa.RecordBatch.from_arrays(
            [*qb.columns, *constants, extra[DAY]], schema=QUARANTINE_TABLE_SCHEMA
        )
        pending.append(batch)
        pending_bytes += batch.nbytes
        if pending_bytes >= STAGE_BUFFER_BYTES:
            flush_quarantine()
        out.quarantined += n
        out.batch_quarantined[claim.batch_id] = out.batch_quarantined.get(claim.batch_id, 0) + n
        crash_point("stage.after_quarantine")

    def add_rows(claim: Claim, batch: pa.RecordBatch) -> None:
        out.rows += batch.num_rows
        out.batch_rows[claim.batch_id] = out.batch_rows.get(claim.batch_id, 0) + batch.num_rows

    def take(
        claim: Claim, obj: ClaimedObject, chunk: ReadChunk
    ) -> Generator[pa.RecordBatch, None, int]:
        """One chunk read from ``obj``: its rows conformed with their lineage (yielded), its bad
        records quarantined; returns how many records it held."""
        crash_point("stage.after_read")
        if chunk.batch.num_rows:
            lineage = lineage_arrays(claim, chunk.batch.num_rows, ingested_at, obj.key, obj.etag)
            good = conformer.conform(chunk.batch, lineage)
            if good.num_rows:
                add_rows(claim, good)
                yield good
        quarantine(claim, chunk.quarantined)
        return chunk.batch.num_rows + len(chunk.quarantined)

    def small(claim: Claim, objs: list[ClaimedObject]) -> Iterator[pa.RecordBatch]:
        """Small objects read and parsed together (``read_small_objects``): one conform for
        the rows of all of them, lineage per row."""
        landing = rt.claim_landing(source, claim)  # where it was claimed
        read = read_small_objects(landing, [(o.key, o.etag, o.size) for o in objs], fmt, declared)
        for obj, rows, chunks, err, meter in zip(
            objs, read.rows, read.chunks, read.errors, read.meters, strict=True
        ):
            out.bytes += obj.size
            if err is not None:
                if strict:
                    raise err
                out.unread[(claim.batch_id, obj.key)] = err.outcome
                out.record_counts.setdefault(obj.key, 0)
                continue
            records = rows
            for chunk in chunks:
                records += yield from take(claim, obj, chunk)
            out.record_counts[obj.key] = out.record_counts.get(obj.key, 0) + records
            out.object_records[(claim.batch_id, obj.key)] = records
            if meter.complete:
                out.bytes_read[obj.key] = out.bytes_read.get(obj.key, 0) + meter.consumed
                out.object_bytes_read[(claim.batch_id, obj.key)] = meter.consumed
        if read.batch is not None and read.batch.num_rows:
            crash_point("stage.after_read")
            lineage = lineage_arrays(claim, read.batch.num_rows, ingested_at, None, None)
            lineage["_source_key"] = repeated([o.key for o in objs], read.rows)
            lineage["_source_etag"] = repeated([o.etag for o in objs], read.rows)
            good = conformer.conform(read.batch, lineage)
            add_rows(claim, good)
            yield good

    # Objects read alone, in reading order: while one is read, the next READ_AHEAD_OBJECTS
    # are read ahead (their blocks parse beside the current one's; an object of one block
    # would leave the other parse thread idle). ``ahead``: the reads begun, by (batch id, key).
    alone = [
        (c, o)
        for c in claims
        for o in c.objects
        if (c.batch_id, o.key) not in skip
        and (c.batch_id, o.key) not in known
        and not is_small_object(o.key, o.size, fmt)
    ]
    after = {
        (c.batch_id, o.key): alone[i + 1 : i + 1 + READ_AHEAD_OBJECTS]
        for i, (c, o) in enumerate(alone)
    }
    ahead: dict[tuple[int, str], Prefetch] = {}
    if prefetch is not None:
        ahead[(prefetch.batch_id, prefetch.key)] = prefetch

    def read_ahead(claim: Claim, obj: ClaimedObject) -> None:
        if (claim.batch_id, obj.key) in ahead:
            return
        landing = rt.claim_landing(source, claim)
        budget = READ_AHEAD_BYTES // READ_AHEAD_OBJECTS
        p = Prefetch.of_object(claim.batch_id, obj, landing, fmt, declared, budget)
        ahead[(claim.batch_id, obj.key)] = p
        p.start()

    def one(claim: Claim, obj: ClaimedObject) -> Iterator[pa.RecordBatch]:
        where = (claim.batch_id, obj.key)
        records = 0
        out.bytes += obj.size
        meter = ReadMeter()
        try:
            mine = ahead.pop(where, None)
            for later in after.get(where, ()):
                read_ahead(*later)
            chunks = mine.take(claim.batch_id, obj) if mine is not None else None
            if chunks is not None:
                assert mine is not None
                meter = mine.meter
            else:
                landing = rt.claim_landing(source, claim)  # where it was claimed
                chunks = read_object(landing, obj.key, obj.etag, fmt, declared, obj.size, meter)
            for chunk in chunks:
                records += yield from take(claim, obj, chunk)
                del chunk  # not kept alive while the next chunk is read
        except VersionNotRead as e:
            if strict:
                raise
            if records:
                raise _Restage(claim.batch_id, e) from e
            out.unread[where] = e.outcome
            out.record_counts.setdefault(obj.key, 0)
            return
        out.record_counts[obj.key] = out.record_counts.get(obj.key, 0) + records
        out.object_records[where] = records
        if meter.complete:
            out.bytes_read[obj.key] = out.bytes_read.get(obj.key, 0) + meter.consumed
            out.object_bytes_read[where] = meter.consumed

    def rows() -> Iterator[pa.RecordBatch]:
        for claim in claims:
            group: list[ClaimedObject] = []
            group_bytes = 0
            for obj in claim.objects:
                where = (claim.batch_id, obj.key)
                if where in skip:
                    continue
                if where in known:
                    out.unread[where] = known[where]
                    out.record_counts.setdefault(obj.key, 0)
                    continue
                if not is_small_object(obj.key, obj.size, fmt):
                    yield from one(claim, obj)
                    continue
                if group and (
                    len(group) >= SMALL_GROUP_OBJECTS or group_bytes + obj.size > fmt.block_bytes
                ):
                    yield from small(claim, group)
                    group, group_bytes = [], 0
                group.append(obj)
                group_bytes += obj.size
            if group:
                yield from small(claim, group)

    # Rows are written while the next ones are read: a file of STAGE_BUFFER_BYTES / 2 fills
    # while the previous one is written (each file passes stage.after_write_file).
    try:
        out.files += tables.stage(source.table, rows(), target_bytes=STAGE_BUFFER_BYTES // 2)
    finally:
        for p in ahead.values():  # reads begun and not taken (a failed or restaged attempt)
            p.close()
    flush_quarantine()
    return out


def ensure_quarantine_table(tables: TableStore, source: SourceConfig) -> str:
    ident = quarantine_table(source)
    tables.ensure_table(ident, QUARANTINE_TABLE_SCHEMA, DAY)
    return ident


def ensure_main_table(tables: TableStore, source: SourceConfig) -> None:
    """The source's table exists even when every record of a batch was bad: it carries the
    marker."""
    # existence only: the catalog's check reads no table metadata (a load would read and parse it)
    if not tables.catalog.table_exists(source.table):
        declared = source.arrow_schema() or pa.schema([])
        tables.ensure_table(source.table, pa.schema([*declared, *LINEAGE_SCHEMA]), DAY)
