"""Moving a source to a new landing prefix: finishing the move after ``lockgate ledger reset``.

A move is: point the producers at the new prefix, set the source's ``landing`` to it in
``lockgate.yaml``, run ``lockgate ledger reset --source S --yes``. The reset writes the new
fingerprint version; from then on discovery lists the new landing only (sensor ticks re-read
the config: no reload). What was still unclaimed in the earlier landing would never be listed
again, so the reset then drains it (``drain_earlier_landing``): a full listing of the earlier
landing, claimed under the earlier fingerprint version. A claim is always read in the landing
of the version it was made under (``Runtime.claim_landing``), so those batches -- like every
batch claimed there before -- run, and rebuild, from the earlier landing; nothing is read
under its relative key in the new landing. Objects are identified by ``(key, etag)`` across
both landings, so nothing is claimed twice.

Contract: the drain runs only when the latest fingerprint version differs from the one before
it in ``landing`` alone (a changed format or table is not a move: its claims could not run);
it is idempotent (re-running ``lockgate ledger reset`` drains objects that landed in the
earlier prefix late). Objects changed less than ``min_age`` ago are waited for, up to
``min_age`` + ``SETTLE_S``; any still too young are reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from lockgate.resources.config import SourceConfig
from lockgate.resources.fingerprint import changes, read_version
from lockgate.resources.ledger import Ledger
from lockgate.resources.runtime import Runtime
from lockgate.sensors.discovery import discover, rule_for_source

SETTLE_S = 2.0


@dataclass
class DrainReport:
    """What a drain claimed in the earlier landing (``version``: the fingerprint version it
    claimed under)."""

    source: str
    landing: str
    version: int
    batches: list[int] = field(default_factory=list)
    objects: int = 0
    too_young: int = 0  # still changing after the wait: run the reset again later


def drain_earlier_landing(rt: Runtime, source: SourceConfig) -> DrainReport | None:
    """Claim what is unclaimed in the landing the source was moved from (see the module
    contract); None when the latest fingerprint change is not a move of the landing."""
    latest = Ledger.read_fingerprint(rt.ledger_store, source.name)
    if latest is None or latest.version == 0:
        return None
    earlier = read_version(rt.ledger_store, source.name, latest.version - 1)
    if earlier is None or set(changes(earlier.values, latest.values)) != {"landing"}:
        return None
    old = replace(source, landing=earlier.values["landing"])
    ledger = Ledger(rt.ledger_store, source.name, earlier)  # claims name the earlier version
    rule = rule_for_source(old)
    landing = rt.open_landing(old.landing)
    report = DrainReport(source.name, old.landing, earlier.version)
    deadline = time.monotonic() + rule.min_age_s + SETTLE_S
    while True:
        result = discover(landing, ledger, rule, full_listing=True)
        report.batches += [c.batch_id for c in result.claims]
        report.objects += result.claimed_objects
        report.too_young = result.too_young
        if result.claims:
            continue
        if result.too_young and time.monotonic() < deadline:
            time.sleep(0.5)
            continue
        return report
