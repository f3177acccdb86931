"""The platform through Dagster: sensor ticks evaluated against a real Dagster instance, the
requested runs executed in-process with the tags the sensor gave them, sources on moto over
HTTP. Each test ends with ``verify_source`` ok and every landed record in the table exactly
once (the multiset of ids).

What is shown: claims are durable before a request comes back; run keys ``<source>:<batch>``
and day partition keys; idle ticks skip with a reason; pending batches are requested again
on every tick (same run key) until they run; requests per tick are bounded; late keys below
the listing window are found by the periodic full listing; a stuck batch (its run failed:
the object was archived to Glacier) is reported and, after ``lockgate retry``, requested as
``<source>:<batch>:retry1``; materialization metadata; a backfill run over a partition range
leaves the rows unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest

from lockgate.pipelines.assets import asset_key
from lockgate.pipelines.cli import main as lockgate_main
from lockgate.pipelines.definitions import build_definitions
from lockgate.pipelines.ingest import ingest_source
from lockgate.resources.config import LockgateConfig
from lockgate.resources.runtime import Runtime
from lockgate.sensors.discovery import rule_for_source
from lockgate.sensors.factory import evaluate_tick
from lockgate.sensors.runs import BATCH_TAG, RUN_KEY_TAG, SOURCE_TAG
from tests.conftest import create_bucket
from tests.platform_helpers import Lander, landing_store, s3_config, table_ids, verify

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    """One ephemeral Dagster instance (sqlite in a temp dir) for the module; every test uses
    its own source names, so runs of different tests never share tags."""
    with dg.instance_for_test() as inst:
        yield inst


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


class Harness:
    """The Definitions of one config, a sensor with its cursor, and in-process runs that carry
    the tags the daemon would give them (the request's tags plus ``dagster/run_key``)."""

    def __init__(self, config: LockgateConfig, source: str, instance: dg.DagsterInstance):
        self.config = config
        self.source = source
        self.instance = instance
        self.defs = build_definitions(config)
        self.repo = self.defs.get_repository_def()
        self.sensor = self.repo.get_sensor_def(f"{source}_sensor")
        self.key = asset_key(config.source(source))
        self.job = self.defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection={self.key}, asset_check_selection=set()
        )
        self.cursor: str | None = None
        self.log: list[str] = []
        self.rt = Runtime.from_config(config)

    def context(self) -> dg.SensorEvaluationContext:
        return dg.build_sensor_context(
            instance=self.instance,
            resources=self.defs.resources,
            repository_def=self.repo,
            cursor=self.cursor,
        )

    def tick(self) -> Any:
        """Evaluate one tick; its log lines (warnings included) go to ``self.log``."""
        ctx = self.context()
        handler = _ListHandler()
        ctx.log.addHandler(handler)
        try:
            result = self.sensor.evaluate_tick(ctx)
        finally:
            ctx.log.removeHandler(handler)
        self.log = handler.lines
        self.cursor = result.cursor
        return result

    def run(self, rr: dg.RunRequest, ok: bool = True) -> dg.ExecuteInProcessResult:
        result = self.job.execute_in_process(
            instance=self.instance,
            partition_key=rr.partition_key,
            tags={**rr.tags, RUN_KEY_TAG: rr.run_key or ""},
            resources=self.defs.resources,
            raise_on_error=False,
        )
        assert result.success is ok, rr.run_key
        return result

    def assert_exactly_once(self, lander: Lander) -> None:
        report = verify(self.rt, self.source)
        assert report.ok, report.violations
        assert table_ids(self.rt, self.source) == lander.landed
        assert report.rows == sum(lander.landed.values())
        assert not self.rt.ledger(self.rt.source(self.source)).pending()


def _config(tmp_path: Path, moto_server: str, name: str, **dagster: Any) -> LockgateConfig:
    bucket = create_bucket(moto_server)
    return s3_config(tmp_path / "lockgate.yaml", moto_server, bucket, [name], **dagster)


def _batch(rr: dg.RunRequest) -> int:
    return int(rr.tags[BATCH_TAG])


def test_ticks_claim_then_request_bounded_and_rerequest_until_committed(
    tmp_path: Path, moto_server: str, instance: dg.DagsterInstance
) -> None:
    cfg = _config(tmp_path, moto_server, "orders", max_runs_per_tick=2, max_runtime_seconds=321)
    h = Harness(cfg, "orders", instance)
    lander = Lander(landing_store(cfg, "orders"))

    first = h.tick()
    assert first.skip_message and first.skip_message.startswith("idle"), first.skip_message
    assert not first.run_requests

    # two days x 3 objects, 2 objects per batch: 4 batches, at most 2 claimed per tick
    for key in ("2026-03-01/part-0", "2026-03-01/part-1", "2026-03-01/part-2"):
        lander.land(f"{key}.jsonl", n=4)
    lander.land("2026-03-02/part-0.jsonl", n=4)
    lander.land("2026-03-02/part-1.jsonl", n=4)
    body, ids = lander.body(4)  # 4 records and one malformed line
    lander.store.put("2026-03-02/part-2.jsonl", body + b"{not json\n")
    lander.landed.update(ids)

    tick1 = h.tick()
    assert [rr.run_key for rr in tick1.run_requests] == ["orders:0", "orders:1"]
    led = h.rt.ledger(cfg.source("orders"))  # a fresh reader: the claims are durable
    for rr in tick1.run_requests:
        claim = led.get_claim(_batch(rr))
        assert rr.partition_key == claim.partition == "2026-03-01"
        assert all(o.key.startswith(claim.partition + "/") for o in claim.objects)
        assert rr.tags[SOURCE_TAG] == "orders"
        assert rr.tags["dagster/max_runtime"] == "321"  # run monitoring fails a dead run
        assert list(rr.asset_selection or []) == [h.key]
    assert sorted(len(led.get_claim(b).objects) for b in (0, 1)) == [1, 2]

    # nothing ran: the same batches are requested again, under the same run keys; the tick
    # claims the rest meanwhile but still requests at most 2 runs
    tick2 = h.tick()
    assert [rr.run_key for rr in tick2.run_requests] == ["orders:0", "orders:1"]
    assert [c.batch_id for c in h.rt.ledger(cfg.source("orders")).pending()] == [0, 1, 2, 3]

    metadata: list[dict[str, Any]] = []
    for rr in tick2.run_requests:
        result = h.run(rr)
        (mat,) = result.get_asset_materialization_events()
        assert mat.partition == rr.partition_key
        metadata.append({k: v.value for k, v in mat.materialization.metadata.items()})

    tick3 = h.tick()
    assert [rr.run_key for rr in tick3.run_requests] == ["orders:2", "orders:3"]
    assert [rr.partition_key for rr in tick3.run_requests] == ["2026-03-02", "2026-03-02"]
    for rr in tick3.run_requests:
        result = h.run(rr)
        (mat,) = result.get_asset_materialization_events()
        metadata.append({k: v.value for k, v in mat.materialization.metadata.items()})

    idle = h.tick()
    assert not idle.run_requests
    assert idle.skip_message and "idle" in idle.skip_message

    assert [m["batch_id"] for m in metadata] == [0, 1, 2, 3]
    assert sum(m["rows"] for m in metadata) == 24
    assert [m["quarantined"] for m in metadata] == [0, 0, 0, 1]  # the malformed line
    for m in metadata:
        assert m["rows"] == m["batch_rows"] > 0
        # the partition's rows: every batch of the day committed so far, not just this one
        assert m["dagster/row_count"] >= m["rows"]
        assert m["dagster/table_name"] == cfg.source("orders").table
        columns = {c.name for c in m["dagster/column_schema"].columns}
        assert {"_source_key", "_batch_id", "_day"} <= columns
        assert m["duplicate"] is False
        assert int(m["snapshot_id"]) > 0
    # batches 2 and 3 are the day 2026-03-02: the last one's count is the whole day
    assert metadata[-1]["dagster/row_count"] == sum(m["rows"] for m in metadata[2:])
    versions = [m["table_version"] for m in metadata]
    assert versions == sorted(versions) and len(set(versions)) == 4
    table = h.rt.tables.load(cfg.source("orders").table)
    assert str(table.current_snapshot().snapshot_id) == metadata[-1]["snapshot_id"]  # type: ignore[union-attr]
    h.assert_exactly_once(lander)

    # the run of a batch that is already committed commits nothing
    again = h.run(tick3.run_requests[0])
    (mat,) = again.get_asset_materialization_events()
    assert mat.materialization.metadata["duplicate"].value is True
    h.assert_exactly_once(lander)


def test_late_keys_below_the_window_are_found_by_the_full_listing(
    tmp_path: Path, moto_server: str, instance: dg.DagsterInstance
) -> None:
    """A key landing below the listing window (out of lexicographic order) is invisible to
    incremental ticks and claimed by the next periodic full listing."""
    cfg = _config(tmp_path, moto_server, "clicks", max_runs_per_tick=5)
    source = cfg.source("clicks")
    h = Harness(cfg, "clicks", instance)
    # the sensor's tick function with a short window: 1 key back, a full listing every 3 ticks
    rule = replace(
        rule_for_source(source, max_claims_per_tick=5), lookback_keys=1, full_listing_every=3
    )
    cursor: list[str | None] = [None]

    def tick() -> Any:
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor[0])
        result = evaluate_tick(ctx, h.rt, source, rule, h.key, 5, log=lambda _m: None)
        cursor[0] = result.cursor
        return result

    lander = Lander(landing_store(cfg, "clicks"))
    for name in ("m1", "m2", "m3"):
        lander.land(f"2026-04-01/{name}.jsonl")
    r0 = tick()  # first tick: full listing (no cursor)
    assert [rr.run_key for rr in r0.run_requests] == ["clicks:0", "clicks:1"]

    lander.land("2026-04-01/a-late.jsonl")  # sorts before every claimed key
    lander.land("2026-04-01/z-new.jsonl")  # sorts after: found incrementally
    r1 = tick()
    claimed = {o.key for c in h.rt.ledger(source).pending() for o in c.objects}
    assert "2026-04-01/z-new.jsonl" in claimed
    assert "2026-04-01/a-late.jsonl" not in claimed
    assert [rr.run_key for rr in r1.run_requests] == ["clicks:0", "clicks:1", "clicks:2"]
    tick()  # still incremental
    claimed = {o.key for c in h.rt.ledger(source).pending() for o in c.objects}
    assert "2026-04-01/a-late.jsonl" not in claimed
    r3 = tick()  # the periodic full listing
    late = [c for c in h.rt.ledger(source).pending() if c.batch_id == 3]
    assert [o.key for c in late for o in c.objects] == ["2026-04-01/a-late.jsonl"]
    assert [rr.run_key for rr in r3.run_requests][-1] == "clicks:3"

    # one Dagster run for the late batch; the CLI's ingest loop (same batch code) takes the
    # rest; afterwards the sensor is idle and every record is in the table once
    h.run(r3.run_requests[-1])
    report = ingest_source(h.rt, source)
    assert sorted(b.batch_id for b in report.batches) == [0, 1, 2]
    assert h.tick().skip_message
    h.assert_exactly_once(lander)


def test_stuck_batch_is_reported_and_retried_under_a_new_run_key(
    tmp_path: Path,
    moto_server: str,
    instance: dg.DagsterInstance,
) -> None:
    """An object archived to Glacier before its run read it: the read fails (not a bad
    record: restoring the object makes it readable), the run fails, the batch is stuck. The
    sensor keeps requesting the other batches, reports the stuck one; after a restore and
    ``lockgate retry`` the next tick requests ``<source>:<batch>:retry1``."""
    cfg = _config(tmp_path, moto_server, "payments", max_runs_per_tick=1)
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
    assert _batch(t3.run_requests[0]) == 0
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
    cfg = _config(tmp_path, moto_server, "visits", max_runs_per_tick=10)
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
