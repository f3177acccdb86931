"""``execute_batch`` on its own (local stores): a fresh batch commits, a re-run is a no-op, a
batch marked in the table without a commit record is repaired (not re-run), and a batch of only
bad records commits its quarantine and an empty marker commit."""

from __future__ import annotations

from pathlib import Path

from lockgate.pipelines.batch import execute_batch
from lockgate.resources.ledger import CommitRecord
from lockgate.resources.runtime import quarantine_table
from lockgate.resources.store import LocalStore
from tests.pipelines.helpers import DAY, claim_keys, lander, local_runtime, src, table_ids


def test_fresh_batch_commits_and_records(tmp_path: Path) -> None:
    rt, land = local_runtime(tmp_path), lander(tmp_path)
    ids = land.land(f"{DAY}/a.jsonl", 3) + land.land(f"{DAY}/b.jsonl", 2)
    claim = claim_keys(rt, [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl"])
    out = execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)
    assert (out.rows, out.quarantined, out.objects) == (5, 0, 2)
    assert not out.already_committed and not out.duplicate
    assert out.record_counts == {f"{DAY}/a.jsonl": 3, f"{DAY}/b.jsonl": 2}
    assert table_ids(rt) == {i: 1 for i in ids}
    assert claim.batch_id in rt.tables.committed(src(rt).table, src(rt).name)
    rec = rt.ledger(src(rt)).commit_record(claim.batch_id)
    assert rec is not None and rec.rows == 5 and rec.snapshot_id == out.snapshot_id
    assert rt.ledger(src(rt)).pending() == []


def test_rerun_is_a_no_op(tmp_path: Path) -> None:
    rt, land = local_runtime(tmp_path), lander(tmp_path)
    ids = land.land(f"{DAY}/a.jsonl", 4)
    claim = claim_keys(rt, [f"{DAY}/a.jsonl"])
    first = execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)
    version = rt.tables.current_version(src(rt).table)
    again = execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)
    assert again.already_committed and again.rows == first.rows == 4
    assert rt.tables.current_version(src(rt).table) == version  # nothing committed
    assert table_ids(rt) == {i: 1 for i in ids}


def test_marked_but_unrecorded_batch_is_repaired_not_rerun(tmp_path: Path) -> None:
    rt, land = local_runtime(tmp_path), lander(tmp_path)
    ids = land.land(f"{DAY}/a.jsonl", 3) + land.land(f"{DAY}/b.jsonl", 1)
    claim = claim_keys(rt, [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl"])
    execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)
    # a crash after the table commit, before the commit record: remove the record
    (tmp_path / "wh" / "_ledger" / "ev" / "commits" / f"{claim.batch_id:020d}.json").unlink()
    assert rt.ledger(src(rt)).commit_record(claim.batch_id) is None
    version = rt.tables.current_version(src(rt).table)
    # the objects are gone: a re-run would fail to read them, a repair does not read them
    landing = LocalStore(tmp_path / "landing")
    landing.delete(f"{DAY}/a.jsonl")
    landing.delete(f"{DAY}/b.jsonl")
    out = execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)
    assert out.already_committed and out.duplicate and out.rows == 4
    assert out.record_counts == {f"{DAY}/a.jsonl": 3, f"{DAY}/b.jsonl": 1}
    assert rt.tables.current_version(src(rt).table) == version
    assert table_ids(rt) == {i: 1 for i in ids}
    rec = rt.ledger(src(rt)).commit_record(claim.batch_id)
    assert isinstance(rec, CommitRecord) and rec.duplicate and rec.rows == 4


def test_all_bad_batch_commits_quarantine_and_an_empty_marker(tmp_path: Path) -> None:
    rt = local_runtime(tmp_path)
    LocalStore(tmp_path / "landing").put(f"{DAY}/bad.jsonl", b"{not json\n[1, 2\n")
    claim = claim_keys(rt, [f"{DAY}/bad.jsonl"])
    out = execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)
    assert out.rows == 0 and out.quarantined == 2
    assert out.record_counts == {f"{DAY}/bad.jsonl": 2}
    table = rt.tables.load(src(rt).table)
    assert table.scan().to_arrow().num_rows == 0
    assert claim.batch_id in rt.tables.committed(src(rt).table, src(rt).name)
    q = rt.tables.load(quarantine_table(src(rt))).scan().to_arrow()
    assert q.num_rows == 2 and set(q.column("_batch_id").to_pylist()) == {claim.batch_id}
    assert claim.batch_id in rt.tables.committed(quarantine_table(src(rt)), src(rt).name)
