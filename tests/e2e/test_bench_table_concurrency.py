"""``bench/table_concurrency.py`` at toy size: two worker processes executing the batches of
one table at once leave every row exactly once, and the table it prints counts every batch's
commit attempts (the script does not rot)."""

from __future__ import annotations

from pathlib import Path

from bench import table_concurrency


def test_two_workers_on_one_table_toy_size(tmp_path: Path) -> None:
    out = table_concurrency.run_once(tmp_path, runs=2, batches=4, per_batch=2, rows=20)
    assert out.exactly_once
    assert out.rows == 4 * 2 * 20
    assert len(out.attempts) == 4 and all(a >= 1 for a in out.attempts)
    assert out.lost_races == sum(out.attempts) - 4
    text = table_concurrency.table([out])
    assert "| 2 | 4 | 160 |" in text and text.rstrip().endswith("| yes |")
