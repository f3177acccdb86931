"""``verify_source`` on its own (local stores): ok on a good table, a violation for a duplicated
row and for a missing row (both made behind Lockgate's back with plain pyiceberg writes)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from lockgate.pipelines.batch import execute_batch
from lockgate.pipelines.verify import verify_source
from lockgate.resources.runtime import Runtime
from tests.pipelines.helpers import DAY, claim_keys, lander, local_runtime, src


def _ingested(tmp_path: Path) -> Runtime:
    rt, land = local_runtime(tmp_path), lander(tmp_path)
    land.land(f"{DAY}/a.jsonl", 3)
    land.land(f"{DAY}/b.jsonl", 2)
    claim = claim_keys(rt, [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl"])
    execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)
    return rt


def test_good_table_passes(tmp_path: Path) -> None:
    rt = _ingested(tmp_path)
    report = verify_source(rt, src(rt))
    assert report.ok, report.violations
    assert (report.rows, report.committed_batches, report.checked_batches) == (5, 1, 1)


def test_duplicated_row_fails(tmp_path: Path) -> None:
    rt = _ingested(tmp_path)
    table = rt.tables.load(src(rt).table)
    table.append(table.scan(row_filter="id == 1").to_arrow())
    report = verify_source(rt, src(rt))
    assert not report.ok and report.rows == 6
    assert any("duplicated lineage keys" in v for v in report.violations)
    assert any(f"object '{DAY}/a.jsonl': 3 records read but 4 rows" in v for v in report.violations)


def test_missing_row_fails(tmp_path: Path) -> None:
    rt = _ingested(tmp_path)
    table = rt.tables.load(src(rt).table)
    keep = table.scan().to_arrow()
    keep = keep.filter(pc.not_equal(keep.column("id"), 4))
    table.overwrite(keep)
    report = verify_source(rt, src(rt))
    assert not report.ok and report.rows == 4
    assert report.violations == [
        f"batch 0 object '{DAY}/b.jsonl': 2 records read but 1 rows + 0 quarantined"
    ]
