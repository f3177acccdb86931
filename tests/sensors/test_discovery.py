"""Discovery planning: listing window, filters, partition days, batch cutting, conflicts."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from lockgate.resources.config import load_config
from lockgate.resources.ledger import Ledger
from lockgate.resources.store import ObjectInfo, ObjectStore
from lockgate.sensors.discovery import (
    DiscoveryRule,
    cut_batches,
    discover,
    full_listing_due,
    is_hidden,
    partition_of,
    rule_for_source,
)
from tests.ledger_testkit import HookStore, MemoryStore, obj, read_all_claims
from tests.platform_helpers import source_spec, write_config

FP = {"landing": "mem://landing", "format": "csv", "table": "db.t"}
TODAY = date(2026, 3, 10)


def land(store: MemoryStore | ObjectStore, key: str, size: int = 10) -> None:
    store.put(key, b"x" * size)


def ledger(store: ObjectStore | None = None) -> Ledger:
    return Ledger.open(store or MemoryStore(), "src", FP)


def test_cut_batches_by_files_and_bytes() -> None:
    objs = [obj(f"k{i}", size=s) for i, s in enumerate([4, 4, 4, 50, 1, 1, 1, 1])]
    cuts = cut_batches(objs, max_files=3, max_bytes=10)
    assert [[o.key for o in b] for b in cuts] == [
        ["k0", "k1"],
        ["k2"],
        ["k3"],  # larger than max_bytes: a batch of its own
        ["k4", "k5", "k6"],
        ["k7"],
    ]
    assert cut_batches([], 3, 10) == []


def test_hidden_and_temporary_names() -> None:
    for key in ["_SUCCESS", "a/.part", "a/_temporary/0/x.csv", "x.csv.tmp", "x.csv._COPYING_"]:
        assert is_hidden(key), key
    for key in ["a/b.csv", "a/b_c.csv", "2026-01-01/x.csv"]:
        assert not is_hidden(key), key


def test_partition_from_key_or_last_modified() -> None:
    rule = DiscoveryRule(partition_regex=r"dt=(\d{4}-\d{2}-\d{2})/")
    lm = datetime(2026, 2, 3, 23, 59, tzinfo=UTC)
    assert partition_of(ObjectInfo("dt=2026-01-05/a.csv", 1, "e", lm), rule) == "2026-01-05"
    assert partition_of(ObjectInfo("other/a.csv", 1, "e", lm), rule) == "2026-02-03"
    assert partition_of(ObjectInfo("dt=2026-02-31/a.csv", 1, "e", lm), rule) is None
    with pytest.raises(ValueError, match="group"):
        DiscoveryRule(partition_regex=r"\d+")
    with pytest.raises(ValueError):
        DiscoveryRule(max_files_per_batch=0)


def test_discover_claims_new_objects_in_day_batches() -> None:
    landing = MemoryStore()
    for d in (1, 2):
        for i in range(5):
            land(landing, f"2026-03-0{d}/f{i}.csv", size=10)
    land(landing, "2026-03-01/_SUCCESS")
    land(landing, "2026-03-01/g.csv.tmp")
    led = ledger()
    rule = DiscoveryRule(max_files_per_batch=2, max_bytes_per_batch=1000)
    res = discover(landing, led, rule, today=TODAY)
    assert res.listed == 12 and res.skipped_hidden == 2
    assert [(c.batch_id, c.partition, len(c.objects)) for c in res.claims] == [
        (0, "2026-03-01", 2),
        (1, "2026-03-01", 2),
        (2, "2026-03-01", 1),
        (3, "2026-03-02", 2),
        (4, "2026-03-02", 2),
        (5, "2026-03-02", 1),
    ]
    assert res.list_requests == 1
    again = discover(landing, led, rule, today=TODAY)
    assert again.claims == [] and again.skipped_claimed == 10


def test_out_of_range_days_wait() -> None:
    landing = MemoryStore()
    land(landing, "2026-02-28/old.csv")
    land(landing, "2026-03-01/ok.csv")
    land(landing, "2026-03-11/future.csv")
    land(landing, "2026-13-01/bad.csv")
    led = ledger()
    rule = DiscoveryRule(partition_start=date(2026, 3, 1))
    res = discover(landing, led, rule, today=TODAY)
    assert [o.key for c in res.claims for o in c.objects] == ["2026-03-01/ok.csv"]
    assert res.out_of_range_counts() == {"before_start": 1, "future": 1, "invalid_day": 1}
    assert {o.key: o.reason for o in res.out_of_range}["2026-03-11/future.csv"] == "future"
    # the future day arrives: the object is claimed then
    res2 = discover(landing, led, rule, today=date(2026, 3, 11))
    assert [o.key for c in res2.claims for o in c.objects] == ["2026-03-11/future.csv"]
    assert res2.claims[0].partition == "2026-03-11"
    assert res2.out_of_range_counts() == {"before_start": 1, "invalid_day": 1}


@pytest.mark.parametrize("allow", [False, True])
def test_overwritten_objects(allow: bool) -> None:
    landing = MemoryStore()
    land(landing, "2026-03-01/a.csv")
    led = ledger()
    rule = DiscoveryRule(allow_overwrites=allow)
    first = discover(landing, led, rule, today=TODAY)
    assert len(first.claims) == 1
    land(landing, "2026-03-01/a.csv", size=20)  # re-written: new etag
    res = discover(landing, led, rule, today=TODAY)
    assert [o.key for o in res.overwritten] == ["2026-03-01/a.csv"]
    if allow:
        assert [o.size for c in res.claims for o in c.objects] == [20]
        assert len(led.claim_state().etags("2026-03-01/a.csv")) == 2
    else:
        assert res.claims == []
        assert len(led.claim_state().etags("2026-03-01/a.csv")) == 1
    # a second pass reports nothing new to claim
    assert discover(landing, led, rule, today=TODAY).claims == []


def test_lookback_window_and_full_listing_catch_late_keys() -> None:
    landing = MemoryStore()
    for i in range(20):
        land(landing, f"2026-03-01/f{i:03d}.csv")
    led = ledger()
    rule = DiscoveryRule(lookback_keys=3, max_files_per_batch=4)
    discover(landing, led, rule, today=TODAY)
    land(landing, "2026-03-01/f005a.csv")  # arrives late, below the window
    land(landing, "2026-03-01/f018a.csv")  # inside the window
    land(landing, "2026-03-01/f100.csv")  # after the high-water key
    res = discover(landing, led, rule, today=TODAY)
    assert res.start_after == "2026-03-01/f016.csv"
    assert res.listed == 5  # f017..f019 (the window), f018a, f100
    assert sorted(o.key for c in res.claims for o in c.objects) == [
        "2026-03-01/f018a.csv",
        "2026-03-01/f100.csv",
    ]
    full = discover(landing, led, rule, full_listing=True, today=TODAY)
    assert full.start_after is None and full.full_listing
    assert [o.key for c in full.claims for o in c.objects] == ["2026-03-01/f005a.csv"]
    assert {o.key for c in read_all_claims(led.root, "src") for o in c.objects} == {
        o.key for o in landing.list()
    }


def test_max_claims_per_tick_defers_the_rest() -> None:
    landing = MemoryStore()
    for i in range(10):
        land(landing, f"2026-03-0{1 + i % 2}/f{i}.csv")
    led = ledger()
    rule = DiscoveryRule(max_files_per_batch=2, max_claims_per_tick=2)
    res = discover(landing, led, rule, today=TODAY)
    assert len(res.claims) == 2 and res.claimed_objects == 4 and res.deferred == 6
    total = res.claimed_objects
    for _ in range(5):
        total += discover(landing, led, rule, today=TODAY).claimed_objects
    assert total == 10


def test_conflicting_planner_replans() -> None:
    landing = MemoryStore()
    for i in range(6):
        land(landing, f"2026-03-01/f{i}.csv")
    ledger_root = MemoryStore()
    rule = DiscoveryRule(max_files_per_batch=2)
    other = Ledger.open(ledger_root, "src", FP)
    fired: list[str] = []

    def race(key: str) -> None:
        # just before our first claim lands, another planner claims the first two objects
        if key.startswith("offsets/") and not fired:
            fired.append(key)
            other.claim("2026-03-01", [o for o in landing.list()][:2])

    ours = Ledger.open(HookStore(ledger_root, before_write=race), "src", FP)
    res = discover(landing, ours, rule, today=TODAY)
    assert res.conflicts == 1 and res.skipped_claimed == 2
    assert [c.batch_id for c in res.claims] == [1, 2]
    claims = read_all_claims(ledger_root, "src")
    keys = [o.key for c in claims for o in c.objects]
    assert sorted(keys) == sorted(o.key for o in landing.list()) and len(set(keys)) == 6


def test_full_listing_due() -> None:
    rule = DiscoveryRule(full_listing_every=3)
    assert full_listing_due(None, rule)
    assert [full_listing_due(n, rule) for n in range(4)] == [False, False, True, True]
    assert not full_listing_due(10**6, DiscoveryRule(full_listing_every=0))


def test_discover_on_s3_counts_list_requests(s3_store: ObjectStore) -> None:
    landing = s3_store.child("landing")
    for i in range(3):
        landing.put(f"2026-03-01/f{i}.csv", b"abc")
    led = Ledger.open(s3_store.child("ledger"), "src", FP)
    res = discover(landing, led, DiscoveryRule(), today=TODAY)
    assert res.claimed_objects == 3 and res.list_requests == 1
    assert [o.etag for o in res.claims[0].objects] == [o.etag for o in landing.list()]


def test_rule_rebuilds_from_its_fields() -> None:
    rule = DiscoveryRule(partition_regex=r"(\d{8})/", lookback_keys=3)
    assert partition_of(obj("20260102/a.csv"), rule) == "2026-01-02"  # uses compiled_regex
    again = DiscoveryRule(**{**rule.__dict__, "full_listing_every": 7})
    assert again.lookback_keys == 3 and again.full_listing_every == 7
    named = DiscoveryRule(partition_regex=r"(?P<year>\d{4})/(?P<month>\d\d)/(?P<day>\d\d)/")
    assert partition_of(obj("x/2026/02/03/a.csv"), named) == "2026-02-03"


def test_impossible_date_in_a_configured_pattern_is_not_claimed_and_is_reported(
    tmp_path: Path,
) -> None:
    """Regression (on-call issue, item 6): ``dt=2026-02-30`` was claimed into the day of its
    last-modified time. It is not a day: not claimed, reported as ``invalid_day``."""
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={
            "ev": source_spec(
                "ev",
                str(tmp_path / "l"),
                partition={"pattern": r"dt=(\d{4}-\d{2}-\d{2})", "start": "2026-01-01"},
            )
        },
    )
    source = load_config(str(path)).source("ev")
    landing = MemoryStore()
    land(landing, "dt=2026-02-30/a.jsonl")
    land(landing, "dt=2026-03-01/b.jsonl")
    res = discover(landing, ledger(), rule_for_source(source), today=TODAY)
    assert [o.key for c in res.claims for o in c.objects] == ["dt=2026-03-01/b.jsonl"]
    assert [(o.key, o.reason) for o in res.out_of_range] == [
        ("dt=2026-02-30/a.jsonl", "invalid_day")
    ]
