"""Object readers: one landed object -> a stream of Arrow record batches, bounded memory.

Formats: JSON lines, CSV/TSV, Parquet; ``.gz`` / ``.zst`` / ``.bz2`` by key suffix, checked
against the object's magic bytes. All parsing is done by pyarrow.

Contract of ``read_object`` (the accounting every caller relies on):

* A *record* is one non-blank line (JSONL), one CSV record after the header (quoted fields may
  span lines; blank lines are not records), one Parquet row. Record indices are 0-based, in
  object order, and counted the same way whether a record parses or not.
* Every record becomes exactly one row (``_source_row`` = its index) or exactly one
  ``QuarantineRecord`` (``record_index`` = its index). None dropped, none invented; rows come
  out in increasing ``_source_row`` order.
* An object that cannot be read (missing, changed since listed, bad compression, magic bytes
  that contradict the suffix, not Parquet) yields ONE ``QuarantineRecord`` with
  ``record_index=None``. If it becomes unreadable part-way (e.g. a truncated gzip), the rows
  already yielded stand and ONE final ``record_index=None`` entry covers the unreadable rest.
  So for every object: ``records(object) = rows + quarantined entries`` (a whole-object entry
  counts as one record). See ``ObjectCounts``.
* Memory is bounded by ``block_bytes`` + ``max_record_bytes`` (JSONL/CSV) or one row group's
  column chunks (Parquet), never by the object's size. A record longer than
  ``max_record_bytes`` is quarantined, not buffered.
* With a declared schema every batch has exactly the declared columns in declared order plus
  ``_source_row``; values are cast strictly; a record with a value that cannot be cast is
  quarantined with a reason naming the field; fields not in the schema are ignored. Without a
  schema, types are inferred per block by pyarrow, so batches of one object may differ in
  schema (the caller unifies / evolves).
* Transient I/O errors (network) are raised, not quarantined, so the run can be retried.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from pipelines.config import DEFAULT_MAX_RECORD_BYTES, CsvOptions, Format, SourceConfig
from resources.store import ObjectStore

SOURCE_ROW = "_source_row"
#: Bytes of a bad record kept in its ``QuarantineRecord.raw``.
MAX_RAW_CHARS = 64 * 1024
DEFAULT_BLOCK_BYTES = 4 * 1024 * 1024
DEFAULT_PARQUET_BATCH_ROWS = 65536

COMPRESSION_SUFFIXES: dict[str, str] = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}


@dataclass(frozen=True)
class QuarantineRecord:
    """A record (or, with ``record_index=None``, a whole object) that could not be ingested."""

    source_key: str
    source_etag: str
    record_index: int | None  # None: the whole object (or its unreadable rest)
    raw: str  # the record as text, at most MAX_RAW_CHARS characters (undecodable bytes replaced)
    reason: str


@dataclass
class ReadChunk:
    """Rows of consecutive records plus the quarantined records among them. ``batch`` may
    have 0 rows; it always has the ``_source_row`` (int64) column last."""

    batch: pa.RecordBatch
    quarantined: list[QuarantineRecord] = field(default_factory=list)


@dataclass(frozen=True)
class FormatOptions:
    """How to read objects of one source."""

    format: Format
    csv: CsvOptions = field(default_factory=CsvOptions)
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    block_bytes: int = DEFAULT_BLOCK_BYTES
    parquet_batch_rows: int = DEFAULT_PARQUET_BATCH_ROWS

    @classmethod
    def from_source(cls, source: SourceConfig) -> FormatOptions:
        return cls(format=source.format, csv=source.csv, max_record_bytes=source.max_record_bytes)


@dataclass
class ObjectCounts:
    """Accounting for one object: ``records = rows + quarantined``."""

    rows: int = 0
    quarantined: int = 0
    unreadable: bool = False  # a record_index=None entry was seen

    @property
    def records(self) -> int:
        return self.rows + self.quarantined

    def add(self, chunk: ReadChunk) -> None:
        self.rows += chunk.batch.num_rows
        self.quarantined += len(chunk.quarantined)
        if any(q.record_index is None for q in chunk.quarantined):
            self.unreadable = True


def count_accounting(chunks: Sequence[ReadChunk]) -> ObjectCounts:
    """The ``ObjectCounts`` of a sequence of chunks of one object."""
    counts = ObjectCounts()
    for chunk in chunks:
        counts.add(chunk)
    return counts


def compression_for_key(key: str) -> str | None:
    """``gzip`` / ``zstd`` / ``bz2`` from the key's suffix, else None."""
    raise NotImplementedError


def read_object(
    store: ObjectStore,
    key: str,
    etag: str,
    fmt: FormatOptions,
    schema: pa.Schema | None,
) -> Iterator[ReadChunk]:
    """Stream one object (pinned to ``etag``) as ``ReadChunk``s; see the module contract."""
    raise NotImplementedError


#: Arrow schema of quarantine entries (for writing them out).
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("_source_key", pa.string(), nullable=False),
        pa.field("_source_etag", pa.string(), nullable=False),
        pa.field("_source_row", pa.int64()),  # null: whole object
        pa.field("raw", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)


def quarantine_batch(records: Sequence[QuarantineRecord]) -> pa.RecordBatch:
    """``records`` as a batch of ``QUARANTINE_SCHEMA``."""
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r.source_key for r in records], pa.string()),
            pa.array([r.source_etag for r in records], pa.string()),
            pa.array([r.record_index for r in records], pa.int64()),
            pa.array([r.raw for r in records], pa.string()),
            pa.array([r.reason for r in records], pa.string()),
        ],
        schema=QUARANTINE_SCHEMA,
    )
