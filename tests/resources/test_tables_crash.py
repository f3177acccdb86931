"""A process killed at any durable step of a commit, maintenance or vacuum: re-running
reaches the same table, with every batch exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lockgate.resources.catalog import make_catalog
from lockgate.resources.markers import IdRanges
from lockgate.resources.tables import TableStore
from tests.tables_worker import IDENT, SCHEMA, batch

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LOCKGATE_CRASH_AT"}
    env["PYTHONPATH"] = str(ROOT)
    if crash_at:
        env["LOCKGATE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def worker(wh: str, *ids: int, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    return run(["-m", "tests.tables_worker", wh, "-", "0", "25", *map(str, ids)], crash_at)


def rows_per_batch(wh: str) -> dict[int, int]:
    t = TableStore(make_catalog(wh)).load(IDENT).scan().to_arrow()
    out: dict[int, int] = {}
    for b in t["_batch_id"].to_pylist():
        out[b] = out.get(b, 0) + 1
    return out


@pytest.mark.parametrize(
    "point",
    ["commit.before_metadata_put", "commit.after_metadata_put", "commit.after_version_hint"],
)
def test_killed_commit_then_rerun_commits_once(tmp_path: Path, point: str) -> None:
    wh = str(tmp_path / "wh")
    TableStore(make_catalog(wh)).ensure_table(IDENT, SCHEMA)
    assert worker(wh, 0).returncode == 0
    crashed = worker(wh, 1, crash_at=point)
    assert crashed.returncode == -signal.SIGKILL
    rerun = worker(wh, 1, 2)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    landed = point != "commit.before_metadata_put"
    assert f'"batch": 1, "worker": 0, "duplicate": {"true" if landed else "false"}' in rerun.stdout
    assert rows_per_batch(wh) == {0: 25, 1: 25, 2: 25}
    assert TableStore(make_catalog(wh)).committed(IDENT, "src") == IdRanges.parse("0-2")


MAINTAIN = textwrap.dedent(
    """
    import sys
    from datetime import timedelta
    from lockgate.resources.catalog import make_catalog
    from lockgate.resources.maintenance import MaintenancePolicy, maintain, vacuum
    cat = make_catalog(sys.argv[1])
    maintain(cat, "ns.mp", MaintenancePolicy(keep_snapshots=1, keep_metadata_versions=2))
    r = vacuum(cat, "ns.mp", older_than=timedelta(0))
    print("deleted", len(r.deleted))
    """
)


def commit_in_process(wh: str, *ids: int) -> list[bool]:
    ts = TableStore(make_catalog(wh))
    ts.ensure_table(IDENT, SCHEMA)
    return [
        ts.commit_batch(IDENT, "src", b, ts.stage(IDENT, [batch(b, 25, 0)])).duplicate for b in ids
    ]


@pytest.mark.parametrize(
    "point",
    [
        pytest.param("maintenance.after_expire", marks=pytest.mark.slow),
        pytest.param("maintenance.before_delete_metadata:3", marks=pytest.mark.slow),
        "vacuum.mid_delete",
    ],
)
def test_killed_maintenance_then_rerun(tmp_path: Path, point: str) -> None:
    wh = str(tmp_path / "wh")
    commit_in_process(wh, *range(8))
    TableStore(make_catalog(wh)).stage(IDENT, [batch(99, 3, 0)])  # garbage: never committed
    crashed = run(["-c", MAINTAIN, wh], crash_at=point)
    assert crashed.returncode == -signal.SIGKILL
    assert rows_per_batch(wh) == {b: 25 for b in range(8)}  # readable mid-maintenance
    again = run(["-c", MAINTAIN, wh])
    assert again.returncode == 0, again.stderr[-2000:]
    assert rows_per_batch(wh) == {b: 25 for b in range(8)}
    assert commit_in_process(wh, 3, 8) == [True, False]  # still committable, still once
    assert rows_per_batch(wh) == {b: 25 for b in range(9)}


@pytest.mark.parametrize("point", ["compact.after_stage", "compact.after_commit"])
def test_killed_compaction_then_rerun_keeps_every_row(tmp_path: Path, point: str) -> None:
    """Killed after writing its files (nothing committed: orphans) or after its replace commit
    (done): the rows are the same, and a re-run leaves each day one file."""
    from lockgate.resources.compaction import files_per_day

    wh = str(tmp_path / "wh")
    TableStore(make_catalog(wh)).ensure_table(IDENT, SCHEMA)
    assert worker(wh, *range(6)).returncode == 0  # 6 batches over 3 days: 2 files a day
    before = rows_per_batch(wh)
    compact = [
        "-c",
        "import sys; from lockgate.resources.catalog import make_catalog; "
        "from lockgate.resources.compaction import CompactionPolicy, compact_table; "
        "from lockgate.resources.tables import TableStore; "
        f"compact_table(TableStore(make_catalog({wh!r})), {IDENT!r}, "
        "CompactionPolicy(min_files=2))",
    ]
    crashed = run(compact, crash_at=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert rows_per_batch(wh) == before
    per_day = {
        d: len(f) for d, f in files_per_day(TableStore(make_catalog(wh)).load(IDENT)).items()
    }
    # killed in the first day's compaction: that day compacted iff its commit landed
    assert sorted(per_day.values()) == ([1, 2, 2] if point == "compact.after_commit" else [2, 2, 2])
    rerun = run(compact)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rows_per_batch(wh) == before
    table = TableStore(make_catalog(wh)).load(IDENT)
    assert {len(f) for f in files_per_day(table).values()} == {1}
    assert TableStore(make_catalog(wh)).committed(IDENT, "src") == IdRanges.parse("0-5")
