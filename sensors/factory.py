"""One sensor per source: discover and claim, then request a run for every pending batch.

A tick (the ledger, not the cursor, is the truth):

1. discovery lists new objects and claims them (write-ahead) -- see ``lockgate.sensors.discovery``;
2. every pending batch (claimed, no commit record) is requested with
   ``run_key="<source>:<batch>"`` (``...:retry<n>`` after ``lockgate retry``), at most
   ``max_runs_per_tick`` of them; Dagster skips keys it already launched, so a crash between
   claim and request is repaired by the next tick;
3. pending batches whose runs have failed for good are reported as stuck, and a tick that
   requests nothing says ``HUNG`` while a batch run is silent or past its limit (see
   ``lockgate.sensors.runs.hang_reason``); committed batches are cleaned (``clean_source``,
   bounded: ``lockgate.sensors.cleaning``);
4. pending batches that cannot run as Dagster runs are held back and reported on every tick,
   never requested (a request for a day outside the partitions would fail the whole tick):
   a day before ``partition.start`` (moved after they were claimed), or a claim made under
   another format or table (``execute_batch`` would refuse it). ``lockgate ingest`` runs
   the former; the latter need the earlier declaration back. A claim made in an earlier
   landing (the source was moved) is requested as usual: its run reads it where it was
   claimed.

Every tick acts on ``lockgate.yaml`` as it is on disk now (``live_config.current_source``).

The cursor counts ticks since the last full listing, and holds the continuation of a full
listing in progress: with ``dagster.max_keys_listed_per_tick`` (and
``dagster.max_listing_seconds_per_tick``) a full listing is a pass spread over ticks
(``ListingCursor``; ``lockgate.sensors.discovery``, *Bounded listings*). In notification mode
it keeps the time of the last backstop listing and the objects each path found instead
(``lockgate.sensors.notifications``).
"""

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # type-only: dagster does not export the class
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )
from dagster import SensorEvaluationContext

from lockgate.resources.config import LockgateConfig, SourceConfig
from lockgate.resources.dagster_resources import Namespace
from lockgate.resources.errors import LockgateError
from lockgate.resources.fingerprint import blocking
from lockgate.resources.ledger import Claim, Ledger
from lockgate.resources.live_config import current_source
from lockgate.resources.runtime import Runtime
from lockgate.sensors.cleaning import CleanTick, clean_committed
from lockgate.sensors.discovery import (
    DiscoveryResult,
    DiscoveryRule,
    discover,
    full_listing_due,
    rule_for_source,
)
from lockgate.sensors.health import Lag, tick_events
from lockgate.sensors.notifications import describe, notification_tick, open_queues
from lockgate.sensors.retries import all_generations, run_key
from lockgate.sensors.runs import (
    batch_tags,
    ensure_pool_limit,
    launched_run_keys,
    source_runs,
    stuck_batches,
    table_pool,
)

FULL_LISTING_EVERY_TICKS = 20


@dataclass(frozen=True)
class ListingCursor:
    """The sensor cursor: ticks since the last full-listing pass ended (None: no cursor, a pass
    is due), and the continuation key of a pass in progress (``in_pass``; ``full_from`` None:
    the pass starts at the first key)."""

    ticks_since_full: int | None = None
    in_pass: bool = False
    full_from: str | None = None

    @classmethod
    def parse(cls, raw: str | None) -> "ListingCursor":
        """A cursor that cannot be read (none, or another version's) starts a new pass."""
        if not raw:
            return cls()
        try:
            doc = json.loads(raw)
            ticks = int(doc["ticks_since_full"])
            full_from = doc.get("full_from")
            if full_from is not None and not isinstance(full_from, str):
                return cls()
            return cls(ticks, bool(doc.get("in_pass", False)), full_from)
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls()

    def dump(self) -> str:
        doc: dict[str, object] = {"ticks_since_full": self.ticks_since_full or 0}
        if self.in_pass:
            doc.update(in_pass=True, full_from=self.full_from)
        return json.dumps(doc)

    def after(self, full: bool, full_next: str | None) -> "ListingCursor":
        """The cursor after a tick that did (``full``) or did not do part of a pass."""
        if full and full_next is not None:
            return ListingCursor(self.ticks_since_full or 0, True, full_next)
        if full:
            return ListingCursor(0)
        return ListingCursor((self.ticks_since_full or 0) + 1)


def build_sensor(
    config: LockgateConfig,
    source: SourceConfig,
    asset_key: dg.AssetKey,
    job: "UnresolvedAssetJobDefinition | None" = None,
    landing_key: dg.AssetKey | None = None,
    ns: Namespace | None = None,
    live: bool = True,
) -> dg.SensorDefinition:
    """The sensor of ``source``. With ``job`` (an in-process job of the table asset), its runs
    execute in the run worker's own process; else they target ``asset_key`` directly. With
    ``landing_key``, every tick also reports the landing observation and health checks.
    ``ns`` names the sensor, its run keys and the resource keys it reads.
    ``live`` (``config`` came from a file): every tick acts on the file as it is now
    (``lockgate.resources.live_config``), e.g. a moved landing is listed from the next tick on;
    a change the loaded definitions cannot follow fails the tick with what to do."""
    ns = ns or Namespace()
    settings = config.dagster

    @dg.sensor(
        name=f"{ns.label(source.name)}_sensor",
        required_resource_keys=ns.required_keys,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        **({"job": job} if job is not None else {"asset_selection": [asset_key]}),
        description=f"Claims new objects under {source.landing} and requests one run per batch.",
    )
    def _sensor(context: SensorEvaluationContext) -> dg.SensorResult:
        cfg, src = current_source(config, source) if live else (config, source)
        rt = Runtime.from_dagster(cfg, ns, context.resources)
        rule = rule_for_source(
            src,
            max_claims_per_tick=cfg.dagster.max_runs_per_tick,
            full_listing_every=FULL_LISTING_EVERY_TICKS,
            max_keys_listed_per_tick=cfg.dagster.max_keys_listed_per_tick,
            max_listing_s=cfg.dagster.max_listing_seconds_per_tick,
        )
        return evaluate_tick(
            context,
            rt,
            src,
            rule,
            asset_key,
            cfg.dagster.max_runs_per_tick,
            landing_key=landing_key,
            label=ns.label(source.name),
        )

    return _sensor


def held_back(ledger: Ledger, source: SourceConfig, pending: list[Claim]) -> dict[int, str]:
    """The pending batches a sensor must not request, each with the reason (see step 4)."""
    start = source.partition_start.isoformat()
    held: dict[int, str] = {}
    for c in pending:
        changes = blocking(ledger.fingerprint_changes(c))  # a moved landing alone runs
        if changes:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
            held[c.batch_id] = (
                f"claimed under fingerprint v{c.fingerprint_version}, declaration changed since "
                f"({what}): restore it (`lockgate ledger reset`) to run the batch"
            )
        elif c.partition < start:
            held[c.batch_id] = (
                f"its day {c.partition} is before partition.start {start} (no such Dagster "
                f"partition): move partition.start back, or run `lockgate ingest --source "
                f"{source.name}`"
            )
    return held


def _report_held(held: dict[int, str], source: str, warn: Callable[[str], None]) -> None:
    """One warning per reason (at most 5 batch ids named per line)."""
    by_reason: dict[str, list[int]] = {}
    for batch_id, reason in held.items():
        by_reason.setdefault(reason, []).append(batch_id)
    for reason, ids in by_reason.items():
        named = ", ".join(str(i) for i in ids[:5]) + (
            f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        )
        warn(f"{len(ids)} pending batches of {source} not requested (batch {named}): {reason}")


def _clean(
    rt: Runtime,
    source: SourceConfig,
    led: Ledger,
    uncommitted: list[int],
    warn: Callable[[str], None],
) -> CleanTick:
    """The tick's bounded cleaning step (``clean_source``); a failure is reported and left to
    the next tick, never allowed to stop the tick's run requests. ``uncommitted``: the
    tick's pending batch ids (no commit record a moment ago)."""
    try:
        return clean_committed(
            source,
            led,
            functools.partial(rt.claim_landing, source),
            rt.open_landing,
            uncommitted=uncommitted,
        )
    except (LockgateError, OSError) as e:
        warn(f"cleaning the landing of {source.name} failed, the next tick retries: {e}")
        return CleanTick()


def _notification_discovery(
    context: SensorEvaluationContext,
    rt: Runtime,
    source: SourceConfig,
    led: Ledger,
    rule: DiscoveryRule,
    say: Callable[[str], None],
) -> tuple[DiscoveryResult, bool, str]:
    """Notification mode's discovery (``lockgate.sensors.notifications``): the tick's result,
    whether the backstop listing ran, and the next cursor."""
    queue, dead_letter = open_queues(source.discovery, rt.config.s3)
    tick = notification_tick(
        queue,
        dead_letter,
        rt.landing(source),
        source.landing,
        led,
        rule,
        source.discovery,
        context.cursor,
    )
    say(
        f"notifications: {describe(tick.drain)}"
        + (
            f"; backstop listing claimed {tick.backstop.claimed_objects} objects the events "
            f"missed ({tick.backstop.listed} listed)"
            if tick.backstop is not None
            else ""
        )
        + f"; found so far: {tick.found['notifications']} by events, "
        f"{tick.found['listing']} by backstop listings"
    )
    if tick.drain.poison_examples:
        context.log.warning(
            f"{tick.drain.poison_moved} unparseable messages moved aside from "
            f"{queue.url}: " + "; ".join(tick.drain.poison_examples)
        )
    return tick.discovery, tick.backstop is not None, tick.cursor


def evaluate_tick(
    context: SensorEvaluationContext,
    rt: Runtime,
    source: SourceConfig,
    rule: DiscoveryRule,
    asset_key: dg.AssetKey,
    max_runs: int,
    log: Callable[[str], None] | None = None,
    landing_key: dg.AssetKey | None = None,
    label: str | None = None,
) -> dg.SensorResult:
    """One tick of ``source``'s sensor. ``label`` (default: the source's name) prefixes the
    run keys and is the runs' source tag (``Namespace.label``)."""
    label = label or source.name
    say = log or context.log.info
    limit = rt.config.dagster.table_concurrency
    if ensure_pool_limit(context.instance, table_pool(source.table), limit):
        say(f"pool {table_pool(source.table)}: limit set to {limit} (dagster.table_concurrency)")
    led = rt.ledger(source)
    if source.discovery.mode == "notifications":
        result, full, new_cursor = _notification_discovery(context, rt, source, led, rule, say)
    else:
        cursor = ListingCursor.parse(context.cursor)
        full = cursor.in_pass or full_listing_due(cursor.ticks_since_full, rule)
        result = discover(
            rt.landing(source),
            led,
            rule,
            full_listing=full,
            full_from=cursor.full_from if cursor.in_pass else None,
        )
        new_cursor = cursor.after(full, result.full_next).dump()
    for info in result.overwritten[:10]:
        say(
            f"{info.key!r} was re-written (new etag {info.etag}); "
            + ("claimed again (allow_overwrites)" if rule.allow_overwrites else "ignored")
        )
    if result.reclaimed_unread:
        say(
            f"{result.reclaimed_unread} objects claimed as new: their earlier claimed version "
            "was changed or gone before it was read"
        )
    if result.too_young:
        say(f"{result.too_young} objects changed less than min_age ago: claimed by a later tick")
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
    uncommitted = [c.batch_id for c in pending]
    held = held_back(led, source, pending)
    if held:
        _report_held(held, source.name, context.log.warning)
        pending = [c for c in pending if c.batch_id not in held]
    generations = all_generations(rt.ledger_store.child(source.name))
    keys = {c.batch_id: run_key(label, c.batch_id, generations.get(c.batch_id, 0)) for c in pending}
    # Keys already launched (running, failed, ...) would be skipped by Dagster: leave their
    # slots to batches that can run, or a few stuck batches would block the source for good.
    launched = launched_run_keys(context.instance, list(keys.values())) if pending else set()
    requests = [
        dg.RunRequest(
            run_key=keys[c.batch_id],
            partition_key=c.partition,
            tags=batch_tags(label, c.batch_id, rt.config.dagster.batch_max_runtime_s(source)),
            asset_selection=[asset_key],
            asset_check_keys=[],
        )
        for c in pending
        if keys[c.batch_id] not in launched
    ][:max_runs]
    stuck = stuck_batches(context.instance, label, [c.batch_id for c in pending]) if pending else {}
    if stuck:
        for batch_id, run in stuck.items():
            component = label.removesuffix(f"__{source.name}") if label != source.name else ""
            context.log.warning(
                f"batch {batch_id} of {source.name} is stuck: run {run.run_id} failed and has "
                f"no retry left; fix the cause, then `lockgate retry --source {source.name} "
                f"--batch {batch_id}" + (f" --component {component}`" if component else "`")
            )
    cleaning = _clean(rt, source, led, uncommitted, context.log.warning)
    say(
        f"listed {result.listed} (full={full}"
        + (f", pass continues after {result.full_next!r}" if result.full_next is not None else "")
        + (", incremental listing cut at the per-tick bound" if result.truncated else "")
        + (" (max_listing_seconds_per_tick)" if result.cut_by_time else "")
        + f"), claimed {len(result.claims)} batches "
        f"({result.claimed_objects} objects), pending {len(pending)}, deferred {result.deferred}"
        + (f", held back {len(held)}" if held else "")
        + (
            f", cleaned {cleaning.cleaned} objects of {cleaning.batches} committed batches "
            f"({source.clean_source}"
            + (f", {cleaning.left} left: another version or not read" if cleaning.left else "")
            + (", more next tick" if cleaning.deferred else "")
            + ")"
            if cleaning.batches
            else ""
        )
        + (
            f", skipped {result.skipped_hidden} hidden/temporary names (. or _ segments, .tmp)"
            if result.skipped_hidden
            else ""
        )
    )
    events = (
        tick_events(
            asset_key,
            landing_key,
            result,
            Lag.of(pending, datetime.now(UTC)),
            {b: r.run_id for b, r in stuck.items()},
        )
        if landing_key is not None
        else []
    )
    if not requests:
        reason = (
            f"waiting: {len(pending)} pending batches already have runs"
            if pending
            else f"held back: {len(held)} pending batches cannot run (see the warnings)"
            if held
            else f"idle: no new objects under {source.landing}"
        )
        hung = source_runs(context.instance, source.name, time.time())["hung"] if pending else []
        if hung:
            reason = (
                f"HUNG: {len(hung)} batch runs silent or past their limit (batches "
                f"{', '.join(str(h['batch_id']) for h in hung)}: {hung[0]['reason']})"
            )
        if stuck:
            reason = (
                f"STUCK: {len(stuck)} of {len(pending)} pending batches failed for good "
                f"(batches {', '.join(map(str, sorted(stuck)))}); see the log"
            )
        return dg.SensorResult(skip_reason=reason, cursor=new_cursor, asset_events=events)
    return dg.SensorResult(run_requests=requests, cursor=new_cursor, asset_events=events)
