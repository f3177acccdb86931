"""Regression (found by the torture harness): ``lockgate vacuum`` without ``--table`` died
with ``NoSuchTableError`` on the first configured source that had not committed anything
yet, so the tables after it (in name order) were never vacuumed. A missing table is now
skipped with a note; an explicitly named missing table is a clear error (one line, exit 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def lockgate(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    return subprocess.run(
        [str(VENV_BIN / "lockgate"), "--config", str(cwd / "lockgate.yaml"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_vacuum_skips_a_source_without_table_and_vacuums_the_rest(tmp_path: Path) -> None:
    day = tmp_path / "landing" / "b" / "dt=2024-05-01"
    day.mkdir(parents=True)
    (day / "p1.jsonl").write_text('{"id": "x1", "v": 1}\n{"id": "x2", "v": 2}\n')
    (tmp_path / "landing" / "a").mkdir(parents=True)  # source "a": nothing landed yet
    part = "partition: {pattern: 'dt=(\\d{4}-\\d{2}-\\d{2})', start: 2024-01-01}"
    sources = "".join(
        f"  {s}:\n    landing: landing/{s}\n    format: jsonl\n    table: ns.{s}\n"
        f"    {part}\n    schema: {{id: string, v: long}}\n    min_age: 0\n"
        for s in ("a", "b")
    )
    (tmp_path / "lockgate.yaml").write_text(f"warehouse: wh\nsources:\n{sources}")
    assert lockgate(tmp_path, "ingest").returncode == 0
    # an unreferenced old file in b's table: vacuum must reach b although a has no table
    orphan = tmp_path / "wh" / "ns" / "b" / "data" / "orphan.parquet"
    orphan.write_bytes(b"not referenced")
    os.utime(orphan, (1_000_000_000, 1_000_000_000))

    out = lockgate(tmp_path, "vacuum", "--older-than", "2h", "--no-progress")

    assert out.returncode == 0, out.stderr
    assert "ns.a: no table yet" in out.stdout
    assert not orphan.exists()
    named = lockgate(tmp_path, "vacuum", "--table", "ns.a", "--no-progress")
    assert named.returncode == 8  # ExitCode.MISSING_TABLE
    assert "lockgate: error: table ns.a does not exist" in named.stderr
