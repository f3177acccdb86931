"""``bench/load_sources.py`` without its servers: the ids it lands per source are the ones it
later expects in each table, its quantiles are nearest-rank, and its table says how many tables
were exactly once (the script does not rot). The load test itself needs PostgreSQL, moto and
the daemon for tens of minutes: ``python -m bench.load_sources`` (BENCHMARKS.md)."""

from __future__ import annotations

import math
from collections import Counter

from bench import load_sources


def test_landed_ids_are_disjoint_per_source_and_expected_back() -> None:
    names = load_sources.source_names(3)
    assert names == ["s000", "s001", "s002"]
    ids = load_sources.expected_ids(names, objects=4, records=5)
    assert ids["s000"] == Counter(range(20)) and ids["s002"] == Counter(range(40, 60))
    assert not set(ids["s000"]) & set(ids["s001"])


def test_quantiles_and_the_table() -> None:
    assert load_sources.pct([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert load_sources.pct([float(i) for i in range(1, 101)], 0.95) == 95.0
    assert math.isnan(load_sources.pct([], 0.5))
    r = load_sources.LoadResult(sources=2, objects=4, records=5, runs_limit=4)
    r.exactly_once = {"s000": True, "s001": False}
    r.runs, r.runs_window_s = 6, 120.0
    r.tick_p50 = {"s000": 1.0, "s001": 3.0}
    r.tick_p95 = {"s000": 2.0, "s001": 6.0}
    r.latencies = [10.0, 20.0]
    text = load_sources.table(r)
    assert "| exactly once (verify ok + id multiset equal), tables | 1/2 |" in text
    assert "| runs per minute | 3.0 |" in text
    p95_row = "| sensor tick p95 s per source: median (min-max) of sources | 4.00 (2.00-6.00) |"
    assert p95_row in text
