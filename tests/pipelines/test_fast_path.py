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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.pipelines import formats
from lockgate.pipelines.formats import FormatOptions, QuarantineRecord, ReadMeter, read_object
from lockgate.resources.store import LocalStore

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
