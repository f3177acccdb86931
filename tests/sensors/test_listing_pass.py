"""Full listings spread over ticks (``max_keys_listed_per_tick``): every call lists a bounded
number of keys, a full-listing pass resumes from its continuation (the sensor cursor), and
every object is claimed exactly once -- including keys landing behind and ahead of the
continuation point while a pass is in progress.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lockgate.resources.ledger import Ledger
from lockgate.sensors.discovery import DiscoveryResult, DiscoveryRule, discover, rule_for_source
from lockgate.sensors.factory import ListingCursor, evaluate_tick
from tests.conftest import create_bucket
from tests.ledger_testkit import MemoryStore, read_all_claims
from tests.platform_helpers import Lander, landing_store, s3_config
from tests.sensors.platform_harness import Harness
from tests.sensors.test_discovery import TODAY, land, ledger

BOUND = 10


def _claimed(led: Ledger) -> Counter[str]:
    return Counter(o.key for c in read_all_claims(led.root, "src") for o in c.objects)


def _pass(landing: MemoryStore, led: Ledger, rule: DiscoveryRule) -> list[DiscoveryResult]:
    """One whole full-listing pass, call after call, as the sensor drives it."""
    calls = [discover(landing, led, rule, full_listing=True, today=TODAY)]
    while calls[-1].full_next is not None:
        assert len(calls) < 100, "the pass never ends"
        calls.append(
            discover(
                landing, led, rule, full_listing=True, today=TODAY, full_from=calls[-1].full_next
            )
        )
    return calls


def test_a_pass_over_several_calls_claims_everything_once() -> None:
    landing = MemoryStore()
    keys = [f"2026-03-01/k{i:03d}.csv" for i in range(60)]
    for k in keys:
        land(landing, k)
    led = ledger()
    rule = DiscoveryRule(
        lookback_keys=3,
        max_files_per_batch=4,
        max_claims_per_tick=1000,
        max_keys_listed_per_tick=BOUND,
    )

    first = discover(landing, led, rule, full_listing=True, today=TODAY)
    assert first.full_next == "2026-03-01/k009.csv"  # the pass's first page of 10 keys
    assert first.truncated and first.listed == 2 * BOUND  # plus one incremental page
    assert sorted(_claimed(led)) == keys[:20]

    # while the pass is at k009: one key lands behind it (below the window), one ahead of it
    land(landing, "2026-03-01/k005a.csv")
    land(landing, "2026-03-01/k030a.csv")
    calls = [first]
    while calls[-1].full_next is not None:
        calls.append(
            discover(
                landing, led, rule, full_listing=True, today=TODAY, full_from=calls[-1].full_next
            )
        )
        assert len(calls) < 20
    assert len(calls) >= 4  # 62 keys, 10 a page: spread over calls
    assert all(c.listed <= 2 * BOUND for c in calls)  # bounded, whatever the bucket size
    claimed = _claimed(led)
    assert "2026-03-01/k030a.csv" in claimed  # ahead of the continuation: this pass
    assert "2026-03-01/k005a.csv" not in claimed  # behind it: the next pass
    assert set(claimed) == set(keys) | {"2026-03-01/k030a.csv"}

    land(landing, "2026-03-01/k001a.csv")  # behind everything, before the next pass starts
    second = _pass(landing, led, rule)
    assert [o.key for c in second for cl in c.claims for o in cl.objects] == [
        "2026-03-01/k001a.csv",
        "2026-03-01/k005a.csv",
    ]
    claimed = _claimed(led)
    assert set(claimed) == {o.key for o in landing.list()}
    assert max(claimed.values()) == 1  # exactly once


def test_an_incremental_call_is_bounded_and_resumes_from_the_window() -> None:
    landing = MemoryStore()
    for i in range(35):
        land(landing, f"2026-03-01/k{i:03d}.csv")
    led = ledger()
    rule = DiscoveryRule(lookback_keys=2, max_files_per_batch=5, max_keys_listed_per_tick=BOUND)
    results = []
    while not results or results[-1].claims:
        results.append(discover(landing, led, rule, today=TODAY))
        assert len(results) < 20
    assert all(r.listed <= BOUND for r in results)
    assert results[0].truncated and not results[-1].truncated
    claimed = _claimed(led)
    assert len(claimed) == 35 and max(claimed.values()) == 1


def test_a_small_bucket_is_still_one_listing() -> None:
    """Below the bound a full listing lists once and ends its pass in the same call."""
    landing = MemoryStore()
    for i in range(5):
        land(landing, f"2026-03-01/k{i}.csv")
    led = ledger()
    res = discover(
        landing, led, DiscoveryRule(max_keys_listed_per_tick=BOUND), full_listing=True, today=TODAY
    )
    assert res.full_next is None and res.listed == 5 and res.start_after is None
    assert res.list_requests is None or res.list_requests == 1


def test_cursor_round_trip_and_unreadable_cursors() -> None:
    c = ListingCursor(7).after(full=True, full_next="2026-01-01/\udcff.csv")
    assert c == ListingCursor(7, True, "2026-01-01/\udcff.csv")
    assert ListingCursor.parse(c.dump()) == c  # a key that is not UTF-8 survives JSON
    assert ListingCursor.parse(c.after(True, None).dump()) == ListingCursor(0)
    assert ListingCursor.parse(ListingCursor(3).after(False, None).dump()) == ListingCursor(4)
    assert ListingCursor.parse('{"ticks_since_full": 2}') == ListingCursor(2)  # older cursor
    for bad in (None, "", "nonsense", "[]", '{"ticks_since_full": 1, "full_from": 5}'):
        assert ListingCursor.parse(bad) == ListingCursor()  # a new pass


@pytest.mark.s3
def test_sensor_ticks_carry_the_pass_in_their_cursor(tmp_path: Path, moto_server: str) -> None:
    bucket = create_bucket(moto_server)
    cfg = s3_config(
        tmp_path / "lockgate.yaml",
        moto_server,
        bucket,
        ["big"],
        max_keys_listed_per_tick=4,
        max_runs_per_tick=50,
    )
    assert cfg.dagster.max_keys_listed_per_tick == 4
    source = cfg.source("big")
    lander = Lander(landing_store(cfg, "big"))
    for i in range(12):
        lander.land(f"2026-04-01/k{i:02d}.jsonl", n=1)
    with dg.instance_for_test() as instance:
        # the sensor built from the config: its first tick starts a pass of 4 keys a tick
        h = Harness(cfg, "big", instance)
        h.tick()
        cursor = json.loads(h.cursor or "")
        assert cursor == {
            "ticks_since_full": 0,
            "in_pass": True,
            "full_from": "2026-04-01/k03.jsonl",
        }

        # the same tick function with a short window and a pass every 3 ticks
        rule = rule_for_source(
            source,
            max_claims_per_tick=50,
            max_keys_listed_per_tick=4,
            lookback_keys=1,
            full_listing_every=3,
        )
        state: dict[str, Any] = {"cursor": h.cursor}

        def tick() -> ListingCursor:
            ctx = dg.build_sensor_context(instance=instance, cursor=state["cursor"])
            result = evaluate_tick(ctx, h.rt, source, rule, h.key, 50, log=lambda _m: None)
            state["cursor"] = result.cursor
            return ListingCursor.parse(result.cursor)

        def claimed() -> Counter[str]:  # nothing runs here: every claim is pending
            return Counter(o.key for c in h.rt.ledger(source).pending() for o in c.objects)

        lander.land("2026-04-01/k01a.jsonl", n=1)  # behind the continuation (k03), below window
        lander.land("2026-04-01/k05a.jsonl", n=1)  # ahead of it
        seen = [tick()]
        while seen[-1].in_pass:
            seen.append(tick())
            assert len(seen) < 20
        conts = [c.full_from for c in seen if c.in_pass]
        assert conts == sorted(conts) and len(conts) == len(set(conts))  # it only moves on
        assert "2026-04-01/k05a.jsonl" in claimed()
        assert "2026-04-01/k01a.jsonl" not in claimed()
        # incremental ticks until the next pass is due; that pass finds the late key
        while "2026-04-01/k01a.jsonl" not in claimed():
            seen.append(tick())
            assert len(seen) < 40
        keys = claimed()
        assert set(keys) == {f"2026-04-01/k{i:02d}.jsonl" for i in range(12)} | {
            "2026-04-01/k01a.jsonl",
            "2026-04-01/k05a.jsonl",
        }
        assert max(keys.values()) == 1


class StepClock:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.t = 0.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_a_time_bounded_pass_resumes_and_claims_everything_once() -> None:
    """``max_listing_s`` cuts a pass like the key bound does (a store without pages stops at
    any key); the pass still claims every key exactly once."""
    landing = MemoryStore()
    keys = [f"2026-03-01/k{i:03d}.csv" for i in range(40)]
    for k in keys:
        land(landing, k)
    led = ledger()
    # read once when a listing starts and once per key after it: 3 keys per listing
    rule = DiscoveryRule(
        lookback_keys=2, max_files_per_batch=4, max_claims_per_tick=1000, max_listing_s=2.5
    )
    calls = [discover(landing, led, rule, full_listing=True, today=TODAY, clock=StepClock(1))]
    assert calls[0].cut_by_time and calls[0].full_next == "2026-03-01/k002.csv"
    while calls[-1].full_next is not None:
        calls.append(
            discover(
                landing,
                led,
                rule,
                full_listing=True,
                today=TODAY,
                full_from=calls[-1].full_next,
                clock=StepClock(1),
            )
        )
        assert len(calls) < 40
    assert len(calls) >= 10
    assert all(c.listed <= 6 for c in calls)  # two listings of at most 3 keys each
    claimed = _claimed(led)
    assert set(claimed) == set(keys) and max(claimed.values()) == 1
    # no time bound: one call lists everything
    whole = discover(landing, ledger(), DiscoveryRule(), full_listing=True, today=TODAY)
    assert whole.full_next is None and not whole.cut_by_time and whole.listed == 40


def test_a_time_bounded_incremental_listing_gets_past_its_look_back_window() -> None:
    """However slow the listing, an incremental call is not cut by time before it has listed
    past the look-back window: new keys are claimed call after call, never starved by
    re-listing the window."""
    landing = MemoryStore()
    for i in range(10):
        land(landing, f"2026-03-01/k{i:03d}.csv")
    led = ledger()
    rule = DiscoveryRule(lookback_keys=3, max_claims_per_tick=1000, max_listing_s=0.5)
    discover(landing, led, rule, full_listing=True, today=TODAY)  # all 10 claimed
    new = [f"2026-03-01/k{i:03d}.csv" for i in range(10, 16)]
    for k in new:
        land(landing, k)
    calls = []
    while set(new) - set(_claimed(led)):
        calls.append(discover(landing, led, rule, today=TODAY, clock=StepClock(1)))
        assert len(calls) < 10, "new keys starved behind the look-back window"
    assert calls[0].cut_by_time and calls[0].listed == 4  # the 3-key window + 1 new key
    claimed = _claimed(led)
    assert max(claimed.values()) == 1 and len(claimed) == 16


@pytest.mark.s3
def test_slow_s3_pages_cut_a_tick_at_page_boundaries(moto_server: str) -> None:
    """On S3 whose LIST pages are slow (a proxy delays each by 0.4 s) a time-bounded listing
    stops only at page boundaries (no page fetched and dropped) after its budget, at least
    one page per listing; the pass ends and every key is claimed exactly once."""
    from lockgate.resources.store import S3Options
    from lockgate.resources.store_s3 import S3Store
    from tests.s3_fault_proxy import FaultProxy, ProxyRequest

    bucket = create_bucket(moto_server)
    page = 5
    with FaultProxy(moto_server) as proxy:

        def slow_lists(req: ProxyRequest) -> None:
            if req.method == "GET" and "list-type=2" in req.path:
                time.sleep(0.4)

        proxy.before_forward = slow_lists
        landing = S3Store(
            f"s3://{bucket}/landing", S3Options(endpoint_url=proxy.url), page_size=page
        )
        keys = [f"2026-03-01/k{i:03d}.csv" for i in range(42)]
        for k in keys:
            landing.put(k, b"x")
        led = ledger()
        rule = DiscoveryRule(lookback_keys=2, max_claims_per_tick=1000, max_listing_s=1.0)
        calls: list[DiscoveryResult] = []
        while not calls or calls[-1].full_next is not None:
            calls.append(
                discover(
                    landing,
                    led,
                    rule,
                    full_listing=True,
                    today=TODAY,
                    full_from=calls[-1].full_next if calls else None,
                )
            )
            assert len(calls) < 42
    # 42 keys in pages of 5 at >= 0.4 s a page: the 1 s budget cuts the pass, and only
    # after a whole page (the continuation ends one), never a page fetched and dropped
    assert len(calls) >= 2
    for c in calls[:-1]:
        assert c.cut_by_time and c.full_next is not None
        assert (keys.index(c.full_next) + 1) % page == 0
        assert c.listed >= page  # at least one page per call: the pass always moves on
    claimed = _claimed(led)
    assert set(claimed) == set(keys) and max(claimed.values()) == 1


def test_max_listing_seconds_per_tick_in_the_config(tmp_path: Path) -> None:
    from lockgate.resources.config import ConfigError, load_config
    from tests.platform_helpers import source_spec, write_config

    def cfg(value: object) -> int:
        path = write_config(
            tmp_path / "lockgate.yaml",
            warehouse=str(tmp_path / "wh"),
            sources={"a": source_spec("a", str(tmp_path / "in"))},
            dagster={"max_listing_seconds_per_tick": value},
        )
        return load_config(str(path)).dagster.max_listing_seconds_per_tick

    assert cfg(15) == 15 and cfg("2m") == 120 and cfg(0) == 0
    for bad in (-1, 1.5, True, "soon"):
        with pytest.raises(ConfigError, match="max_listing_seconds_per_tick"):
            cfg(bad)
