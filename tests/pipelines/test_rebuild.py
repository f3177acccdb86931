"""``rebuild`` on its own (local stores): idempotent, refuses when a claimed object is gone, and
never duplicates (or drops) incremental appends, even one committed during the rebuild."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from lockgate.pipelines.batch import execute_batch
from lockgate.pipelines.rebuild import RebuildRefused, rebuild
from lockgate.resources.store import LocalStore
from tests.pipelines.helpers import DAY, claim_keys, lander, local_runtime, src, table_ids

D = date.fromisoformat(DAY)


def test_rebuild_is_idempotent_and_keeps_every_row_once(tmp_path: Path) -> None:
    rt, land = local_runtime(tmp_path), lander(tmp_path)
    ids = land.land(f"{DAY}/a.jsonl", 3) + land.land(f"{DAY}/b.jsonl", 2)
    other = land.land("2026-01-06/c.jsonl", 2)
    for keys, day in (([f"{DAY}/a.jsonl"], DAY), ([f"{DAY}/b.jsonl"], DAY)):
        execute_batch(rt, src(rt), rt.ledger(src(rt)), claim_keys(rt, keys, day))
    execute_batch(
        rt, src(rt), rt.ledger(src(rt)), claim_keys(rt, ["2026-01-06/c.jsonl"], "2026-01-06")
    )
    expected = {i: 1 for i in ids + other}
    first = rebuild(rt, src(rt), [D])
    assert (first.batches, first.rows, first.objects) == ([0, 1], 5, 2)
    assert table_ids(rt) == expected
    second = rebuild(rt, src(rt), [D])
    assert second.rows == 5 and second.table_version == first.table_version + 1
    assert table_ids(rt) == expected
    assert set(rt.tables.committed(src(rt).table, src(rt).name)) == {0, 1, 2}


def test_rebuild_refuses_a_deleted_object_and_changes_nothing(tmp_path: Path) -> None:
    rt, land = local_runtime(tmp_path), lander(tmp_path)
    ids = land.land(f"{DAY}/a.jsonl", 3) + land.land(f"{DAY}/b.jsonl", 1)
    claim = claim_keys(rt, [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl"])
    execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)
    version = rt.tables.current_version(src(rt).table)
    LocalStore(tmp_path / "landing").delete(f"{DAY}/b.jsonl")
    with pytest.raises(RebuildRefused, match="deleted"):
        rebuild(rt, src(rt), [D])
    assert rt.tables.current_version(src(rt).table) == version
    assert table_ids(rt) == {i: 1 for i in ids}


def test_incremental_append_during_a_rebuild_is_neither_duplicated_nor_dropped(
    tmp_path: Path,
) -> None:
    rt, land = local_runtime(tmp_path), lander(tmp_path)
    ids = land.land(f"{DAY}/a.jsonl", 3)
    execute_batch(rt, src(rt), rt.ledger(src(rt)), claim_keys(rt, [f"{DAY}/a.jsonl"]))
    late: list[int] = []

    def meanwhile(msg: str) -> None:
        # after the rebuild read its base and the claims: a batch of that day commits
        if msg.startswith("attempt 1:"):
            late.extend(land.land(f"{DAY}/late.jsonl", 2))
            claim = claim_keys(rt, [f"{DAY}/late.jsonl"])
            execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)

    out = rebuild(rt, src(rt), [D], progress=meanwhile)
    assert out.attempts == 2 and out.batches == [0, 1] and out.rows == 5
    assert late and table_ids(rt) == {i: 1 for i in ids + late}
