"""Four OS processes plan the same landing concurrently against moto S3 over HTTP: every object
is claimed exactly once and no batch id is used twice."""

from __future__ import annotations

import multiprocessing as mp
import queue
from datetime import date
from typing import Any

import pytest

from lockgate.resources.ledger import Ledger
from lockgate.resources.store import S3Options
from lockgate.resources.stores import open_store
from lockgate.sensors.discovery import DiscoveryRule, discover
from tests.ledger_testkit import brute_state, read_all_claims

FP = {"landing": "s3://bucket/landing", "format": "csv", "table": "db.t"}
TODAY = date(2026, 3, 10)
PROCESSES = 4


def _planner(endpoint: str, bucket: str, barrier: Any, out: Any) -> None:
    """A planner process: ticks until nothing is left; reports the batches it claimed."""
    try:
        store = open_store(f"s3://{bucket}", S3Options(endpoint_url=endpoint, region="us-east-1"))
        led = Ledger.open(store.child("ledger"), "src", FP, compact_interval=7)
        rule = DiscoveryRule(max_files_per_batch=2, max_claims_per_tick=4, lookback_keys=5)
        barrier.wait(timeout=60)
        mine: list[tuple[int, list[str]]] = []
        conflicts = 0
        for tick in range(500):
            res = discover(
                store.child("landing"), led, rule, full_listing=tick % 3 == 0, today=TODAY
            )
            conflicts += res.conflicts
            mine += [(c.batch_id, [o.key for o in c.objects]) for c in res.claims]
            if not res.claims and not res.deferred and tick % 3 == 0:
                break
        out.put(("ok", mine, conflicts))
    except BaseException as e:
        out.put(("error", repr(e), 0))
        raise


@pytest.mark.s3
def test_four_processes_claim_each_object_once(moto_server: str, bucket: str) -> None:
    run_four(moto_server, bucket, objects=16)


@pytest.mark.s3
@pytest.mark.slow
def test_four_processes_claim_each_object_once_large(moto_server: str, bucket: str) -> None:
    run_four(moto_server, bucket, objects=90)


def run_four(moto_server: str, bucket: str, objects: int) -> None:
    store = open_store(f"s3://{bucket}", S3Options(endpoint_url=moto_server, region="us-east-1"))
    landing = store.child("landing")
    keys = [f"2026-03-0{1 + i % 3}/f{i:04d}.csv" for i in range(objects)]
    for k in keys:
        landing.put(k, b"a,b\n1,2\n")
    # spawn, not fork: this process already runs s3fs's I/O thread and event loop, and a forked
    # child that inherits them can abort when it collects them (seen on a loaded CI box)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_planner, args=(moto_server, bucket, barrier, out), daemon=True)
        for _ in range(PROCESSES)
    ]
    results = []
    try:
        for p in procs:
            p.start()
        for _ in procs:
            try:
                results.append(out.get(timeout=240))
            except queue.Empty:
                pytest.fail("a planner process did not report")
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    assert all(r[0] == "ok" for r in results), results
    reported = [bid for _, mine, _ in results for bid, _ in mine]
    assert len(reported) == len(set(reported)), "a batch id was claimed by two processes"
    claims = read_all_claims(store.child("ledger"), "src")  # consecutive ids
    assert sorted(reported) == list(range(len(claims)))
    state = brute_state(claims)  # no object twice
    assert sorted(state) == sorted(keys)
    assert all(len(etags) == 1 for etags in state.values())
    by_batch = {bid: ks for _, mine, _ in results for bid, ks in mine}
    assert all([o.key for o in c.objects] == by_batch[c.batch_id] for c in claims)
    fresh = Ledger.open(store.child("ledger"), "src", FP, compact_interval=7)
    assert len(fresh.pending()) == len(claims)
    assert len(fresh.claim_state("")) == len(keys)
    print(f"conflicts met: {sum(r[2] for r in results)}, batches: {len(claims)}")
