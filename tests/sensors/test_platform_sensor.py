"""The platform through Dagster: sensor ticks evaluated against a real Dagster instance, the
requested runs executed in-process with the tags the sensor gave them, sources on moto over
HTTP. Each test ends with ``verify_source`` ok and every landed record in the table exactly
once (the multiset of ids).

What is shown here: claims are durable before a request comes back; run keys
``<source>:<batch>`` and day partition keys; idle ticks skip with a reason; pending batches
are requested again on every tick (same run key) until they run; requests per tick are
bounded; materialization metadata; late keys below the listing window are found by the
periodic full listing. tests/sensors/test_platform_sensor_runs.py (a file of its own, so that
``--dist loadfile`` runs the two on both workers): stuck batches and retries, backfill runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lockgate.pipelines.ingest import ingest_source
from lockgate.sensors.discovery import rule_for_source
from lockgate.sensors.factory import evaluate_tick
from lockgate.sensors.runs import SOURCE_TAG
from tests.platform_helpers import Lander, landing_store
from tests.sensors.platform_harness import Harness, batch_of, platform_config

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    """One ephemeral Dagster instance (sqlite in a temp dir) for the module; every test uses
    its own source names, so runs of different tests never share tags."""
    with dg.instance_for_test() as inst:
        yield inst


def test_ticks_claim_then_request_bounded_and_rerequest_until_committed(
    tmp_path: Path, moto_server: str, instance: dg.DagsterInstance
) -> None:
    cfg = platform_config(
        tmp_path, moto_server, "orders", max_runs_per_tick=2, max_runtime_seconds=321
    )
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
        claim = led.get_claim(batch_of(rr))
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
    cfg = platform_config(tmp_path, moto_server, "clicks", max_runs_per_tick=5)
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
