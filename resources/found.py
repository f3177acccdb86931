"""Objects claimed per discovery path (``Claim.found_by``: event notifications or a listing),
counted for ``lockgate status`` without reading the history each time.

Layout, beside the ledger's logs on the source's ledger sub-store::

    <source>/found_hint.json   {"through": N, "notifications": a, "listing": b}

Contract:

* The truth is the claims: each records the path that found its objects (claims written before
  the field existed count as ``listing``, the only path there was). Claims never change and
  never disappear, so counts over the claims ``0..N-1`` are final.
* ``found_counts`` starts from the hint, reads the claims from its ``through`` to the ledger's
  next batch id and adds their objects by path: O(claims since the last call), never the
  history twice. It then writes the hint forward (an overwrite, best effort: the hint is no
  create-only target, and a lost or stale hint only costs a longer read next time). A hint
  that is unreadable, or ahead of the ledger (it cannot be), is ignored: the counts are
  recomputed from batch 0.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from lockgate.resources.errors import LockgateError
from lockgate.resources.ledger import FOUND_BY_LISTING, FOUND_BY_NOTIFICATIONS, Ledger
from lockgate.resources.ledger_records import _dumps, _loads, _parallel
from lockgate.resources.store import NotFound

FOUND_HINT = "found_hint.json"
#: Claims read per step (in parallel); the hint is written after each step.
STEP = 500


@dataclass(frozen=True)
class FoundCounts:
    """Objects claimed by each discovery path, over the claims ``0..through-1``."""

    through: int = 0
    notifications: int = 0
    listing: int = 0


def _read_hint(ledger: Ledger, end: int) -> FoundCounts:
    try:
        d = _loads(ledger.store.get(FOUND_HINT), f"{ledger.source}/{FOUND_HINT}")
        hint = FoundCounts(int(d["through"]), int(d["notifications"]), int(d["listing"]))
    except (NotFound, LockgateError, KeyError, TypeError, ValueError):
        return FoundCounts()
    if not 0 <= hint.through <= end or hint.notifications < 0 or hint.listing < 0:
        return FoundCounts()
    return hint


def _write_hint(ledger: Ledger, counts: FoundCounts) -> None:
    body = {
        "format": 1,
        "through": counts.through,
        "notifications": counts.notifications,
        "listing": counts.listing,
    }
    with contextlib.suppress(LockgateError, OSError):  # best effort: a hint
        ledger.store.put(FOUND_HINT, _dumps(body))


def found_counts(ledger: Ledger, write_hint: bool = True) -> FoundCounts:
    """The objects each path found, over every claim of ``ledger`` (see the module contract)."""
    end = ledger.next_batch_id()
    start = _read_hint(ledger, end)
    counts = {FOUND_BY_NOTIFICATIONS: start.notifications, FOUND_BY_LISTING: start.listing}
    through = start.through
    while through < end:
        upto = min(end, through + STEP)
        for claim in _parallel(ledger.get_claim, range(through, upto)):
            counts[claim.found_by] += len(claim.objects)
        through = upto
        if write_hint:
            _write_hint(
                ledger,
                FoundCounts(through, counts[FOUND_BY_NOTIFICATIONS], counts[FOUND_BY_LISTING]),
            )
    return FoundCounts(through, counts[FOUND_BY_NOTIFICATIONS], counts[FOUND_BY_LISTING])
