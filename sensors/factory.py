"""One sensor per source: discover and claim, then request a run for every pending batch.

A tick (the ledger, not the cursor, is the truth):

1. discovery lists new objects and claims them (write-ahead) -- see ``lockgate.sensors.discovery``;
2. every pending batch (claimed, no commit record) is requested with
   ``run_key="<source>:<batch>"`` (``...:retry<n>`` after ``lockgate retry``), at most
   ``max_runs_per_tick`` of them; Dagster skips keys it already launched, so a crash between
   claim and request is repaired by the next tick;
3. pending batches whose runs have failed for good are reported as stuck.

The cursor only counts ticks since the last full listing.
"""

import json
from collections.abc import Callable

import dagster as dg
from dagster import SensorEvaluationContext

from lockgate.resources.config import LockgateConfig, SourceConfig
from lockgate.resources.dagster_resources import (
    LedgerResource,
    ObjectStoreResource,
    TableStoreResource,
)
from lockgate.resources.runtime import Runtime
from lockgate.sensors.discovery import DiscoveryRule, discover, full_listing_due, rule_for_source
from lockgate.sensors.retries import all_generations, run_key
from lockgate.sensors.runs import batch_tags, launched_run_keys, stuck_batches

FULL_LISTING_EVERY_TICKS = 20


def _cursor(raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        return int(json.loads(raw)["ticks_since_full"])
    except (ValueError, KeyError, TypeError):
        return None


def build_sensor(
    config: LockgateConfig, source: SourceConfig, asset_key: dg.AssetKey
) -> dg.SensorDefinition:
    settings = config.dagster
    rule = rule_for_source(
        source,
        max_claims_per_tick=settings.max_runs_per_tick,
        full_listing_every=FULL_LISTING_EVERY_TICKS,
    )

    @dg.sensor(
        name=f"{source.name}_sensor",
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=[asset_key],
        description=f"Claims new objects under {source.landing} and requests one run per batch.",
    )
    def _sensor(
        context: SensorEvaluationContext,
        object_store: ObjectStoreResource,
        ledger: LedgerResource,
        table_store: TableStoreResource,
    ) -> dg.SensorResult:
        rt = Runtime.from_resources(config, object_store, ledger, table_store)
        return evaluate_tick(context, rt, source, rule, asset_key, settings.max_runs_per_tick)

    return _sensor


def evaluate_tick(
    context: SensorEvaluationContext,
    rt: Runtime,
    source: SourceConfig,
    rule: DiscoveryRule,
    asset_key: dg.AssetKey,
    max_runs: int,
    log: Callable[[str], None] | None = None,
) -> dg.SensorResult:
    say = log or context.log.info
    ticks = _cursor(context.cursor)
    full = full_listing_due(ticks, rule)
    led = rt.ledger(source)
    result = discover(rt.landing(source), led, rule, full_listing=full)
    new_cursor = json.dumps({"ticks_since_full": 0 if full else (ticks or 0) + 1})
    for info in result.overwritten[:10]:
        say(
            f"{info.key!r} was re-written (new etag {info.etag}); "
            + ("claimed again (allow_overwrites)" if rule.allow_overwrites else "ignored")
        )
    if result.skipped_unsafe:
        (log or context.log.warning)(
            f"{sum(result.skipped_unsafe.values())} objects under {source.landing} can never be "
            "claimed, skipped: "
            + ", ".join(f"{n} {reason}" for reason, n in sorted(result.skipped_unsafe.items()))
            + (f" (e.g. {', '.join(result.skipped_examples)})" if result.skipped_examples else "")
        )
    for reason, n in result.out_of_range_counts().items():
        say(f"{n} objects not claimed: {reason} (see docs/operations.md, 'Days out of range')")

    pending = led.pending()
    generations = all_generations(rt.ledger_store.child(source.name))
    keys = {
        c.batch_id: run_key(source.name, c.batch_id, generations.get(c.batch_id, 0))
        for c in pending
    }
    # Keys already launched (running, failed, ...) would be skipped by Dagster: leave their
    # slots to batches that can run, or a few stuck batches would block the source for good.
    launched = launched_run_keys(context.instance, list(keys.values())) if pending else set()
    requests = [
        dg.RunRequest(
            run_key=keys[c.batch_id],
            partition_key=c.partition,
            tags=batch_tags(source.name, c.batch_id, rt.config.dagster.max_runtime_seconds),
            asset_selection=[asset_key],
            asset_check_keys=[],
        )
        for c in pending
        if keys[c.batch_id] not in launched
    ][:max_runs]
    if pending:
        stuck = stuck_batches(context.instance, source.name, [c.batch_id for c in pending])
        for batch_id, run in stuck.items():
            context.log.warning(
                f"batch {batch_id} of {source.name} is stuck: run {run.run_id} failed and has "
                f"no retry left; fix the cause, then `lockgate retry --source {source.name} "
                f"--batch {batch_id}`"
            )
    say(
        f"listed {result.listed} (full={full}), claimed {len(result.claims)} batches "
        f"({result.claimed_objects} objects), pending {len(pending)}, deferred {result.deferred}"
        + (
            f", skipped {result.skipped_hidden} hidden/temporary names (. or _ segments, .tmp)"
            if result.skipped_hidden
            else ""
        )
    )
    if not requests:
        reason = (
            f"waiting: {len(pending)} pending batches already have runs"
            if pending
            else f"idle: no new objects under {source.landing}"
        )
        return dg.SensorResult(skip_reason=reason, cursor=new_cursor)
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)
