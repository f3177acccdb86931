"""``dagster.table_concurrency``: the sensor makes its table's Dagster pool admit that many
runs (and sets it back when changed elsewhere), and two batch runs of one table executing at
once, their commits racing through the create-only metadata put, leave every record in the
table exactly once.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lockgate.pipelines.assets import pool
from lockgate.pipelines.batch import execute_batch
from lockgate.resources.config import load_config
from lockgate.resources.runtime import Runtime
from lockgate.sensors.runs import ensure_pool_limit, table_pool
from tests.conftest import MOTO_ENV, create_bucket
from tests.platform_helpers import Lander, landing_store, s3_config, table_ids, verify
from tests.sensors.platform_harness import Harness

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def _limit(instance: dg.DagsterInstance, name: str) -> tuple[int, bool] | None:
    for p in instance.event_log_storage.get_pool_limits():
        if p.name == name:
            return p.limit, p.from_default
    return None


def test_the_sensor_sets_its_table_pool_limit(
    tmp_path: Path, moto_server: str, instance: dg.DagsterInstance
) -> None:
    bucket = create_bucket(moto_server)
    cfg = s3_config(tmp_path / "a.yaml", moto_server, bucket, ["wide"], table_concurrency=3)
    assert cfg.dagster.table_concurrency == 3
    name = pool(cfg.source("wide"))
    assert name == table_pool("lake.wide")
    h = Harness(cfg, "wide", instance)
    h.tick()
    assert _limit(instance, name) == (3, False)
    assert any("limit set to 3" in line for line in h.log)

    # changed elsewhere (UI, `dagster instance concurrency set`): the next tick sets it back
    instance.event_log_storage.set_concurrency_slots(name, 7)
    h.tick()
    assert _limit(instance, name) == (3, False)
    h.tick()
    assert not any("limit set" in line for line in h.log)  # unchanged: nothing written

    # the default is one run per table, explicit in the instance
    cfg1 = s3_config(tmp_path / "b.yaml", moto_server, bucket, ["narrow"])
    assert cfg1.dagster.table_concurrency == 1
    Harness(cfg1, "narrow", instance).tick()
    assert _limit(instance, table_pool("lake.narrow")) == (1, False)


def test_ensure_pool_limit_replaces_a_default_limit(instance: dg.DagsterInstance) -> None:
    name = "lockgate/lake.defaulted"
    instance.event_log_storage.initialize_concurrency_limit_to_default(name)
    assert ensure_pool_limit(instance, name, 1) is True  # from the default: made explicit
    assert _limit(instance, name) == (1, False)
    assert ensure_pool_limit(instance, name, 1) is False


def test_table_concurrency_must_be_positive(tmp_path: Path, moto_server: str) -> None:
    bucket = create_bucket(moto_server)
    with pytest.raises(Exception, match="table_concurrency"):
        s3_config(tmp_path / "c.yaml", moto_server, bucket, ["x"], table_concurrency=0)


def _run_batches(config_path: str, source: str, batch_ids: list[int], env: dict[str, str]) -> Any:
    """In a child process: execute ``batch_ids`` one after another; their commit attempts."""
    import os

    os.environ.update(env)
    rt = Runtime.from_config(load_config(config_path))
    src = rt.source(source)
    led = rt.ledger(src)
    return [execute_batch(rt, src, led, led.get_claim(b)).commit_attempts for b in batch_ids]


def test_two_concurrent_runs_of_one_table_commit_exactly_once(
    tmp_path: Path, moto_server: str, instance: dg.DagsterInstance
) -> None:
    bucket = create_bucket(moto_server)
    cfg = s3_config(tmp_path / "lockgate.yaml", moto_server, bucket, ["pair"], table_concurrency=2)
    h = Harness(cfg, "pair", instance)
    lander = Lander(landing_store(cfg, "pair"))
    for i in range(12):  # max_files_per_batch 2: 6 batches over two days
        lander.land(f"2026-07-0{1 + i % 2}/k{i:02d}.jsonl", n=4)
    requests = h.tick().run_requests
    ids = sorted(int(rr.tags["lockgate/batch"]) for rr in requests)
    assert ids == list(range(6))

    env = {**MOTO_ENV, "AWS_ENDPOINT_URL": moto_server}
    ctx = multiprocessing.get_context("spawn")
    workers = ctx.Pool(2)
    try:
        # the two workers take alternate batches: their commits to one table interleave
        results = [
            workers.apply_async(_run_batches, (cfg.path, "pair", ids[w::2], env)) for w in (0, 1)
        ]
        attempts = [a for r in results for a in r.get(timeout=300)]
    finally:
        # close + join, not the context manager's terminate: a clean-clone run hung for good
        # in Pool.terminate joining a worker that had not died of its SIGTERM
        workers.close()
        workers.join()
    assert len(attempts) == 6 and all(a >= 1 for a in attempts)  # each batch committed once

    report = verify(h.rt, "pair")
    assert report.ok, report.violations
    assert table_ids(h.rt, "pair") == lander.landed
    assert report.rows == 48
    assert not h.rt.ledger(h.rt.source("pair")).pending()
