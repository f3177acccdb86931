"""The platform through Dagster, runs that fail and runs that rebuild (the harness and the
guarantees of tests/sensors/test_platform_sensor.py): a stuck batch (its run failed: the
object was archived to Glacier) is reported and, after ``lockgate retry``, requested as
``<source>:<batch>:retry1``; a backfill run over a partition range leaves the rows unchanged;
catalog secrets stay out of the repository snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import pytest

from lockgate.pipelines.cli import main as lockgate_main
from lockgate.pipelines.definitions import build_definitions
from lockgate.pipelines.ingest import ingest_source
from tests.platform_helpers import Lander, landing_store
from tests.sensors.platform_harness import Harness, batch_of, platform_config

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    """One ephemeral Dagster instance (sqlite in a temp dir) for the module; every test uses
    its own source names, so runs of different tests never share tags."""
    with dg.instance_for_test() as inst:
        yield inst


def test_stuck_batch_is_reported_and_retried_under_a_new_run_key(
    tmp_path: Path,
    moto_server: str,
    instance: dg.DagsterInstance,
) -> None:
    """An object archived to Glacier before its run read it: the read fails (not a bad
    record: restoring the object makes it readable), the run fails, the batch is stuck. The
    sensor keeps requesting the other batches, reports the stuck one; after a restore and
    ``lockgate retry`` the next tick requests ``<source>:<batch>:retry1``."""
    cfg = platform_config(tmp_path, moto_server, "payments", max_runs_per_tick=1)
    h = Harness(cfg, "payments", instance)
    landing = cfg.source("payments").landing
    bucket, prefix = landing[len("s3://") :].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    lander = Lander(landing_store(cfg, "payments"))
    lander.land("2026-05-01/a.jsonl")
    lander.land("2026-05-01/b.jsonl")
    lander.land("2026-05-02/c.jsonl")
    # a.jsonl goes to Glacier after landing (lifecycle rule, operator mistake, ...)
    glacier_key = f"{prefix}/2026-05-01/a.jsonl"
    s3.copy_object(
        Bucket=bucket,
        Key=glacier_key,
        CopySource={"Bucket": bucket, "Key": glacier_key},
        StorageClass="GLACIER",
    )

    t1 = h.tick()
    assert [rr.run_key for rr in t1.run_requests] == ["payments:0"]
    failed = h.run(t1.run_requests[0], ok=False)
    assert "InvalidObjectState" in str(failed.get_step_failure_events()[0].step_failure_data.error)

    t2 = h.tick()
    # the failed batch does not take the only slot of the tick: the next batch is requested
    assert [rr.run_key for rr in t2.run_requests] == ["payments:1"]
    stuck = [line for line in h.log if "stuck" in line]
    assert len(stuck) == 1 and stuck[0].startswith("WARNING batch 0 of payments is stuck")
    assert "lockgate retry --source payments --batch 0" in stuck[0]
    h.run(t2.run_requests[0])

    # the operator restores the object (same bytes, same etag) and asks for a retry
    s3.restore_object(Bucket=bucket, Key=glacier_key, RestoreRequest={"Days": 1})
    assert (
        lockgate_main(["--config", cfg.path, "retry", "--source", "payments", "--batch", "0"]) == 0
    )
    t3 = h.tick()
    assert [rr.run_key for rr in t3.run_requests] == ["payments:0:retry1"]
    assert batch_of(t3.run_requests[0]) == 0
    h.run(t3.run_requests[0])
    assert (
        lockgate_main(["--config", cfg.path, "retry", "--source", "payments", "--batch", "0"]) == 0
    )

    assert not h.tick().run_requests
    h.assert_exactly_once(lander)


def test_backfill_run_over_a_partition_range_keeps_every_row_once(
    tmp_path: Path, moto_server: str, instance: dg.DagsterInstance
) -> None:
    """A run without the batch tag (UI backfill, ``dagster asset materialize
    --partition-range``) rebuilds the range in one overwrite: same rows, verify ok; then the
    asset checks pass on the rebuilt table."""
    cfg = platform_config(tmp_path, moto_server, "visits", max_runs_per_tick=10)
    h = Harness(cfg, "visits", instance)
    lander = Lander(landing_store(cfg, "visits"))
    for day in ("2026-06-01", "2026-06-02", "2026-06-03"):
        lander.land(f"{day}/x.jsonl", n=5)
    requests = h.tick().run_requests
    assert [rr.partition_key for rr in requests] == ["2026-06-01", "2026-06-02", "2026-06-03"]
    h.run(requests[0])
    ingest_source(h.rt, cfg.source("visits"))  # the other two batches, without Dagster
    h.assert_exactly_once(lander)
    before = h.rt.tables.load(cfg.source("visits").table).scan().to_arrow()

    full_job = h.defs.resolve_implicit_global_asset_job_def()
    result = full_job.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2026-06-01",
            "dagster/asset_partition_range_end": "2026-06-03",
        },
        resources=h.defs.resources,
    )
    assert result.success
    mats = result.get_asset_materialization_events()  # one per partition of the range
    assert sorted(m.partition or "" for m in mats) == ["2026-06-01", "2026-06-02", "2026-06-03"]
    meta = {k: v.value for k, v in mats[0].materialization.metadata.items()}
    assert meta["rows"] == 15 and meta["batches"] == 3
    assert meta["days"] == "2026-06-01, 2026-06-02, 2026-06-03"
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "exactly_once": True,
        "ledger_lag": True,
        "stuck_batches": True,
        "deep_verify": True,
    }

    after = h.rt.tables.load(cfg.source("visits").table).scan().to_arrow()
    cols = [c for c in before.column_names if c != "_ingested_at"]
    key = [("_source_key", "ascending"), ("_source_row", "ascending")]
    assert after.select(cols).sort_by(key).equals(before.select(cols).sort_by(key))
    h.assert_exactly_once(lander)


def test_catalog_secrets_stay_out_of_the_dagster_snapshot(tmp_path: Path) -> None:
    """Catalog properties may hold secrets; resource config is shown in the UI and stored in
    the instance, so they must not be in the repository snapshot."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster_shared.serdes import serialize_value

    from lockgate.resources.config import load_config
    from tests.platform_helpers import source_spec, write_config

    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={"events": source_spec("events", str(tmp_path / "landing"))},
    )
    text = path.read_text() + "catalog:\n  type: sql\n  s3.secret-access-key: SECRET-4711\n"
    path.write_text(text)
    defs = build_definitions(load_config(str(path)))
    snap = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    assert "SECRET-4711" not in snap
    assert str(tmp_path / "wh") in snap  # the snapshot does hold the resource config
