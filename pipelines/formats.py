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
* A record is quarantined only when it cannot be parsed at all: not UTF-8, not JSON, not a
  JSON object, a CSV row whose field count differs from the header, longer than
  ``max_record_bytes``. A value that does not fit its column (or a field that is not declared,
  or whose name Lockgate owns) does NOT quarantine its record: the row lands with that column
  null and the value in the row's ``_rescued_data`` (see ``lockgate.pipelines.rescue``).
* An object whose claimed version (``etag``) is no longer there -- deleted, or re-written --
  when it is opened or while it is read raises ``VersionNotRead`` (``outcome``
  ``changed_before_read`` / ``gone_before_read``): that version was not read, so none of its
  records count. Chunks already yielded for that object must be discarded by the caller.
* An object that cannot be read otherwise (bad compression, magic bytes
  that contradict the suffix, not Parquet, an unsafe key) yields ONE ``QuarantineRecord`` with
  ``record_index=None``. If it becomes unreadable part-way (a truncated or corrupt stream, or
  the decompression-bomb guard: more than ``max_decompressed_bytes`` of content, or more than
  ``max_compression_ratio`` times the compressed bytes read once 4 MiB are out), every record
  completed before that point stands and ONE final ``record_index=None`` entry covers the
  unreadable rest (the partial record included). So for every object: ``records(object) =
  rows + quarantined entries`` (a whole-object entry counts as one record). See
  ``ObjectCounts``.
* Keys that ``validate_key`` refuses (leading ``/``, ``.``/``..`` segments, backslash, NUL;
  S3 allows them) are never opened: the object is quarantined whole with the reason. No
  landing key ever names a file Lockgate writes (staged files are uuid-named).
* Memory is bounded by ``block_bytes`` + ``max_record_bytes`` (JSONL/CSV: ``1 +
  PARSE_AHEAD`` blocks of an equal share of ``block_bytes`` are in flight, parsed ahead on
  other threads), or for Parquet by
  one read batch with its text leaves still dictionary-encoded (rows capped by the footer's
  bytes per row) plus ``block_bytes`` of decoded rows, never by the object's size. A Parquet
  row whose decoded size exceeds ``max_record_bytes`` is quarantined without being decoded. A
  text record longer than ``max_record_bytes`` is quarantined, not buffered. A chunk covers at
  most ``MAX_BLOCK_RECORDS`` records, so its quarantine entries are bounded too (the caller
  writes them out as it goes: ``lockgate.pipelines.stage``).
* A JSON record nested deeper than ``max_nesting_depth`` (objects and arrays) is quarantined.
  A record that could nest deep enough to hurt pyarrow (longer than ``_SHORT_LINE_BYTES``)
  never reaches it unscreened.
* With a declared schema every batch has exactly the declared columns in declared order, then
  ``_rescued_data`` (string), then ``_source_row``; values are cast strictly, a value that
  cannot be cast is null and rescued under its field name; fields not in the schema are
  rescued. Without a schema, types are inferred per block by pyarrow, so batches of one
  object may differ in schema (the caller unifies / evolves, rescuing what does not fit);
  fields named like Lockgate's columns, empty or dotted names are rescued; the batch still
  ends with ``_rescued_data``, ``_source_row``.
* Transient I/O errors (network) are raised, not quarantined, so the run can be retried.
* Given the claimed ``size``, every byte of the object as stored (before decompression) is
  consumed and counted, also past an unreadable rest; a count that differs from the claim is
  ``SizeMismatch`` (raised, a transient read error), so a lying or truncating endpoint never
  makes an object look shorter than it is. ``ReadMeter`` reports the count.
* An empty object (0 bytes) has no records and yields no chunk. Chunks may hold 0 rows (only
  quarantine entries); callers skip empty batches.
* Parquet objects are spooled to a local temporary file (disk) for random access.

Parsing: a block (``block_bytes`` of complete records) is parsed by ONE pyarrow call (the fast
path). JSON lines reach it without a Python pass per record: the block is cut at its last
newline and checked by vectorised scans (``_fast_lines``), and parsed and cast on a worker
thread while the caller works on the previous block. Only if that fails (per block): JSON lines
that are not JSON objects are taken out in one Python pass (``json.loads``), the rest is parsed
as one block again, and whatever still fails is bisected down to single records. A single JSON
record that fails is parsed again field by field (``_JsonParser.rescue``): fields that do not
parse alone (as their declared type, or at all) are rescued, the rest is parsed; duplicate
keys: the last occurrence is parsed, earlier ones rescued (``name``, ``name#2``, ...). Casting
to a declared schema happens column-wise in ``_Coercer`` (failing values found by bisecting the
column): text is trimmed, empty text is null for non-string types, timestamps accept ``Z`` /
``+hh:mm`` / ``+hhmm`` / ``+hh`` offsets (stored in UTC) and text without an offset is taken as
UTC. NaN / Infinity parse into float columns; into other columns they are rescued as text.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import operator
import os
import re
import tempfile
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from typing import IO, TYPE_CHECKING, Any, BinaryIO, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from lockgate.pipelines.rescue import (
    RESCUED,
    RESCUED_FIELD,
    RESERVED_NAMES,
    convert_rescuing,
    extras_json,
    extras_per_row,
    merge_column,
    single_array,
)
from lockgate.pipelines.startup import LazyModule
from lockgate.resources.config import (
    DEFAULT_MAX_COMPRESSION_RATIO,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    CsvOptions,
    Format,
    SourceConfig,
)
from lockgate.resources.errors import ExitCode, TerminalError
from lockgate.resources.ledger import CHANGED_BEFORE_READ, GONE_BEFORE_READ
from lockgate.resources.store import (
    NotFound,
    ObjectChanged,
    ObjectStore,
    SizeMismatch,
    read_into,
    validate_key,
)
from lockgate.resources.widening import plain_schema

if TYPE_CHECKING:
    import pyarrow.compute as pc
else:  # imported at its first use (~70 ms a first read need not wait for)
    pc = LazyModule("pyarrow.compute", globals(), "pc")

SOURCE_ROW = "_source_row"
#: Bytes of a bad record kept in its ``QuarantineRecord.raw``.
MAX_RAW_CHARS = 64 * 1024
DEFAULT_BLOCK_BYTES = 16 * 1024 * 1024
DEFAULT_PARQUET_BATCH_ROWS = 65536
#: Records parsed (and yielded) per pass over a block: bounds a chunk's quarantine entries.
MAX_BLOCK_RECORDS = 65536
#: JSON records nested deeper than this (objects and arrays) are quarantined: pyarrow's JSON
#: reader overflows its stack (SIGSEGV) on deep nesting, and slows down a lot before that
#: (see ``_SHORT_LINE_BYTES``).
MAX_NESTING_DEPTH = 64
#: The compression-ratio guard applies once this much content has been decompressed.
RATIO_GRACE_BYTES = 4 * 1024 * 1024

COMPRESSION_SUFFIXES: dict[str, str] = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}


class VersionNotRead(TerminalError):
    """The claimed version of an object was gone (``outcome``: ``gone_before_read``, deleted;
    ``changed_before_read``, re-written) when it was opened or while it was read. Staging
    records it (no rows); it reaches a user only from a rebuild, which refuses."""

    exit_code: ClassVar[ExitCode] = ExitCode.OBJECT_CHANGED

    def __init__(self, key: str, etag: str, cause: NotFound | ObjectChanged):
        self.key = key
        self.etag = etag
        self.outcome = GONE_BEFORE_READ if isinstance(cause, NotFound) else CHANGED_BEFORE_READ
        super().__init__(f"{key!r} (etag {etag}): {self.outcome.replace('_', ' ')}: {cause}")


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
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    max_compression_ratio: int = DEFAULT_MAX_COMPRESSION_RATIO
    max_nesting_depth: int = MAX_NESTING_DEPTH

    @classmethod
    def from_source(cls, source: SourceConfig) -> FormatOptions:
        return cls(
            format=source.format,
            csv=source.csv,
            max_record_bytes=source.max_record_bytes,
            max_decompressed_bytes=source.max_decompressed_bytes,
            max_compression_ratio=source.max_compression_ratio,
        )


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
    for suffix, name in COMPRESSION_SUFFIXES.items():
        if key.lower().endswith(suffix):
            return name
    return None


@dataclass
class ReadMeter:
    """Bytes of one object as stored (before decompression) that ``read_object`` consumed.
    ``complete``: the object was read to its end and ``consumed`` checked against the claimed
    size; false when it was not opened (unsafe key, gone or changed before read) or changed
    while being read."""

    consumed: int = 0
    complete: bool = False


def read_object(
    store: ObjectStore,
    key: str,
    etag: str,
    fmt: FormatOptions,
    schema: pa.Schema | None,
    size: int | None = None,
    meter: ReadMeter | None = None,
) -> Iterator[ReadChunk]:
    """Stream one object (pinned to ``etag``) as ``ReadChunk``s; see the module contract.
    Raises ``VersionNotRead`` when that version is gone (at open, while reading, or
    when the store finds it changed at the end of the read).

    ``size``: the object's claimed size. Every byte of the object is consumed (also after an
    unreadable rest), and a count that differs from ``size`` raises ``SizeMismatch`` (a
    transient read error, like the store's own), never a short read. ``meter`` receives the
    count."""
    return _read_opened(
        lambda: store.open(key, etag=etag, size=size), key, etag, fmt, schema, size, meter
    )


def _read_opened(
    opener: Callable[[], BinaryIO],
    key: str,
    etag: str,
    fmt: FormatOptions,
    schema: pa.Schema | None,
    size: int | None,
    meter: ReadMeter | None,
) -> Iterator[ReadChunk]:
    """``read_object`` of the stream ``opener`` returns."""
    meter = meter if meter is not None else ReadMeter()
    ctx = _Context(key, etag, schema)
    try:
        validate_key(key)
    except ValueError:
        # S3 allows such keys; the stores refuse them (they could name a path outside the
        # root). The object is not read, and a landing key never names anything written.
        yield ctx.unreadable(
            "unsafe object key (empty, leading '/', '.' or '..' segment, backslash or NUL): "
            "not read"
        )
        return
    try:
        raw = opener()
    except (NotFound, ObjectChanged) as e:
        raise VersionNotRead(key, etag, e) from e
    source = _TaggedReader(raw)
    try:
        try:
            head = source.peek_head(16)
            if head:  # an empty object holds no records, whatever its suffix
                compression = compression_for_key(key)
                _check_magic(key, head, compression, fmt.format)
                stream = _decompressed(source, compression, fmt)
                if fmt.format == "parquet":
                    yield from _read_parquet(stream, fmt, ctx)
                else:
                    yield from _read_text(stream, fmt, ctx)
        except _Unreadable as e:
            yield ctx.unreadable(e.reason)
        except _RawReadError as e:
            if isinstance(e.orig, NotFound | ObjectChanged):
                raise VersionNotRead(key, etag, e.orig) from e.orig
            raise e.orig from None
        try:
            source.drain()
        except _RawReadError as e:
            if isinstance(e.orig, NotFound | ObjectChanged):
                # changed before the end of the read: its records may mix two versions
                raise VersionNotRead(key, etag, e.orig) from e.orig
            raise e.orig from None
        if size is not None and source.count != size:
            raise SizeMismatch(key, source.count, size)
        meter.complete = True
    finally:
        meter.consumed = source.count
        raw.close()


#: Objects up to this size (uncompressed JSON lines) are read by ``read_small_objects``.
SMALL_OBJECT_BYTES = 256 * 1024
#: Objects read and parsed together by one ``read_small_objects`` call, at most.
SMALL_GROUP_OBJECTS = 2048
#: GETs in flight while small objects are fetched: twice the 16 that issue 13 asks for, since a
#: server sees all of a pool's requests at once only by chance (16 threads: 15 seen in one run;
#: 32: 31, and 13.1 ms an object on moto against 13.3 with 16).
FETCH_CONCURRENCY = 32


def is_small_object(key: str, size: int, fmt: FormatOptions) -> bool:
    """Whether ``read_small_objects`` reads this object (uncompressed JSON lines of at most
    ``SMALL_OBJECT_BYTES``)."""
    return (
        fmt.format == "jsonl"
        and 0 <= size <= min(SMALL_OBJECT_BYTES, fmt.block_bytes, fmt.max_decompressed_bytes)
        and compression_for_key(key) is None
    )


@dataclass
class SmallObjectsRead:
    """Small objects read together. ``batch``: the rows of the objects parsed as ONE block, in
    object order (``rows[i]`` of them from object ``i``, ``_source_row`` counted per object);
    the other objects were read one by one: ``chunks[i]``, or ``errors[i]`` when the claimed
    version was not read. ``meters[i]``: bytes consumed. For every object, ``rows[i]`` + the
    rows and quarantine entries of ``chunks[i]`` = its records."""

    batch: pa.RecordBatch | None
    rows: list[int]
    chunks: list[list[ReadChunk]]
    errors: list[VersionNotRead | None]
    meters: list[ReadMeter]


_fetch_pool: ThreadPoolExecutor | None = None


def _fetcher() -> ThreadPoolExecutor:
    global _fetch_pool
    with _pool_lock:
        if _fetch_pool is None:
            _fetch_pool = ThreadPoolExecutor(FETCH_CONCURRENCY, thread_name_prefix="lockgate-get")
        return _fetch_pool


def _fetch(store: ObjectStore, key: str, etag: str, size: int) -> bytes | VersionNotRead | None:
    """The whole object (``size`` checked), ``VersionNotRead``, or None for a key that must
    not be opened (``read_object`` quarantines it)."""
    try:
        validate_key(key)
    except ValueError:
        return None
    try:
        raw = store.open(key, etag=etag, size=size)
    except (NotFound, ObjectChanged) as e:
        return VersionNotRead(key, etag, e)
    try:
        parts: list[bytes] = []
        while True:
            part = raw.read(1 << 20)
            if not part:
                break
            parts.append(part)
    except (NotFound, ObjectChanged) as e:
        return VersionNotRead(key, etag, e)
    finally:
        raw.close()
    data = b"".join(parts)
    if len(data) != size:
        raise SizeMismatch(key, len(data), size)
    return data


def read_small_objects(
    store: ObjectStore,
    objects: Sequence[tuple[str, str, int]],
    fmt: FormatOptions,
    schema: pa.Schema | None,
) -> SmallObjectsRead:
    """Read small objects (``(key, etag, size)``, each ``is_small_object``) with the contract of
    ``read_object`` per object: fetched concurrently (``FETCH_CONCURRENCY`` GETs in flight),
    then the clean ones (every line a JSON object, see ``_fast_lines``) parsed as ONE block
    with one coercion; a group that fails to parse is bisected by object, and an object that
    fails alone (or is not clean) is read on its own from the fetched bytes
    (``read_object``'s per-record path). Transient errors (and ``SizeMismatch``) are raised."""
    n = len(objects)
    fetched = list(_fetcher().map(lambda o: _fetch(store, *o), objects))
    out = SmallObjectsRead(None, [0] * n, [[] for _ in range(n)], [None] * n, [])
    out.meters = [ReadMeter() for _ in range(n)]
    clean: list[tuple[int, bytes, int]] = []  # (object, its lines, records)
    for i, ((key, etag, size), data) in enumerate(zip(objects, fetched, strict=True)):
        if isinstance(data, VersionNotRead):
            out.errors[i] = data
            continue
        lines = _clean_lines(data, fmt) if data is not None else None
        if lines is not None:
            out.meters[i] = ReadMeter(consumed=size, complete=True)
            if lines[1]:
                clean.append((i, *lines))
            continue
        out.chunks[i] = _read_alone(key, etag, data, fmt, schema, size, out.meters[i])
    parser = _JsonParser(schema)
    pieces: list[tuple[list[tuple[int, bytes, int]], pa.Table]] = []
    stack = [clean] if clean else []
    while stack:
        group = stack.pop()
        try:
            table = parser.parse(
                b"\n".join(g[1] for g in group), sum(g[2] for g in group), fmt.max_nesting_depth
            )
            pieces.append((group, table))
            continue
        except _RecordError:
            if len(group) > 1:
                mid = len(group) // 2
                stack += [group[mid:], group[:mid]]
                continue
        i, _, _ = group[0]
        key, etag, size = objects[i]
        data = fetched[i]
        assert isinstance(data, bytes)
        out.chunks[i] = _read_alone(key, etag, data, fmt, schema, size, out.meters[i])
    if len(pieces) > 1:
        pieces.sort(key=lambda p: p[0][0][0])
        try:
            pa.concat_tables(
                [t.schema.empty_table() for _, t in pieces], promote_options="permissive"
            )
        except _ARROW_ERRORS:  # inferred types that do not unify: each object on its own
            for group, _ in pieces:
                for i, _, _ in group:
                    key, etag, size = objects[i]
                    data = fetched[i]
                    assert isinstance(data, bytes)
                    out.chunks[i] = _read_alone(key, etag, data, fmt, schema, size, out.meters[i])
            pieces = []
    if pieces:
        merged = pa.concat_tables([t for _, t in pieces], promote_options="permissive")
        counts = [g[2] for group, _ in pieces for g in group]
        for group, _ in pieces:
            for i, _, records in group:
                out.rows[i] = records
        starts = np.repeat(np.cumsum([0, *counts[:-1]]), counts)
        rows = np.arange(len(starts), dtype=np.int64) - starts
        out.batch = _one_batch(_with_rows(merged, rows))
    return out


def _clean_lines(data: bytes, fmt: FormatOptions) -> tuple[bytes, int] | None:
    """An object's content as clean lines for one block with others (no final newline) and
    their count, or None when it must be read on its own."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        return (data, 0)
    try:
        _check_magic("", data[:16], None, fmt.format)
    except _Unreadable:
        return None
    lines = _fast_lines(data, fmt.max_record_bytes, fmt.max_nesting_depth)
    return None if lines is None else (data, lines[0])


def _read_alone(
    key: str,
    etag: str,
    data: bytes | None,
    fmt: FormatOptions,
    schema: pa.Schema | None,
    size: int,
    meter: ReadMeter,
) -> list[ReadChunk]:
    """One small object through ``read_object``'s path, from its fetched bytes."""
    content = data if data is not None else b""
    return list(_read_opened(lambda: io.BytesIO(content), key, etag, fmt, schema, size, meter))


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


# --------------------------------------------------------------------------------------------
# Internals. Vocabulary: a *block* is a run of consecutive records read in one go; the fast
# path parses a whole block with one pyarrow call; when that fails, the block is bisected
# until every failing record stands alone and is quarantined with the reason of its own parse.
# --------------------------------------------------------------------------------------------

_MAGIC: dict[str, tuple[bytes, ...]] = {
    "gzip": (b"\x1f\x8b",),
    "zstd": (b"\x28\xb5\x2f\xfd",),
    "bz2": (b"BZh",),
}
_BZ2_FULL = re.compile(rb"BZh[1-9]\x31\x41\x59\x26\x53\x59")
_PARQUET_MAGIC = b"PAR1"
_BOM = b"\xef\xbb\xbf"
_TZ_SUFFIX = r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?)$"
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)
#: A JSON line whose first non-blank byte is not "{". pyarrow 26's JSON reader crashes the
#: process (SIGSEGV) when the first value of its input is ``null``, and reads a later ``null``
#: line as an all-null row: such blocks never reach it (one C-level scan per block).
_NOT_OBJECT_FIRST = re.compile(rb"[ \t\r\f\v]*[^{ \t\r\n\f\v]")  # (an alternation with ^
_NOT_OBJECT_LINE = re.compile(rb"\n[ \t\r\f\v]*[^{ \t\r\n\f\v]")  # is 20x slower)


class _Unreadable(Exception):
    """The object (or its rest) cannot be read; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _RawReadError(Exception):
    """An exception raised by the store's stream (not by decoding); re-raised or quarantined."""

    def __init__(self, orig: BaseException):
        super().__init__(str(orig))
        self.orig = orig


class _RecordError(Exception):
    """A block (or one record) failed to parse or cast; ``reason`` names the field if known."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _TooLong:
    """A record refused before parsing: longer than ``max_record_bytes`` (``reason`` None), or
    ``reason`` (e.g. nested deeper than ``max_nesting_depth``). Only its head is kept."""

    head: bytes
    size: int
    reason: str | None = None


_Record = bytes | _TooLong


def _text(raw: bytes) -> str:
    """A record as quarantine text: bounded, undecodable bytes replaced, no CR of a CRLF."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw[: MAX_RAW_CHARS * 4].decode("utf-8", errors="replace")[:MAX_RAW_CHARS]


class _Context:
    """Per-object state: identity, declared schema, and the index of the next record."""

    def __init__(self, key: str, etag: str, schema: pa.Schema | None):
        self.key = key
        self.etag = etag
        self.schema = schema
        self.next_index = 0
        self.coercer = _Coercer(schema) if schema is not None else None

    def quarantine(self, index: int, raw: str, reason: str) -> QuarantineRecord:
        return QuarantineRecord(self.key, self.etag, index, raw[:MAX_RAW_CHARS], reason)

    def take_rows(self, n: int) -> np.ndarray:
        """The record indices of the next ``n`` records (advances ``next_index``)."""
        base = self.next_index
        self.next_index += n
        return np.arange(base, self.next_index, dtype=np.int64)

    def unreadable(self, reason: str) -> ReadChunk:
        if self.next_index:
            reason = f"unreadable after record {self.next_index - 1}: {reason}"
        q = QuarantineRecord(self.key, self.etag, None, "", reason)
        return ReadChunk(self.empty_batch(), [q])

    def empty_batch(self) -> pa.RecordBatch:
        fields = list(self.schema) if self.schema is not None else []
        schema = pa.schema([*fields, RESCUED_FIELD, pa.field(SOURCE_ROW, pa.int64())])
        return pa.RecordBatch.from_pylist([], schema=schema)

    def validate(self, table: pa.Table) -> pa.Table:
        """Cast to the declared schema, or (inferred) rescue reserved field names; either way
        the result ends with the ``_rescued_data`` column."""
        if self.coercer is not None:
            return self.coercer.coerce(table)
        return _finish_inferred(table)

    def chunks(
        self, pieces: list[tuple[np.ndarray, pa.Table]], quarantined: list[QuarantineRecord]
    ) -> Iterator[ReadChunk]:
        """Rows of ``pieces`` (record indices, table), in index order, as one chunk when their
        schemas unify (always with a declared schema), else one chunk per piece."""
        if not pieces:
            if quarantined:
                yield ReadChunk(self.empty_batch(), quarantined)
            return
        if len(pieces) == 1:
            merged: pa.Table | None = pieces[0][1]
        else:
            try:
                merged = pa.concat_tables([t for _, t in pieces], promote_options="permissive")
            except _ARROW_ERRORS:
                merged = None
        if merged is not None:
            rows = np.concatenate([idx for idx, _ in pieces])
            yield ReadChunk(_one_batch(_with_rows(merged, rows)), quarantined)
        else:
            for i, (idx, t) in enumerate(pieces):
                yield ReadChunk(_one_batch(_with_rows(t, idx)), quarantined if i == 0 else [])


def _bad_inferred_name(name: str) -> bool:
    """Field names that cannot become columns of an inferred table: Lockgate's own, empty
    ones, and dotted ones (Iceberg reads dots as nesting)."""
    return name in RESERVED_NAMES or not name.strip() or "." in name


def _finish_inferred(table: pa.Table) -> pa.Table:
    """An inferred table with fields that cannot be columns moved to ``_rescued_data``."""
    bad = [n for n in table.column_names if _bad_inferred_name(n)]
    per_row = extras_per_row(table, bad) if bad else {}
    if bad:
        table = table.drop_columns(bad)
    return table.append_column(RESCUED_FIELD, merge_column(None, table.num_rows, per_row))


def int64_array(values: np.ndarray) -> pa.Array:
    """``values`` as an Arrow int64 array, without a copy when they are contiguous int64.
    ``pa.array(values)`` gives the same array but first imports ``numpy.ma`` (~10 ms on one
    core, holding the GIL, in a process's first parse)."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def _with_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    return table.append_column(pa.field(SOURCE_ROW, pa.int64()), int64_array(rows))


def _indices(base: int, idx: Sequence[int]) -> np.ndarray:
    if isinstance(idx, range):
        return np.arange(base + idx.start, base + idx.stop, dtype=np.int64)
    return np.asarray(idx, dtype=np.int64) + base


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    table = table.combine_chunks()
    batches = table.to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=table.schema)
    return batches[0]


def _process_block(
    ctx: _Context,
    records: list[_Record],
    attempt: Callable[[list[bytes]], pa.Table],
    explain: Callable[[bytes, _RecordError], str],
    max_record_bytes: int,
    scan: bool = True,
    screen: Callable[[bytes], str | None] | None = None,
    rescue: Callable[[bytes, _RecordError], pa.Table | str] | None = None,
) -> Iterator[ReadChunk]:
    """Parse ``records`` (indices from ``ctx.next_index``) into chunks; every record ends as
    a row or a quarantine entry. Advances ``ctx.next_index`` past the block.

    Fast path: one ``attempt`` for the whole block. If it fails: ``screen`` (if given) rejects
    the records that are bad on their own, then failing runs are bisected down to single
    records, each quarantined with ``explain``'s reason -- or, given ``rescue``, parsed again by
    ``rescue`` (a one-row table, its unfit fields in ``_rescued_data``) unless that returns a
    reason. ``scan``: look for ``_TooLong``."""
    base = ctx.next_index
    pieces: list[tuple[np.ndarray, pa.Table]] = []
    quarantined: list[QuarantineRecord] = []

    def bisect(lo: int, hi: int) -> None:
        # An explicit stack, not recursion: a recursive closure is a reference cycle that
        # would keep every block alive until the cyclic GC happens to run. Groups are
        # increasing index sequences (a range, or a list once screened records are left out);
        # splitting one keeps its halves in order, so pieces never interleave.
        stack: list[tuple[Sequence[int], bool]] = [(range(lo, hi), screen is None)]
        while stack:
            idx, screened = stack.pop()
            if isinstance(idx, range):
                group = records[idx.start : idx.stop]
            else:
                group = [records[i] for i in idx]
            try:
                pieces.append((_indices(base, idx), attempt(group)))  # type: ignore[arg-type]
                continue
            except _RecordError as e:
                if len(idx) == 1:
                    rec = group[0]
                    assert isinstance(rec, bytes)
                    saved = rescue(rec, e) if rescue is not None else explain(rec, e)
                    if isinstance(saved, str):
                        quarantined.append(ctx.quarantine(base + idx[0], _text(rec), saved))
                    else:
                        pieces.append((_indices(base, idx), saved))
                    continue
            if not screened and screen is not None:
                # One cheap per-record pass takes out the records that are bad on their own;
                # the rest is parsed as one block again (and bisected only if it still fails).
                good: list[int] = []
                for i in idx:
                    rec = records[i]
                    assert isinstance(rec, bytes)
                    reason = screen(rec)
                    if reason is None:
                        good.append(i)
                    else:
                        quarantined.append(ctx.quarantine(base + i, _text(rec), reason))
                if len(good) != len(idx):
                    if good:
                        stack.append((good, True))
                    continue
            mid = len(idx) // 2
            stack.append((idx[mid:], True))
            stack.append((idx[:mid], True))

    start = 0
    marks = [i for i, r in enumerate(records) if r.__class__ is _TooLong] if scan else []
    for i in [*marks, len(records)]:
        if i > start:
            bisect(start, i)
        if i < len(records):
            rec = records[i]
            assert isinstance(rec, _TooLong)
            quarantined.append(
                ctx.quarantine(
                    base + i,
                    _text(rec.head),
                    rec.reason
                    or f"record of {rec.size} bytes exceeds max_record_bytes ({max_record_bytes})",
                )
            )
        start = i + 1
    ctx.next_index = base + len(records)
    pieces.sort(key=lambda piece: int(piece[0][0]))
    quarantined.sort(key=lambda q: q.record_index or 0)
    yield from ctx.chunks(pieces, quarantined)


# -- streams ----------------------------------------------------------------------------------


class _TaggedReader(io.RawIOBase):
    """The store's stream, with its exceptions wrapped in ``_RawReadError`` so that decoding
    errors (the object's fault) and transport errors (retryable) are told apart."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.head = b""
        self.count = 0  # bytes taken from the store (the compressed size read so far)

    def readable(self) -> bool:
        return True

    def _read(self, n: int) -> bytes:
        try:
            data = self.raw.read(n)
        except Exception as e:
            raise _RawReadError(e) from e
        self.count += len(data)
        return data

    def drain(self) -> None:
        """Consume (and count) the rest of the stream: the bytes the decoder did not need."""
        while self._read(1 << 20):
            pass
        self.head = b""

    def peek_head(self, n: int) -> bytes:
        """Read up to ``n`` first bytes; they are replayed by later reads."""
        while len(self.head) < n:
            more = self._read(n - len(self.head))
            if not more:
                break
            self.head += more
        return self.head

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.head:
            n = min(len(view), len(self.head))
            view[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        try:
            n = read_into(self.raw, view)
        except Exception as e:
            raise _RawReadError(e) from e
        self.count += n
        return n


def _check_magic(key: str, head: bytes, compression: str | None, fmt: str) -> None:
    if compression is not None:
        if not any(head.startswith(m) for m in _MAGIC[compression]):
            raise _Unreadable(
                f"key suffix says {compression} but the content does not start with its magic "
                f"bytes (starts with {head[:4].hex()})"
            )
        return
    for name, magics in _MAGIC.items():
        if name == "bz2":
            hit = bool(_BZ2_FULL.match(head))
        else:
            hit = any(head.startswith(m) for m in magics)
        if hit:
            raise _Unreadable(
                f"content is {name}-compressed but the key has no "
                f"{next(s for s, c in COMPRESSION_SUFFIXES.items() if c == name)} suffix"
            )
    if fmt == "parquet" and not head.startswith(_PARQUET_MAGIC):
        raise _Unreadable(f"not a Parquet file (starts with {head[:4].hex()}, expected PAR1)")


class _Decoded:
    """A decompressing reader whose decoding errors become ``_Unreadable``, with the
    decompression-bomb guard: content beyond ``max_decompressed_bytes``, or (compressed
    objects, once ``RATIO_GRACE_BYTES`` are out) more than ``max_compression_ratio`` times the
    compressed bytes read so far, makes the rest of the object unreadable. Content before the
    failure is delivered first (``read_block`` returns it; the next read raises), so the
    records it completes stand -- as with a truncated object."""

    def __init__(
        self, stream: Any, compression: str | None, source: _TaggedReader, fmt: FormatOptions
    ):
        self.stream = stream
        self.compression = compression
        self.source = source
        self.max_bytes = fmt.max_decompressed_bytes
        self.max_ratio = fmt.max_compression_ratio
        self.out = 0
        self.failed: str | None = None
        # read1: a buffered reader's read(n) loses what it decoded before an error
        read1 = getattr(stream, "read1", None) if compression in ("gzip", "bz2") else None
        self._read: Callable[[int], bytes] = read1 or stream.read

    def read(self, n: int) -> bytes:
        if self.failed is not None:
            raise _Unreadable(self.failed)
        try:
            data = bytes(self._read(n))
        except _RawReadError:
            raise
        except (OSError, EOFError, zlib.error, ValueError, *_ARROW_ERRORS) as e:
            raise _Unreadable(f"{self.compression or 'read'} error: {e}") from e
        self.out += len(data)
        if self.out > self.max_bytes:
            self.failed = (
                f"decompression bomb guard: content exceeds max_decompressed_bytes "
                f"({self.max_bytes})"
            )
            keep = len(data) - (self.out - self.max_bytes)
            if keep <= 0:
                raise _Unreadable(self.failed)
            return data[:keep]
        if (
            self.compression is not None
            and self.out > RATIO_GRACE_BYTES
            and self.out > self.max_ratio * max(1, self.source.count)
        ):
            self.failed = (
                f"decompression bomb guard: {self.out} bytes from {self.source.count} "
                f"{self.compression} bytes exceeds max_compression_ratio ({self.max_ratio})"
            )
        return data

    def read_block(self, n: int) -> bytes:
        """Up to ``n`` bytes, fewer only at the end of the stream (or before an unreadable
        rest, which the next call raises); b"" at the end."""
        parts: list[bytes] = []
        got = 0
        while got < n:
            try:
                data = self.read(n - got)
            except _Unreadable as e:
                if not parts:
                    raise
                self.failed = e.reason
                break
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)


def _decompressed(source: _TaggedReader, compression: str | None, fmt: FormatOptions) -> _Decoded:
    buffered = io.BufferedReader(source, buffer_size=1 << 20)
    stream: Any
    if compression == "gzip":
        stream = gzip.GzipFile(fileobj=buffered, mode="rb")
    elif compression == "bz2":
        stream = bz2.BZ2File(buffered, mode="rb")
    elif compression == "zstd":
        # python-zstandard's stream_reader silently stops at a truncated frame; pyarrow's
        # codec reports it, and passes the source's exceptions through unchanged.
        stream = pa.CompressedInputStream(pa.PythonFile(buffered, mode="r"), "zstd")
    else:
        stream = buffered
    return _Decoded(stream, compression, source, fmt)


# -- text formats -----------------------------------------------------------------------------


def _joined(carry: bytes, data: bytes, cut: int) -> bytes:
    """``carry + data[:cut]`` with one copy of ``data``'s part (not two: a block is megabytes)."""
    return b"".join((carry, memoryview(data)[:cut])) if carry else data[:cut]


class _Splitter:
    """Cuts a byte stream into complete records with bounded memory.

    JSONL: a record is a line that is not blank. CSV: a record is a run of lines with an even
    number of quote characters (quoted fields may hold newlines); empty lines are skipped. A
    record longer than ``max_bytes`` becomes a ``_TooLong`` and its bytes are skipped.
    """

    def __init__(
        self,
        max_bytes: int,
        quote: bytes | None,
        blank: Callable[[bytes], bool],
        nonblank: Callable[[bytes], object],
    ):
        self.max_bytes = max_bytes
        self.quote = quote
        self.blank = blank
        self.nonblank = nonblank  # a C-level truth test for filter(): no Python call per line
        self.marked = False  # whether the last feed()/finish() returned a _TooLong
        self.carry = b""
        self.skipping: _TooLong | None = None
        self.skip_parity = 0
        self.first = True

    def _skip(self, data: bytes, out: list[_Record]) -> bytes:
        """Consume the rest of an oversized record from ``data``; return what follows it."""
        assert self.skipping is not None
        pos = 0
        while True:
            nl = data.find(b"\n", pos)
            seg = data[pos:] if nl < 0 else data[pos:nl]
            if self.quote:
                self.skip_parity ^= seg.count(self.quote) & 1
            if nl < 0:
                self.skipping.size += len(seg)
                return b""
            self.skipping.size += len(seg)
            pos = nl + 1
            if self.skip_parity == 0:  # the newline ends the record: not part of it
                out.append(self.skipping)
                self.marked = True
                self.skipping = None
                return data[pos:]
            self.skipping.size += 1  # a quoted newline inside the record

    def _records(self, lines: list[bytes]) -> list[bytes]:
        """The non-blank lines."""
        return list(filter(self.nonblank, lines))

    def feed(self, data: bytes) -> list[_Record]:
        self.marked = False
        if self.first and data:
            self.first = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        out: list[_Record] = []
        if self.skipping is not None:
            data = self._skip(data, out)
            if self.skipping is not None:
                return out
        buf = self.carry + data if self.carry else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            lines: list[bytes] = []
            tail = buf
        else:
            lines = buf[:cut].split(b"\n")
            tail = buf[cut + 1 :]
        first = len(out)  # out[:first] holds at most the end of an oversized record
        q = self.quote
        odd = (
            [] if q is None or q not in buf else [i for i, x in enumerate(lines) if x.count(q) & 1]
        )
        if not odd:
            out.extend(self._records(lines))
            self.carry = tail
        else:
            # A line with an odd number of quotes opens a record that the next such line
            # closes; lines in between belong to it (quoted newlines).
            i = 0
            opened: int | None = None
            for k in odd:
                if opened is None:
                    out.extend(self._records(lines[i:k]))
                    opened = k
                else:
                    out.append(b"\n".join(lines[opened : k + 1]))
                    opened = None
                    i = k + 1
            if opened is None:
                out.extend(self._records(lines[i:]))
                self.carry = tail
            else:
                self.carry = b"\n".join([*lines[opened:], tail])
        if len(out) > first and max(map(len, out[first:])) > self.max_bytes:  # type: ignore[arg-type]
            self.marked = True
            out = [
                _TooLong(r[: MAX_RAW_CHARS * 4], len(r))
                if isinstance(r, bytes) and len(r) > self.max_bytes
                else r
                for r in out
            ]
        if len(self.carry) > self.max_bytes:
            self.skipping = _TooLong(self.carry[: MAX_RAW_CHARS * 4], len(self.carry))
            self.skip_parity = self.carry.count(self.quote) & 1 if self.quote else 0
            self.carry = b""
        return out

    def cut(self, data: bytes) -> tuple[list[_Record], bytes]:
        """JSON lines without a Python pass per line: ``data`` (not empty) cut after its last
        newline. Returns the end of an oversized record being skipped (if it ends in ``data``)
        and the complete lines that follow it, as ONE bytes without the final newline
        (possibly empty; blank lines included); the rest is carried (or skipped, when longer
        than ``max_bytes``). ``split_lines`` turns the lines into records."""
        assert self.quote is None
        self.marked = False
        if self.first:
            self.first = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        out: list[_Record] = []
        if self.skipping is not None:
            data = self._skip(data, out)
            if self.skipping is not None:
                return out, b""
        cut = data.rfind(b"\n")  # the carry holds no newline
        if cut < 0:
            block, self.carry = b"", self.carry + data
        else:
            block, self.carry = _joined(self.carry, data, cut), data[cut + 1 :]
        if len(self.carry) > self.max_bytes:
            self.skipping = _TooLong(self.carry[: MAX_RAW_CHARS * 4], len(self.carry))
            self.skip_parity = 0
            self.carry = b""
        return out, block

    def cut_plain(self, data: bytes) -> tuple[bytes, int] | None:
        """CSV without a Python pass per line: ``data`` (not empty) cut after its last newline
        when every complete line is a record on its own -- no quote character in them or in
        the carry, no blank line (none starts with ``\\r`` or ``\\n``), none longer than
        ``max_bytes`` -- as ONE bytes without the final newline and its number of records;
        the rest is carried. None (nothing consumed) when ``feed`` must cut ``data``."""
        if self.first or self.skipping is not None:
            return None
        if self.quote is not None and (self.quote in self.carry or self.quote in data):
            return None
        cut = data.rfind(b"\n")  # the carry holds no newline
        if cut < 0 or len(self.carry) + cut == 0 or len(data) - cut - 1 > self.max_bytes:
            return None
        block = _joined(self.carry, data, cut)
        # one vectorised scan for the newlines (not a search per pattern): no line is blank
        # or starts with "\r" -- the first, one after a newline, or one right before the cut
        a = np.frombuffer(block, dtype=np.uint8)
        if a[0] in (0x0A, 0x0D) or a[-1] == 0x0A:
            return None
        newlines = np.flatnonzero(a == 0x0A)
        after = a[newlines + 1]
        if bool(((after == 0x0A) | (after == 0x0D)).any()):
            return None
        if len(block) > self.max_bytes:
            bounds = np.concatenate(([-1], newlines, [len(a)]))
            if int(np.diff(bounds).max()) - 1 > self.max_bytes:
                return None
        self.marked = False
        self.carry = data[cut + 1 :]
        return block, len(newlines) + 1

    def end(self) -> tuple[list[_Record], bytes]:
        """``cut`` at the end of the stream: the oversized record being skipped, or the
        carried last line (which had no newline)."""
        if self.skipping is not None:
            rec, self.skipping = self.skipping, None
            return [rec], b""
        carry, self.carry = self.carry, b""
        return [], carry

    def split_lines(self, block: bytes) -> list[_Record]:
        """The records of ``cut``'s lines: the non-blank ones, those over ``max_bytes`` as
        ``_TooLong``."""
        out = self._records(block.split(b"\n")) if block else []
        if out and max(map(len, out)) > self.max_bytes:
            return [
                _TooLong(r[: MAX_RAW_CHARS * 4], len(r)) if len(r) > self.max_bytes else r
                for r in out
            ]
        return list(out)

    def finish(self) -> list[_Record]:
        self.marked = self.skipping is not None
        if self.skipping is not None:
            rec: list[_Record] = [self.skipping]
            self.skipping = None
            return rec
        carry, self.carry = self.carry, b""
        if carry and not self.blank(carry):
            return [carry]
        return []


def _json_blank(line: bytes) -> bool:
    return not line.strip()


def _csv_blank(line: bytes) -> bool:
    return line == b"" or line == b"\r"


_CSV_NONBLANK = operator.methodcaller("rstrip", b"\r")


def _read_text(stream: _Decoded, fmt: FormatOptions, ctx: _Context) -> Iterator[ReadChunk]:
    """CSV (JSON lines: ``_read_jsonl``): the splitter cuts records here; a block without
    oversized records is parsed whole on ``_parse_pool`` one block ahead (results taken in
    order), and a block that fails goes through the per-record path (``_process_block``)."""
    if fmt.format == "jsonl":
        yield from _read_jsonl(stream, fmt, ctx)
        return
    q = fmt.csv.quote_char.encode() if fmt.csv.quote_char else None
    splitter = _Splitter(fmt.max_record_bytes, q, _csv_blank, _CSV_NONBLANK)
    parser: _CsvParser | None = None

    def settle(entry: _CsvPending) -> Iterator[ReadChunk]:
        future, held, scan = entry
        count = held[1] if isinstance(held, tuple) else len(held)
        if future is not None:
            try:
                table = future.result()
            except _RecordError:
                pass
            else:
                yield ReadChunk(_one_batch(_with_rows(table, ctx.take_rows(count))))
                return
        # its lines are its records (``_Splitter.cut_plain``)
        records: list[_Record] = list(held[0].split(b"\n")) if isinstance(held, tuple) else held
        assert parser is not None
        yield from _per_record(ctx, records, parser, fmt, scan)

    def begin(data: bytes) -> list[_CsvPending]:
        nonlocal parser
        plain = splitter.cut_plain(data) if data and parser is not None else None
        if plain is not None:
            assert parser is not None
            block, n = plain
            future = None
            if n <= MAX_BLOCK_RECORDS:
                future = _parse_pool().submit(parser.attempt_block, block, n)
            return [(future, plain, False)]
        records = splitter.feed(data) if data else splitter.finish()
        scan = splitter.marked
        if records and parser is None:
            parser, records = _CsvParser.start(records, fmt, ctx)
        if not records:
            return []
        assert parser is not None
        future = None
        if not scan and len(records) <= MAX_BLOCK_RECORDS:
            future = _parse_pool().submit(parser.attempt, records)  # type: ignore[arg-type]
        return [(future, records, scan)]

    yield from _parse_ahead(stream, fmt, begin, settle)


def _per_record(
    ctx: _Context,
    records: list[_Record],
    parser: _JsonParser | _CsvParser,
    fmt: FormatOptions,
    scan: bool = True,
) -> Iterator[ReadChunk]:
    """``records`` through the per-record path (``_process_block``: screen, bisect, rescue),
    at most ``MAX_BLOCK_RECORDS`` per pass: the quarantine entries of a block of tiny bad
    lines (millions) never pile up before the caller can write them out."""
    for lo in range(0, len(records), MAX_BLOCK_RECORDS):
        yield from _process_block(
            ctx,
            records[lo : lo + MAX_BLOCK_RECORDS],
            parser.attempt,
            parser.explain,
            fmt.max_record_bytes,
            scan=scan,
            screen=parser.screen,
            rescue=parser.rescue,
        )


_P = TypeVar("_P", bound=tuple[Any, ...])
#: A CSV block in flight: (its parse, its records -- or a whole block of them: bytes, its
#: record count --, whether they need the per-record scan).
_CsvPending = tuple[Future[pa.Table] | None, list[_Record] | tuple[bytes, int], bool]
#: A JSON block in flight: (its parse, the records before it, the block).
_JsonPending = tuple[Future[pa.RecordBatch | None] | None, list[_Record], bytes]


def _parse_ahead(
    stream: _Decoded,
    fmt: FormatOptions,
    begin: Callable[[bytes], list[_P]],
    settle: Callable[[_P], Iterator[ReadChunk]],
) -> Iterator[ReadChunk]:
    """The read loop of the text formats: ``stream`` is read in equal shares of the block
    budget (the blocks in flight share it: memory stays that of one block); ``begin(data)``
    (``b""`` once, at the end) turns each read into pending blocks whose parse it began on
    ``_parse_pool`` (tuples, the parse's future -- or None -- first); they are settled in
    order, at most ``PARSE_AHEAD`` outstanding while reading and all at the end. An
    unreadable rest settles what is pending first (the records completed before it stand),
    then raises. Parses never settled (the caller stopped early) are cancelled."""
    pending: deque[_P] = deque()
    step = max(1, fmt.block_bytes // (PARSE_AHEAD + 1))
    try:
        while True:
            try:
                data = stream.read_block(step)
            except _Unreadable:
                while pending:
                    yield from settle(pending.popleft())
                raise
            pending.extend(begin(data))
            while len(pending) > (PARSE_AHEAD if data else 0):
                yield from settle(pending.popleft())
            if not data:
                return
    finally:
        for entry in pending:
            if entry[0] is not None:
                entry[0].cancel()


#: JSON blocks parsed ahead of the one the caller holds, each by a thread of ``_parse_pool``:
#: the next blocks parse on the other cores while the caller conforms and stages the previous
#: one. Each costs a share of the block budget (and its parsed rows). Two: parsing is most of a
#: JSON block's CPU (py-spy of D1: ~70% of the data path; conform + staging the rest), so on
#: two cores both parse while the caller's share of the work fits in between.
PARSE_AHEAD = 2
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _parse_pool() -> ThreadPoolExecutor:
    """The process-wide pool that parses JSON blocks (pyarrow releases the GIL while it
    parses and casts): one thread per core (at most 4), shared by concurrent readers."""
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = max(1, min(4, os.cpu_count() or 1))
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lockgate-parse")
        return _pool


#: A JSON line of at most this many bytes nests at most this deep: pyarrow parses a block of
#: such lines at any nesting (arrays 512 deep: < 0.1 s a 1.4 MiB block, also on a 256 KiB
#: thread stack; a line of unclosed openers costs what it costs at the old 64-opener limit,
#: ~1.4 s a block) and the parsed table's types then tell whether a line nests deeper than
#: ``max_nesting_depth`` (``_type_depth``). Longer lines are screened before the parse
#: (``_openers_within``): a record thousands deep takes pyarrow seconds or crashes it.
_SHORT_LINE_BYTES = 1024
#: ``bytes.translate`` arguments keeping only ``{``, ``[`` (both as ``{``) and newlines.
_OPENERS_AS_BRACE = bytes.maketrans(b"[", b"{")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b"{[\n")


def _openers_within(data: bytes, limit: int) -> bool:
    """Whether no line of ``data`` holds more than ``limit`` ``{``/``[`` (so none nests
    deeper): one C-level pass keeps only those and the newlines, then one substring search
    looks for ``limit + 1`` of them in a row."""
    return b"{" * (limit + 1) not in data.translate(_OPENERS_AS_BRACE, _NOT_STRUCTURE)


def _type_depth(t: pa.DataType) -> int:
    """How deep a JSON value of type ``t`` nests (objects and arrays; a scalar is 0)."""
    if pa.types.is_struct(t):
        return 1 + max((_type_depth(f.type) for f in t), default=0)
    if pa.types.is_map(t):
        return 1 + max(_type_depth(t.key_type), _type_depth(t.item_type))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return 1 + _type_depth(t.value_type)
    return 0


def _fast_lines(block: bytes, max_record_bytes: int, max_depth: int) -> tuple[int, bool] | None:
    """``(records, screened)`` for ``block`` (complete JSON lines, no final newline) when the
    fast path may parse it whole, else None: every line starts with ``{`` (so none is blank
    or a non-object), none is longer than ``max_record_bytes``, and either every line is at
    most ``_SHORT_LINE_BYTES`` long (``screened`` False: the caller checks the parsed types,
    ``_JsonParser.parse``'s ``max_depth``) or none holds more than ``max_depth`` ``{``/``[``
    (``screened`` True: none can nest deeper). Vectorised over the buffer (numpy releases the
    GIL): no Python call per line."""
    a = np.frombuffer(block, dtype=np.uint8)
    if not len(a) or a[0] != 0x7B or a[-1] == 0x0A or max_depth < 1:
        return None
    newlines = np.flatnonzero(a == 0x0A)
    if len(newlines):
        if not bool((a[newlines + 1] == 0x7B).all()):
            return None
        longest = max(
            int(newlines[0]),
            len(a) - 1 - int(newlines[-1]),
            int(np.diff(newlines).max(initial=1)) - 1,
        )
    else:
        longest = len(a)
    if longest > max_record_bytes:
        return None
    if longest <= _SHORT_LINE_BYTES:
        return len(newlines) + 1, False
    if not _openers_within(block, max_depth):
        return None
    return len(newlines) + 1, True


def _parse_fast(parser: _JsonParser, block: bytes, fmt: FormatOptions) -> pa.RecordBatch | None:
    """``block`` parsed whole (one ``read_json``, one coercion), or None: the block needs the
    per-record path (it has blank, non-object, oversized or deep lines, or failed to parse)."""
    lines = _fast_lines(block, fmt.max_record_bytes, fmt.max_nesting_depth)
    if lines is None:
        return None
    n, screened = lines
    try:
        return _one_batch(parser.parse(block, n, None if screened else fmt.max_nesting_depth))
    except _RecordError:
        return None


def _read_jsonl(stream: _Decoded, fmt: FormatOptions, ctx: _Context) -> Iterator[ReadChunk]:
    """JSON lines: each block of complete lines is parsed whole on ``_parse_pool`` (up to
    ``PARSE_AHEAD`` blocks ahead, results taken in order); a block that the fast path refuses
    goes through the per-record path (``_process_block``: screen, bisect, rescue) here."""
    splitter = _Splitter(fmt.max_record_bytes, None, _json_blank, bytes.strip)
    parser = _JsonParser(ctx.schema)

    def settle(entry: _JsonPending) -> Iterator[ReadChunk]:
        future, prefix, block = entry
        batch = future.result() if future is not None else None
        if batch is not None:
            rows = int64_array(ctx.take_rows(batch.num_rows))
            yield ReadChunk(batch.append_column(pa.field(SOURCE_ROW, pa.int64()), rows))
            return
        records = prefix + splitter.split_lines(block)
        if not records:
            return
        _guard_depth(records, fmt.max_nesting_depth, True)
        yield from _per_record(ctx, records, parser, fmt)

    def begin(data: bytes) -> list[_JsonPending]:
        prefix, block = splitter.cut(data) if data else splitter.end()
        if not (prefix or block):
            return []
        future = None if prefix else _parse_pool().submit(_parse_fast, parser, block, fmt)
        return [(future, prefix, block)]

    yield from _parse_ahead(stream, fmt, begin, settle)


_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[[ord("{"), ord("[")]] = 1
_DEPTH_STEP[[ord("}"), ord("]")]] = -1
_SCAN_WINDOW = 1 << 20


def _guard_depth(records: list[_Record], limit: int, marked: bool) -> bool:
    """Replace (in place) every record nested deeper than ``limit`` by a ``_TooLong`` with the
    reason; True if any was. Cheap: C-level counts of ``{``/``[`` (over the block, then per
    record, without a Python call per record); only records with more than ``limit`` openers
    are scanned exactly, vectorised (``_nesting_depths``; a record over ``_SCAN_WINDOW`` bytes
    alone, in windows, stopping at the limit). Extra memory: O(``_SCAN_WINDOW``).
    ``marked``: ``records`` may hold ``_TooLong`` entries (left as they are)."""
    if marked:
        plain = [i for i, r in enumerate(records) if r.__class__ is bytes]
        recs: list[bytes] = [records[i] for i in plain]  # type: ignore[misc]
    else:
        plain = range(len(records))  # type: ignore[assignment]
        recs = records  # type: ignore[assignment]
    counts = np.fromiter(map(bytes.count, recs, repeat(b"{")), np.int64, len(recs))
    counts += np.fromiter(map(bytes.count, recs, repeat(b"[")), np.int64, len(recs))
    suspects = np.flatnonzero(counts > limit).tolist()
    deep: list[int] = []
    group: list[int] = []
    size = 0
    for j in [*suspects, None]:
        if j is not None and len(recs[j]) > _SCAN_WINDOW:
            if _nesting_depth(recs[j], limit) > limit:
                deep.append(j)
            continue
        if group and (j is None or size + len(recs[j]) > _SCAN_WINDOW):
            depths = _nesting_depths([recs[k] for k in group])
            deep += [k for k, d in zip(group, depths.tolist(), strict=True) if d > limit]
            group, size = [], 0
        if j is not None:
            group.append(j)
            size += len(recs[j]) + 1
    for j in deep:
        records[plain[j]] = _TooLong(
            recs[j][: MAX_RAW_CHARS * 4],
            len(recs[j]),
            f"JSON nested too deeply: deeper than max_nesting_depth ({limit}), not parsed",
        )
    return bool(deep)


def _real_quotes(a: np.ndarray) -> np.ndarray:
    """Where ``a`` holds a ``"`` that is not escaped (not after an odd run of backslashes)."""
    quote = a == 34
    if not quote.any():
        return quote
    bs = a == 92
    if bs.any():
        qpos = np.flatnonzero(quote)
        last_other = np.maximum.accumulate(np.where(bs, -1, np.arange(len(a))))
        prev = qpos - 1
        run = np.where(prev >= 0, prev - last_other[np.maximum(prev, 0)], 0)
        quote[qpos[run % 2 == 1]] = False
    return quote


def _nesting_depths(group: list[bytes]) -> np.ndarray:
    """The nesting depth of each of a few small JSON records as a parser sees it (brackets in
    strings do not count; an unterminated string runs to the end of its record), vectorised
    over all of them."""
    a = np.frombuffer(b"\n".join(group), dtype=np.uint8)
    lengths = np.fromiter(map(len, group), dtype=np.int64, count=len(group)) + 1
    lengths[-1] -= 1  # the last record has no newline after it
    starts = np.concatenate(([0], np.cumsum(lengths[:-1])))
    quotes = np.cumsum(_real_quotes(a), dtype=np.int32)
    base = np.where(starts > 0, quotes[np.maximum(starts - 1, 0)], 0)
    inside = ((quotes - np.repeat(base, lengths)) & 1).astype(bool)
    running = np.cumsum(np.where(inside, 0, _DEPTH_STEP[a]), dtype=np.int32)
    deepest = np.maximum.reduceat(running, np.minimum(starts, len(a) - 1))
    before = np.where(starts > 0, running[np.maximum(starts - 1, 0)], 0)
    return np.asarray(deepest - before)


def _nesting_depth(record: bytes, limit: int) -> int:
    """The nesting depth of one (large) JSON record as ``_nesting_depths`` counts it, scanned
    in windows (bounded memory), or the first depth found above ``limit`` (it stops there)."""
    depth = deepest = 0
    inside = 0  # 1 inside a string at the end of the previous window
    escape = False  # the previous window ended with an odd run of backslashes
    for lo in range(0, len(record), _SCAN_WINDOW):
        window = record[lo : lo + _SCAN_WINDOW]
        a = np.frombuffer(b"\\" + window if escape else window, dtype=np.uint8)
        quotes = np.cumsum(_real_quotes(a), dtype=np.int32) + inside
        steps = np.where((quotes & 1).astype(bool), 0, _DEPTH_STEP[a])
        running = np.cumsum(steps, dtype=np.int64) + depth
        deepest = max(deepest, int(running.max()))
        if deepest > limit:
            return deepest
        depth, inside = int(running[-1]), int(quotes[-1]) & 1
        trailing = len(window) - len(window.rstrip(b"\\"))
        escape = (trailing + (1 if escape and trailing == len(window) else 0)) % 2 == 1
    return deepest


def _check_utf8(data: bytes) -> None:
    """``_RecordError`` unless ``data`` is valid UTF-8. Arrow validates the bytes in place
    (no copy, ~10x faster than ``bytes.decode``); Python only words the error."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    blob = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        blob.cast(pa.large_string())
    except pa.ArrowInvalid:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _RecordError(f"invalid UTF-8: {e}") from e
        raise _RecordError("invalid UTF-8") from None


def _one_block(data: bytes) -> dict[str, Any]:
    """Reader options for one pyarrow block holding the whole (bounded) input: no record can
    straddle blocks, and one block is one task (the thread pool would only add overhead:
    ~0.5 ms per call, most of a small object's parse)."""
    return {"block_size": max(1 << 16, len(data) + 1), "use_threads": False}


_TOO_DEEP = "malformed JSON: nested too deeply to parse"


class _JsonParser:
    """JSON lines. Declared schema: declared fields are parsed as their types, other fields
    are inferred and rescued. A record that fails on its own is re-parsed by ``rescue``:
    each field that does not parse as its type (declared) or at all (inferred) is rescued,
    the rest parsed; only text that is not a JSON object is quarantined."""

    def __init__(self, schema: pa.Schema | None):
        self.schema = schema
        self.coercer = _Coercer(schema) if schema is not None else None
        if schema is None:
            self.options = pa_json.ParseOptions()
        else:
            self.options = pa_json.ParseOptions(
                explicit_schema=_parse_schema(schema), unexpected_field_behavior="infer"
            )
        self._field_parsers: dict[str, _JsonParser] = {}
        self._any: _JsonParser | None = None

    def attempt(self, records: list[bytes]) -> pa.Table:
        data = b"\n".join(records)
        if _NOT_OBJECT_FIRST.match(data) or _NOT_OBJECT_LINE.search(data):
            raise _RecordError("a line is not a JSON object")
        return self.parse(data, len(records))

    def parse(self, data: bytes, n: int, max_depth: int | None = None) -> pa.Table:
        """``data``, ``n`` JSON lines that each start with ``{``, as a table of ``n`` rows
        (validated); ``_RecordError`` if they do not parse as that. ``max_depth``: the lines
        were not screened for nesting (``_guard_depth`` / ``_openers_within``), only kept short
        enough for pyarrow (``_fast_lines``): ``_RecordError`` also when a line may nest deeper
        (the parsed types nest deeper and a line holds more ``{``/``[``)."""
        _check_utf8(data)  # pyarrow's JSON reader does not validate UTF-8
        try:
            table = pa_json.read_json(
                io.BytesIO(data),
                read_options=pa_json.ReadOptions(**_one_block(data)),
                parse_options=self.options,
            )
        except _ARROW_ERRORS as e:
            raise _RecordError(str(e)) from e
        if table.num_rows != n:
            raise _RecordError(f"{n} line(s) held {table.num_rows} JSON values")
        if (
            max_depth is not None
            and 1 + max((_type_depth(f.type) for f in table.schema), default=0) > max_depth
            and not _openers_within(data, max_depth)
        ):
            raise _RecordError(f"a line may nest deeper than max_nesting_depth ({max_depth})")
        if self.coercer is not None:
            return self.coercer.coerce(self._extras_as_text(table, data))
        return _finish_inferred(table)

    def _extras_as_text(self, table: pa.Table, data: bytes) -> pa.Table:
        """Undeclared fields that pyarrow inferred as timestamps, read again as their text
        (a rescued value keeps its source form, e.g. ``"2020-01-01"``)."""
        assert self.schema is not None
        names = [
            f.name
            for f in table.schema
            if pa.types.is_timestamp(f.type) and self.schema.get_field_index(f.name) < 0
        ]
        if not names:
            return table
        try:
            text = pa_json.read_json(
                io.BytesIO(data),
                read_options=pa_json.ReadOptions(**_one_block(data)),
                parse_options=pa_json.ParseOptions(
                    explicit_schema=pa.schema([(n, pa.string()) for n in names]),
                    unexpected_field_behavior="ignore",
                ),
            )
        except _ARROW_ERRORS as e:
            raise _RecordError(str(e)) from e
        for n in names:
            table = table.set_column(table.schema.get_field_index(n), n, text.column(n))
        return table

    def screen(self, record: bytes) -> str | None:
        """Why ``record`` cannot be a row whatever its types (not UTF-8, not JSON, not an
        object)."""
        try:
            record.decode("utf-8")
        except UnicodeDecodeError as e:
            return f"invalid UTF-8: {e}"
        try:
            value = json.loads(record)
        except ValueError as e:
            return f"malformed JSON: {e}"
        except RecursionError:
            return _TOO_DEEP
        if not isinstance(value, dict):
            return f"not a JSON object (got {type(value).__name__})"
        return None

    def explain(self, record: bytes, err: _RecordError) -> str:
        return self.screen(record) or err.reason

    def rescue(self, record: bytes, err: _RecordError) -> pa.Table | str:
        """``record`` as a one-row table with its unfit fields rescued, or why it cannot be
        parsed at all. Duplicate keys: the last occurrence is parsed, earlier ones rescued."""
        try:
            return self._rescue(record, err)
        except RecursionError:
            return _TOO_DEEP

    def _rescue(self, record: bytes, err: _RecordError) -> pa.Table | str:
        try:
            record.decode("utf-8")
        except UnicodeDecodeError as e:
            return f"invalid UTF-8: {e}"
        dups: list[list[tuple[str, Any]]] = []

        def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            obj: dict[str, Any] = {}
            earlier: list[tuple[str, Any]] = []
            for k, v in pairs:
                if k in obj:
                    earlier.append((k, obj[k]))
                obj[k] = v
            dups.append(earlier)
            return obj

        try:
            value = json.loads(record, object_pairs_hook=pairs_hook)
        except ValueError as e:
            return f"malformed JSON: {e}"
        if not isinstance(value, dict):
            return f"not a JSON object (got {type(value).__name__})"
        rescued: list[tuple[str, Any]] = list(dups[-1]) if dups else []
        keep: dict[str, Any] = {}
        for k, v in value.items():
            if v is None or self._fits(k, v):
                keep[k] = v
            else:
                rescued.append((k, v))
        try:
            table = self.attempt([json.dumps(keep).encode()])
        except _RecordError as e:
            return f"cannot be parsed: {e.reason} (first error: {err.reason})"
        if not rescued:
            return table
        merged: dict[str, Any] = {}
        for k, v in rescued:
            name, n = k, 2
            while name in merged:
                name, n = f"{k}#{n}", n + 1
            merged[name] = v
        idx = table.schema.get_field_index(RESCUED)
        column = merge_column(table.column(idx), 1, {0: merged})
        return table.set_column(idx, RESCUED_FIELD, column)

    def _fits(self, name: str, value: Any) -> bool:
        """Whether ``{name: value}`` alone parses (as its declared type, if declared)."""
        declared = self.schema is not None and self.schema.get_field_index(name) >= 0
        if declared:
            assert self.schema is not None
            parser = self._field_parsers.get(name)
            if parser is None:
                field_ = self.schema.field(name)
                parser = self._field_parsers[name] = _JsonParser(pa.schema([field_]))
        else:
            parser = self._any = self._any or _JsonParser(None)
        try:
            table = parser.attempt([json.dumps({name: value}).encode()])
        except _RecordError:
            return False
        return not (declared and table.column(RESCUED).null_count == 0)


class _CsvParser:
    def __init__(self, names: list[str], fmt: FormatOptions, ctx: _Context):
        self.names = names
        self.ctx = ctx
        self.coercer = ctx.coercer
        opts = fmt.csv
        self.parse_kwargs: dict[str, Any] = {
            "delimiter": opts.delimiter,
            "quote_char": opts.quote_char if opts.quote_char else False,
            "double_quote": True,
            "newlines_in_values": bool(opts.quote_char),
            "ignore_empty_lines": True,
        }
        self.extras: list[str] = []
        if ctx.schema is not None:
            # Every column is read as text: declared ones are cast by ``_Coercer``, the others
            # (non-empty values) rescued.
            declared = set(ctx.schema.names)
            self.extras = [n for n in names if n not in declared]
            self.convert = pa_csv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            )
            # An ASCII block's text is valid UTF-8 already: read as binary (not validated
            # again, column by column: ~4% of D4's CPU) and viewed as text (``_as_text``).
            self.convert_ascii: pa_csv.ConvertOptions | None = pa_csv.ConvertOptions(
                column_types={n: pa.binary() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            )
        else:
            self.convert = pa_csv.ConvertOptions()
            self.convert_ascii = None

    @classmethod
    def start(
        cls, records: list[_Record], fmt: FormatOptions, ctx: _Context
    ) -> tuple[_CsvParser, list[_Record]]:
        """The parser for this object, from its first record (the header, if any)."""
        first = records[0]
        if isinstance(first, _TooLong):
            raise _Unreadable("the first CSV record exceeds max_record_bytes")
        fields = _csv_fields(first, fmt.csv)
        if fmt.csv.header:
            names = [n.strip() or f"f{i}" for i, n in enumerate(fields)]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise _Unreadable(f"CSV header repeats column names: {', '.join(dupes)}")
            return cls(names, fmt, ctx), records[1:]
        if ctx.schema is not None:
            names = list(ctx.schema.names)
        else:
            names = [f"f{i}" for i in range(len(fields))]
        return cls(names, fmt, ctx), records

    def attempt(self, records: list[bytes]) -> pa.Table:
        return self.attempt_block(b"\n".join(records), len(records))

    def attempt_block(self, block: bytes, n: int) -> pa.Table:
        """``block``, ``n`` records joined by newlines, parsed as a table of ``n`` rows;
        ``_RecordError`` if it does not parse as that."""
        data = block + b"\n"
        convert = self.convert
        if not data.isascii():
            # as the JSON reader does; pyarrow's row handler could not word such a row
            # (the error would be lost in its callback)
            _check_utf8(data)
        elif self.convert_ascii is not None:
            convert = self.convert_ascii
        bad: list[Any] = []

        def on_invalid(row: Any) -> str:
            bad.append(row)
            return "skip"

        try:
            table = pa_csv.read_csv(
                io.BytesIO(data),
                read_options=pa_csv.ReadOptions(column_names=self.names, **_one_block(data)),
                parse_options=pa_csv.ParseOptions(
                    invalid_row_handler=on_invalid, **self.parse_kwargs
                ),
                convert_options=convert,
            )
        except _ARROW_ERRORS as e:
            raise _RecordError(self._name_column(str(e))) from e
        if convert is self.convert_ascii:
            table = _as_text(table)
        if bad:
            row = bad[0]
            raise _RecordError(f"expected {row.expected_columns} fields, got {row.actual_columns}")
        if table.num_rows != n:
            raise _RecordError(f"{n} record(s) parsed as {table.num_rows} rows")
        for name in self.extras:  # an empty extra field holds nothing to rescue
            i = table.schema.get_field_index(name)
            col = table.column(i)
            empty = pc.equal(col, "")
            table = table.set_column(i, name, pc.if_else(empty, pa.scalar(None, col.type), col))
        return self.ctx.validate(table)

    screen = None
    rescue = None

    def explain(self, record: bytes, err: _RecordError) -> str:
        return err.reason

    def _name_column(self, message: str) -> str:
        m = re.search(r"In CSV column #(\d+): (?:Row #\d+: )?(.*)", message, re.S)
        if m:
            idx = int(m.group(1))
            cols = self.convert.include_columns or self.names
            if idx < len(cols):
                return f"field {cols[idx]!r}: {m.group(2)}"
        return message


def _as_text(table: pa.Table) -> pa.Table:
    """``table``'s binary columns as string columns, without a copy or a UTF-8 check: only for
    a table parsed from ASCII text (valid UTF-8 as it is)."""
    columns = [
        pa.chunked_array([chunk.view(pa.string()) for chunk in col.chunks], pa.string())
        if pa.types.is_binary(col.type)
        else col
        for col in table.columns
    ]
    fields = [
        pa.field(f.name, pa.string(), f.nullable) if pa.types.is_binary(f.type) else f
        for f in table.schema
    ]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _csv_fields(record: bytes, opts: CsvOptions) -> list[str]:
    text = record.decode("utf-8", errors="replace").rstrip("\r")
    if opts.quote_char:
        reader = csv.reader(io.StringIO(text), delimiter=opts.delimiter, quotechar=opts.quote_char)
    else:
        reader = csv.reader(io.StringIO(text), delimiter=opts.delimiter, quoting=csv.QUOTE_NONE)
    return next(reader, [])


# -- declared schema ---------------------------------------------------------------------------


def _parse_schema(schema: pa.Schema) -> pa.Schema:
    """What the JSON reader parses declared fields as: strings where pyarrow's JSON converter
    cannot take the text form (dates, timestamps, binary) — ``_Coercer`` casts them after."""
    fields = []
    for f in schema:
        if pa.types.is_date(f.type) or pa.types.is_timestamp(f.type) or pa.types.is_binary(f.type):
            fields.append(pa.field(f.name, pa.string()))
        else:
            fields.append(f)
    return pa.schema(fields)


class _Coercer:
    """Brings a parsed table to the declared schema: declared columns in declared order,
    missing ones null, strict casts, then ``_rescued_data``. A value that does not cast is
    null in its column and rescued (its source value) with its field name; fields not in the
    schema are rescued. Text is trimmed, and empty text is null for non-string types;
    timestamps accept an optional zone offset (``Z``, ``+02:00``) and are stored in UTC, text
    without an offset is taken as UTC."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.out_schema = pa.schema([*schema, RESCUED_FIELD])
        self.names = set(schema.names)

    def coerce(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        columns = []
        per_row: dict[int, dict[str, Any]] = {}
        for f in self.schema:
            idx = table.schema.get_field_index(f.name)
            if idx < 0:
                columns.append(pa.nulls(n, f.type))
                continue
            col = table.column(idx)
            if col.type == f.type:
                columns.append(single_array(col))
                continue
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):

                def convert(a: pa.Array, t: pa.DataType = f.type) -> pa.Array:
                    return _from_text(a, t)
            else:

                def convert(a: pa.Array, t: pa.DataType = f.type) -> pa.Array:
                    return pc.cast(a, t, safe=True)

            columns.append(convert_rescuing(col, convert, f.type, f.name, per_row))
        extras = [name for name in table.column_names if name not in self.names]
        rescued = extras_json(table, extras) if extras else None
        columns.append(merge_column(rescued, n, per_row))
        return pa.Table.from_arrays(columns, schema=self.out_schema)


#: A text timestamp ending in ``Z`` that pyarrow parses is ``YYYY-MM-DD[ T]hh`` (14 bytes
#: with the ``Z``, which ``_TZ_SUFFIX`` does not take as zoned) or longer forms with minutes
#: (which it does).
_ZONED_MIN_BYTES = 15


def _cast_text(col: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray | None:
    """``col`` (text, not to string/binary) cast in one step, when that gives exactly what
    ``_from_text``'s trimming, empty-to-null and zone split give, else None. A value pyarrow
    parses has no surrounding whitespace and is not empty. Timestamps: every value ends in
    ``Z`` (uppercase; no whitespace can follow it) and is at least ``_ZONED_MIN_BYTES`` long,
    so ``_TZ_SUFFIX`` takes each as zoned; or none ends in ``Z``, and a value pyarrow parses
    as naive has no offset that ``_TZ_SUFFIX`` could match."""
    try:
        if not pa.types.is_timestamp(target):
            return pc.cast(col, target)
        zoned = pc.ends_with(col, "Z")
        if pc.all(zoned).as_py() and (pc.min(pc.binary_length(col)).as_py() or 0) >= (
            _ZONED_MIN_BYTES
        ):
            return pc.cast(pc.cast(col, pa.timestamp(target.unit, tz="UTC")), target)
        if not pc.any(zoned).as_py():
            return pc.cast(pc.cast(col, pa.timestamp(target.unit)), target)
    except _ARROW_ERRORS:
        pass
    return None


def _from_text(col: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        return pc.cast(col, target)
    if pa.types.is_binary(target) or pa.types.is_large_binary(target):
        return pc.cast(col, target)
    fast = _cast_text(col, target)
    if fast is not None:
        return fast
    text = pc.utf8_trim_whitespace(col)
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    if pa.types.is_boolean(target):
        return pc.cast(pc.utf8_lower(text), target)
    if pa.types.is_timestamp(target):
        has_zone = pc.match_substring_regex(text, _TZ_SUFFIX)
        null = pa.scalar(None, pa.string())
        zoned = pc.cast(pc.if_else(has_zone, text, null), pa.timestamp(target.unit, tz="UTC"))
        naive = pc.cast(pc.if_else(has_zone, null, text), pa.timestamp(target.unit))
        return pc.if_else(has_zone, pc.cast(zoned, target), pc.cast(naive, target))
    return pc.cast(text, target)


# -- parquet -----------------------------------------------------------------------------------


def _read_parquet(stream: _Decoded, fmt: FormatOptions, ctx: _Context) -> Iterator[ReadChunk]:
    """Parquet needs random access: the object is spooled to a local temporary file (disk,
    not memory), then read one bounded batch at a time.

    Bounded whatever the file claims: every text/binary leaf is read dictionary-encoded (a few
    hundred bytes of dictionary pages and run-length indices can stand for gigabytes once
    decoded), the rows of a read batch are capped by the footer's uncompressed bytes per row
    so a batch stays near ``block_bytes``, and each row's decoded size is computed from the
    encoded batch (``_decoded_row_sizes``) before anything is decoded: a row larger than
    ``max_record_bytes`` is quarantined unread, and the others are decoded in runs of at most
    ``block_bytes`` (or one row)."""
    import pyarrow.parquet as pq  # only Parquet sources: ~20 ms before a JSON/CSV first read

    with tempfile.TemporaryFile(prefix="lockgate-parquet-") as spool:
        _spool(stream, spool)
        spool.seek(0)
        try:
            pf = pq.ParquetFile(spool)
            encoded = [
                c.path
                for c in pf.schema
                if c.physical_type in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY")
            ]
            plain = plain_schema(pf.schema_arrow)
            meta = pf.metadata
            spool.seek(0)
            pf = pq.ParquetFile(spool, read_dictionary=encoded or None)
        except (*_ARROW_ERRORS, OSError) as e:
            raise _Unreadable(f"not a readable Parquet file: {e}") from e
        # One row group at a time: a batch never spans two dictionaries (pyarrow cannot read
        # nested dictionary-encoded data across them).
        for group in range(meta.num_row_groups):
            try:
                rg = meta.row_group(group)
                per_row = rg.total_byte_size / max(1, rg.num_rows)
            except (*_ARROW_ERRORS, OSError) as e:
                raise _Unreadable(f"corrupt Parquet footer: {e}") from e
            rows = int(max(1, min(fmt.parquet_batch_rows, fmt.block_bytes // max(1.0, per_row))))
            batches = pf.iter_batches(batch_size=rows, row_groups=[group])
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (*_ARROW_ERRORS, OSError) as e:
                    raise _Unreadable(f"corrupt Parquet data: {e}") from e
                yield from _parquet_batch(pa.Table.from_batches([batch]), plain, fmt, ctx)


def _parquet_batch(
    table: pa.Table, plain: pa.Schema, fmt: FormatOptions, ctx: _Context
) -> Iterator[ReadChunk]:
    """One read batch (text leaves still dictionary-encoded): oversized rows quarantined, the
    rest decoded and parsed in runs of at most ``block_bytes``."""
    try:
        sizes = _decoded_row_sizes(table)
    except (*_ARROW_ERRORS, ValueError) as e:
        raise _Unreadable(f"corrupt Parquet data: {e}") from e
    n = table.num_rows
    lo = 0
    while lo < n:
        # a run: rows while their decoded sizes fit the budget (at least one row)
        total = np.cumsum(sizes[lo:], dtype=np.int64)
        hi = lo + max(1, int(np.searchsorted(total, fmt.block_bytes, side="right")))
        run = table.slice(lo, hi - lo)
        records: list[_Record] = []
        for i in range(hi - lo):
            size = int(sizes[lo + i])
            if size > fmt.max_record_bytes:
                reason = (
                    f"Parquet row of {size} bytes (decoded) exceeds max_record_bytes "
                    f"({fmt.max_record_bytes}): not decoded"
                )
                records.append(_TooLong(b"", size, reason))
            else:
                records.append(str(i).encode())
        decoded: dict[tuple[int, int], pa.Table] = {}

        def attempt(
            rows: list[bytes],
            _run: pa.Table = run,
            _cache: dict[tuple[int, int], pa.Table] = decoded,
        ) -> pa.Table:
            a, b = int(rows[0]), int(rows[-1]) + 1
            return ctx.validate(_decode(_run, a, b, plain, _cache))

        def explain(row: bytes, err: _RecordError) -> str:
            return err.reason

        base = ctx.next_index
        chunks = _process_block(ctx, records, attempt, explain, fmt.max_record_bytes, scan=True)
        for chunk in chunks:
            chunk.quarantined = [
                q
                if q.reason.startswith("Parquet row of")
                else QuarantineRecord(
                    q.source_key,
                    q.source_etag,
                    q.record_index,
                    _row_text(_decode(run, i, i + 1, plain, decoded), 0),
                    q.reason,
                )
                for q in chunk.quarantined
                for i in [(q.record_index or 0) - base]
            ]
            yield chunk
        lo = hi


def _decode(
    run: pa.Table, a: int, b: int, plain: pa.Schema, cache: dict[tuple[int, int], pa.Table]
) -> pa.Table:
    """Rows ``a:b`` of ``run`` with dictionary-encoded leaves decoded (only rows known to fit)."""
    if (a, b) not in cache:
        cache.clear()  # one decoded range at a time
        part = run.slice(a, b - a)
        try:
            cache[(a, b)] = part.cast(pa.schema([plain.field(name) for name in part.column_names]))
        except _ARROW_ERRORS as e:
            raise _RecordError(f"cannot decode Parquet values: {e}") from e
    return cache[(a, b)]


def _decoded_row_sizes(table: pa.Table) -> np.ndarray:
    """Bytes each row takes once decoded (value bytes of every leaf, offsets included),
    computed on the encoded columns: nothing is decoded."""
    total = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        pos = 0
        for chunk in column.chunks:
            total[pos : pos + len(chunk)] += _element_sizes(chunk)
            pos += len(chunk)
    return total


def _element_sizes(arr: pa.Array) -> np.ndarray:
    """Decoded bytes of each element of ``arr`` (see ``_decoded_row_sizes``)."""
    t = arr.type
    n = len(arr)
    if pa.types.is_dictionary(arr.type):
        values = _element_sizes(arr.dictionary)
        idx = arr.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        out = values[idx] if len(values) else np.zeros(n, dtype=np.int64)
        return np.where(arr.is_null().to_numpy(zero_copy_only=False), 0, out)
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        lengths = pc.binary_length(arr).fill_null(0)
        return np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64) + 4
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        child = _element_sizes(arr.values)
        offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        cum = np.concatenate(([0], np.cumsum(child, dtype=np.int64)))
        return cum[offsets[1:]] - cum[offsets[:-1]] + 8
    if pa.types.is_fixed_size_list(t):
        child = _element_sizes(arr.flatten())
        return np.asarray(child.reshape(n, t.list_size).sum(axis=1), dtype=np.int64)
    if pa.types.is_struct(t):
        out = np.zeros(n, dtype=np.int64)
        for field_array in arr.flatten():
            out += _element_sizes(field_array)
        return out
    try:
        width = max(1, t.bit_width // 8)
    except ValueError:
        width = 16  # other types: a bounded guess
    return np.full(n, width, dtype=np.int64)


def _row_text(table: pa.Table, i: int) -> str:
    row = table.slice(i, 1).to_pylist()[0]
    return json.dumps(row, default=str)[:MAX_RAW_CHARS]


def _spool(stream: _Decoded, out: IO[bytes]) -> None:
    while True:
        data = stream.read(1 << 20)
        if not data:
            return
        out.write(data)


__all__ = [
    "COMPRESSION_SUFFIXES",
    "QUARANTINE_SCHEMA",
    "SMALL_OBJECT_BYTES",
    "SOURCE_ROW",
    "FormatOptions",
    "ObjectCounts",
    "QuarantineRecord",
    "ReadChunk",
    "ReadMeter",
    "SmallObjectsRead",
    "compression_for_key",
    "count_accounting",
    "int64_array",
    "is_small_object",
    "quarantine_batch",
    "read_object",
    "read_small_objects",
]
