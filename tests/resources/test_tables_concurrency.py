"""Many OS processes committing to ONE table (S3 over HTTP via moto, and local).

moto's ``If-None-Match: *`` is check-then-write on a threaded server: two racing creators
can both "succeed" (the second overwrites the first). Real S3 is atomic, so the shared
``moto_server`` serialises mutating requests (``tests/moto_atomic.py``); with plain moto,
8x50 writers lost one batch to exactly that race.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pytest

from lockgate.resources.catalog import make_catalog
from lockgate.resources.markers import IdRanges
from lockgate.resources.store import S3Options
from lockgate.resources.tables import TableStore
from tests.conftest import create_bucket
from tests.tables_worker import IDENT

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def atomic_moto(moto_server: str) -> str:
    """The shared moto server (its create-only puts are atomic: ``tests/moto_atomic.py``)."""
    return moto_server


def run_workers(
    warehouse: str, endpoint: str, plans: list[list[int]], rows: int, timeout: float = 900
) -> list[dict[str, object]]:
    """Start one process per plan, wait for all, return their JSON lines. Kills every
    started process on failure."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[str]] = []
    try:
        for w, ids in enumerate(plans):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.tables_worker", warehouse, endpoint, str(w)]
                    + [str(rows)]
                    + [str(i) for i in ids],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        out: list[dict[str, object]] = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            assert p.returncode == 0, stderr[-3000:]
            out += [json.loads(line) for line in stdout.splitlines() if line.strip()]
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def check_exactly_once(warehouse: str, opts: S3Options | None, n_batches: int, rows: int) -> None:
    ts = TableStore(make_catalog(warehouse, opts))
    t = ts.load(IDENT).scan().to_arrow()
    assert t.num_rows == n_batches * rows
    per_batch = Counter(t["_batch_id"].to_pylist())
    assert per_batch == {b: rows for b in range(n_batches)}
    lineage = pc.binary_join_element_wise(
        t["_source_key"], pc.cast(t["_source_row"], "string"), ":"
    ).to_pylist()
    assert len(set(lineage)) == len(lineage)
    assert ts.committed(IDENT, "src") == IdRanges.parse(f"0-{n_batches - 1}")


def _distinct(procs: int, per: int) -> list[list[int]]:
    return [[w * per + i for i in range(per)] for w in range(procs)]


def test_4_processes_5_batches_each_s3(atomic_moto: str) -> None:
    """4 processes race every commit (as the local variant); the 8x50 variant is ``slow``."""
    wh = f"s3://{create_bucket(atomic_moto)}/wh"
    out = run_workers(wh, atomic_moto, _distinct(4, 5), rows=20)
    assert len(out) == 20 and not any(r["duplicate"] for r in out)
    check_exactly_once(wh, S3Options(endpoint_url=atomic_moto, region="us-east-1"), 20, 20)


def test_4_processes_5_batches_each_local(tmp_path: Path) -> None:
    wh = str(tmp_path / "wh")
    out = run_workers(wh, "-", _distinct(4, 5), rows=20)
    assert len(out) == 20 and not any(r["duplicate"] for r in out)
    check_exactly_once(wh, None, 20, 20)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_8_processes_50_batches_each_s3(atomic_moto: str) -> None:
    wh = f"s3://{create_bucket(atomic_moto)}/wh"
    out = run_workers(wh, atomic_moto, _distinct(8, 50), rows=10, timeout=2300)
    assert len(out) == 400 and not any(r["duplicate"] for r in out)
    check_exactly_once(wh, S3Options(endpoint_url=atomic_moto, region="us-east-1"), 400, 10)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_4_processes_race_the_same_batch(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "s3":
        endpoint = request.getfixturevalue("atomic_moto")
        wh = f"s3://{create_bucket(endpoint)}/wh"
        opts: S3Options | None = S3Options(endpoint_url=endpoint, region="us-east-1")
    else:
        endpoint, wh, opts = "-", str(tmp_path / "wh"), None
    # create the table first so every racer contends on the same commit
    from tests.tables_worker import SCHEMA

    TableStore(make_catalog(wh, opts)).ensure_table(IDENT, SCHEMA)
    out = run_workers(wh, endpoint, [[0], [0], [0], [0]], rows=25)
    assert sorted(bool(r["duplicate"]) for r in out) == [False, True, True, True]
    check_exactly_once(wh, opts, 1, 25)
