"""Health of a source as Dagster sees it: evaluated on every sensor tick, so that alerts fire
without anyone running a check.

Contract: each tick reports the landing asset's observation (objects listed and claimed,
bytes claimed, pending batches, the age of the oldest pending claim), the table's
``ledger_lag`` check (WARN past ``LAG_WARN_BATCHES`` pending or ``LAG_WARN_AGE_S`` of age)
and its ``stuck_batches`` check (ERROR while a pending batch's run failed for good).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg

from lockgate.resources.ledger import Claim
from lockgate.sensors.discovery import DiscoveryResult

LAG_WARN_BATCHES = 50
LAG_WARN_AGE_S = 3600.0
LEDGER_LAG = "ledger_lag"
STUCK_BATCHES = "stuck_batches"


@dataclass(frozen=True)
class Lag:
    pending: int
    oldest_age_s: float

    @classmethod
    def of(cls, pending: Sequence[Claim], now: datetime) -> Lag:
        oldest = min((c.created_at for c in pending), default=None)
        return cls(len(pending), (now - oldest).total_seconds() if oldest else 0.0)

    @property
    def ok(self) -> bool:
        return self.pending < LAG_WARN_BATCHES and self.oldest_age_s < LAG_WARN_AGE_S

    def metadata(self) -> dict[str, Any]:
        return {
            "pending_batches": self.pending,
            "oldest_pending_age_s": round(self.oldest_age_s, 1),
        }


def stuck_metadata(stuck: Mapping[int, str]) -> dict[str, Any]:
    """``stuck``: batch id -> id of its failed run."""
    return {
        "stuck_batches": len(stuck),
        "batches": ", ".join(f"{b} (run {r})" for b, r in sorted(stuck.items())) or "none",
    }


def tick_events(
    table_key: dg.AssetKey,
    landing_key: dg.AssetKey,
    result: DiscoveryResult,
    lag: Lag,
    stuck: Mapping[int, str],
) -> list[dg.AssetObservation | dg.AssetCheckEvaluation]:
    """The landing observation and the two health checks of one tick."""
    claimed_bytes = sum(c.bytes for c in result.claims)
    return [
        dg.AssetObservation(
            asset_key=landing_key,
            metadata={
                "objects_listed": result.listed,
                "objects_claimed": result.claimed_objects,
                "bytes_claimed": claimed_bytes,
                "objects_deferred": result.deferred,
                "objects_rewritten": len(result.overwritten),
                "objects_out_of_range": len(result.out_of_range),
                "full_listing": result.full_listing,
                **lag.metadata(),
            },
        ),
        dg.AssetCheckEvaluation(
            asset_key=table_key,
            check_name=LEDGER_LAG,
            passed=lag.ok,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=lag.metadata(),
        ),
        dg.AssetCheckEvaluation(
            asset_key=table_key,
            check_name=STUCK_BATCHES,
            passed=not stuck,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=stuck_metadata(stuck),
        ),
    ]
