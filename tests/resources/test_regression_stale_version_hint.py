"""Regression: a process killed between the create-only put of ``v<N>.metadata.json`` and
the write of ``metadata/version-hint.text`` left the hint at ``N-1``. When that commit was
the table's last one (the re-run finds its batch marked and commits nothing), the hint
stayed stale for good, and every engine that opens the table by path (DuckDB's
``iceberg_scan``, Spark's Hadoop tables, ``StaticTable`` on the folder) read an older table
-- here an empty one -- while Lockgate reported the batch committed. Loading the table now
repairs a stale hint (best effort)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.torture.checks import Readers

VENV_BIN = Path(sys.executable).parent


def lockgate(cwd: Path, *args: str, crash_at: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    if crash_at:
        env["LOCKGATE_CRASH_AT"] = crash_at
    return subprocess.run(
        [str(VENV_BIN / "lockgate"), "--config", str(cwd / "lockgate.yaml"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    ).returncode


def test_hint_follows_a_commit_whose_writer_died_before_writing_it(tmp_path: Path) -> None:
    day = tmp_path / "landing" / "dt=2024-05-01"
    day.mkdir(parents=True)
    (day / "p1.jsonl").write_text('{"id": "a1", "v": 1}\n{"id": "a2", "v": 2}\n')
    part = "partition: {pattern: 'dt=(\\d{4}-\\d{2}-\\d{2})', start: 2024-01-01}"
    (tmp_path / "lockgate.yaml").write_text(
        "warehouse: wh\nsources:\n  ev:\n    landing: landing\n    format: jsonl\n"
        f"    table: ns.ev\n    {part}\n    schema: {{id: string, v: long}}\n"
        "    min_age: 0\n"  # written whole before the first ingest
    )
    # put 1 creates the table (v1), put 2 is the batch's commit (v2): die right after it
    rc = lockgate(tmp_path, "ingest", crash_at="commit.after_metadata_put:2")
    assert rc == -signal.SIGKILL
    assert lockgate(tmp_path, "ingest") == 0  # finds the batch marked: commits nothing

    meta = tmp_path / "wh" / "ns" / "ev" / "metadata"
    assert (meta / "v2.metadata.json").exists() and not (meta / "v3.metadata.json").exists()
    assert (meta / "version-hint.text").read_text().strip() == "2"
    readers = Readers()
    try:  # DuckDB opens the table by path, through the hint
        got = readers.con.execute(
            f"SELECT id FROM iceberg_scan('{meta.parent}') ORDER BY id"
        ).fetchall()
    finally:
        readers.close()
    assert got == [("a1",), ("a2",)]
