"""The one commit loop of the table store (``TableStore._commit``) and its update producers:
a lost race reloads and re-plans, the producer's requirement is checked against every reload,
and exhausted attempts raise ``CommitConflict`` with nothing committed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.table import Table, Transaction

from lockgate.resources.catalog import ObjectStoreCatalog, make_catalog
from lockgate.resources.compaction import ReplaceDayFiles
from lockgate.resources.retry import RetryPolicy
from lockgate.resources.store import LocalStore, S3Options
from lockgate.resources.tables import (
    AppendBatch,
    CommitConflict,
    OverwritePartitions,
    RebuildBase,
    RebuildConflict,
    TableSettings,
    TableStore,
)
from tests.conftest import create_bucket
from tests.s3_fault_proxy import FaultProxy

SCHEMA = pa.schema([("id", pa.int64()), ("_day", pa.date32())])
DAY = date(2024, 3, 1)


def _tables(tmp_path: Path, attempts: int = 5) -> TableStore:
    store = LocalStore(tmp_path / "wh")
    catalog = ObjectStoreCatalog(warehouse=store.uri(), store=store)
    ts = TableStore(
        catalog,
        TableSettings(commit_attempts=attempts, retry_base_s=0.0, retry_max_s=0.0),
    )
    ts.ensure_table("ns.t", SCHEMA)
    return ts


def _rows(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch(
        [pa.array(range(start, start + n), pa.int64()), pa.array([DAY] * n, pa.date32())],
        schema=SCHEMA,
    )


@dataclass
class RacedAppend:
    """An ``AppendBatch`` that loses its first ``races`` attempts: before returning its plan, a
    rival writer commits another batch (so the plan's base is stale)."""

    tables: TableStore
    inner: AppendBatch
    races: int
    planned: list[int] = field(default_factory=list)

    @property
    def what(self) -> str:
        return self.inner.what

    def plan(self, identifier: str, table: Table) -> Transaction | None:
        self.planned.append(len(self.planned))
        txn = self.inner.plan(identifier, table)
        if len(self.planned) <= self.races:
            rival = 100 + len(self.planned)
            self.tables.commit_batch(identifier, "rival", rival, [])
        return txn


def test_lost_races_reload_and_replan(tmp_path: Path) -> None:
    ts = _tables(tmp_path)
    staged = ts.stage("ns.t", [_rows(0, 3)])
    update = RacedAppend(ts, AppendBatch("src", 0, staged, {}), races=2)
    table, committed, attempts = ts._commit("ns.t", update)
    assert committed and attempts == 3 and len(update.planned) == 3
    assert table.scan().to_arrow().num_rows == 3
    assert 0 in ts.committed("ns.t", "src") and len(ts.committed("ns.t", "rival")) == 2
    # the requirement (batch unmarked) is checked again: now there is nothing to commit
    again = ts.commit_batch("ns.t", "src", 0, staged)
    assert again.duplicate and ts.load("ns.t").scan().to_arrow().num_rows == 3


def test_exhausted_attempts_raise_and_commit_nothing(tmp_path: Path) -> None:
    ts = _tables(tmp_path, attempts=2)
    staged = ts.stage("ns.t", [_rows(0, 3)])
    update = RacedAppend(ts, AppendBatch("src", 0, staged, {}), races=5)
    with pytest.raises(CommitConflict, match="batch src:0 lost 2 races"):
        ts._commit("ns.t", update)
    assert 0 not in ts.committed("ns.t", "src")
    assert ts.load("ns.t").scan().to_arrow().num_rows == 0


def test_overwrite_requires_the_marker_unchanged_since_its_base(tmp_path: Path) -> None:
    ts = _tables(tmp_path)
    ts.commit_batch("ns.t", "src", 0, ts.stage("ns.t", [_rows(0, 2)]))
    base = ts.rebuild_base("ns.t", "src")
    ts.commit_batch("ns.t", "src", 1, ts.stage("ns.t", [_rows(2, 2)]))  # after the base
    staged = ts.stage("ns.t", [_rows(0, 2)])
    with pytest.raises(RebuildConflict, match="batches 1 of src"):
        ts.rebuild_partitions("ns.t", "src", [DAY], staged, [0], base)
    with pytest.raises(ValueError, match="at least one day"):
        OverwritePartitions("src", [], staged, [0], base, {})
    empty = RebuildBase(snapshot_id=None, marker=base.marker, table_version=0)
    result = ts.rebuild_partitions("ns.t", "src", [DAY], staged, [0, 1], empty)
    assert not result.duplicate and ts.load("ns.t").scan().to_arrow().num_rows == 2


def test_backoff_is_the_retry_policy() -> None:
    s = TableSettings(commit_attempts=7, retry_base_s=0.5, retry_max_s=2.0)
    assert s.backoff == RetryPolicy(
        max_attempts=7, base_delay=0.5, max_delay=2.0, max_total=float("inf")
    )
    assert all(0.0 <= s.backoff.backoff(k) <= min(2.0, 0.5 * 2**k) for k in range(8))


def _s3_tables(moto_server: str, proxy: FaultProxy) -> TableStore:
    bucket = create_bucket(moto_server)
    opts = S3Options(endpoint_url=proxy.url, region="us-east-1")
    ts = TableStore(
        make_catalog(f"s3://{bucket}/wh", opts),
        TableSettings(retry_base_s=0.0, retry_max_s=0.0),
    )
    ts.ensure_table("ns.t", SCHEMA)
    return ts


def test_a_manifest_upload_failing_past_the_fileio_retries_is_committed_once(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The torture's notify kind met it: pyiceberg's FileIO (Arrow's S3 client) gave up
    completing a manifest's multipart upload, which used to fail the run."""
    monkeypatch.setenv("LOCKGATE_RETRY_BASE_DELAY", "0")
    with FaultProxy(moto_server) as proxy:
        ts = _s3_tables(moto_server, proxy)
        staged = ts.stage("ns.t", [_rows(0, 3)])
        # the CompleteMultipartUpload requests of the commit's Avro files never arrive:
        # more than the FileIO's own tries of one upload
        proxy.inject("drop_request", 6, method="POST", path_contains="uploadId")
        result = ts.commit_batch("ns.t", "src", 0, staged)
        assert proxy.faults["drop_request"] == 6
        manifests = [
            p for m, p, _ in proxy.history if m == "POST" and p.endswith("-m0.avro?uploads")
        ]
    assert not result.duplicate
    assert len(set(manifests)) >= 2  # planned again from a reload: a new manifest
    assert ts.load("ns.t").scan().to_arrow().column("id").to_pylist() == [0, 1, 2]
    assert list(ts.committed("ns.t", "src")) == [0]


def test_a_permanent_fileio_error_is_not_retried(moto_server: str) -> None:
    with FaultProxy(moto_server) as proxy:
        ts = _s3_tables(moto_server, proxy)
        staged = ts.stage("ns.t", [_rows(0, 3)])
        proxy.inject("access_denied", 50, method="POST", path_contains="uploadId")
        with pytest.raises(OSError, match="ACCESS_DENIED"):
            ts.commit_batch("ns.t", "src", 0, staged)
        started = [p for m, p, _ in proxy.history if m == "POST" and p.endswith(".avro?uploads")]
    assert len(started) == 1  # the commit loop did not plan again (a new plan: new files)
    assert list(ts.committed("ns.t", "src")) == []


def test_a_data_file_upload_failing_past_the_fileio_retries_is_written_again(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCKGATE_RETRY_BASE_DELAY", "0")
    with FaultProxy(moto_server) as proxy:
        ts = _s3_tables(moto_server, proxy)
        proxy.inject("drop_request", 6, method="POST", path_contains="uploadId")
        staged = ts.stage("ns.t", [_rows(0, 3)])
        assert proxy.faults["drop_request"] == 6
        ts.commit_batch("ns.t", "src", 0, staged)
    assert [f.record_count for f in staged] == [3]
    assert ts.load("ns.t").scan().to_arrow().column("id").to_pylist() == [0, 1, 2]


def test_each_update_plans_nothing_once_applied(tmp_path: Path) -> None:
    """What makes the commit loop's retry after a transient error safe: an update whose commit
    landed (its answer lost) finds itself applied on the reload and commits nothing again."""
    ts = _tables(tmp_path)
    small = [ts.stage("ns.t", [_rows(i * 3, 3)]) for i in range(3)]
    for i, staged in enumerate(small):
        ts.commit_batch("ns.t", "src", i, staged)
    whole = ts.stage("ns.t", [_rows(0, 9)])
    updates = [
        AppendBatch("src", 3, ts.stage("ns.t", [_rows(9, 1)]), {}),
        ReplaceDayFiles(DAY, tuple(f.path for st in small for f in st), [whole[0].data_file], {}),
        OverwritePartitions(
            "src",
            [DAY],
            ts.stage("ns.t", [_rows(0, 10)]),
            [0, 1, 2, 3],
            ts.rebuild_base("ns.t", "src"),
            {},
        ),
    ]
    for update in updates:
        _, committed, _ = ts._commit("ns.t", update)
        snapshot = ts.load("ns.t").current_snapshot()
        _, again, _ = ts._commit("ns.t", update)
        assert committed and not again, update.what
        assert ts.load("ns.t").current_snapshot() == snapshot
        ids = ts.load("ns.t").scan().to_arrow().column("id").to_pylist()
        assert sorted(ids) == list(range(len(ids))), update.what
