"""Property: whatever the interleaving of several planners, their crashes (between any two
writes) and restarts, commits and compactions:

* every object ``(key, etag)`` is claimed at most once, and batch ids are consecutive;
* every listed object is eventually claimed (once the planners run undisturbed);
* pending = claimed - committed, and the compacted state equals the state of all claims.

Interleavings are driven by hypothesis: just before and just after each create-only put of
planner A, the schedule may run another planner's whole tick (so B can take the batch id A
planned), and may crash A there (its in-memory state is lost; it restarts from the ledger).
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lockgate.resources.ledger import CommitRecord, Ledger
from lockgate.resources.store import LocalStore, ObjectStore
from lockgate.sensors.discovery import DiscoveryRule, discover
from tests.ledger_testkit import (
    HookStore,
    MemoryStore,
    SimulatedCrash,
    brute_state,
    committed_ids,
    read_all_claims,
)

FP = {"landing": "mem://landing", "format": "csv", "table": "db.t"}
TODAY = date(2026, 3, 10)
PLANNERS = 3
MAX_CRASHES = 6


class World:
    def __init__(self, data: st.DataObject, root: ObjectStore, rule: DiscoveryRule, interval: int):
        self.data = data
        self.root = root
        self.rule = rule
        self.interval = interval
        self.landing = MemoryStore()
        self.planners: list[Ledger | None] = [None] * PLANNERS
        self.depth = 0
        self.crashes = 0
        self.quiet = False
        self.conflicts = 0
        self.committer = Ledger.open(root, "src", FP, compact_interval=interval)

    def hook(self, pid: int, when: str, key: str) -> None:
        if self.quiet:
            return
        if self.depth == 0 and self.data.draw(st.booleans(), label=f"interleave {when} {key}"):
            other = self.data.draw(st.integers(0, PLANNERS - 1), label="other planner")
            if other != pid:
                self.depth += 1
                try:
                    self.tick(other)
                finally:
                    self.depth -= 1
        if self.crashes < MAX_CRASHES and self.data.draw(st.integers(0, 7), label="crash") == 0:
            self.crashes += 1
            raise SimulatedCrash(f"planner {pid} {when} {key}")

    def ledger(self, pid: int) -> Ledger:
        led = self.planners[pid]
        if led is None:
            store = HookStore(
                self.root,
                before_write=lambda k: self.hook(pid, "before", k),
                after_write=lambda k: self.hook(pid, "after", k),
            )
            led = Ledger.open(store, "src", FP, compact_interval=self.interval)
            self.planners[pid] = led
        return led

    def tick(self, pid: int, full: bool = False) -> int:
        """One planner tick; a crash loses the planner's memory (it restarts next time)."""
        try:
            res = discover(
                self.landing, self.ledger(pid), self.rule, full_listing=full, today=TODAY
            )
        except SimulatedCrash:
            self.planners[pid] = None
            return -1
        self.conflicts += res.conflicts
        return len(res.claims) + res.deferred

    def land(self, n: int) -> None:
        for _ in range(n):
            day = self.data.draw(st.sampled_from(["2026-03-01", "2026-03-02"]), label="day")
            k = self.data.draw(st.integers(0, 30), label="key")
            self.landing.put(f"{day}/f{k:02d}.csv", b"x" * self.data.draw(st.integers(1, 9)))

    def commit_one(self) -> None:
        pending = self.committer.pending()
        if pending:
            c = self.data.draw(st.sampled_from(pending), label="commit")
            self.committer.record_commit(CommitRecord(c.batch_id, 1, 1, 1, 0, c.bytes, 1))

    def compact(self, pid: int) -> None:
        try:
            self.ledger(pid).maybe_compact()
        except SimulatedCrash:
            self.planners[pid] = None


def run_world(data: st.DataObject, root: ObjectStore) -> None:
    allow = data.draw(st.booleans(), label="allow_overwrites")
    rule = DiscoveryRule(
        max_files_per_batch=data.draw(st.integers(1, 3), label="max files"),
        max_bytes_per_batch=data.draw(st.integers(5, 20), label="max bytes"),
        max_claims_per_tick=data.draw(st.integers(1, 4), label="max claims"),
        lookback_keys=data.draw(st.integers(0, 4), label="lookback"),
        allow_overwrites=allow,
    )
    w = World(data, root, rule, interval=data.draw(st.integers(1, 5), label="interval"))
    steps = data.draw(st.integers(3, 14), label="steps")
    for _ in range(steps):
        action = data.draw(st.sampled_from(["land", "tick", "tick", "full", "commit", "compact"]))
        if action == "land":
            w.land(data.draw(st.integers(1, 6), label="n"))
        elif action in ("tick", "full"):
            w.tick(data.draw(st.integers(0, PLANNERS - 1), label="pid"), full=action == "full")
        elif action == "commit":
            w.commit_one()
        else:
            w.compact(data.draw(st.integers(0, PLANNERS - 1), label="pid"))

    event(f"conflicts: {min(w.conflicts, 3)}")
    event(f"crashes: {min(w.crashes, 3)}")
    # Undisturbed, the planners catch up: every listed object gets claimed.
    w.quiet = True
    for _ in range(200):
        if w.tick(0, full=True) == 0:
            break
    else:
        pytest.fail("planners never caught up")

    claims = read_all_claims(root, "src")  # asserts ids 0..N-1, consecutive
    state = brute_state(claims)  # asserts no (key, etag) claimed twice
    for o in w.landing.list():
        if allow:
            assert o.etag in state.get(o.key, {}), f"{o.key}/{o.etag} never claimed"
        else:
            assert o.key in state, f"{o.key} never claimed"
            assert len(state[o.key]) == 1
    fresh = Ledger.open(root, "src", FP, compact_interval=w.interval)
    done = committed_ids(root, "src")
    assert {c.batch_id for c in fresh.pending()} == set(range(len(claims))) - done
    full = fresh.claim_state("")
    assert {k: dict(v) for k, v in full._keys.items()} == state
    for day in ("2026-03-01", "2026-03-02"):
        assert fresh.claims_for_partition(day) == [c for c in claims if c.partition == day]
    fresh.maybe_compact()
    again = Ledger.open(root, "src", FP, compact_interval=w.interval)
    assert {k: dict(v) for k, v in again.claim_state("")._keys.items()} == state


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_interleaved_planners_with_crashes_memory(data: st.DataObject) -> None:
    run_world(data, MemoryStore())


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_interleaved_planners_with_crashes_local(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        run_world(data, LocalStore(Path(d) / "ledger"))
