"""Other engines read Lockgate tables by path: DuckDB's iceberg extension (loaded from the
pip packages, no downloads) and pyiceberg's StaticTable, locally and on S3 (moto)."""

from __future__ import annotations

import importlib
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa
import pytest
from pyiceberg.table import StaticTable

from lockgate.resources.catalog import ObjectStoreCatalog
from lockgate.resources.maintenance import MaintenancePolicy
from lockgate.resources.store import ObjectStore
from lockgate.resources.tables import TableSettings, TableStore

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("amount", pa.float64()),
        ("_batch_id", pa.int64()),
        ("_day", pa.date32()),
    ]
)
DAYS = [date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3)]


def extension_path(name: str) -> str:
    """The extension file shipped by the ``duckdb-extension-<name>`` pip package."""
    mod = importlib.import_module(f"duckdb_extension_{name}")
    assert mod.__file__ is not None
    path = Path(mod.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    return str(path / f"{name}.duckdb_extension")


def duck(moto_endpoint: str | None = None) -> duckdb.DuckDBPyConnection:
    """DuckDB with the pip-shipped iceberg/avro/httpfs extensions; ``moto_endpoint`` (the moto
    server's URL): S3 paths are read from it."""
    con = duckdb.connect(
        config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    )
    for name in ("httpfs", "avro", "iceberg"):
        con.execute(f"LOAD '{extension_path(name)}'")
    if moto_endpoint is not None:
        con.execute(
            "CREATE SECRET moto (TYPE S3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1', "
            f"ENDPOINT '{urlsplit(moto_endpoint).netloc}', URL_STYLE 'path', USE_SSL false)"
        )
    return con


def rows(b: int, n: int, day: date) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array(range(b * 1000, b * 1000 + n), pa.int64()),
            pa.array([f"n{b}-{i}" for i in range(n)]),
            pa.array([i * 0.5 for i in range(n)], pa.float64()),
            pa.array([b] * n, pa.int64()),
            pa.array([day] * n, pa.date32()),
        ],
        schema=SCHEMA,
    )


def build_table(ts: TableStore) -> None:
    """Appends, an empty batch, maintenance (expiry + retired versions) and a rebuild, so
    readers meet every kind of metadata Lockgate writes."""
    ts.ensure_table("ns.t", SCHEMA)
    for b in range(8):
        ts.commit_batch("ns.t", "src", b, ts.stage("ns.t", [rows(b, 30 + b, DAYS[b % 3])]))
    ts.commit_batch("ns.t", "src", 8, [])
    ts.maintain("ns.t")
    base = ts.rebuild_base("ns.t", "src")
    d0 = [b for b in range(8) if b % 3 == 0]
    staged = ts.stage("ns.t", [rows(b, 30 + b, DAYS[0]) for b in d0])
    ts.rebuild_partitions("ns.t", "src", [DAYS[0]], staged, d0, base)
    ts.commit_batch("ns.t", "src", 9, ts.stage("ns.t", [rows(9, 5, DAYS[1])]))


def sort_rows(t: pa.Table) -> list[tuple[object, ...]]:
    cols = [c.to_pylist() for c in t.select(SCHEMA.names).columns]
    return sorted(zip(*cols, strict=True))


def test_duckdb_and_static_table_read_the_same_rows(
    request: pytest.FixtureRequest, store: ObjectStore
) -> None:
    is_s3 = store.uri().startswith("s3://")
    opts = request.getfixturevalue("s3_options") if is_s3 else None
    catalog = ObjectStoreCatalog(warehouse=store.uri(), s3_options=opts, store=store)
    policy = MaintenancePolicy(keep_snapshots=2, keep_metadata_versions=3)
    ts = TableStore(catalog, TableSettings(maintenance_every=0, maintenance=policy))
    build_table(ts)
    expected = sort_rows(ts.load("ns.t").scan().to_arrow())
    assert len(expected) == sum(30 + b for b in range(8)) + 5

    con = duck(request.getfixturevalue("moto_server") if is_s3 else None)
    location = catalog.table_location("ns.t")
    got = con.execute(f"SELECT * FROM iceberg_scan('{location}')").fetch_arrow_table()
    assert sort_rows(got) == expected
    by_day = con.execute(
        f"SELECT _day, count(*) FROM iceberg_scan('{location}') GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [d for d, _ in by_day] == DAYS

    props = {k: v for k, v in catalog.properties.items() if k.startswith("s3.")}
    static = StaticTable.from_metadata(location, props)
    assert static.metadata_location == ts.load("ns.t").metadata_location
    assert sort_rows(static.scan().to_arrow()) == expected
