"""Compaction: a day's small files become few files in ONE replace commit; no row, marker or
lineage changes; a batch committed between plan and commit survives; a file replaced under the
compaction makes it re-plan; sort order written and recorded."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import FileScanTask, Table, Transaction
from pyiceberg.table.snapshots import Operation

from lockgate.resources.catalog import ObjectStoreCatalog
from lockgate.resources.compaction import (
    BadSortColumn,
    CompactionPolicy,
    CompactionStale,
    ReplaceDayFiles,
    compact_day,
    compact_table,
    day_files,
    files_per_day,
)
from lockgate.resources.markers import marker_property
from lockgate.resources.store import ObjectStore
from lockgate.resources.tables import (
    AppendBatch,
    CommitConflict,
    TableSettings,
    TableStore,
    TableUpdate,
)

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("ts", pa.int64()),
        ("_source_key", pa.string()),
        ("_batch_id", pa.int64()),
        ("_day", pa.date32()),
    ]
)
D1, D2 = date(2024, 5, 1), date(2024, 5, 2)


def rows(b: int, n: int, day: date) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array(range(b * 1000, b * 1000 + n), pa.int64()),
            pa.array([(b * 7919 + i * 104729) % 10007 for i in range(n)], pa.int64()),
            pa.array([f"k/{b}.jsonl"] * n),
            pa.array([b] * n, pa.int64()),
            pa.array([day] * n, pa.date32()),
        ],
        schema=SCHEMA,
    )


@pytest.fixture
def tables(request: pytest.FixtureRequest, store: ObjectStore) -> TableStore:
    opts = request.getfixturevalue("s3_options") if store.uri().startswith("s3://") else None
    catalog = ObjectStoreCatalog(warehouse=store.uri(), s3_options=opts, store=store)
    ts = TableStore(catalog, TableSettings(maintenance_every=0))
    ts.ensure_table("ns.t", SCHEMA)
    return ts


def fill(ts: TableStore, batches: range, day: date, n: int = 5) -> None:
    for b in batches:
        ts.commit_batch("ns.t", "src", b, ts.stage("ns.t", [rows(b, n, day)]))


def content(ts: TableStore) -> list[tuple[object, ...]]:
    t = ts.load("ns.t").scan().to_arrow()
    return sorted(zip(*(t[c].to_pylist() for c in SCHEMA.names), strict=True))


def test_compaction_rewrites_small_files_once_and_keeps_every_row(tables: TableStore) -> None:
    fill(tables, range(12), D1)
    fill(tables, range(12, 15), D2)
    before = content(tables)
    props_before = dict(tables.load("ns.t").properties)
    results = compact_table(tables, "ns.t", CompactionPolicy(min_files=8))
    assert [r.day for r in results] == [D1]  # D2 has 3 small files: below min_files
    (r,) = results
    assert (r.files_before, r.files_read, r.files_written, r.files_after) == (12, 12, 1, 1)
    table = tables.load("ns.t")
    snap = table.current_snapshot()
    assert snap is not None and snap.summary is not None
    assert snap.summary.operation == Operation.REPLACE
    assert snap.summary["lockgate.compaction"] == D1.isoformat()
    assert len(day_files(table, D1)) == 1 and len(day_files(table, D2)) == 3
    assert content(tables) == before
    assert dict(table.properties) == props_before  # markers untouched
    assert table.properties[marker_property("src")] == "0-14"
    # a second run finds nothing to do
    assert compact_table(tables, "ns.t", CompactionPolicy(min_files=8)) == []


def test_too_few_small_files_is_skipped_with_reason(tables: TableStore) -> None:
    fill(tables, range(3), D1)
    r = compact_day(tables, "ns.t", D1, CompactionPolicy(min_files=4))
    assert r.skipped is not None and "fewer than 4" in r.skipped
    assert len(day_files(tables.load("ns.t"), D1)) == 3


def test_target_size_bins_files(tables: TableStore) -> None:
    fill(tables, range(10), D1)
    sizes = [f.file_size_in_bytes for f in day_files(tables.load("ns.t"), D1)]
    target = max(sizes) * 3  # about 3 files fit in one bin
    r = compact_day(
        tables, "ns.t", D1, CompactionPolicy(target_file_size_bytes=target, min_files=2)
    )
    assert r.files_read >= 8 and 3 <= r.files_after <= 5
    assert all(f.file_size_in_bytes < 2 * target for f in day_files(tables.load("ns.t"), D1))


class _AppendBetweenPlanAndCommit:
    """Wraps the compaction's update: before its first plan, another writer commits a batch
    to the same day (as a concurrent run would between the compaction's read and commit)."""

    def __init__(self, ts: TableStore, update: TableUpdate) -> None:
        self.ts, self.update, self.done = ts, update, False

    @property
    def what(self) -> str:
        return self.update.what

    def plan(self, identifier: str, table: object) -> object:
        if not self.done:
            self.done = True
            fill(self.ts, range(99, 100), D1, n=3)  # commits on top of `table`: it is stale now
        return self.update.plan(identifier, table)  # type: ignore[arg-type]


def test_batch_committed_between_plan_and_commit_survives(
    tables: TableStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(tables, range(8), D1)
    original = tables.commit_update
    seen: list[int] = []

    def racing(identifier: str, update: TableUpdate) -> tuple[object, bool, int]:
        assert isinstance(update, ReplaceDayFiles)
        table, committed, attempts = original(
            identifier, _AppendBetweenPlanAndCommit(tables, update)
        )
        seen.append(attempts)
        return table, committed, attempts

    monkeypatch.setattr(tables, "commit_update", racing)
    before = content(tables)
    r = compact_day(tables, "ns.t", D1, CompactionPolicy(min_files=8))
    assert seen == [2]  # the first attempt lost to the append, the second committed
    after = content(tables)
    assert len(after) == len(before) + 3
    assert sum(1 for row in after if row[3] == 99) == 3  # the concurrent batch's rows survive
    live = day_files(tables.load("ns.t"), D1)
    assert len(live) == 2 and r.files_read == 8  # compacted file + the concurrent batch's file
    assert tables.committed("ns.t", "src").format() == "0-7,99"


def test_file_replaced_under_compaction_is_never_dropped_and_replans(
    tables: TableStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild replaces the day's files after the compaction read them: the compaction must
    not commit (its rows would come back twice); it discards its files and plans again."""
    fill(tables, range(8), D1)
    original = tables.commit_update
    calls = {"n": 0}

    def rebuild_first(identifier: str, update: TableUpdate) -> tuple[object, bool, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            base = tables.rebuild_base("ns.t", "src")
            staged = tables.stage("ns.t", [rows(b, 5, D1) for b in range(8)])
            tables.rebuild_partitions("ns.t", "src", [D1], staged, list(range(8)), base)
        return original(identifier, update)

    monkeypatch.setattr(tables, "commit_update", rebuild_first)
    before = content(tables)
    r = compact_day(tables, "ns.t", D1, CompactionPolicy(min_files=2))
    assert r.replans == 1
    assert r.skipped is not None  # the rebuild left one file: nothing to compact any more
    assert content(tables) == before
    assert len(day_files(tables.load("ns.t"), D1)) == 1


def test_stale_plan_raises_and_commits_nothing(tables: TableStore) -> None:
    fill(tables, range(4), D1)
    table = tables.load("ns.t")
    update = ReplaceDayFiles(day=D1, removed=("file:///nowhere/x.parquet",), added=[], summary={})
    version = tables.current_version("ns.t")
    with pytest.raises(CompactionStale):
        update.plan("ns.t", table)
    with pytest.raises(CompactionStale):
        tables.commit_update("ns.t", update)
    assert tables.current_version("ns.t") == version


def test_sort_by_writes_sorted_files_and_records_sort_order(tables: TableStore) -> None:
    fill(tables, range(10), D1, n=20)
    before = content(tables)
    sizes = sum(f.file_size_in_bytes for f in day_files(tables.load("ns.t"), D1))
    policy = CompactionPolicy(target_file_size_bytes=sizes // 3, min_files=2, sort_by=("ts",))
    small = [f for f in day_files(tables.load("ns.t"), D1)]
    assert all(f.file_size_in_bytes < sizes // 3 for f in small)
    r = compact_day(tables, "ns.t", D1, policy)
    assert r.files_written >= 2
    table = tables.load("ns.t")
    order = table.sort_order()
    assert [table.schema().find_column_name(f.source_id) for f in order.fields] == ["ts"]
    assert content(tables) == before
    # each file is sorted, and the files cover disjoint ranges of ts (range filters skip files)
    ranges = []
    for f in day_files(table, D1):
        ts = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(
            [FileScanTask(f)]
        )["ts"]
        assert ts.to_pylist() == sorted(ts.to_pylist())
        ranges.append((pc.min(ts).as_py(), pc.max(ts).as_py()))
    ranges.sort()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ranges))


def test_unknown_sort_column_is_a_clear_error(tables: TableStore) -> None:
    fill(tables, range(3), D1)
    with pytest.raises(BadSortColumn, match="nope"):
        compact_day(tables, "ns.t", D1, CompactionPolicy(min_files=2, sort_by=("nope",)))


def test_files_per_day_groups_by_partition(tables: TableStore) -> None:
    fill(tables, range(2), D1)
    fill(tables, range(2, 5), D2)
    per_day = files_per_day(tables.load("ns.t"))
    assert {d: len(f) for d, f in per_day.items()} == {D1: 2, D2: 3}


def test_compaction_of_local_table_with_schema_evolution(tmp_path: Path) -> None:
    """Files written before a new column was added are rewritten with nulls in it."""
    ts = TableStore(ObjectStoreCatalog(warehouse=str(tmp_path / "wh")))
    ts.ensure_table("ns.t", SCHEMA)
    fill(ts, range(3), D1)
    wider = SCHEMA.append(pa.field("extra", pa.string()))
    ts.evolve("ns.t", wider)
    batch = rows(3, 5, D1)
    batch = pa.record_batch([*batch.columns, pa.array(["x"] * 5)], schema=wider)
    ts.commit_batch("ns.t", "src", 3, ts.stage("ns.t", [batch]))
    compact_day(ts, "ns.t", D1, CompactionPolicy(min_files=2))
    t = ts.load("ns.t").scan().to_arrow()
    assert t.num_rows == 20 and t["extra"].null_count == 15
    assert len(day_files(ts.load("ns.t"), D1)) == 1


def test_compacted_table_has_one_manifest_without_earlier_deleted_entries(
    tables: TableStore,
) -> None:
    """Each replace commit merges the snapshot's manifests: after compacting three days, readers
    decode one manifest holding the live files plus only the last compaction's deleted entries
    (not one entry per file the table ever had)."""
    days = [D1, D2, date(2024, 5, 3)]
    for i, day in enumerate(days):
        fill(tables, range(i * 10, i * 10 + 10), day)
    before = content(tables)
    results = compact_table(tables, "ns.t", CompactionPolicy(min_files=2))
    assert [r.files_after for r in results] == [1, 1, 1]
    table = tables.load("ns.t")
    snap = table.current_snapshot()
    assert snap is not None
    manifests = snap.manifests(table.io)
    assert len(manifests) == 1
    entries = manifests[0].fetch_manifest_entry(table.io, discard_deleted=False)
    deleted = [e for e in entries if e.status == ManifestEntryStatus.DELETED]
    assert len(deleted) == 10 and {e.snapshot_id for e in deleted} == {snap.snapshot_id}
    assert len(entries) - len(deleted) == 3  # one live file a day
    assert content(tables) == before
    # sequence numbers survive the merge: a later batch still appends on top
    fill(tables, range(30, 31), D1)
    assert len(content(tables)) == len(before) + 5


class _RefusedOnce:
    """An update whose first plan pyiceberg refuses (as when a compaction raced a backfill's
    plan of deletes), then an append of one batch."""

    what = "refused-once append"

    def __init__(self, ts: TableStore, refusals: int) -> None:
        self.ts, self.refusals, self.plans = ts, refusals, 0
        self.staged = ts.stage("ns.t", [rows(77, 3, D1)])

    def plan(self, identifier: str, table: Table) -> Transaction | None:
        from pyiceberg.exceptions import ValidationException

        self.plans += 1
        if self.plans <= self.refusals:
            raise ValidationException("Missing required files to delete: x.parquet")
        return AppendBatch("src", 77, self.staged, {}).plan(identifier, table)


def test_a_plan_pyiceberg_refuses_is_planned_again_not_a_crash(tables: TableStore) -> None:
    update = _RefusedOnce(tables, refusals=1)
    _table, committed, attempts = tables.commit_update("ns.t", update)
    assert (committed, attempts, update.plans) == (True, 2, 2)
    assert sorted(r[0] for r in content(tables)) == [77000, 77001, 77002]


def test_a_plan_refused_on_every_attempt_is_a_commit_conflict(tables: TableStore) -> None:
    # 4 attempts without backoff sleeps: the default 50 attempts slept ~20 s of jitter to show
    # the same thing (each attempt plans again; after the last one, a CommitConflict)
    quick = TableStore(
        tables.catalog,
        replace(tables.settings, commit_attempts=4, retry_base_s=0.0, retry_max_s=0.0),
    )
    update = _RefusedOnce(quick, refusals=10**6)
    with pytest.raises(CommitConflict) as e:
        quick.commit_update("ns.t", update)
    assert "lost 4 races" in str(e.value) and update.plans == 4
    assert "Missing required files" in str(e.value.__cause__)
    assert content(tables) == []
