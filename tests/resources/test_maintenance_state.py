"""Maintenance that runs where the work runs: its trigger and state live in the table, so a
fresh ``TableStore`` per commit (as under Dagster) still expires snapshots, on the object-store
catalog and on a SQL catalog; orphan cleanup works through a SQL catalog's FileIO."""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from lockgate.resources.catalog import ObjectStoreCatalog, make_catalog
from lockgate.resources.maintenance import (
    MAINTAINED_AT,
    MAINTAINED_SEQUENCE,
    MaintenancePolicy,
    VacuumRefused,
    maintain,
    maintenance_due,
)
from lockgate.resources.tables import TableSettings, TableStore

SCHEMA = pa.schema([("id", pa.int64()), ("_batch_id", pa.int64()), ("_day", pa.date32())])
DAY = date(2024, 7, 1)


def rows(b: int) -> pa.RecordBatch:
    return pa.record_batch(
        [pa.array([b], pa.int64()), pa.array([b], pa.int64()), pa.array([DAY], pa.date32())],
        schema=SCHEMA,
    )


def sql_catalog(tmp_path: Path) -> Catalog:
    return make_catalog(
        str(tmp_path / "wh"), None, {"type": "sql", "uri": f"sqlite:///{tmp_path / 'cat.db'}"}
    )


def fresh(catalog: Catalog, every: int = 5) -> TableStore:
    policy = MaintenancePolicy(keep_snapshots=2, keep_metadata_versions=3)
    return TableStore(catalog, TableSettings(maintenance_every=every, maintenance=policy))


@pytest.mark.parametrize("kind", ["object-store", "sql"])
def test_fresh_table_store_per_commit_still_expires(tmp_path: Path, kind: str) -> None:
    catalog: Catalog = (
        sql_catalog(tmp_path)
        if kind == "sql"
        else ObjectStoreCatalog(warehouse=str(tmp_path / "wh"))
    )
    fresh(catalog).ensure_table("ns.t", SCHEMA)
    for b in range(23):  # every commit from a new TableStore, as every Dagster run does
        ts = fresh(catalog)
        ts.commit_batch("ns.t", "src", b, ts.stage("ns.t", [rows(b)]))
    table = fresh(catalog).load("ns.t")
    assert len(table.metadata.snapshots) <= 2 + 5  # kept 2 at the last maintenance, +<5 since
    assert MAINTAINED_AT in table.properties
    assert 0 < int(table.properties[MAINTAINED_SEQUENCE]) <= table.metadata.last_sequence_number
    assert table.scan().to_arrow().num_rows == 23


def test_overdue_maintenance_is_due_off_turn(tmp_path: Path) -> None:
    catalog = ObjectStoreCatalog(warehouse=str(tmp_path / "wh"))
    ts = fresh(catalog, every=0)
    ts.ensure_table("ns.t", SCHEMA)
    for b in range(7):
        ts.commit_batch("ns.t", "src", b, ts.stage("ns.t", [rows(b)]))
    table = ts.load("ns.t")
    assert table.metadata.last_sequence_number == 7
    assert maintenance_due(table, turn=10, every=5)  # its turn
    assert not maintenance_due(table, turn=7, every=5)  # not its turn, only 7 behind
    assert maintenance_due(table, turn=7, every=2)  # not its turn, but 7 >= 3 intervals behind
    assert not maintenance_due(table, turn=10, every=0)  # off
    maintain(catalog, "ns.t", MaintenancePolicy(keep_snapshots=2))
    table = ts.load("ns.t")
    assert table.properties[MAINTAINED_SEQUENCE] == "7"
    assert len(table.metadata.snapshots) == 2
    assert not maintenance_due(table, turn=7, every=2)  # just maintained


def age_all(root: Path, seconds: float) -> None:
    past = time.time() - seconds
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (past, past))


def test_orphan_cleanup_through_sql_catalogs_fileio(tmp_path: Path) -> None:
    catalog = sql_catalog(tmp_path)
    ts = fresh(catalog, every=0)
    ts.ensure_table("ns.t", SCHEMA)
    for b in range(3):
        ts.commit_batch("ns.t", "src", b, ts.stage("ns.t", [rows(b)]))
    orphan = ts.stage("ns.t", [rows(99)])  # a run that died before committing
    orphan_path = orphan[0].path.removeprefix("file://")
    assert os.path.exists(orphan_path)
    with pytest.raises(VacuumRefused):
        maintain(catalog, "ns.t", orphans_older_than=timedelta(hours=1), min_window=timedelta(2))
    age_all(tmp_path / "wh", 7200)
    report = maintain(
        catalog, "ns.t", MaintenancePolicy(keep_snapshots=1), orphans_older_than=timedelta(hours=1)
    )
    assert report.expired_snapshots == 2
    assert report.orphans is not None
    deleted = {p.removeprefix("file://") for p in report.orphans.deleted}
    assert orphan_path in deleted and not os.path.exists(orphan_path)
    table = ts.load("ns.t")
    assert table.scan().to_arrow().num_rows == 3  # every committed row still readable
    assert os.path.exists(table.metadata_location.removeprefix("file://"))
    # a second pass finds nothing more that is old and unreferenced
    again = maintain(catalog, "ns.t", orphans_older_than=timedelta(hours=1))
    assert again.orphans is not None and again.orphans.deleted == []
