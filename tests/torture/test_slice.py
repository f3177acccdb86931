"""The fast slice of the torture harness (``make torture`` runs the full one).

Local backend: one trial per crash point, each killing a ``lockgate`` process at that point
(``--cover``), plus a concurrent-ingest trial and a backfill racing ingests; S3 backend
(moto behind the fault proxy, 5% faults): a few trials. Every trial ends with a clean
``lockgate ingest --full-listing`` and must then hold exactly the landed records once --
read by DuckDB and by pyiceberg -- with ``lockgate verify`` exiting 0.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from lockgate.resources.catalog import ObjectStoreCatalog
from lockgate.resources.crashpoints import POINTS
from lockgate.resources.tables import TableStore
from tests.torture.checks import Readers

REPO = Path(__file__).resolve().parents[2]
SEED = 7


def run_harness(tmp: Path, *args: str, timeout: float) -> list[dict[str, Any]]:
    root = tmp / "torture"
    cmd = [
        sys.executable,
        "-m",
        "tests.torture.run",
        "--seed",
        str(SEED),
        "--root",
        str(root),
        "--keep",
        "--exec-every",
        "0",
        "--rounds",
        "1",
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    results = root / "results.jsonl"
    assert results.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    failed = [r for r in rows if not r["ok"]]
    assert not failed, proc.stdout[-6000:]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return rows


def totals(rows: list[dict[str, Any]]) -> tuple[int, int, Counter[str]]:
    lost = sum(int(r["lost"]) for r in rows)
    dups = sum(int(r["duplicates"]) + int(r["unexpected"]) for r in rows)
    hits: Counter[str] = Counter()
    for r in rows:
        for run in r["runs"]:
            if run["hit"]:
                hits[run["target"]] += 1
    return lost, dups, hits


@pytest.mark.timeout(1200)  # ~3 min on an idle 2-core box; far more when it is shared
def test_every_crash_point_local_exactly_once(tmp_path: Path) -> None:
    n = len(POINTS) + 2  # one forced trial per point, then a concurrent and a crash trial
    rows = run_harness(
        tmp_path,
        "--backend",
        "local",
        "--trials",
        str(n),
        "--cover",
        "--workers",
        "2",
        timeout=1150,
    )
    lost, dups, hits = totals(rows)
    assert len(rows) == n
    assert lost == 0 and dups == 0
    assert all(r["verify_rc"] == 0 and r["lineage_dups"] == 0 for r in rows)
    missing = sorted(p for p in POINTS if hits[p] == 0)
    assert not missing, f"crash points never hit: {missing}"
    assert {"concurrent", "backfill", "vacuum", "deep"} <= {r["kind"] for r in rows}


@pytest.mark.timeout(1200)
def test_s3_with_faults_exactly_once(tmp_path: Path) -> None:
    rows = run_harness(
        tmp_path,
        "--backend",
        "s3",
        "--faults",
        "0.05",
        "--trials",
        "2",
        "--workers",
        "2",
        timeout=1150,
    )
    lost, dups, _ = totals(rows)
    assert lost == 0 and dups == 0
    faults = sum(sum(r["faults"].values()) for r in rows)
    assert faults > 0, "the fault proxy injected nothing"


def test_harness_detects_a_duplicate(tmp_path: Path) -> None:
    """The checker is not vacuous: a row appended twice behind Lockgate's back is found."""

    catalog = ObjectStoreCatalog(warehouse=str(tmp_path / "wh"))
    ts = TableStore(catalog)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("_source_key", pa.string()),
            ("_source_etag", pa.string()),
            ("_source_row", pa.int64()),
            ("_day", pa.date32()),
        ]
    )
    ts.ensure_table("tt.ev", schema)
    batch = pa.record_batch(
        [
            pa.array(["i1-1-1"]),
            pa.array(["k"]),
            pa.array(["e"]),
            pa.array([0], pa.int64()),
            pa.array([dt.date(2024, 5, 1)], pa.date32()),
        ],
        schema=schema,
    )
    ts.commit_batch("tt.ev", "ev", 0, ts.stage("tt.ev", [batch]))
    ts.commit_batch("tt.ev", "ev", 1, ts.stage("tt.ev", [batch]))  # the same row again
    readers = Readers()
    try:
        tc = readers.check_table(catalog.table_location("tt.ev"))
    finally:
        readers.close()
    assert tc.duck_ids["i1-1-1"] == 2 and tc.ice_ids["i1-1-1"] == 2
    assert tc.duck_lineage_dups == 1 and tc.ice_lineage_dups == 1
