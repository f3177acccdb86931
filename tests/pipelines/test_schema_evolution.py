"""Schema evolution of inferred sources, end to end (config in tmp, ``ingest_source``):

* new objects that add a column: the column appears, old rows read it as null, DuckDB (iceberg
  extension from the pip packages) sees it;
* safe widening (int -> long); a type that cannot be reached keeps the row, its value rescued;
* a declared schema is applied strictly and never evolves from the data (a change of the
  declaration does: tests/pipelines/test_config_changes.py);
* a table created before ``_rescued_data`` existed gets the column on the next batch;
* the bad-input corpus mixed into good data never stalls: every good record lands exactly once,
  bad ones are rescued or quarantined, ``verify`` is ok, and a second ingest is a no-op.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from lockgate.pipelines.ingest import ingest_source
from lockgate.pipelines.verify import verify_source
from lockgate.resources.config import load_config
from lockgate.resources.runtime import Runtime, quarantine_table
from lockgate.resources.store import LocalStore
from tests.corpus import CASES, DAY, Case
from tests.platform_helpers import write_config
from tests.resources.test_interop_duckdb import duck


def _runtime(tmp_path: Path, **sources: dict[str, Any]) -> Runtime:
    specs = {
        name: {
            "landing": str(tmp_path / "landing" / name),
            "format": "jsonl",
            "table": f"lake.{name}",
            "partition": {"pattern": r"(\d{4}-\d{2}-\d{2})", "start": "2026-01-01"},
            "min_age": 0,
            **spec,
        }
        for name, spec in sources.items()
    }
    path = write_config(tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources=specs)
    return Runtime.from_config(load_config(str(path)))


def _land(tmp_path: Path, source: str, key: str, *records: dict[str, Any]) -> None:
    store = LocalStore(tmp_path / "landing" / source)
    store.put(key, b"".join(json.dumps(r).encode() + b"\n" for r in records))


def _rows(rt: Runtime, source: str) -> list[dict[str, Any]]:
    table = rt.tables.load(rt.source(source).table).scan().to_arrow()
    order = [("_source_key", "ascending"), ("_source_row", "ascending")]
    return [
        {k: v for k, v in r.items() if k in ("id", "a", "b", "c", "_rescued_data")}
        for r in table.sort_by(order).to_pylist()
    ]


def test_new_column_appears_old_rows_null_and_duckdb_sees_it(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, ev={})
    _land(tmp_path, "ev", f"{DAY}/1.jsonl", {"id": 1, "a": "x"}, {"id": 2, "a": "y"})
    ingest_source(rt, rt.source("ev"))
    before = rt.tables.load("lake.ev").schema().as_arrow()
    assert "b" not in before.names and "_rescued_data" in before.names

    _land(tmp_path, "ev", f"{DAY}/2.jsonl", {"id": 3, "a": "z", "b": 2.5}, {"id": 4, "b": 1.0})
    report = ingest_source(rt, rt.source("ev"))
    assert report.rows == 2 and report.quarantined == 0
    after = rt.tables.load("lake.ev").schema().as_arrow()
    assert after.field("b").type == pa.float64() and after.field("b").nullable
    assert _rows(rt, "ev") == [
        {"id": 1, "a": "x", "b": None, "_rescued_data": None},
        {"id": 2, "a": "y", "b": None, "_rescued_data": None},
        {"id": 3, "a": "z", "b": 2.5, "_rescued_data": None},
        {"id": 4, "a": None, "b": 1.0, "_rescued_data": None},
    ]
    assert verify_source(rt, rt.source("ev")).ok

    location = rt.tables.load("lake.ev").metadata_location.rsplit("/metadata/", 1)[0]
    got = duck().execute(f"SELECT id, a, b FROM iceberg_scan('{location}') ORDER BY id").fetchall()
    assert got == [(1, "x", None), (2, "y", None), (3, "z", 2.5), (4, None, 1.0)]


def test_widening_and_unreachable_types_are_rescued(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, ev={})
    _land(tmp_path, "ev", f"{DAY}/1.jsonl", {"id": 1, "a": 5, "c": {"k": 1}})
    ingest_source(rt, rt.source("ev"))
    assert rt.tables.load("lake.ev").schema().as_arrow().field("a").type == pa.int64()
    # a's values are now text / float / a struct; c is now a number
    _land(
        tmp_path,
        "ev",
        f"{DAY}/2.jsonl",
        {"id": 2, "a": "seven"},
        {"id": 3, "a": "8"},
    )
    _land(tmp_path, "ev", f"{DAY}/3.jsonl", {"id": 4, "a": 2.5, "c": 3})
    _land(tmp_path, "ev", f"{DAY}/4.jsonl", {"id": 5, "a": 6.0, "c": {"k": 2}})
    ingest_source(rt, rt.source("ev"))
    schema = rt.tables.load("lake.ev").schema().as_arrow()
    assert schema.field("a").type == pa.int64()  # never narrowed or changed
    rows = _rows(rt, "ev")
    assert [(r["id"], r["a"], r["c"], r["_rescued_data"]) for r in rows] == [
        (1, 5, {"k": 1}, None),
        (2, None, None, '{"a":"seven"}'),
        (3, 8, None, None),  # "8" fits a long
        (4, None, None, '{"a":2.5,"c":3}'),
        (5, 6, {"k": 2}, None),  # 6.0 fits a long exactly
    ]
    assert verify_source(rt, rt.source("ev")).ok


def test_declared_schema_is_strict_and_never_evolves(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, ev={"schema": {"id": "long", "a": "string"}})
    _land(tmp_path, "ev", f"{DAY}/1.jsonl", {"id": 1, "a": "x", "b": 1}, {"id": "2", "a": 3})
    ingest_source(rt, rt.source("ev"))
    schema = rt.tables.load("lake.ev").schema().as_arrow()
    assert [n for n in schema.names if not n.startswith("_")] == ["id", "a"]
    assert [(r["id"], r["a"], r["_rescued_data"]) for r in _rows(rt, "ev")] == [
        (1, "x", '{"b":1}'),
        (None, None, '{"id":"2","a":3}'),
    ]


def test_table_created_before_rescued_data_gets_it(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, ev={"schema": {"id": "long"}})
    from lockgate.pipelines.lineage import DAY as DAY_COL
    from lockgate.pipelines.lineage import LINEAGE_SCHEMA

    old = pa.schema([("id", pa.int64()), *(f for f in LINEAGE_SCHEMA if f.name != "_rescued_data")])
    rt.tables.ensure_table("lake.ev", old, DAY_COL)
    _land(tmp_path, "ev", f"{DAY}/1.jsonl", {"id": 1, "x": 1})
    ingest_source(rt, rt.source("ev"))
    assert [(r["id"], r["_rescued_data"]) for r in _rows(rt, "ev")] == [(1, '{"x":1}')]


def _good_ids(case_index: int, n: int) -> list[int]:
    return [case_index * 1000 + i for i in range(n)]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_corpus_mixed_into_good_data_never_stalls(tmp_path: Path, fmt: str) -> None:
    """Every small corpus object of the format lands beside good objects in one source (one
    batch holds good and bad objects): the good ids land exactly once, the accounting holds
    for every object, and a second ingest commits nothing."""
    cases: list[Case] = [
        c
        for c in CASES
        if c.format == fmt
        and c.schema is not None
        and set(c.schema) <= {"id", "name", "score"}
        and not c.after_claim
        and not c.extra
    ]
    assert len(cases) >= 5
    schema = {"id": "long", "name": "string", "score": "double"}
    rt = _runtime(tmp_path, mix={"format": fmt, "schema": schema, "max_files_per_batch": 7})
    store = LocalStore(tmp_path / "landing" / "mix")
    landed: Counter[int] = Counter()
    expected_records: dict[str, int] = {}
    for ci, case in enumerate(cases):
        for name, content in case.objects:
            data = content() if callable(content) else content
            key = f"{DAY}/{ci:02d}-bad-{name}"
            store.put(key, data)
            expected_records[key] = (case.records or {}).get(
                name,
                sum(1 for r in case.rows if r["_obj"] == name)
                + sum(1 for q in case.quarantine if q[0] == name),
            )
        ids = _good_ids(ci + 1, 3)
        key = f"{DAY}/{ci:02d}-good.{fmt}"
        if fmt == "jsonl":
            store.put(
                key, b"".join(json.dumps({"id": i, "name": f"g{i}"}).encode() + b"\n" for i in ids)
            )
        else:
            store.put(key, b"id,name\n" + b"".join(f"{i},g{i}\n".encode() for i in ids))
        expected_records[key] = 3
        landed.update(ids)

    first = ingest_source(rt, rt.source("mix"))
    assert first.batches and all(not b.already_committed for b in first.batches)
    table = rt.tables.load("lake.mix").scan().to_arrow()
    good = [r for r in table.to_pylist() if "-good." in r["_source_key"]]
    assert Counter(r["id"] for r in good) == landed
    assert all(r["name"] == f"g{r['id']}" and r["_rescued_data"] is None for r in good)
    counts: dict[str, int] = {}
    ledger = rt.ledger(rt.source("mix"))
    for b in first.batches:
        rec = ledger.commit_record(b.batch_id)
        assert rec is not None and rec.record_counts is not None
        counts.update(rec.record_counts)
    assert counts == expected_records
    report = verify_source(rt, rt.source("mix"))
    assert report.ok, report.violations
    q = rt.tables.load(quarantine_table(rt.source("mix"))).scan().to_arrow()
    assert report.rows + report.quarantined == sum(expected_records.values())
    assert q.num_rows == report.quarantined

    second = ingest_source(rt, rt.source("mix"))
    assert second.rows == 0 and second.quarantined == 0
    assert all(b.already_committed for b in second.batches)
    assert rt.tables.load("lake.mix").scan().to_arrow().num_rows == table.num_rows
