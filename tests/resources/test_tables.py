"""TableStore: staging, exactly-once batch commits, rebuilds, schema evolution."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lockgate.resources.catalog import ObjectStoreCatalog, make_catalog
from lockgate.resources.maintenance import MaintenancePolicy
from lockgate.resources.markers import IdRanges
from lockgate.resources.store import ObjectStore
from lockgate.resources.tables import (
    IncompatibleSchema,
    RebuildConflict,
    TableSettings,
    TableStore,
)

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("value", pa.string()),
        ("_day", pa.date32()),
        ("_batch_id", pa.int64()),
    ]
)
D1, D2 = date(2024, 3, 1), date(2024, 3, 2)


def rows(batch_id: int, n: int, day: date | list[date] = D1, start: int = 0) -> pa.RecordBatch:
    days = day if isinstance(day, list) else [day]
    return pa.record_batch(
        [
            pa.array(range(start, start + n), pa.int64()),
            pa.array([f"v{i}" for i in range(n)]),
            pa.array([days[i % len(days)] for i in range(n)], pa.date32()),
            pa.array([batch_id] * n, pa.int64()),
        ],
        schema=SCHEMA,
    )


@pytest.fixture
def tables(request: pytest.FixtureRequest, store: ObjectStore) -> TableStore:
    opts = request.getfixturevalue("s3_options") if store.uri().startswith("s3://") else None
    catalog = ObjectStoreCatalog(warehouse=store.uri(), s3_options=opts, store=store)
    ts = TableStore(catalog)
    ts.ensure_table("ns.t", SCHEMA)
    return ts


def count(ts: TableStore, ident: str = "ns.t") -> int:
    return ts.load(ident).scan().to_arrow().num_rows


def test_commit_once_then_duplicate(tables: TableStore) -> None:
    staged = tables.stage("ns.t", [rows(0, 100)])
    assert count(tables) == 0  # staged files are invisible
    r = tables.commit_batch("ns.t", "src", 0, staged, {"objects": "1"})
    assert not r.duplicate and r.attempts == 1 and r.table_version == 2
    again = tables.commit_batch("ns.t", "src", 0, tables.stage("ns.t", [rows(0, 100)]))
    assert again.duplicate and again.snapshot_id == r.snapshot_id
    assert count(tables) == 100
    assert tables.committed("ns.t", "src") == IdRanges.of([0])
    assert tables.committed("ns.t", "other") == IdRanges()
    snap = tables.load("ns.t").current_snapshot()
    assert snap is not None and snap.summary is not None
    assert snap.summary["lockgate.batch"] == "0" and snap.summary["objects"] == "1"


def test_empty_batch_records_marker(tables: TableStore) -> None:
    r = tables.commit_batch("ns.t", "src", 5, [])
    assert not r.duplicate
    assert 5 in tables.committed("ns.t", "src")
    assert tables.commit_batch("ns.t", "src", 5, []).duplicate


def test_stage_splits_days_and_rolls_files(tmp_path: Path) -> None:
    ts = TableStore(
        ObjectStoreCatalog(warehouse=str(tmp_path / "wh")),
        TableSettings(target_file_size_bytes=20_000),
    )
    ts.ensure_table("ns.t", SCHEMA)
    batches = [rows(0, 500, [D1, D2], start=i * 500) for i in range(8)]
    staged = ts.stage("ns.t", batches)
    assert {f.day for f in staged} == {D1, D2}
    assert len(staged) > 2  # rolled
    assert len({f.path for f in staged}) == len(staged)
    assert all("/ns/t/data/_day=" in f.path for f in staged)
    assert sum(f.record_count for f in staged) == 4000
    ts.commit_batch("ns.t", "src", 0, staged)
    t = ts.load("ns.t").scan().to_arrow()
    assert t.num_rows == 4000 and len(set(t["id"].to_pylist())) == 4000
    for f in ts.load("ns.t").scan().plan_files():
        assert f.file.file_format.value == "PARQUET"
        assert f.file.lower_bounds and f.file.value_counts  # pyiceberg stats by field id


def test_null_partition_value_rejected(tables: TableStore) -> None:
    bad = pa.record_batch(
        [pa.array([1]), pa.array(["x"]), pa.array([None], pa.date32()), pa.array([0])],
        schema=SCHEMA,
    )
    with pytest.raises(ValueError):
        tables.stage("ns.t", [bad])


def test_rebuild_replaces_exactly_those_days(tables: TableStore) -> None:
    tables.commit_batch("ns.t", "src", 0, tables.stage("ns.t", [rows(0, 10, D1)]))
    tables.commit_batch("ns.t", "src", 1, tables.stage("ns.t", [rows(1, 10, D1, start=10)]))
    tables.commit_batch("ns.t", "src", 2, tables.stage("ns.t", [rows(2, 7, D2, start=100)]))
    base = tables.rebuild_base("ns.t", "src")
    restaged = tables.stage("ns.t", [rows(0, 10, D1), rows(1, 10, D1, start=10)])
    r = tables.rebuild_partitions("ns.t", "src", [D1], restaged, [0, 1], base)
    assert not r.duplicate
    t = tables.load("ns.t").scan().to_arrow()
    assert t.num_rows == 27
    d1 = t.filter(pc.equal(t["_day"], pa.scalar(D1, pa.date32())))
    assert sorted(d1["id"].to_pylist()) == list(range(20))  # no duplicates
    assert tables.committed("ns.t", "src") == IdRanges.parse("0-2")
    # idempotent: the same rebuild again gives the same rows
    base2 = tables.rebuild_base("ns.t", "src")
    again = tables.stage("ns.t", [rows(0, 10, D1), rows(1, 10, D1, start=10)])
    tables.rebuild_partitions("ns.t", "src", [D1], again, [0, 1], base2)
    assert count(tables) == 27


def test_rebuild_conflicts_with_unplanned_batch(tables: TableStore) -> None:
    tables.commit_batch("ns.t", "src", 0, tables.stage("ns.t", [rows(0, 10, D1)]))
    base = tables.rebuild_base("ns.t", "src")
    restaged = tables.stage("ns.t", [rows(0, 10, D1)])
    # batch 1 (same day, not read by the rebuild) commits after the base
    tables.commit_batch("ns.t", "src", 1, tables.stage("ns.t", [rows(1, 5, D1, start=50)]))
    with pytest.raises(RebuildConflict):
        tables.rebuild_partitions("ns.t", "src", [D1], restaged, [0], base)
    assert count(tables) == 15  # nothing dropped
    # a planned batch committing after the base is not a conflict
    base = tables.rebuild_base("ns.t", "src")
    restaged = tables.stage("ns.t", [rows(0, 10, D1), rows(1, 5, D1, start=50), rows(2, 3, D1, 90)])
    tables.commit_batch("ns.t", "src", 2, tables.stage("ns.t", [rows(2, 3, D1, start=90)]))
    tables.rebuild_partitions("ns.t", "src", [D1], restaged, [0, 1, 2], base)
    assert count(tables) == 18
    assert tables.committed("ns.t", "src") == IdRanges.parse("0-2")


def test_rebuild_rejects_files_of_other_days(tables: TableStore) -> None:
    base = tables.rebuild_base("ns.t", "src")
    with pytest.raises(ValueError):
        tables.rebuild_partitions(
            "ns.t", "src", [D1], tables.stage("ns.t", [rows(0, 3, D2)]), [0], base
        )


def test_schema_evolution(tmp_path: Path) -> None:
    ts = TableStore(ObjectStoreCatalog(warehouse=str(tmp_path / "wh")))
    narrow = pa.schema([("n", pa.int32()), ("f", pa.float32()), ("_day", pa.date32())])
    ts.ensure_table("ns.e", narrow)
    b0 = pa.record_batch(
        [pa.array([1], pa.int32()), pa.array([1.5], pa.float32()), pa.array([D1], pa.date32())],
        schema=narrow,
    )
    ts.commit_batch("ns.e", "src", 0, ts.stage("ns.e", [b0]))
    wide = pa.schema(
        [
            ("n", pa.int64()),
            ("f", pa.float64()),
            ("_day", pa.date32()),
            pa.field("extra", pa.string(), nullable=False),  # added as nullable anyway
        ]
    )
    v_before = ts.current_version("ns.e")
    schema = ts.evolve("ns.e", wide)
    assert str(schema.find_field("n").field_type) == "long"
    assert str(schema.find_field("f").field_type) == "double"
    assert not schema.find_field("extra").required
    v_after = ts.current_version("ns.e")
    assert ts.evolve("ns.e", wide) == schema and ts.current_version("ns.e") == v_after > v_before
    b1 = pa.record_batch(
        [
            pa.array([2**40], pa.int64()),
            pa.array([2.5], pa.float64()),
            pa.array([D1], pa.date32()),
            pa.array(["new"]),
        ],
        schema=wide,
    )
    ts.commit_batch("ns.e", "src", 1, ts.stage("ns.e", [b1]))
    t = ts.load("ns.e").scan().to_arrow().sort_by("n")
    assert t["n"].to_pylist() == [1, 2**40] and t["extra"].to_pylist() == [None, "new"]
    with pytest.raises(IncompatibleSchema):
        ts.evolve("ns.e", pa.schema([("n", pa.string())]))
    with pytest.raises(IncompatibleSchema):
        ts.evolve("ns.e", pa.schema([("f", pa.int64())]))
    unknown = pa.record_batch([pa.array([1]), pa.array([D1], pa.date32())], names=["zz", "_day"])
    with pytest.raises(IncompatibleSchema):
        ts.stage("ns.e", [unknown])


def test_marker_survives_snapshot_expiry(tmp_path: Path) -> None:
    policy = MaintenancePolicy(keep_snapshots=3, keep_metadata_versions=4)
    ts = TableStore(
        ObjectStoreCatalog(warehouse=str(tmp_path / "wh")),
        TableSettings(maintenance_every=5, maintenance=policy),
    )
    ts.ensure_table("ns.t", SCHEMA)
    for b in range(23):
        ts.commit_batch("ns.t", "src", b, ts.stage("ns.t", [rows(b, 4, D1, start=b * 4)]))
    t = ts.load("ns.t")
    assert len(t.metadata.snapshots) <= 3 + 5
    report = ts.maintain("ns.t")
    t = ts.load("ns.t")
    assert len(t.metadata.snapshots) == 3 and report.expired_snapshots >= 0
    assert ts.committed("ns.t", "src") == IdRanges.parse("0-22")
    assert t.scan().to_arrow().num_rows == 92
    for b in (0, 10, 22):
        assert ts.commit_batch("ns.t", "src", b, []).duplicate


def test_other_pyiceberg_catalog(tmp_path: Path) -> None:
    catalog = make_catalog(
        str(tmp_path / "wh"), None, {"type": "sql", "uri": f"sqlite:///{tmp_path / 'c.db'}"}
    )
    ts = TableStore(catalog)
    ts.ensure_table("ns.t", SCHEMA)
    assert not ts.commit_batch("ns.t", "src", 0, ts.stage("ns.t", [rows(0, 5)])).duplicate
    assert ts.commit_batch("ns.t", "src", 0, ts.stage("ns.t", [rows(0, 5)])).duplicate
    assert not ts.commit_batch("ns.t", "src", 1, []).duplicate
    assert ts.committed("ns.t", "src") == IdRanges.parse("0-1")
    assert count(ts) == 5
    assert ts.current_version("ns.t") >= 3


def test_ensure_table_validates_partition_column(tmp_path: Path) -> None:
    ts = TableStore(ObjectStoreCatalog(warehouse=str(tmp_path / "wh")))
    with pytest.raises(ValueError):
        ts.ensure_table("ns.x", pa.schema([("a", pa.int64())]))
    with pytest.raises(ValueError):
        ts.ensure_table("ns.x", pa.schema([("_day", pa.string())]))
    t = ts.ensure_table("ns.x", SCHEMA)
    assert t.format_version == 2
    assert t.properties["write.parquet.compression-codec"] == "zstd"
    assert ts.ensure_table("ns.x", SCHEMA).metadata_location == t.metadata_location
