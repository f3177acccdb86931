"""``Conformer.conform``: rows in the table's Iceberg types without copies it does not need
(``string`` kept where the table's Arrow schema says ``large_string``, lineage constants kept
as dictionary arrays), and what is staged from them reads back as the plain values."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from lockgate.pipelines.conform import Conformer
from lockgate.pipelines.lineage import LINEAGE_INDEX, SOURCE_ROW, lineage_arrays
from lockgate.pipelines.rescue import RESCUED
from lockgate.resources.catalog import ObjectStoreCatalog
from lockgate.resources.ledger import Claim, ClaimedObject
from lockgate.resources.tables import TableStore
from lockgate.resources.widening import plain_schema, same_type

WHEN = datetime(2026, 11, 30, 12, tzinfo=UTC)
DECLARED = pa.schema([("id", pa.int64()), ("user", pa.string()), ("qty", pa.int32())])


def _chunk(n: int) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "id": pa.array(range(n), pa.int64()),
            "user": pa.array([f"u{i % 3}" for i in range(n)], pa.string()),
            "qty": pa.array([str(i) if i % 4 else "x" for i in range(n)], pa.string()),
            SOURCE_ROW: pa.array(range(n), pa.int64()),
        }
    )


def test_conform_keeps_strings_and_lineage_as_they_are(tmp_path: Path) -> None:
    tables = TableStore(ObjectStoreCatalog(warehouse=str(tmp_path / "wh")))
    conformer = Conformer(tables, "ns.events", DECLARED)
    conformer.prepare()
    assert conformer.schema is not None
    assert conformer.schema.field("user").type == pa.large_string()  # pyiceberg's as_arrow
    claim = Claim("src", 4, "2024-03-01", (ClaimedObject("k.csv", "e", 9, WHEN),), WHEN, 0)
    chunk = _chunk(8)
    lineage = lineage_arrays(claim, 8, WHEN, "k.csv", "e")
    out = conformer.conform(chunk, lineage)

    user = out.column("user")
    assert user.type == pa.string()
    assert user.buffers()[2].address == chunk.column("user").buffers()[2].address  # no copy
    assert out.column("_source_key").type == pa.dictionary(LINEAGE_INDEX, pa.string())
    for f in out.schema:  # the table's Iceberg type for every column
        assert same_type(conformer.schema.field(f.name).type, f.type), f.name
    # a value that does not fit is null and rescued, as on every path
    assert out.column("qty").to_pylist() == [None if i % 4 == 0 else i for i in range(8)]
    assert out.column(RESCUED).to_pylist()[0] == '{"qty":"x"}'

    tables.commit_batch("ns.events", "src", 4, tables.stage("ns.events", [out]))
    back = tables.load("ns.events").scan().to_arrow().sort_by("id")
    assert back.schema.field("_source_key").type in (pa.string(), pa.large_string())
    assert back["_source_key"].to_pylist() == ["k.csv"] * 8
    assert back["_batch_id"].to_pylist() == [4] * 8
    assert back["user"].to_pylist() == chunk.column("user").to_pylist()
    assert plain_schema(out.schema).names == back.schema.names
