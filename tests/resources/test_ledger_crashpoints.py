"""Real crashes: a planner process SIGKILLs itself at a named crash point of the ledger or of
discovery (``LOCKGATE_CRASH_AT``); a restarted planner finishes the job. Afterwards every
landed object is claimed exactly once and batch ids are consecutive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lockgate.resources.crashpoints import POINTS
from lockgate.resources.ledger import Ledger
from lockgate.resources.store import LocalStore
from tests.ledger_testkit import brute_state, read_all_claims

ROOT = Path(__file__).resolve().parents[2]
FP = {"landing": "local", "format": "csv", "table": "db.t"}

PLANNER = """
import sys
from datetime import date
from lockgate.resources.ledger import Ledger
from lockgate.resources.store import LocalStore
from lockgate.sensors.discovery import DiscoveryRule, discover

fp = {"landing": "local", "format": "csv", "table": "db.t"}
led = Ledger.open(LocalStore(sys.argv[2]), "src", fp, compact_interval=2)
rule = DiscoveryRule(max_files_per_batch=2, max_claims_per_tick=2, lookback_keys=2)
for tick in range(50):
    res = discover(LocalStore(sys.argv[1]), led, rule, full_listing=True, today=date(2026, 3, 10))
    if not res.claims and not res.deferred:
        break
"""

CASES = [
    ("ledger.fingerprint.after_put", 1),
    ("ledger.claim.before_put", 2),
    ("ledger.claim.after_put", 2),
    ("store.put_if_absent.after", 3),
    ("discovery.after_list", 2),
    ("ledger.compact.before_put", 1),
    ("ledger.compact.after_segment", 1),
    ("ledger.compact.after_put", 2),
]


def planner(landing: Path, ledger: Path, crash_at: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "LOCKGATE_CRASH_AT"}
    if crash_at:
        env["LOCKGATE_CRASH_AT"] = crash_at
    proc = subprocess.run(
        [sys.executable, "-c", PLANNER, str(landing), str(ledger)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.decode()[-2000:]
    return proc.returncode


@pytest.mark.parametrize(("point", "nth"), CASES)
def test_planner_killed_at_crash_point_recovers(tmp_path: Path, point: str, nth: int) -> None:
    assert point in POINTS
    landing = tmp_path / "landing"
    for i in range(9):
        (landing / f"2026-03-0{1 + i % 2}").mkdir(parents=True, exist_ok=True)
        (landing / f"2026-03-0{1 + i % 2}" / f"f{i}.csv").write_text("a\n1\n")
    ledger = tmp_path / "ledger"
    assert planner(landing, ledger, f"{point}:{nth}") == -signal.SIGKILL  # it did crash there
    assert planner(landing, ledger, None) == 0
    claims = read_all_claims(LocalStore(ledger), "src")  # consecutive ids
    state = brute_state(claims)  # nothing claimed twice
    assert sorted(state) == sorted(f"{p.parent.name}/{p.name}" for p in landing.rglob("*.csv"))
    led = Ledger.open(LocalStore(ledger), "src", FP, compact_interval=2)
    assert len(led.claim_state("")) == 9
    assert len(led.pending()) == len(claims)
