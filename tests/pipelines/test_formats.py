"""Object readers: formats, compression, magic bytes, per-record quarantine, accounting,
bounded memory. Runs on both store backends (local folder, moto S3 over HTTP) where it reads
through the store."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import subprocess
import sys
import textwrap
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.pipelines.formats import (
    QUARANTINE_SCHEMA,
    SOURCE_ROW,
    FormatOptions,
    ObjectCounts,
    QuarantineRecord,
    ReadChunk,
    VersionNotRead,
    _Coercer,
    compression_for_key,
    count_accounting,
    quarantine_batch,
    read_object,
)
from lockgate.pipelines.rescue import RESCUED
from lockgate.resources.config import CsvOptions
from lockgate.resources.ledger import CHANGED_BEFORE_READ, GONE_BEFORE_READ
from lockgate.resources.store import LocalStore, ObjectStore

REPO = Path(__file__).resolve().parents[2]

JSONL = FormatOptions("jsonl")
CSV = FormatOptions("csv")
PARQUET = FormatOptions("parquet")

EVENTS = pa.schema(
    [
        ("id", pa.int64()),
        ("ts", pa.timestamp("us")),
        ("name", pa.string()),
    ]
)


def compress(data: bytes, compression: str | None) -> bytes:
    if compression == "gzip":
        return gzip.compress(data)
    if compression == "bz2":
        return bz2.compress(data)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


SUFFIX = {None: "", "gzip": ".gz", "bz2": ".bz2", "zstd": ".zst"}


def read_all(
    store: ObjectStore, key: str, fmt: FormatOptions, schema: pa.Schema | None = None
) -> tuple[list[dict[str, object]], list[QuarantineRecord], list[ReadChunk]]:
    chunks = list(read_object(store, key, store.head(key).etag, fmt, schema))
    rows: list[dict[str, object]] = []
    quarantined: list[QuarantineRecord] = []
    for c in chunks:
        assert c.batch.schema.names[-1] == SOURCE_ROW
        assert c.batch.schema.field(SOURCE_ROW).type == pa.int64()
        rows.extend(c.batch.to_pylist())
        quarantined.extend(c.quarantined)
    return rows, quarantined, chunks


def assert_partition(rows: list[dict[str, object]], quarantined: list[QuarantineRecord], n: int):
    """Every record index 0..n-1 is exactly one row or one quarantine entry."""
    seen = [r[SOURCE_ROW] for r in rows] + [q.record_index for q in quarantined]
    assert sorted(seen) == list(range(n))  # type: ignore[type-var]
    row_idx = [r[SOURCE_ROW] for r in rows]
    assert row_idx == sorted(row_idx)  # type: ignore[type-var]


# -- suffixes and magic -----------------------------------------------------------------------


def test_compression_for_key() -> None:
    assert compression_for_key("a/b.jsonl.gz") == "gzip"
    assert compression_for_key("a/b.csv.ZST") == "zstd"
    assert compression_for_key("a/b.jsonl.bz2") == "bz2"
    assert compression_for_key("a/b.jsonl") is None
    assert compression_for_key("a/gz") is None


@pytest.mark.parametrize("compression", [None, "gzip", "zstd", "bz2"])
def test_jsonl_each_compression(store: ObjectStore, compression: str | None) -> None:
    data = b"".join(
        json.dumps({"id": i, "ts": f"2026-01-02T03:04:{i % 60:02d}Z", "name": f"n{i}"}).encode()
        + b"\n"
        for i in range(500)
    )
    key = f"landing/dt=2026-01-02/part.jsonl{SUFFIX[compression]}"
    store.put(key, compress(data, compression))
    rows, quarantined, _ = read_all(store, key, JSONL, EVENTS)
    assert quarantined == []
    assert [r["id"] for r in rows] == list(range(500))
    assert rows[7]["ts"] == datetime(2026, 1, 2, 3, 4, 7)
    assert_partition(rows, quarantined, 500)


@pytest.mark.parametrize("compression", [None, "gzip", "zstd", "bz2"])
def test_csv_each_compression(store: ObjectStore, compression: str | None) -> None:
    data = b"id,name\n" + b"".join(f"{i},n{i}\n".encode() for i in range(300))
    key = f"orders/o.csv{SUFFIX[compression]}"
    store.put(key, compress(data, compression))
    rows, quarantined, _ = read_all(store, key, CSV)
    assert quarantined == []
    assert [(r["id"], r["name"]) for r in rows] == [(i, f"n{i}") for i in range(300)]


@pytest.mark.parametrize(
    ("key", "content", "needle"),
    [
        ("a.jsonl.gz", b'{"id": 1}\n', "gzip"),
        ("a.jsonl.zst", gzip.compress(b'{"id": 1}\n'), "zstd"),
        ("a.jsonl.bz2", b'{"id": 1}\n', "bz2"),
        ("a.jsonl", gzip.compress(b'{"id": 1}\n'), ".gz suffix"),
        ("a.csv", zstandard.ZstdCompressor().compress(b"id\n1\n"), ".zst suffix"),
        ("a.jsonl", bz2.compress(b'{"id": 1}\n'), ".bz2 suffix"),
        ("a.parquet", b"id,name\n1,x\n", "not a Parquet file"),
    ],
    ids=["gz-plain", "zst-gzip", "bz2-plain", "plain-gzip", "plain-zstd", "plain-bz2", "parquet"],
)
def test_magic_mismatch_is_whole_object_quarantine(
    local_store: ObjectStore, key: str, content: bytes, needle: str
) -> None:
    store = local_store
    store.put(key, content)
    fmt = FormatOptions(
        "parquet" if key.endswith("parquet") else "csv" if ".csv" in key else "jsonl"
    )
    rows, quarantined, chunks = read_all(store, key, fmt)
    assert rows == []
    assert len(quarantined) == 1
    assert quarantined[0].record_index is None
    assert needle in quarantined[0].reason
    counts = count_accounting(chunks)
    assert (counts.rows, counts.quarantined, counts.records, counts.unreadable) == (0, 1, 1, True)


def test_text_starting_with_bzh_is_not_mistaken_for_bz2(local_store: ObjectStore) -> None:
    local_store.put("a.csv", b"BZh,x\n1,2\n")
    rows, quarantined, _ = read_all(local_store, "a.csv", CSV)
    assert quarantined == [] and rows == [{"BZh": 1, "x": 2, RESCUED: None, SOURCE_ROW: 0}]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "bz2"])
def test_truncated_compression_keeps_rows_and_quarantines_the_rest(
    local_store: ObjectStore, compression: str
) -> None:
    data = b"".join(json.dumps({"id": i, "pad": "x" * 50}).encode() + b"\n" for i in range(20000))
    blob = compress(data, compression)
    local_store.put("t.jsonl" + SUFFIX[compression], blob[: len(blob) * 2 // 3])
    fmt = FormatOptions("jsonl", block_bytes=64 * 1024)
    rows, quarantined, chunks = read_all(local_store, "t.jsonl" + SUFFIX[compression], fmt)
    assert len(quarantined) == 1 and quarantined[0].record_index is None
    assert "unreadable" in quarantined[0].reason or "error" in quarantined[0].reason
    assert [r["id"] for r in rows] == list(range(len(rows)))  # a clean prefix, in order
    assert len(rows) < 20000
    assert count_accounting(chunks).records == len(rows) + 1


def test_empty_object_has_no_records(store: ObjectStore) -> None:
    store.put("e.jsonl.gz", b"")
    rows, quarantined, chunks = read_all(store, "e.jsonl.gz", JSONL)
    assert (rows, quarantined) == ([], [])
    assert count_accounting(chunks).records == 0


def test_missing_and_changed_objects(store: ObjectStore) -> None:
    store.put("a.jsonl", b'{"id": 1}\n')
    etag = store.head("a.jsonl").etag
    store.put("a.jsonl", b'{"id": 1}\n{"id": 2}\n')  # new version under the same key
    # the claimed version is gone: not read, so nothing of it is a row or a quarantine entry
    with pytest.raises(VersionNotRead) as changed:
        list(read_object(store, "a.jsonl", etag, JSONL, None))
    assert (changed.value.key, changed.value.etag) == ("a.jsonl", etag)
    assert changed.value.outcome == CHANGED_BEFORE_READ
    with pytest.raises(VersionNotRead) as missing:
        list(read_object(store, "nope.jsonl", "etag-x", JSONL, EVENTS))
    assert missing.value.outcome == GONE_BEFORE_READ


# -- JSON lines -------------------------------------------------------------------------------


def test_malformed_lines_do_not_lose_their_block(store: ObjectStore) -> None:
    lines: list[bytes] = []
    bad = {3, 17, 18, 400, 1999}
    for i in range(2000):
        if i in bad:
            lines.append(b'{"id": ' + str(i).encode() + b', "name": "unterminated')
        else:
            lines.append(json.dumps({"id": i, "name": f"n{i}"}).encode())
    store.put("m.jsonl", b"\n".join(lines) + b"\n")
    fmt = FormatOptions("jsonl", block_bytes=8 * 1024)  # many blocks, several with a bad line
    for schema in (EVENTS, None):
        rows, quarantined, chunks = read_all(store, "m.jsonl", fmt, schema)
        assert {q.record_index for q in quarantined} == bad
        assert all(q.reason.startswith("malformed JSON") for q in quarantined)
        assert quarantined[0].raw == lines[3].decode()
        assert [r["id"] for r in rows] == [i for i in range(2000) if i not in bad]
        assert all(r["id"] == r[SOURCE_ROW] for r in rows)
        counts = count_accounting(chunks)
        assert (counts.rows, counts.quarantined, counts.records) == (1995, 5, 2000)


def test_blank_lines_are_not_records(local_store: ObjectStore) -> None:
    local_store.put("b.jsonl", b'\n{"id": 0}\n\n   \n{"id": 1}\r\n\n{"id": 2}')
    rows, quarantined, _ = read_all(local_store, "b.jsonl", JSONL)
    assert quarantined == []
    assert [(r["id"], r[SOURCE_ROW]) for r in rows] == [(0, 0), (1, 1), (2, 2)]


def test_declared_schema_casts_and_rescues_by_field(local_store: ObjectStore) -> None:
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("ts", pa.timestamp("us")),
            ("at", pa.timestamp("us", tz="UTC")),
            ("day", pa.date32()),
            ("amount", pa.decimal128(10, 2)),
            ("ok", pa.bool_()),
            ("blob", pa.binary()),
            ("small", pa.int32()),
            ("ratio", pa.float32()),
        ]
    )
    records = [
        {
            "id": 1,
            "ts": "2026-01-02T10:00:00+02:00",
            "at": "2026-01-02T10:00:00Z",
            "day": "2026-01-02",
            "amount": "12.34",
            "ok": True,
            "blob": "abc",
            "small": 7,
            "ratio": 0.5,
            "extra": {"ignored": True},
        },
        {"id": 2},  # missing fields are null
        {"id": "two"},
        {"id": 4, "day": "2026-02-30"},
        {"id": 5, "small": 2**40},
        {"id": 6, "amount": "1.234"},
        {"id": 7, "ts": "2026-01-02 03:04:05"},
    ]
    local_store.put("s.jsonl", b"\n".join(json.dumps(r).encode() for r in records))
    rows, quarantined, _ = read_all(local_store, "s.jsonl", JSONL, schema)
    assert quarantined == []
    assert_partition(rows, quarantined, len(records))
    first = rows[0]
    assert first["ts"] == datetime(2026, 1, 2, 8, 0)  # stored in UTC
    assert first["at"] is not None and first["at"].hour == 10  # type: ignore[attr-defined]
    assert first["day"] == date(2026, 1, 2)
    assert first["amount"] == Decimal("12.34")
    assert (first["ok"], first["blob"], first["small"], first["ratio"]) == (True, b"abc", 7, 0.5)
    assert "extra" not in first and json.loads(first[RESCUED]) == {"extra": {"ignored": True}}
    assert rows[1] == {**{f: None for f in schema.names}, "id": 2, RESCUED: None, SOURCE_ROW: 1}
    assert rows[-1]["ts"] == datetime(2026, 1, 2, 3, 4, 5)
    rescued = {r[SOURCE_ROW]: json.loads(r[RESCUED]) for r in rows if r[RESCUED] is not None}
    assert rescued == {
        0: {"extra": {"ignored": True}},
        2: {"id": "two"},
        3: {"day": "2026-02-30"},
        4: {"small": 2**40},
        5: {"amount": "1.234"},
    }
    assert (rows[2]["id"], rows[3]["day"], rows[4]["small"], rows[5]["amount"]) == (None,) * 4
    assert (rows[3]["id"], rows[4]["id"], rows[5]["id"]) == (4, 5, 6)


def test_inferred_schema_and_reserved_names(local_store: ObjectStore) -> None:
    local_store.put(
        "i.jsonl",
        b'{"a": 1, "b": "x"}\n{"a": 2, "_source_row": 99}\n{"a": 3, "nested": {"k": [1, 2]}}\n',
    )
    rows, quarantined, _ = read_all(local_store, "i.jsonl", JSONL)
    assert quarantined == []
    assert [r["a"] for r in rows] == [1, 2, 3]
    assert json.loads(rows[1][RESCUED]) == {"_source_row": 99}
    assert rows[2]["nested"] == {"k": [1, 2]}


def test_non_object_and_multi_value_lines(local_store: ObjectStore) -> None:
    local_store.put("n.jsonl", b'[1, 2]\n"text"\n{"a": 1} {"a": 2}\n{"a": 3}\n')
    rows, quarantined, _ = read_all(local_store, "n.jsonl", JSONL)
    assert [r["a"] for r in rows] == [3]
    assert [q.record_index for q in quarantined] == [0, 1, 2]
    assert "not a JSON object" in quarantined[0].reason


def test_oversized_record_is_quarantined_not_buffered(local_store: ObjectStore) -> None:
    huge = b'{"id": 1, "pad": "' + b"x" * 300_000 + b'"}'
    local_store.put("o.jsonl", b'{"id": 0}\n' + huge + b'\n{"id": 2}\n')
    fmt = FormatOptions("jsonl", max_record_bytes=50_000, block_bytes=16 * 1024)
    rows, quarantined, _ = read_all(local_store, "o.jsonl", fmt)
    assert [(r["id"], r[SOURCE_ROW]) for r in rows] == [(0, 0), (2, 2)]
    [q] = quarantined
    assert q.record_index == 1 and "exceeds max_record_bytes" in q.reason
    assert len(q.raw) <= 64 * 1024 and q.raw.startswith('{"id": 1')


def test_invalid_utf8_line(local_store: ObjectStore) -> None:
    local_store.put("u.jsonl", b'{"s": "ok"}\n{"s": "\xff\xfe"}\n{"s": "fine"}\n')
    rows, quarantined, _ = read_all(local_store, "u.jsonl", JSONL)
    assert [r["s"] for r in rows] == ["ok", "fine"]
    assert [q.record_index for q in quarantined] == [1]
    assert "\ufffd" in quarantined[0].raw


line_kinds = st.sampled_from(["good", "good", "good", "bad_json", "bad_type", "blank", "array"])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kinds=st.lists(line_kinds, max_size=80), block=st.sampled_from([64, 256, 4096]))
def test_accounting_property(tmp_path: Path, kinds: list[str], block: int) -> None:
    """Whatever the mix of lines: rows + quarantined = records, indices partition 0..n-1."""
    store = LocalStore(tmp_path / "prop")
    out: list[bytes] = []
    expected_good: list[int] = []
    index = 0
    for kind in kinds:
        if kind == "blank":
            out.append(b"  ")
            continue
        if kind == "good":
            out.append(json.dumps({"id": index, "name": "n"}).encode())
            expected_good.append(index)
        elif kind == "bad_type":  # lands, its id rescued
            out.append(json.dumps({"id": "nope"}).encode())
            expected_good.append(-1)
        elif kind == "bad_json":
            out.append(b'{"id": ,}')
        else:
            out.append(b"[1]")
        index += 1
    store.put("p.jsonl", b"\n".join(out))
    fmt = FormatOptions("jsonl", block_bytes=block, max_record_bytes=1024)
    rows, quarantined, chunks = read_all(store, "p.jsonl", fmt, EVENTS)
    assert_partition(rows, quarantined, index)
    assert [r["id"] if r["id"] is not None else -1 for r in rows] == expected_good
    assert all((r[RESCUED] is None) == (r["id"] is not None) for r in rows)
    counts = count_accounting(chunks)
    assert counts.records == index and not counts.unreadable


# -- CSV --------------------------------------------------------------------------------------


def test_csv_quoting_header_ragged_rows_and_blocks(store: ObjectStore) -> None:
    body = [b"id,name,note"]
    for i in range(400):
        if i == 50:
            body.append(b"50,ragged")
        elif i == 51:
            body.append(b"51,too,many,fields")
        else:
            body.append(f'{i},"n, {i}","line one\r\nline ""two"" {i}"'.encode())
    store.put("c.csv", b"\r\n".join(body) + b"\r\n\r\n")
    fmt = FormatOptions("csv", block_bytes=1024)  # quoted newlines straddle block edges
    for schema in (pa.schema([("id", pa.int64()), ("note", pa.string())]), None):
        rows, quarantined, _ = read_all(store, "c.csv", fmt, schema)
        assert_partition(rows, quarantined, 400)
        assert [q.record_index for q in quarantined] == [50, 51]
        assert quarantined[0].reason == "expected 3 fields, got 2"
        assert quarantined[1].raw == "51,too,many,fields"
        assert rows[0]["note"] == 'line one\r\nline "two" 0'
        assert [r["id"] for r in rows] == [i for i in range(400) if i not in (50, 51)]
        if schema is None:
            assert rows[1]["name"] == "n, 1"
        else:
            assert set(rows[0]) == {"id", "note", RESCUED, SOURCE_ROW}
            assert json.loads(rows[1][RESCUED]) == {"name": "n, 1"}  # not declared: rescued


def test_tsv_without_header_with_schema(local_store: ObjectStore) -> None:
    schema = pa.schema([("id", pa.int64()), ("day", pa.date32()), ("ok", pa.bool_())])
    local_store.put("t.tsv", b"1\t2026-01-01\ttrue\n2\tbad-day\tfalse\n3\t\tFALSE\n")
    fmt = FormatOptions("csv", csv=CsvOptions(delimiter="\t", header=False, quote_char=None))
    rows, quarantined, _ = read_all(local_store, "t.tsv", fmt, schema)
    assert [(r["id"], r["day"], r["ok"], r[RESCUED]) for r in rows] == [
        (1, date(2026, 1, 1), True, None),
        (2, None, False, '{"day":"bad-day"}'),
        (3, None, False, None),
    ]
    assert quarantined == []


def test_csv_inferred_without_header_and_bom(local_store: ObjectStore) -> None:
    local_store.put("h.csv", b"\xef\xbb\xbf1,a\n2,b\n")
    fmt = FormatOptions("csv", csv=CsvOptions(header=False))
    rows, quarantined, _ = read_all(local_store, "h.csv", fmt)
    assert quarantined == []
    assert rows == [
        {"f0": 1, "f1": "a", RESCUED: None, SOURCE_ROW: 0},
        {"f0": 2, "f1": "b", RESCUED: None, SOURCE_ROW: 1},
    ]
    local_store.put("bom.csv", b"\xef\xbb\xbfid,x\n1,2\n")
    rows, _, _ = read_all(local_store, "bom.csv", CSV)
    assert rows == [{"id": 1, "x": 2, RESCUED: None, SOURCE_ROW: 0}]


def test_csv_duplicate_header_is_unreadable(local_store: ObjectStore) -> None:
    local_store.put("d.csv", b"a,b,a\n1,2,3\n")
    _, quarantined, _ = read_all(local_store, "d.csv", CSV)
    [q] = quarantined
    assert q.record_index is None and "repeats column names: a" in q.reason


def test_csv_wrong_type_is_rescued_with_its_field(local_store: ObjectStore) -> None:
    schema = pa.schema([("id", pa.int64()), ("amount", pa.decimal128(6, 2))])
    local_store.put("w.csv", b"amount,id\n1.50,1\n2.5,x\nabc,3\n,4\n")
    rows, quarantined, _ = read_all(local_store, "w.csv", CSV, schema)
    assert quarantined == []
    assert [(r["id"], r["amount"], r[RESCUED]) for r in rows] == [
        (1, Decimal("1.50"), None),
        (None, Decimal("2.50"), '{"id":"x"}'),
        (3, None, '{"amount":"abc"}'),
        (4, None, None),
    ]


# -- Parquet ----------------------------------------------------------------------------------


def parquet_bytes(table: pa.Table, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def test_parquet_read_cast_and_quarantine(store: ObjectStore) -> None:
    n = 1000
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int32()),
            "ts": pa.array([f"2026-01-01T00:00:{i % 60:02d}Z" for i in range(n)]),
            "name": pa.array([None if i == 500 else f"n{i}" for i in range(n)]),
            "extra": pa.array([1.0] * n),
        }
    )
    table = table.set_column(
        1, "ts", pa.array(["bad" if i == 7 else v for i, v in enumerate(table["ts"].to_pylist())])
    )
    store.put("p.parquet", parquet_bytes(table, row_group_size=300))
    fmt = FormatOptions("parquet", parquet_batch_rows=128)
    rows, quarantined, _ = read_all(store, "p.parquet", fmt, EVENTS)
    assert_partition(rows, quarantined, n)
    assert quarantined == []
    assert rows[7]["ts"] is None and json.loads(str(rows[7][RESCUED])) == {
        "ts": "bad",
        "extra": 1.0,
    }
    assert json.loads(str(rows[0][RESCUED])) == {"extra": 1.0}  # not declared: rescued
    assert set(rows[0]) == {"id", "ts", "name", RESCUED, SOURCE_ROW}
    assert rows[0]["id"] == 0 and rows[0]["ts"] == datetime(2026, 1, 1)
    rows, quarantined, _ = read_all(store, "p.parquet", fmt, None)
    assert quarantined == [] and len(rows) == n and rows[7]["ts"] == "bad"


def test_parquet_compressed_and_truncated(local_store: ObjectStore) -> None:
    data = parquet_bytes(pa.table({"a": list(range(100))}))
    local_store.put("p.parquet.gz", gzip.compress(data))
    rows, quarantined, _ = read_all(local_store, "p.parquet.gz", PARQUET)
    assert quarantined == [] and [r["a"] for r in rows] == list(range(100))
    local_store.put("t.parquet", data[: len(data) // 2])
    rows, quarantined, _ = read_all(local_store, "t.parquet", PARQUET)
    assert rows == [] and len(quarantined) == 1 and quarantined[0].record_index is None


# -- accounting helpers -----------------------------------------------------------------------


def test_object_counts_and_quarantine_batch() -> None:
    q1 = QuarantineRecord("k", "e", 3, "raw", "bad")
    q2 = QuarantineRecord("k", "e", None, "", "unreadable after record 3: boom")
    empty = pa.RecordBatch.from_pylist([], schema=pa.schema([(SOURCE_ROW, pa.int64())]))
    two = pa.RecordBatch.from_pylist([{SOURCE_ROW: 0}, {SOURCE_ROW: 1}])
    counts = count_accounting([ReadChunk(two, [q1]), ReadChunk(empty, [q2])])
    assert (counts.rows, counts.quarantined, counts.records, counts.unreadable) == (2, 2, 4, True)
    assert ObjectCounts().records == 0
    batch = quarantine_batch([q1, q2])
    assert batch.schema == QUARANTINE_SCHEMA
    assert batch.column("_source_row").to_pylist() == [3, None]


# -- bounded memory ---------------------------------------------------------------------------

MEMORY_PROBE = textwrap.dedent(
    """
    import gzip, json, resource, sys, tracemalloc
    import pyarrow as pa
    from lockgate.resources.store import LocalStore
    from lockgate.pipelines.formats import FormatOptions, ObjectCounts, read_object

    root, target, block = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = LocalStore(root)
    line = ('{"id":%d,"ts":"2026-01-01T10:00:00Z","name":"user-%d","score":%d.5,'
            '"tags":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}\\n')
    n = size = 0
    with gzip.open(f"{root}/big.jsonl.gz", "wb", compresslevel=1) as f:
        while size < target:
            buf = "".join(line % (i, i, i) for i in range(n, n + 10000)).encode()
            f.write(buf)
            size += len(buf)
            n += 10000
    schema = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us")), ("name", pa.string())])
    # warm up (lazy imports inside pyarrow are not the reader's memory)
    with gzip.open(f"{root}/small.jsonl.gz", "wb") as f:
        f.write((line % (0, 0, 0)).encode() * 100)
    etag = store.head("small.jsonl.gz").etag
    for _ in read_object(store, "small.jsonl.gz", etag, FormatOptions("jsonl"), schema):
        pass
    pool = pa.default_memory_pool()
    arrow_base = pool.max_memory()
    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    counts = ObjectCounts()
    etag = store.head("big.jsonl.gz").etag
    for chunk in read_object(
        store, "big.jsonl.gz", etag, FormatOptions("jsonl", block_bytes=block), schema
    ):
        counts.add(chunk)
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({
        "records": n, "bytes": size, "rows": counts.rows, "quarantined": counts.quarantined,
        "arrow_peak": pool.max_memory() - arrow_base, "python_peak": py_peak,
        "rss_growth": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_base) * 1024,
    }))
    """
)


def run_memory_probe(tmp_path: Path, size: int, block: int) -> dict[str, int]:
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tmp_path), str(size), str(block)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows"] == result["records"] and result["quarantined"] == 0
    return result


MiB = 1024 * 1024


def test_bounded_memory_fast(tmp_path: Path) -> None:
    """30 MB of gzipped JSON lines read in 1 MiB blocks: Arrow and Python peaks stay at a few
    blocks, far below the object's size."""
    r = run_memory_probe(tmp_path, 30 * 1000 * 1000, MiB)
    assert r["arrow_peak"] < 8 * MiB, r
    assert r["python_peak"] < 20 * MiB, r


@pytest.mark.slow
def test_bounded_memory_200mb(tmp_path: Path) -> None:
    """200 MB uncompressed (gzip), default 4 MiB blocks: peaks independent of the size."""
    r = run_memory_probe(tmp_path, 200 * 1000 * 1000, 4 * MiB)
    assert r["arrow_peak"] < 32 * MiB, r
    assert r["python_peak"] < 48 * MiB, r
    assert r["rss_growth"] < 200 * MiB, r


field_text = st.text(alphabet=st.sampled_from(list('ab ,"\n;x1')), max_size=6)  # bare CR: ambiguous


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(st.lists(field_text, min_size=3, max_size=3), st.sampled_from(["ok", "ragged"])),
        max_size=40,
    ),
    blank_every=st.integers(min_value=0, max_value=5),
    block=st.sampled_from([16, 64, 1024]),
    crlf=st.booleans(),
)
def test_csv_accounting_property(
    tmp_path: Path, rows: list[tuple[list[str], str]], blank_every: int, block: int, crlf: bool
) -> None:
    """Random quoting, embedded delimiters and newlines, ragged rows, blank lines, tiny blocks:
    every record is a row with its exact values or a quarantine entry, in order."""
    import csv as pycsv

    eol = "\r\n" if crlf else "\n"
    out = io.StringIO()
    writer = pycsv.writer(out, lineterminator=eol, quoting=pycsv.QUOTE_MINIMAL)
    writer.writerow(["a", "b", "c"])
    expected: list[list[str] | None] = []
    for i, (values, kind) in enumerate(rows):
        if blank_every and i % blank_every == 0:
            out.write(eol)
        if kind == "ragged":
            writer.writerow([*values, "extra"])
            expected.append(None)
        else:
            writer.writerow(values)
            # an unquoted, empty-only record ("" , "" , "") still has 3 fields
            expected.append(values)
    store = LocalStore(tmp_path / "csvprop")
    store.put("p.csv", out.getvalue().encode())
    schema = pa.schema([("a", pa.string()), ("b", pa.string()), ("c", pa.string())])
    fmt = FormatOptions("csv", block_bytes=block, max_record_bytes=4096)
    got_rows, quarantined, _ = read_all(store, "p.csv", fmt, schema)
    assert_partition(got_rows, quarantined, len(expected))
    for r in got_rows:
        want = expected[r[SOURCE_ROW]]  # type: ignore[index]
        assert want is not None
        assert [r["a"], r["b"], r["c"]] == want
    assert {q.record_index for q in quarantined} == {
        i for i, want in enumerate(expected) if want is None
    }


def test_records_without_declared_columns_are_null_rows(local_store: ObjectStore) -> None:
    local_store.put("e.jsonl", b'{}\n{"other": 1}\n')
    rows, quarantined, _ = read_all(local_store, "e.jsonl", JSONL, EVENTS)
    assert quarantined == [] and [r[SOURCE_ROW] for r in rows] == [0, 1]
    assert all(r["id"] is None and r["name"] is None for r in rows)
    local_store.put("x.parquet", parquet_bytes(pa.table({"x": list(range(10))})))
    rows, quarantined, _ = read_all(local_store, "x.parquet", PARQUET, EVENTS)
    assert quarantined == [] and [r[SOURCE_ROW] for r in rows] == list(range(10))
    assert all(r["id"] is None for r in rows)


def test_a_column_of_its_declared_type_is_not_copied() -> None:
    """The coercer keeps a parsed column that already has its declared type as it is."""
    declared = pa.schema([("id", pa.int64()), ("user", pa.string()), ("qty", pa.int32())])
    ids = pa.array([1, 2, 3], pa.int64())
    users = pa.array(["u1", "u2", "u3"], pa.string())
    parsed = pa.table({"id": ids, "user": users, "qty": pa.array(["1", "x", "3"])})
    out = _Coercer(declared).coerce(parsed)
    assert out.column("id").chunk(0).buffers()[1].address == ids.buffers()[1].address
    assert out.column("user").chunk(0).buffers()[2].address == users.buffers()[2].address
    assert out.column("qty").to_pylist() == [1, None, 3]  # converted, the bad value rescued
    assert out.column(RESCUED).to_pylist() == [None, '{"qty":"x"}', None]
