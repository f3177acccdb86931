"""``verify --deep``: re-read the committed objects from the landing with a counter that shares
no code with staging, and compare with the tables, object by object.

For every object of every committed batch (of the chosen days; all of them, or a random
sample of ``sample``), the object version the claim names (``key``, ``etag``) is read again:

* its bytes as stored are counted and must equal the claim's size;
* its records are counted independently of ``lockgate.pipelines.formats``: non-blank lines
  for JSON lines (after decompression, by key suffix), records after the header by Python's
  ``csv`` module for CSV, the footer's row count for Parquet;
* that count must equal ``rows in the table + entries in the quarantine table`` with that
  ``(_batch_id, _source_key, _source_etag)``.

The tables are read data file by data file (lineage columns only), so a data file that is
gone is reported by name instead of failing the audit. Objects that cannot be read again
(deleted or re-written since their claim) are listed as unavailable, not counted as
mismatches; objects the run quarantined whole (an unreadable object or rest: a
``_source_row`` null entry) are not recounted, since no independent count can say how many
records an unreadable object holds. Objects that the batch's latest accounting (its latest
rebuild record, else its commit record) lists as changed/gone before read contributed nothing
and are counted as ``not_read``, not re-read. Each object is read in the landing its claim
was made in (a moved source's earlier objects in the earlier landing). Every mismatch names
its batch and key.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import io
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, BinaryIO, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.exceptions import NoSuchTableError

from lockgate.resources.config import SourceConfig
from lockgate.resources.ledger import Claim, ClaimedObject, UnknownBatch
from lockgate.resources.runtime import Runtime, quarantine_table
from lockgate.resources.store import NotFound, ObjectChanged, ObjectStore, SizeMismatch

MAX_VIOLATIONS = 1000
_CHUNK = 1 << 20
#: An object's rows are those of its batch with its key and etag (batch ids keep two sources
#: of one table, or two versions of one key, apart).
_OBJECT = ("_batch_id", "_source_key", "_source_etag")

#: ``progress(done, total)``, called after each object.
Progress = Callable[[int, int], None]


@dataclass
class DeepReport:
    source: str
    table: str
    objects: int = 0  # objects of committed batches in scope (after sampling)
    checked: int = 0  # objects re-read and recounted
    records: int = 0  # records counted in the checked objects
    not_recounted: int = 0  # quarantined whole by the run: no independent count
    not_read: int = 0  # recorded as changed/gone before read by the batch's latest accounting
    unavailable: list[str] = field(default_factory=list)  # gone or re-written since claimed
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def violation(self, text: str) -> None:
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(text)
        elif len(self.violations) == MAX_VIOLATIONS:
            self.violations.append("... more violations not listed")

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "table": self.table,
            "ok": self.ok,
            "objects": self.objects,
            "checked": self.checked,
            "records": self.records,
            "not_recounted": self.not_recounted,
            "not_read": self.not_read,
            "unavailable": self.unavailable,
            "violations": self.violations,
        }


class _Unrecountable(Exception):
    """The object's content cannot be counted (bad compression, not Parquet...)."""


def verify_deep(
    rt: Runtime,
    source: SourceConfig,
    days: tuple[date, date] | None = None,
    sample: int | None = None,
    progress: Progress | None = None,
    rng: random.Random | None = None,
) -> DeepReport:
    """Re-read the objects of ``source``'s committed batches (of ``days``, inclusive, if
    given; ``sample`` of them at random, if given) and compare; see the module contract."""
    report = DeepReport(source.name, source.table)
    objects = _committed_objects(rt, source, days, report)
    if sample is not None and sample < len(objects):
        objects = sorted((rng or random.Random()).sample(objects, sample), key=lambda o: o[:2])
    report.objects = len(objects)
    if not objects:
        return report
    rows = _lineage_counts(rt, source.table, days, report)
    quarantined = _lineage_counts(rt, quarantine_table(source), days, report)
    whole = _quarantined_whole(rt, quarantine_table(source), days)
    ledger = rt.ledger(source)
    claims = {b: ledger.get_claim(b) for b in sorted({b for b, _k, _o in objects})}
    read_rt, _deleted = rt.archive_aware(source, ledger, list(claims.values()))
    for done, (batch_id, _key, obj) in enumerate(objects, start=1):
        ident = (batch_id, obj.key, obj.etag)
        account = ledger.account(batch_id)
        if account is not None and obj.key in (account.unread or {}):
            report.not_read += 1  # that version contributed nothing: no count to compare
        elif ident in whole:
            report.not_recounted += 1
        else:
            # where it was claimed; archived objects from their recorded copies
            landing = read_rt.claim_landing(source, claims[batch_id])
            _check_object(landing, source, batch_id, obj, rows[ident], quarantined[ident], report)
        if progress is not None:
            progress(done, len(objects))
    return report


def _committed_objects(
    rt: Runtime, source: SourceConfig, days: tuple[date, date] | None, report: DeepReport
) -> list[tuple[int, str, ClaimedObject]]:
    """``(batch_id, key, object)`` of every object of a batch the table's marker holds."""
    marker = rt.tables.committed(source.table, source.name)
    ledger = rt.ledger(source)
    claims: list[Claim] = []
    if days is not None:
        day = days[0]
        while day <= days[1]:
            claims += [c for c in ledger.claims_for_partition(day.isoformat())]
            day += timedelta(days=1)
        claims = [c for c in claims if c.batch_id in marker]
    else:
        for b in marker:
            try:
                claims.append(ledger.get_claim(b))
            except UnknownBatch:
                report.violation(f"batch {b} is marked committed but has no claim")
    return [(c.batch_id, o.key, o) for c in claims for o in c.objects]


def _day_filter(days: tuple[date, date] | None) -> str:
    if days is None:
        return "True"
    return f"_day >= '{days[0].isoformat()}' and _day <= '{days[1].isoformat()}'"


def _data_files(
    rt: Runtime, identifier: str, days: tuple[date, date] | None, columns: tuple[str, ...]
) -> Iterator[tuple[str, pa.Table | Exception]]:
    """``(path, columns of its rows)`` per data file of the table's current snapshot (the
    exception instead, when the file cannot be read)."""
    try:
        table = rt.tables.load(identifier)
    except NoSuchTableError:
        return
    scan = table.scan(row_filter=_day_filter(days), selected_fields=columns)
    for task in scan.plan_files():
        path = task.file.file_path
        try:
            with table.io.new_input(path).open() as f:
                data = pq.read_table(f, columns=list(columns))
        except Exception as e:  # a missing or corrupt file is a finding, not a crash
            yield path, e
            continue
        yield path, data


def _lineage_counts(
    rt: Runtime, identifier: str, days: tuple[date, date] | None, report: DeepReport
) -> Counter[tuple[int, str, str]]:
    counts: Counter[tuple[int, str, str]] = Counter()
    for path, data in _data_files(rt, identifier, days, _OBJECT):
        if isinstance(data, Exception):
            report.violation(
                f"{identifier}: data file {path} cannot be read: {type(data).__name__}: {data}"
            )
            continue
        for r in data.group_by(list(_OBJECT)).aggregate([("_source_key", "count")]).to_pylist():
            counts[(r["_batch_id"], r["_source_key"], r["_source_etag"])] += r["_source_key_count"]
    return counts


def _quarantined_whole(
    rt: Runtime, identifier: str, days: tuple[date, date] | None
) -> set[tuple[int, str, str]]:
    """Objects with a ``_source_row`` null quarantine entry (unreadable, or an unreadable
    rest). Unreadable files were reported by ``_lineage_counts`` already."""
    found: set[tuple[int, str, str]] = set()
    for _path, data in _data_files(rt, identifier, days, (*_OBJECT, "_source_row")):
        if isinstance(data, Exception):
            continue
        nulls = data.filter(pc.is_null(data.column("_source_row")))
        columns = [nulls.column(name).to_pylist() for name in _OBJECT]
        found.update(zip(*columns, strict=True))
    return found


def _check_object(
    landing: ObjectStore,
    source: SourceConfig,
    batch_id: int,
    obj: ClaimedObject,
    rows: int,
    quarantined: int,
    report: DeepReport,
) -> None:
    where = f"batch {batch_id} object {obj.key!r}"
    try:
        with landing.open(obj.key, etag=obj.etag, size=obj.size) as raw:
            counted = _Counted(raw)
            records = count_records(counted, obj.key, source)
            counted.drain()
    except (NotFound, ObjectChanged):
        report.unavailable.append(obj.key)
        return
    except SizeMismatch as e:
        report.violation(f"{where}: {e}")
        return
    except _Unrecountable as e:
        report.violation(f"{where}: cannot be recounted ({e}) but was not quarantined whole")
        return
    if counted.count != obj.size:
        report.violation(f"{where}: read {counted.count} bytes, the claim says {obj.size}")
        return
    report.checked += 1
    report.records += records
    if records != rows + quarantined:
        report.violation(
            f"{where} (etag {obj.etag}): {records} records in the object but {rows} rows + "
            f"{quarantined} quarantined in the tables"
        )


class _Counted(io.RawIOBase):
    """A stream that counts the bytes taken from it."""

    def __init__(self, raw: BinaryIO):
        super().__init__()
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.raw.read(len(view))
        view[: len(data)] = data
        self.count += len(data)
        return len(data)

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _decompressed(stream: _Counted, key: str) -> io.BufferedIOBase:
    buffered = io.BufferedReader(stream, buffer_size=_CHUNK)
    lower = key.lower()
    if lower.endswith(".gz"):
        return gzip.GzipFile(fileobj=buffered, mode="rb")
    if lower.endswith(".bz2"):
        return bz2.BZ2File(buffered, mode="rb")
    if lower.endswith(".zst"):
        native = pa.CompressedInputStream(pa.PythonFile(buffered, mode="r"), "zstd")
        return io.BufferedReader(_NativeRaw(native), buffer_size=_CHUNK)
    return buffered


class _NativeRaw(io.RawIOBase):
    def __init__(self, native: Any):
        super().__init__()
        self.native = native

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.native.read(len(view))
        view[: len(data)] = data
        return len(data)


def count_records(stream: _Counted, key: str, source: SourceConfig) -> int:
    """Records in one object, counted without the staging code (see the module contract)."""
    try:
        if source.format == "parquet":
            return _parquet_rows(_decompressed(stream, key))
        text = _decompressed(stream, key)
        if source.format == "jsonl":
            return _jsonl_lines(text)
        return _csv_rows(text, source)
    except (OSError, EOFError, ValueError, csv.Error, pa.ArrowException) as e:
        raise _Unrecountable(f"{type(e).__name__}: {e}") from e


def _jsonl_lines(data: io.BufferedIOBase) -> int:
    count, carry, first = 0, b"", True
    while True:
        chunk = data.read(_CHUNK)
        if first and chunk.startswith(b"\xef\xbb\xbf"):
            chunk = chunk[3:]
        first = first and not chunk
        if not chunk:
            return count + (1 if carry.strip() else 0)
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        count += sum(1 for line in lines if line.strip())


def _csv_rows(data: io.BufferedIOBase, source: SourceConfig) -> int:
    opts = source.csv
    text = io.TextIOWrapper(
        cast(BinaryIO, data), encoding="utf-8-sig", errors="replace", newline=""
    )
    if opts.quote_char:
        reader = csv.reader(text, delimiter=opts.delimiter, quotechar=opts.quote_char)
    else:
        reader = csv.reader(text, delimiter=opts.delimiter, quoting=csv.QUOTE_NONE)
    limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)
    try:
        rows = sum(1 for row in reader if row)
    finally:
        csv.field_size_limit(limit)
    return max(0, rows - 1) if opts.header else rows


def _parquet_rows(data: io.BufferedIOBase) -> int:
    with tempfile.TemporaryFile(prefix="lockgate-deep-") as spool:
        while chunk := data.read(_CHUNK):
            spool.write(chunk)
        if not spool.tell():
            return 0
        spool.seek(0)
        with contextlib.closing(pq.ParquetFile(spool)) as pf:
            return int(pf.metadata.num_rows)


__all__ = ["DeepReport", "count_records", "verify_deep"]
