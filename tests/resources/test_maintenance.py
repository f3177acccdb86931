"""Maintenance and vacuum: only unreferenced files older than the window are deleted."""

from __future__ import annotations

import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from lockgate.pipelines.cli import main as cli_main
from lockgate.resources.catalog import ObjectStoreCatalog
from lockgate.resources.maintenance import MaintenancePolicy, maintain, vacuum
from lockgate.resources.store import ObjectStore, S3Options
from lockgate.resources.tables import TableSettings, TableStore

SCHEMA = pa.schema([("id", pa.int64()), ("_batch_id", pa.int64()), ("_day", pa.date32())])
D1, D2 = date(2024, 6, 1), date(2024, 6, 2)


def rows(b: int, n: int, day: date) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array(range(b * 100, b * 100 + n), pa.int64()),
            pa.array([b] * n, pa.int64()),
            pa.array([day] * n, pa.date32()),
        ],
        schema=SCHEMA,
    )


def setup_table(ts: TableStore) -> set[str]:
    """Commits, a rebuild that replaces D1's files, a staged-never-committed file and a
    duplicate run's staged file; then expiry and retirement of the metadata versions that
    still reference the replaced files (vacuum protects readable versions). Returns the
    locations that are garbage."""
    ts.ensure_table("ns.t", SCHEMA)
    for b in range(4):
        ts.commit_batch("ns.t", "src", b, ts.stage("ns.t", [rows(b, 10, D1 if b < 2 else D2)]))
    before = {f.file.file_path for f in ts.load("ns.t").scan().plan_files()}
    base = ts.rebuild_base("ns.t", "src")
    ts.rebuild_partitions(
        "ns.t", "src", [D1], ts.stage("ns.t", [rows(0, 10, D1), rows(1, 10, D1)]), [0, 1], base
    )
    orphan = ts.stage("ns.t", [rows(7, 3, D2)])  # a run that died before committing
    dup = ts.stage("ns.t", [rows(3, 10, D2)])  # a re-run of a committed batch
    assert ts.commit_batch("ns.t", "src", 3, dup).duplicate
    ts.maintain("ns.t")
    for b in range(10, 13):  # property-only commits, so retained versions postdate expiry
        ts.commit_batch("ns.t", "src", b, [])
    ts.maintain("ns.t")
    after = {f.file.file_path for f in ts.load("ns.t").scan().plan_files()}
    return (before - after) | {f.path for f in orphan + dup}


def snapshot_rows(ts: TableStore) -> list[tuple[int, int]]:
    t = ts.load("ns.t").scan().to_arrow()
    return sorted(zip(t["id"].to_pylist(), t["_batch_id"].to_pylist(), strict=True))


def age_all(root: Path, seconds: float) -> None:
    past = time.time() - seconds
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (past, past))


def make_store(tmp_path: Path, keep: int = 1) -> TableStore:
    catalog = ObjectStoreCatalog(warehouse=str(tmp_path / "wh"))
    policy = MaintenancePolicy(keep_snapshots=keep, keep_metadata_versions=2)
    return TableStore(catalog, TableSettings(maintenance_every=0, maintenance=policy))


def test_vacuum_deletes_only_unreferenced_old_files(tmp_path: Path) -> None:
    ts = make_store(tmp_path)
    garbage_data = setup_table(ts)
    assert len(garbage_data) == 4  # 2 replaced D1 files, the orphan, the duplicate's file
    expected_rows = snapshot_rows(ts)

    young = vacuum(ts.catalog, "ns.t", older_than=timedelta(days=3))
    assert young.deleted == [] and young.too_young > 0

    age_all(tmp_path / "wh", seconds=4 * 86400)
    fresh = ts.stage("ns.t", [rows(9, 2, D2)])  # a running batch's file: young, kept
    dry = vacuum(ts.catalog, "ns.t", older_than=timedelta(days=3), dry_run=True)
    deleted_data = {p for p in dry.deleted if "/data/" in p}
    assert deleted_data == garbage_data
    assert all(p.endswith(".avro") for p in set(dry.deleted) - deleted_data)
    assert all(os.path.exists(p) for p in dry.deleted)  # dry run deletes nothing

    done = vacuum(ts.catalog, "ns.t", older_than=timedelta(days=3))
    assert sorted(done.deleted) == sorted(dry.deleted)
    assert not any(os.path.exists(p) for p in done.deleted)
    assert os.path.exists(fresh[0].path)
    assert snapshot_rows(ts) == expected_rows  # every referenced file is still there
    again = vacuum(ts.catalog, "ns.t", older_than=timedelta(days=3))
    assert again.deleted == []
    # the fresh file commits fine after the vacuum
    ts.commit_batch("ns.t", "src", 9, fresh)
    assert len(snapshot_rows(ts)) == len(expected_rows) + 2


def test_vacuum_on_s3(s3_store: ObjectStore, s3_options: S3Options) -> None:
    catalog = ObjectStoreCatalog(warehouse=s3_store.uri(), s3_options=s3_options, store=s3_store)
    policy = MaintenancePolicy(keep_snapshots=1, keep_metadata_versions=2)
    ts = TableStore(catalog, TableSettings(maintenance_every=0, maintenance=policy))
    garbage = setup_table(ts)
    expected_rows = snapshot_rows(ts)
    assert vacuum(catalog, "ns.t", older_than=timedelta(days=3)).deleted == []
    report = vacuum(catalog, "ns.t", older_than=timedelta(0))
    deleted_data = {p for p in report.deleted if "/data/" in p}
    assert deleted_data == garbage
    assert snapshot_rows(ts) == expected_rows


def test_maintain_bounds_snapshots_and_metadata(tmp_path: Path) -> None:
    ts = make_store(tmp_path, keep=3)
    ts.ensure_table("ns.t", SCHEMA)
    for b in range(12):
        ts.commit_batch("ns.t", "src", b, ts.stage("ns.t", [rows(b, 2, D1)]))
    report = maintain(
        ts.catalog, "ns.t", MaintenancePolicy(keep_snapshots=3, keep_metadata_versions=2)
    )
    assert report.expired_snapshots == 9
    t = ts.load("ns.t")
    assert len(t.metadata.snapshots) == 3
    assert report.retired_versions == report.table_version - 2
    assert t.scan().to_arrow().num_rows == 24


def test_vacuum_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ts = make_store(tmp_path)
    garbage = setup_table(ts)
    wh = str(tmp_path / "wh")
    dry = ["vacuum", "--warehouse", wh, "--older-than", "0s", "--no-run-alive", "--dry-run"]
    assert cli_main(dry) == 0
    out = capsys.readouterr().out
    assert "ns.t:" in out and "would delete" in out
    assert all(p in out for p in garbage) and all(os.path.exists(p) for p in garbage)
    rc = cli_main(
        ["vacuum", "--warehouse", wh, "--table", "ns.t", "--older-than", "0s", "--no-run-alive"]
    )
    assert rc == 0 and not any(os.path.exists(p) for p in garbage)
    assert cli_main(["vacuum", "--warehouse", wh, "--older-than", "three days"]) == 2


def test_vacuum_progress_bar_uses_stderr_as_it_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar's stream is the ``sys.stderr`` of the call, not of the module's import (a CLI
    called in-process after a capture closed the earlier stream failed with 'I/O operation on
    closed file')."""
    import io

    from lockgate.pipelines.commands import vacuum

    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    with pytest.raises(ValueError, match="closed file"):
        vacuum._Bar("vacuum t", enabled=True)
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    bar = vacuum._Bar("vacuum t", enabled=True)
    assert bar.stream is now and not bar.enabled  # not a terminal: no bar drawn
