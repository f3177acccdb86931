"""The staged-file writer: the same DataFile, schema and rows as pyiceberg's ``write_file``,
cheaper encodings where they cannot change what readers see."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.io.pyarrow import pyarrow_to_schema, write_file
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import Table, WriteTask

from lockgate.resources.catalog import ObjectStoreCatalog
from lockgate.resources.parquet_writer import file_table, write_data_file
from lockgate.resources.store import ObjectStore
from lockgate.resources.tables import TableStore
from tests.resources.test_interop_duckdb import duck

D1 = date(2024, 3, 1)
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("kind", pa.string()),
        ("score", pa.float64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("_rescued_data", pa.string()),
        ("_source_key", pa.string()),
        ("_source_row", pa.int64()),
        ("_batch_id", pa.int64()),
        ("_day", pa.date32()),
    ]
)
T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)


def rows(start: int, n: int, unique: bool = True) -> pa.RecordBatch:
    """``n`` rows; ``unique``: ids and scores all distinct (else a few values repeat)."""
    r = range(start, start + n)
    return pa.record_batch(
        [
            pa.array([i if unique else i % 7 for i in r], pa.int64()),
            pa.array([f"k{i % 5}" if i % 11 else None for i in r]),
            pa.array([i * 0.25 if unique else float(i % 3) for i in r], pa.float64()),
            pa.array([T0.replace(second=i % 60) for i in r], pa.timestamp("us", tz="UTC")),
            pa.array(['{"x": 1}' if i % 13 == 0 else None for i in r], pa.string()),
            pa.array(["landing/2024-03-01/object-0.jsonl"] * n),
            pa.array(r, pa.int64()),
            pa.array([3] * n, pa.int64()),
            pa.array([D1] * n, pa.date32()),
        ],
        schema=SCHEMA,
    )


def make_table(tmp_path: Path, props: dict[str, str] | None = None) -> Table:
    ts = TableStore(ObjectStoreCatalog(warehouse=str(tmp_path / "wh")))
    table = ts.ensure_table("ns.t", SCHEMA)
    if props:
        with table.transaction() as txn:
            txn.set_properties(props)
        table = ts.load("ns.t")
    return table


def task(table: Table, batches: list[pa.RecordBatch], task_id: int) -> WriteTask:
    meta = table.metadata
    schema = meta.schema()
    spec = meta.spec()
    return WriteTask(
        write_uuid=uuid.uuid4(),
        task_id=task_id,
        schema=pyarrow_to_schema(batches[0].schema, name_mapping=schema.name_mapping),
        record_batches=batches,
        partition_key=PartitionKey(
            field_values=[PartitionFieldValue(spec.fields[0], D1)],
            partition_spec=spec,
            schema=schema,
        ),
    )


def both(table: Table, batches: list[pa.RecordBatch]) -> tuple[DataFile, DataFile]:
    """(ours, pyiceberg's) DataFile for the same batches."""
    ours = write_data_file(table.io, table.metadata, task(table, batches, 0))
    theirs = next(iter(write_file(table.io, table.metadata, iter([task(table, batches, 1)]))))
    return ours, theirs


STATS = (
    "content",
    "file_format",
    "partition",
    "record_count",
    "value_counts",
    "null_value_counts",
    "nan_value_counts",
    "lower_bounds",
    "upper_bounds",
    "sort_order_id",
    "equality_ids",
)


def local(path: str) -> str:
    return path.removeprefix("file://")


def test_data_file_equals_write_files(tmp_path: Path) -> None:
    table = make_table(tmp_path)
    batches = [rows(i * 3000, 3000) for i in range(4)]
    ours, theirs = both(table, batches)
    for name in STATS:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.record_count == 12_000
    assert ours.partition[0] == (D1 - date(1970, 1, 1)).days
    assert set(ours.column_sizes) == set(theirs.column_sizes)
    assert all(v > 0 for v in ours.column_sizes.values())
    assert len(ours.split_offsets or []) == len(theirs.split_offsets or []) == 1
    assert ours.file_size_in_bytes == Path(local(ours.file_path)).stat().st_size
    assert ours.file_path.startswith(theirs.file_path.rsplit("/", 1)[0] + "/")
    assert ours.file_path.endswith(".parquet") and ours.file_path != theirs.file_path
    # same Parquet schema: names, repetition, physical/logical types, field ids
    ours_pq = pq.ParquetFile(local(ours.file_path))
    theirs_pq = pq.ParquetFile(local(theirs.file_path))
    assert ours_pq.schema.to_arrow_schema().equals(theirs_pq.schema.to_arrow_schema())
    for a, b in zip(ours_pq.schema_arrow, theirs_pq.schema_arrow, strict=True):
        assert a.metadata[b"PARQUET:field_id"] == b.metadata[b"PARQUET:field_id"]

    def columns(f: pq.ParquetFile) -> list[tuple[object, ...]]:
        s = f.schema
        return [
            (c.path, c.physical_type, str(c.logical_type), c.max_definition_level)
            for c in (s.column(i) for i in range(len(s)))
        ]

    assert columns(ours_pq) == columns(theirs_pq)
    assert ours_pq.read().equals(theirs_pq.read().cast(ours_pq.schema_arrow))


def test_same_encodings_give_the_same_column_sizes(tmp_path: Path) -> None:
    """Where our dictionary choice is pyiceberg's (every column but ``_source_row``, when no
    column is mostly distinct), the column chunks are byte for byte the same size: the same
    writer options reach pyarrow."""
    table = make_table(tmp_path)
    ours, theirs = both(table, [rows(0, 4000, unique=False)])
    row_id = table.schema().find_field("_source_row").field_id
    assert ours.column_sizes[row_id] < theirs.column_sizes[row_id]  # no dictionary spilled
    del ours.column_sizes[row_id], theirs.column_sizes[row_id]
    assert ours.column_sizes == theirs.column_sizes
    assert ours.null_value_counts == theirs.null_value_counts
    assert ours.lower_bounds == theirs.lower_bounds


def test_dictionary_off_for_unique_columns(tmp_path: Path) -> None:
    table = make_table(tmp_path)
    df = write_data_file(table.io, table.metadata, task(table, [rows(0, 5000)], 0))
    meta = pq.ParquetFile(local(df.file_path)).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    dictionary = {n: meta.row_group(0).column(i).has_dictionary_page for i, n in enumerate(names)}
    assert not dictionary["_source_row"] and not dictionary["id"] and not dictionary["score"]
    assert dictionary["kind"] and dictionary["_source_key"] and dictionary["_batch_id"]
    encodings = {n: meta.row_group(0).column(i).encodings for i, n in enumerate(names)}
    assert "DELTA_BINARY_PACKED" in encodings["_source_row"]
    assert "DELTA_BINARY_PACKED" not in encodings["id"]  # user data: as pyiceberg writes it


def test_table_write_properties_are_honoured(tmp_path: Path) -> None:
    table = make_table(
        tmp_path,
        {
            "write.parquet.compression-codec": "gzip",
            "write.parquet.compression-level": "1",
            "write.parquet.row-group-limit": "1000",
            "write.parquet.page-row-limit": "100",
        },
    )
    ours, theirs = both(table, [rows(0, 2500)])
    meta = pq.ParquetFile(local(ours.file_path)).metadata
    assert meta.num_row_groups == 3
    assert meta.row_group(0).column(0).compression == "GZIP"
    assert len(ours.split_offsets or []) == len(theirs.split_offsets or []) == 3
    assert ours.record_count == theirs.record_count == 2500


def test_dictionary_input_reads_back_as_plain_values(tmp_path: Path) -> None:
    """A constant column given as a dictionary array (indices only) is written from its
    indices and read back as plain strings by pyarrow, pyiceberg and DuckDB."""
    table = make_table(tmp_path)
    plain = [rows(0, 2000), rows(2000, 1500)]
    key = plain[0].schema.get_field_index("_source_key")
    encoded = [b.set_column(key, "_source_key", b.column(key).dictionary_encode()) for b in plain]
    ours = write_data_file(table.io, table.metadata, task(table, encoded, 0))
    _, theirs = both(table, plain)
    for name in STATS:
        assert getattr(ours, name) == getattr(theirs, name), name
    back = pq.read_table(local(ours.file_path))
    assert back.schema.field("_source_key").type == pa.string()
    assert back.equals(pa.Table.from_batches(plain))
    with table.transaction() as txn, txn.update_snapshot().fast_append() as app:
        app.append_data_file(ours)
    table = table.refresh()
    scanned = table.scan().to_arrow()
    assert (
        scanned["_source_key"].to_pylist()
        == pa.Table.from_batches(plain)["_source_key"].to_pylist()
    )
    got = (
        duck()
        .execute(
            "SELECT _source_key, count(*) FROM iceberg_scan(?) GROUP BY 1",
            [table.metadata_location],
        )
        .fetchall()
    )
    assert got == [("landing/2024-03-01/object-0.jsonl", 3500)]


def test_nested_columns_go_through_pyiceberg(tmp_path: Path) -> None:
    """A batch pyiceberg's writer must write, its lineage constants dictionary arrays (as the
    stage makes them): staged, committed and read back with the plain values."""
    nested = pa.schema([*SCHEMA, ("tags", pa.list_(pa.string()))])
    ts = TableStore(ObjectStoreCatalog(warehouse=str(tmp_path / "wh")))
    table = ts.ensure_table("ns.n", nested)
    b = rows(0, 100)
    columns = [
        c.dictionary_encode() if n in ("_source_key", "_batch_id") else c
        for n, c in zip(b.schema.names, b.columns, strict=True)
    ]
    batch = pa.RecordBatch.from_arrays(
        [*columns, pa.array([["a", str(i)] for i in range(100)])],
        names=nested.names,
    )
    assert pa.types.is_dictionary(batch.schema.field("_source_key").type)
    assert file_table(table.schema(), [batch]) is None
    staged = ts.stage("ns.n", [batch])
    ts.commit_batch("ns.n", "src", 0, staged)
    got = ts.load("ns.n").scan().to_arrow().sort_by("id")
    assert got["tags"].to_pylist() == [["a", str(i)] for i in range(100)]
    assert got["_source_key"].to_pylist() == b.column("_source_key").to_pylist()
    assert got["_batch_id"].to_pylist() == [3] * 100


def test_missing_and_widened_columns(tmp_path: Path) -> None:
    """A batch without a nullable table column gets nulls; an int32 column of a long table
    is widened, as pyiceberg's projection does."""
    table = make_table(tmp_path)
    b = rows(0, 300).drop_columns(["score"])
    b = b.set_column(0, "id", b.column(0).cast(pa.int32()))
    ours, theirs = both(table, [b])
    for name in STATS:
        assert getattr(ours, name) == getattr(theirs, name), name
    back = pq.read_table(local(ours.file_path))
    assert back["score"].null_count == 300 and back.schema.field("id").type == pa.int64()


def test_staged_files_read_back_everywhere(
    request: pytest.FixtureRequest, store: ObjectStore
) -> None:
    """Staged through TableStore on both backends: the reported size is the object's size,
    and pyiceberg and DuckDB read the committed rows back unchanged."""
    is_s3 = store.uri().startswith("s3://")
    opts = request.getfixturevalue("s3_options") if is_s3 else None
    catalog = ObjectStoreCatalog(warehouse=store.uri(), s3_options=opts, store=store)
    ts = TableStore(catalog)
    ts.ensure_table("ns.t", SCHEMA)
    batches = [rows(i * 1000, 1000) for i in range(3)]
    staged = ts.stage("ns.t", batches, target_bytes=40_000)
    assert len(staged) >= 2 and sum(f.record_count for f in staged) == 3000
    table = ts.load("ns.t")
    for f in staged:
        assert table.io.new_input(f.path).__len__() == f.file_size_in_bytes
    ts.commit_batch("ns.t", "src", 3, staged)
    expected = pa.Table.from_batches(batches).sort_by("id")
    scanned = ts.load("ns.t").scan().to_arrow().sort_by("id")
    assert scanned.cast(expected.schema).equals(expected)
    con = duck(request.getfixturevalue("moto_server") if is_s3 else None)
    location = catalog.table_location("ns.t")
    got = con.execute(f"SELECT * FROM iceberg_scan('{location}') ORDER BY id").fetch_arrow_table()
    assert got.select(expected.column_names).cast(expected.schema).equals(expected)
