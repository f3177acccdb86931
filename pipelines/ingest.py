"""``ingest``: discover, claim and execute every pending batch of a source in this process
until the source is idle -- the same discovery and batch code the sensor and the asset use.

A source in notification mode (``discovery.mode: notifications``) is discovered from its queue
(``lockgate.sensors.notifications.drain``), and listed only with ``full_listing`` (the
backstop), as the sensor does."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lockgate.pipelines.startup import gc_paused, lean_imports
from lockgate.resources.config import SourceConfig
from lockgate.resources.ledger import Claim, Ledger
from lockgate.resources.runtime import Runtime
from lockgate.sensors.cleaning import clean_committed
from lockgate.sensors.discovery import DiscoveryResult, DiscoveryRule, discover, rule_for_source
from lockgate.sensors.notifications import drain, merge, open_queues

if TYPE_CHECKING:
    from lockgate.pipelines.batch import BatchOutcome
    from lockgate.pipelines.prefetch import Prefetch

_BATCH_PATH = "lockgate.pipelines.batch"


@dataclass
class IngestReport:
    source: str
    batches: list[BatchOutcome] = field(default_factory=list)
    discoveries: list[DiscoveryResult] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.batches if not b.already_committed)

    @property
    def quarantined(self) -> int:
        return sum(b.quarantined for b in self.batches if not b.already_committed)

    @property
    def out_of_range(self) -> dict[str, int]:
        """Objects not claimed, by reason (from the last listing): their day is out of range,
        or their name is hidden/temporary (``hidden_name``: a ``.``/``_`` segment, ``.tmp``), or
        they changed less than ``min_age`` ago (``too_young``: claimed by a later run)."""
        if not self.discoveries:
            return {}
        last = self.discoveries[-1]
        counts = last.out_of_range_counts()
        if last.skipped_hidden:
            counts["hidden_name"] = last.skipped_hidden
        if last.too_young:
            counts["too_young"] = last.too_young
        return counts


def _discovery(
    rt: Runtime, source: SourceConfig, rule: DiscoveryRule
) -> Callable[[Ledger, bool], DiscoveryResult]:
    """One discovery call of ``source``: ``(ledger, full_listing) -> result``."""
    if source.discovery.mode != "notifications":
        return lambda ledger, full: discover(rt.landing(source), ledger, rule, full_listing=full)
    queue, dead_letter = open_queues(source.discovery, rt.config.s3)

    def from_queue(ledger: Ledger, full: bool) -> DiscoveryResult:
        drained = drain(
            queue,
            source.landing,
            ledger,
            rule,
            max_receives=source.discovery.max_receives,
            dead_letter=dead_letter,
            visibility_timeout_s=source.discovery.visibility_timeout_s,
        )
        if not full:
            return drained.discovery
        return merge(drained.discovery, discover(rt.landing(source), ledger, rule, True))

    return from_queue


def _batch_path(
    rt: Runtime, source: SourceConfig, ledger: Ledger, first: Claim
) -> tuple[Callable[..., BatchOutcome], Prefetch | None]:
    """``execute_batch``, imported on first use, and the read of ``first``'s first object begun
    meanwhile (None when the batch path was imported already). Imported only when there is a
    batch to run: the batch path (readers, pyiceberg, Parquet) costs ~0.6 s of CPU to import,
    which an idle run never pays; without what it never calls (``lean_imports``), with the
    cyclic GC paused (``gc_paused``), and while the other cores read
    (``lockgate.pipelines.prefetch``)."""
    prefetch = None
    if _BATCH_PATH not in sys.modules:
        with gc_paused():
            from lockgate.pipelines.prefetch import Prefetch, import_while_reading

            prefetch = Prefetch.first_of(rt, source, ledger, first)
            try:
                with lean_imports():
                    import_while_reading(
                        functools.partial(importlib.import_module, _BATCH_PATH), prefetch
                    )
            except BaseException:
                if prefetch is not None:
                    prefetch.close()
                raise
    from lockgate.pipelines.batch import execute_batch

    return execute_batch, prefetch


def ingest_source(
    rt: Runtime,
    source: SourceConfig,
    full_listing: bool = False,
    on_batch: Callable[[BatchOutcome], None] | None = None,
) -> IngestReport:
    """Run discovery and every pending batch until a discovery claims nothing new and no
    batch is pending, cleaning committed batches after each round (``clean_source``).
    Idempotent: batches committed (or cleaned) by anyone else are skipped."""
    report = IngestReport(source.name)
    rule = rule_for_source(source)
    ledger = rt.ledger(source)
    find = _discovery(rt, source, rule)
    first = True
    while True:
        result = find(ledger, full_listing and first)
        first = False
        report.discoveries.append(result)
        pending = ledger.pending()
        if pending:
            execute_batch, prefetch = _batch_path(rt, source, ledger, pending[0])
        for claim in pending:
            outcome = execute_batch(
                rt, source, ledger, claim, prefetch if claim is pending[0] else None
            )
            report.batches.append(outcome)
            if on_batch is not None:
                on_batch(outcome)
        while source.clean_source != "off":
            cleaning = clean_committed(
                source, ledger, functools.partial(rt.claim_landing, source), rt.open_landing
            )
            if not (cleaning.deferred and cleaning.batches):
                break
        if not result.claims and not result.deferred and not pending:
            return report
        if not result.claims and not pending:
            return report  # deferred objects with nothing claimable (should not happen)
