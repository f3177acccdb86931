"""The JSON-lines fast path (whole blocks handed to pyarrow after vectorised scans, parsed on a
worker thread) and the per-record path (screen, bisect, rescue) give the same rows, the same
quarantine entries with the same reasons, and the same lineage (``_source_row``) on the same
input, whatever the mix of lines and the block size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lockgate.pipelines import formats
from lockgate.pipelines.formats import FormatOptions, QuarantineRecord, ReadMeter, read_object
from lockgate.resources.errors import TransientError
from lockgate.resources.store import LocalStore, ObjectStore, SizeMismatch

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("ts", pa.timestamp("us"))])
MAX_RECORD = 300

LINES: dict[str, bytes] = {
    "good": b'{"id": 1, "name": "a", "ts": "2024-03-01T10:00:00Z"}',
    "extra": b'{"id": 2, "name": "b", "tags": ["x", "y"], "device": {"os": "z"}}',
    "bad_type": b'{"id": "nope", "name": 3}',
    "bad_json": b'{"id": ,}',
    "array": b"[1, 2]",
    "null": b"null",
    "blank": b"   ",
    "indented": b'  {"id": 4}',
    "crlf": b'{"id": 5}\r',
    "two_values": b'{"id": 6} {"id": 7}',
    "bad_utf8": b'{"name": "\xff\xfe"}',
    "deep": b'{"a": ' + b"[" * 70 + b"]" * 70 + b"}",
    "long": b'{"name": "' + b"x" * MAX_RECORD + b'"}',
    "dup_key": b'{"id": 8, "id": 9}',
    "reserved": b'{"id": 10, "_source_row": 3}',
}


def _read(
    store: LocalStore, fmt: FormatOptions, schema: pa.Schema | None
) -> tuple[list[dict[str, Any]], list[QuarantineRecord], int]:
    meter = ReadMeter()
    rows: list[dict[str, Any]] = []
    quarantined: list[QuarantineRecord] = []
    info = store.head("p.jsonl")
    for chunk in read_object(store, "p.jsonl", info.etag, fmt, schema, info.size, meter):
        rows += chunk.batch.to_pylist()
        quarantined += chunk.quarantined
    assert meter.complete and meter.consumed == info.size
    return rows, quarantined, meter.consumed


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kinds=st.lists(st.sampled_from([*LINES, "good", "good", "good", "extra"]), max_size=60),
    block=st.sampled_from([64, 512, 8192]),
    declared=st.booleans(),
    final_newline=st.booleans(),
)
def test_fast_path_equals_bisecting_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kinds: list[str],
    block: int,
    declared: bool,
    final_newline: bool,
) -> None:
    store = LocalStore(tmp_path / f"s{len(kinds)}-{block}-{declared}-{final_newline}")
    data = b"\n".join(LINES[k] for k in kinds) + (b"\n" if final_newline else b"")
    store.put("p.jsonl", data)
    fmt = FormatOptions("jsonl", block_bytes=block, max_record_bytes=MAX_RECORD)
    schema = SCHEMA if declared else None

    fast = _read(store, fmt, schema)
    with monkeypatch.context() as m:
        m.setattr(formats, "_parse_fast", lambda *_args: None)  # every block: per record
        slow = _read(store, fmt, schema)
    assert fast == slow
    rows, quarantined, _ = fast
    # every record is a row or a quarantine entry, in order
    records = sum(1 for k in kinds if k != "blank")
    indices = sorted([r["_source_row"] for r in rows] + [q.record_index for q in quarantined])
    assert indices == list(range(records))


def test_fast_path_takes_clean_blocks_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clean object goes through the fast path only (no per-record parse), and its rows and
    lineage are those of the per-record path."""
    store = LocalStore(tmp_path / "clean")
    lines = [json.dumps({"id": i, "name": f"n{i}", "extra": [i]}).encode() for i in range(5000)]
    store.put("p.jsonl", b"\n".join(lines) + b"\n")
    fmt = FormatOptions("jsonl", block_bytes=64 * 1024)
    calls: list[int] = []
    attempt = formats._JsonParser.attempt

    def counting(self: formats._JsonParser, records: list[bytes]) -> pa.Table:
        calls.append(len(records))
        return attempt(self, records)

    monkeypatch.setattr(formats._JsonParser, "attempt", counting)
    rows, quarantined, _ = _read(store, fmt, SCHEMA)
    assert calls == []
    assert not quarantined
    assert [r["_source_row"] for r in rows] == list(range(5000))
    assert [r["id"] for r in rows] == list(range(5000))
    assert rows[7]["_rescued_data"] == '{"extra":[7]}'
    monkeypatch.setattr(formats, "_parse_fast", lambda *_args: None)
    assert _read(store, fmt, SCHEMA)[0] == rows
    assert calls  # the per-record path did parse


SMALL_OBJECTS: dict[str, bytes] = {
    "a-2026-01-05.jsonl": b'{"id": 1, "v": "a"}\n{"id": 2, "v": "b", "x": [1]}\n',
    "b-2026-01-05.jsonl": b'{"id": 3, "v": "c"}',  # no final newline
    "c-2026-01-05.jsonl": b"",  # empty: no records
    "d-2026-01-05.jsonl": b'{"id": 4}\n{"id": ,}\n[5]\n\n{"id": 6}\n',  # bad lines
    "e-2026-01-05.jsonl": b'{"id": "seven", "v": "d"}\n',  # rescued value
    "f-2026-01-05.jsonl": b"\xef\xbb\xbf" + b'{"id": 8}\r\n{"id": 9}\r\n',  # BOM, CRLF
    "g-2026-01-05.jsonl": b"\x1f\x8b\x08\x00 not really gzip",  # magic bytes: unreadable
    "h-2026-01-05.jsonl": b'{"id": 10, "v": "e"}\n',
}


def _staged(tmp_path: Path, grouped: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from lockgate.pipelines import stage
    from tests.pipelines.helpers import claim_keys, local_runtime, src

    rt = local_runtime(tmp_path, max_files_per_batch=100)
    landing = LocalStore(tmp_path / "landing")
    for key, body in SMALL_OBJECTS.items():
        landing.put(key, body)
    claim = claim_keys(rt, sorted(SMALL_OBJECTS))
    with monkeypatch.context() as m:
        if not grouped:
            m.setattr(stage, "is_small_object", lambda *_args: False)
        out = stage.stage_claims(rt, src(rt), [claim])
    etags = {k: landing.head(k).etag for k in SMALL_OBJECTS}
    rows = sorted(
        (r for f in out.files for r in pq.read_table(f.path.removeprefix("file://")).to_pylist()),
        key=lambda r: (r["_source_key"], r["_source_row"]),
    )
    quarantined = sorted(
        (
            (r["_source_key"], r["_source_row"], r["reason"])
            for f in out.quarantine_files
            for r in pq.read_table(f.path.removeprefix("file://")).to_pylist()
        ),
        key=repr,
    )
    assert all(r["_source_etag"] == etags[r["_source_key"]] for r in rows)
    return {
        "rows": [
            {k: v for k, v in r.items() if k not in ("_ingested_at", "_source_etag")} for r in rows
        ],
        "lineage": [(r["_source_key"], r["_source_row"]) for r in rows],
        "quarantined": quarantined,
        "records": out.record_counts,
        "bytes_read": out.bytes_read,
        "counts": (out.rows, out.quarantined, out.bytes),
    }


def test_small_objects_read_together_equal_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small objects fetched concurrently and parsed as one block: the same rows, lineage,
    quarantine, record counts and bytes as reading them one by one."""
    calls: list[int] = []
    real = formats.read_small_objects

    def counting(*args: Any) -> formats.SmallObjectsRead:
        result = real(*args)
        calls.append(result.batch.num_rows if result.batch is not None else 0)
        return result

    from lockgate.pipelines import stage

    monkeypatch.setattr(stage, "read_small_objects", counting)
    grouped = _staged(tmp_path / "grouped", True, monkeypatch)
    assert calls == [6]  # a, b, e, f, h parsed together (d and g read on their own)
    alone = _staged(tmp_path / "alone", False, monkeypatch)
    assert grouped == alone
    assert grouped["bytes_read"] == {k: len(v) for k, v in SMALL_OBJECTS.items()}
    assert grouped["records"]["d-2026-01-05.jsonl"] == 4
    assert grouped["records"]["c-2026-01-05.jsonl"] == 0
    keys = [k for k, _ in grouped["lineage"]]
    assert keys.count("a-2026-01-05.jsonl") == 2 and keys.count("f-2026-01-05.jsonl") == 2
    assert [row for k, row in grouped["lineage"] if k.startswith("d-")] == [0, 3]


def test_read_small_objects_on_each_store(store: ObjectStore) -> None:
    """Fetched concurrently from the store (moto over HTTP for S3): clean objects parsed as one
    block with per-object rows, a bad one read on its own, a re-written one not read, and a
    size that differs from the claim raised (transient), never a short read."""
    bodies = {f"o{i:03d}.jsonl": json.dumps({"id": i}).encode() + b"\n" for i in range(40)}
    bodies["o007.jsonl"] = b'{"id": 7}\n{"id": ,}\n'
    for key, body in bodies.items():
        store.put(key, body)
    refs = [(k, store.head(k).etag, len(b)) for k, b in sorted(bodies.items())]
    changed = refs[3]
    store.put(changed[0], b'{"id": 300}\n')  # a new version: the claimed one is gone
    fmt = FormatOptions("jsonl")
    read = formats.read_small_objects(store, refs, fmt, SCHEMA)
    assert read.batch is not None
    assert read.rows == [0 if i in (3, 7) else 1 for i in range(40)]
    assert read.batch.column("id").to_pylist() == [i for i in range(40) if i not in (3, 7)]
    assert set(read.batch.column("_source_row").to_pylist()) == {0}
    assert read.errors[3] is not None and read.errors[3].outcome == "changed_before_read"
    assert [e is None for e in read.errors].count(False) == 1
    alone = read.chunks[7]
    assert [c.batch.column("id").to_pylist() for c in alone if c.batch.num_rows] == [[7]]
    assert [q.record_index for c in alone for q in c.quarantined] == [1]
    assert all(
        m.complete and m.consumed == r[2]
        for i, (m, r) in enumerate(zip(read.meters, refs, strict=True))
        if i != 3
    )
    assert issubclass(SizeMismatch, TransientError)
    with pytest.raises(TransientError):  # SizeMismatch, or the S3 store's own short-read check
        formats.read_small_objects(store, [(refs[0][0], refs[0][1], refs[0][2] + 5)], fmt, SCHEMA)


CSV_SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())])
CSV_LINES: dict[str, bytes] = {
    "good": b"1,a,2.5",
    "crlf": b"2,b,3.5\r",
    "extra_field": b"3,c,4.5,x",
    "few_fields": b"4,d",
    "bad_type": b"five,e,6.5",
    "blank": b"",
    "blank_cr": b"\r",
    "spaces": b"   ",
    "quoted": b'6,"f, g",7.5',
    "quoted_newline": b'7,"h\ni",8.5',
    "open_quote": b'8,"j,9.5',
    "bad_utf8": b"9,\xff\xfe,1.0",
    "long": b"10," + b"x" * MAX_RECORD + b",1.0",
    "empty_values": b"11,,",
}


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # see below
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example(kinds=["good", "blank"], block=48, declared=False, final_newline=True)  # CI, 11-30
@given(
    kinds=st.lists(st.sampled_from([*CSV_LINES, "good", "good", "good", "crlf"]), max_size=60),
    block=st.sampled_from([48, 512, 8192]),
    declared=st.booleans(),
    final_newline=st.booleans(),
)
def test_csv_whole_blocks_equal_per_record_split(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kinds: list[str],
    block: int,
    declared: bool,
    final_newline: bool,
) -> None:
    """CSV blocks handed to pyarrow whole (``_Splitter.cut_plain``: no quote, no blank line,
    no oversized line) give the same rows, quarantine entries and lineage as blocks cut into
    records by ``_Splitter.feed``. No error is lost in pyarrow's row handler (text that is not
    UTF-8 is refused before pyarrow would have to word one of its rows)."""
    store = LocalStore(tmp_path / f"c{len(kinds)}-{block}-{declared}-{final_newline}")
    body = b"\n".join(CSV_LINES[k] for k in kinds) + (b"\n" if final_newline else b"")
    data = b"id,name,amount\n" + body
    store.put("p.jsonl", data)  # (_read names the key; the format comes from fmt)
    fmt = FormatOptions("csv", block_bytes=block, max_record_bytes=MAX_RECORD)
    schema = CSV_SCHEMA if declared else None
    calls: list[int] = []
    cut_plain = formats._Splitter.cut_plain

    def counting(self: formats._Splitter, chunk: bytes) -> tuple[bytes, int] | None:
        out = cut_plain(self, chunk)
        calls.append(0 if out is None else out[1])
        return out

    monkeypatch.setattr(formats._Splitter, "cut_plain", counting)
    whole = _read(store, fmt, schema)
    with monkeypatch.context() as m:
        m.setattr(formats._Splitter, "cut_plain", lambda *_args: None)
        split = _read(store, fmt, schema)
    assert whole == split
    rows, quarantined, _ = whole
    indices = sorted([r["_source_row"] for r in rows] + [q.record_index for q in quarantined])
    assert indices == list(range(len(indices)))
    if set(kinds) <= {"good", "crlf", "bad_type", "empty_values"} and len(kinds) > 40:
        assert sum(calls) > 0  # clean objects do take whole blocks


def test_csv_clean_object_is_parsed_in_whole_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clean CSV object reaches pyarrow block by block without a Python list of its
    records: only the first block (it holds the header) is cut into records
    (``_CsvParser.attempt``); the lineage is exact."""
    store = LocalStore(tmp_path / "clean")
    lines = [b"id,name,amount"] + [f"{i},n{i},{i}.5".encode() for i in range(5000)]
    store.put("p.csv", b"\n".join(lines) + b"\n")
    fmt = FormatOptions("csv", block_bytes=16 * 1024)
    calls: list[int] = []
    attempt = formats._CsvParser.attempt

    def counting(self: formats._CsvParser, records: list[bytes]) -> pa.Table:
        calls.append(len(records))
        return attempt(self, records)

    monkeypatch.setattr(formats._CsvParser, "attempt", counting)
    meter = ReadMeter()
    info = store.head("p.csv")
    rows = [
        r
        for chunk in read_object(store, "p.csv", info.etag, fmt, CSV_SCHEMA, info.size, meter)
        for r in chunk.batch.to_pylist()
    ]
    assert len(calls) == 1 and calls[0] < 1000
    assert [r["_source_row"] for r in rows] == list(range(5000))
    assert [r["id"] for r in rows] == list(range(5000))
    assert rows[7]["amount"] == 7.5
