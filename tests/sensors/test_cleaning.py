"""The cleaning step of a sensor tick: only committed batches are cleaned, bounded per tick,
resumed from the durable hint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from lockgate.pipelines.batch import execute_batch
from lockgate.resources.cleaning import CleanHint, CleanLog
from lockgate.resources.config import load_config
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import LocalStore
from lockgate.sensors.cleaning import clean_committed
from lockgate.sensors.discovery import rule_for_source
from lockgate.sensors.factory import evaluate_tick
from tests.platform_helpers import Lander, source_spec, table_ids, write_config

DAY = "2026-01-05"


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def _runtime(tmp_path: Path) -> Runtime:
    spec = source_spec(
        "ev",
        str(tmp_path / "landing"),
        clean_source={"mode": "archive", "archive_to": str(tmp_path / "archive")},
    )
    path = write_config(
        tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources={"ev": spec}
    )
    return Runtime.from_config(load_config(str(path)))


def _keys(root: Path) -> list[str]:
    return sorted(o.key for o in LocalStore(root).list())


def test_a_tick_cleans_only_committed_batches(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    rt = _runtime(tmp_path)
    source = rt.source("ev")
    land = Lander(LocalStore(tmp_path / "landing"))
    keys = [f"{DAY}/{n}.jsonl" for n in ("a", "b", "c")]
    for k in keys:
        land.land(k, 2)
    lines: list[str] = []

    def tick() -> dg.SensorResult:
        ctx = dg.build_sensor_context(instance=instance)
        return evaluate_tick(
            ctx, rt, source, rule_for_source(source), dg.AssetKey("ev"), 5, log=lines.append
        )

    first = tick()  # claims 2 batches (2 files per batch), commits nothing: cleans nothing
    assert len(first.run_requests) == 2
    assert _keys(tmp_path / "landing") == keys
    ledger = rt.ledger(source)
    batch0, batch1 = ledger.pending()
    execute_batch(rt, source, ledger, batch0)
    tick()
    assert _keys(tmp_path / "landing") == [o.key for o in batch1.objects]
    assert _keys(tmp_path / "archive") == [o.key for o in batch0.objects]
    assert "cleaned 2 objects of 1 committed batches (archive)" in lines[-1]
    execute_batch(rt, source, ledger, batch1)
    tick()
    assert _keys(tmp_path / "landing") == []
    assert _keys(tmp_path / "archive") == keys
    assert table_ids(rt, "ev") == land.landed


def test_cleaning_is_bounded_per_tick_and_resumes_from_the_hint(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    source = rt.source("ev")
    landing = LocalStore(tmp_path / "landing")
    land = Lander(landing)
    ledger = rt.ledger(source)
    claims = []
    for n in range(4):
        land.land(f"{DAY}/{n}.jsonl", 1)
        claims.append(ledger.claim(DAY, [landing.head(f"{DAY}/{n}.jsonl")]))
    for c in (claims[0], claims[1], claims[3]):  # batch 2 stays uncommitted
        execute_batch(rt, source, ledger, c)
    log = CleanLog(ledger)
    first = clean_committed(source, ledger, landing, rt.open_landing, max_objects=1)
    assert (first.batches, first.deferred) == (1, True)
    assert log.hint() == CleanHint(through=1, waiting=(), cleaned=1, left=0)
    rest = clean_committed(source, ledger, landing, rt.open_landing, max_objects=1)
    assert (rest.batches, rest.deferred) == (1, True)
    assert clean_committed(source, ledger, landing, rt.open_landing).batches == 1
    assert log.hint() == CleanHint(through=4, waiting=(2,), cleaned=3, left=0)
    assert _keys(tmp_path / "landing") == [f"{DAY}/2.jsonl"]  # never before its commit record
    execute_batch(rt, source, ledger, claims[2])
    last = clean_committed(source, ledger, landing, rt.open_landing)
    assert (last.batches, last.cleaned) == (1, 1)
    assert log.hint() == CleanHint(through=4, waiting=(), cleaned=4, left=0)
    assert _keys(tmp_path / "landing") == []
