"""Ledger: claims, conflicts, commit records, fingerprints, compaction (local and moto S3)."""

from __future__ import annotations

import json
import random

import pytest

from lockgate.resources.ledger import (
    AlreadyClaimed,
    ClaimConflict,
    CommitRecord,
    FingerprintMismatch,
    Ledger,
    LedgerCorrupt,
    UnknownBatch,
    batch_name,
)
from lockgate.resources.store import LocalStore, ObjectStore
from tests.ledger_testkit import (
    HookStore,
    MemoryStore,
    SimulatedCrash,
    brute_state,
    committed_ids,
    obj,
    read_all_claims,
)

FP = {"landing": "s3://landing/src", "format": "csv", "table": "db.t"}
DAY = "2026-01-01"


def rec(batch_id: int, rows: int = 1) -> CommitRecord:
    return CommitRecord(batch_id, 7, 3, rows, 0, 10, 1)


def test_claim_read_back_and_state(store: ObjectStore) -> None:
    led = Ledger.open(store, "src", FP)
    assert led.next_batch_id() == 0
    c0 = led.claim(DAY, [obj("a/1"), obj("a/2")])
    c1 = led.claim("2026-01-02", [obj("b/1", size=5)])
    assert (c0.batch_id, c1.batch_id) == (0, 1)
    fresh = Ledger.open(store, "src", FP)
    assert fresh.get_claim(0) == c0
    assert fresh.get_claim(1).objects[0].size == 5
    state = fresh.claim_state()
    assert state.next_batch_id == 2
    assert state.high_water_key == "b/1"
    assert state.is_claimed("a/1", "e1") and not state.is_claimed("a/1", "e2")
    assert state.batch_of("b/1", "e1") == 1
    assert [k for k, _ in state.window("a/2")] == ["a/2", "b/1"]
    with pytest.raises(UnknownBatch):
        fresh.get_claim(2)


def test_claim_rejects_bad_input(local_store: ObjectStore) -> None:
    led = Ledger.open(local_store, "src", FP)
    led.claim(DAY, [obj("k")])
    with pytest.raises(AlreadyClaimed):
        led.claim(DAY, [obj("k")])
    with pytest.raises(ValueError, match="same key twice"):
        led.claim(DAY, [obj("x"), obj("x", "e2")])
    with pytest.raises(ValueError, match="at least one"):
        led.claim(DAY, [])
    with pytest.raises(ValueError, match="partition day"):
        led.claim("2026-1-1", [obj("y")])
    with pytest.raises(ValueError):
        led.claim("2026-02-30", [obj("y")])
    with pytest.raises(ValueError, match="invalid source"):
        Ledger.open(local_store, "../evil", FP)
    assert led.next_batch_id() == 1
    assert led.claim(DAY, [obj("k", "e2")]).batch_id == 1  # a new etag is a new object


def test_conflict_then_replan(store: ObjectStore) -> None:
    a = Ledger.open(store, "src", FP)
    b = Ledger.open(store, "src", FP)
    assert b.next_batch_id() == 0  # b's view is now stale
    a.claim(DAY, [obj("k1"), obj("k2")])
    with pytest.raises(ClaimConflict) as ei:
        b.claim(DAY, [obj("k2"), obj("k3")])
    assert ei.value.batch_id == 0
    state = b.claim_state()  # already refreshed by the conflict
    assert state.next_batch_id == 1 and state.is_claimed("k2", "e1")
    with pytest.raises(AlreadyClaimed):
        b.claim(DAY, [obj("k2"), obj("k3")])
    assert b.claim(DAY, [obj("k3")]).batch_id == 1
    assert [c.batch_id for c in read_all_claims(store, "src")] == [0, 1]


def test_record_commit_is_create_only_and_idempotent(store: ObjectStore) -> None:
    led = Ledger.open(store, "src", FP)
    led.claim(DAY, [obj("k")])
    assert led.commit_record(0) is None
    first = led.record_commit(CommitRecord(0, 11, 2, 5, 1, 99, 1, record_counts={"k": 6}))
    again = led.record_commit(CommitRecord(0, 12, 3, 500, 0, 1, 1, duplicate=True))
    assert again == first  # the stored record wins, never overwritten
    got = Ledger.open(store, "src", FP).commit_record(0)
    assert got is not None and got.snapshot_id == 11 and got.record_counts == {"k": 6}
    with pytest.raises(UnknownBatch):
        led.record_commit(rec(5))


def test_pending_is_claimed_minus_committed_across_compactions(local_store: ObjectStore) -> None:
    led = Ledger.open(local_store, "src", FP, compact_interval=4)
    rng = random.Random(3)
    committed: set[int] = set()
    for i in range(23):
        led.claim(DAY, [obj(f"k{i:03d}")])
        for b in range(i + 1):
            if b not in committed and rng.random() < 0.3:
                led.record_commit(rec(b))
                committed.add(b)
        led.maybe_compact()
        fresh = Ledger.open(local_store, "src", FP, compact_interval=4)
        assert [c.batch_id for c in fresh.pending()] == sorted(set(range(i + 1)) - committed)
    assert led.last_compaction() == 19
    s = Ledger.open(local_store, "src", FP).summary()
    assert s.claims == 23 and s.committed == len(committed) and s.last_compaction == 19


def test_pending_reads_only_recent_commit_state(local_store: ObjectStore) -> None:
    counters = {"writes": 0, "gets": 0, "lists": 0}
    led = Ledger.open(local_store, "src", FP, compact_interval=10)
    for i in range(100):
        led.claim(DAY, [obj(f"k{i:03d}")])
        if i != 42:
            led.record_commit(rec(i))
        led.maybe_compact()
    hooked = HookStore(local_store, counters=counters)
    fresh = Ledger.open(hooked, "src", FP, compact_interval=10)
    assert [c.batch_id for c in fresh.pending()] == [42]
    # fingerprint + manifest + one probe + claim 42; not 100 claims or commit records
    assert counters["gets"] <= 6


@pytest.mark.parametrize("interval", [1, 3, 10])
def test_compaction_preserves_state(local_store: ObjectStore, interval: int) -> None:
    rng = random.Random(interval)
    led = Ledger.open(local_store, "src", FP, compact_interval=interval)
    keys = [f"p/{rng.randrange(60):03d}" for _ in range(120)]
    for i in range(0, 120, 4):
        group = {k: f"e{rng.randrange(3)}" for k in keys[i : i + 4]}
        objs = [obj(k, e) for k, e in group.items() if not led.is_claimed(k, e)]
        if objs:
            led.claim(f"2026-01-{1 + i % 5:02d}", objs)
    before = brute_state(read_all_claims(local_store, "src"))
    uncompacted = Ledger.open(local_store, "src", FP, compact_interval=10**9)
    state0 = uncompacted.claim_state()
    assert {k: dict(state0._keys[k]) for k in state0._keys} == before
    led.maybe_compact()
    assert led.last_compaction() is not None
    for start in ["", "p/030", "p/059", "q"]:
        fresh = Ledger.open(local_store, "src", FP, compact_interval=interval)
        st = fresh.claim_state(start)
        expect = {k: set(v) for k, v in before.items() if k >= start}
        assert {k: set(e) for k, e in st.window(start)} == expect
    fresh = Ledger.open(local_store, "src", FP, compact_interval=interval)
    claims = read_all_claims(local_store, "src")
    for d in range(1, 6):
        day = f"2026-01-{d:02d}"
        assert fresh.claims_for_partition(day) == [c for c in claims if c.partition == day]
    assert fresh.next_batch_id() == len(claims)
    assert fresh.claim_state().high_water_key == max(before)


def test_lookback_reads_only_the_top_segments(local_store: ObjectStore) -> None:
    led = Ledger.open(local_store, "src", FP, compact_interval=10)
    for i in range(200):
        led.claim(DAY, [obj(f"k{i:05d}")])
        led.maybe_compact()
    counters = {"writes": 0, "gets": 0, "lists": 0}
    fresh = Ledger.open(HookStore(local_store, counters=counters), "src", FP, compact_interval=10)
    assert fresh.lookback_start(5) == "k00194"
    assert fresh.claim_state("k00194").is_claimed("k00199", "e1")
    assert counters["gets"] <= 5  # fingerprint, manifest, one segment, probes; not 20 segments
    assert len(fresh.claim_state("k00194")) <= 10
    assert fresh.lookback_start(1000) is None
    assert len(fresh.claim_state("")) == 200


def test_crash_between_segment_and_manifest_is_harmless(local_store: ObjectStore) -> None:
    led = Ledger.open(local_store, "src", FP, compact_interval=5)
    for i in range(5):
        led.claim(DAY, [obj(f"k{i}")])

    def crash_on_manifest(key: str) -> None:
        if key.startswith("compact/"):
            raise SimulatedCrash(key)

    hooked = HookStore(local_store, before_write=crash_on_manifest)
    with pytest.raises(SimulatedCrash):
        Ledger.open(hooked, "src", FP, compact_interval=5).maybe_compact()
    assert Ledger.open(local_store, "src", FP).last_compaction() is None
    again = Ledger.open(local_store, "src", FP, compact_interval=5)
    assert again.maybe_compact() == 4  # reuses the identical orphan segment
    assert len(Ledger.open(local_store, "src", FP).claim_state("")) == 5


def test_ledger_only_creates(local_store: ObjectStore) -> None:
    hooked = HookStore(local_store)  # put/delete raise AssertionError
    led = Ledger.open(hooked, "src", FP, compact_interval=2)
    for i in range(7):
        led.claim(DAY, [obj(f"k{i}")])
        led.record_commit(rec(i))
        led.record_commit(rec(i))
        led.maybe_compact()
        led.compact(led.last_compaction() or 0)
    assert led.pending() == []
    assert committed_ids(local_store, "src") == set(range(7))


def test_fingerprint_refusal_and_reset(store: ObjectStore) -> None:
    led = Ledger.open(store, "src", FP)
    led.claim(DAY, [obj("k1")])
    changed = {**FP, "format": "jsonl"}
    with pytest.raises(FingerprintMismatch) as ei:
        Ledger.open(store, "src", changed)
    assert ei.value.changes == {"format": ("csv", "jsonl")}
    assert "format" in str(ei.value) and "reset" in str(ei.value)
    with pytest.raises(FingerprintMismatch) as ei2:
        Ledger.open(store, "src", {**FP, "partition_regex": "x"})
    assert ei2.value.changes == {"partition_regex": (None, "x")}
    reset = Ledger.open(store, "src", changed, reset=True)
    assert reset.fingerprint.version == 1 and reset.fingerprint.from_batch == 1
    assert reset.is_claimed("k1", "e1")  # claims are kept: never claimed twice
    c = reset.claim(DAY, [obj("k2")])
    assert c.batch_id == 1 and c.fingerprint_version == 1
    assert Ledger.open(store, "src", changed).fingerprint.version == 1
    assert Ledger.open(store, "src", changed, reset=True).fingerprint.version == 1  # no-op
    with pytest.raises(FingerprintMismatch):
        Ledger.open(store, "src", FP)  # the old declaration is refused now
    assert Ledger.read_fingerprint(store, "nope") is None


def test_sources_are_independent(local_store: ObjectStore) -> None:
    a = Ledger.open(local_store, "a", FP)
    b = Ledger.open(local_store, "b", FP)
    a.claim(DAY, [obj("k")])
    assert b.claim(DAY, [obj("k")]).batch_id == 0
    assert isinstance(local_store, LocalStore)


def test_memory_store_kit_behaves_like_a_store() -> None:
    m = MemoryStore()
    m.child("x").put_if_absent("a/b", b"1")
    with pytest.raises(Exception, match="a/b"):
        m.child("x").put_if_absent("a/b", b"2")
    assert [o.key for o in m.list()] == ["x/a/b"]
    assert [o.key for o in m.child("x").list("a/")] == ["a/b"]


def test_lagging_compaction_cuts_bounded_segments(local_store: ObjectStore) -> None:
    led = Ledger.open(local_store, "src", FP, compact_interval=10)
    for i in range(35):
        led.claim(DAY, [obj(f"k{i:03d}")])
    assert led.maybe_compact() == 29
    segments = sorted(o.key for o in local_store.child("src").list("segments/"))
    assert segments == [f"segments/{a:020d}-{b:020d}.json" for a, b in [(0, 9), (10, 19), (20, 29)]]
    fresh = Ledger.open(local_store, "src", FP, compact_interval=10)
    assert fresh.lookback_start(3) == "k031"
    assert len(fresh.claim_state("k031")) == 5  # the tail only: no segment was needed
    assert len(fresh.claim_state("k025")) == 15  # plus one segment of 10


def test_newer_format_is_refused(local_store: ObjectStore) -> None:
    led = Ledger.open(local_store, "src", FP)
    local_store.child("src").put_if_absent(
        "offsets/" + batch_name(0),
        json.dumps({"format": 99, "source": "src", "batch_id": 0}).encode(),
    )
    with pytest.raises(LedgerCorrupt, match="newer Lockgate"):
        led.next_batch_id()
