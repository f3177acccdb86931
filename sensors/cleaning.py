"""The cleaning step of a tick: clean committed batches not cleaned yet, bounded per tick.

Contract (``clean_committed``):

* Runs only when the source's ``clean_source`` is not ``off``; cleans only batches whose commit
  record exists (``lockgate.resources.cleaning.clean_batch``), in batch order.
* Starts at the durable hint (``CleanHint``: ``through`` and the uncommitted ``waiting`` ids
  below it), so a tick reads O(batches since the hint + waiting), not the history; it examines
  at most ``max_batches`` batches, and starts no further batch once it has cleaned
  ``max_objects`` objects or spent ``max_seconds`` (it always cleans at least one), then writes
  the hint forward. The rest follow on later ticks. Batch ids the caller knows to be
  uncommitted (``uncommitted``) wait without a read.
* A crash anywhere leaves a batch without its cleaned marker: the next tick cleans it again
  (idempotently) from the same hint.
* Each batch is cleaned in the landing its claim was made in: ``landing`` is a store (every
  claim's) or a function of the claim (``Runtime.claim_landing``), so a source whose landing
  moved (a config edit, then ``lockgate ledger reset``) still cleans the objects claimed under
  the earlier landing, there, never the same relative keys in the new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from lockgate.resources.cleaning import CleanHint, CleanLog, clean_batch
from lockgate.resources.config import SourceConfig
from lockgate.resources.ledger import Claim, Ledger
from lockgate.resources.store import ObjectStore

MAX_CLEAN_OBJECTS_PER_TICK = 1000
MAX_CLEAN_BATCHES_PER_TICK = 500
#: A tick stops starting batches after this long (it finishes the one it is in).
MAX_CLEAN_SECONDS_PER_TICK = 20.0


@dataclass
class CleanTick:
    """What one call did: batches cleaned now, their objects no longer in the landing
    (``cleaned``) and left in it (``left``), and the batches still to clean later
    (``deferred``: the bound was reached)."""

    batches: int = 0
    cleaned: int = 0
    left: int = 0
    deferred: bool = False


def clean_committed(
    source: SourceConfig,
    ledger: Ledger,
    landing: ObjectStore | Callable[[Claim], ObjectStore],
    open_archive: Callable[[str], ObjectStore],
    max_objects: int = MAX_CLEAN_OBJECTS_PER_TICK,
    max_batches: int = MAX_CLEAN_BATCHES_PER_TICK,
    max_seconds: float = MAX_CLEAN_SECONDS_PER_TICK,
    uncommitted: Collection[int] = (),
) -> CleanTick:
    """Clean the committed batches of ``source`` that have no cleaned marker (see above).
    ``uncommitted``: batch ids the caller just found without a commit record (the tick's
    pending batches); they wait without a read and do not count against ``max_batches``."""
    out = CleanTick()
    if source.clean_source == "off":
        return out
    landing_of = (lambda _c: landing) if isinstance(landing, ObjectStore) else landing
    started = time.monotonic()
    log = CleanLog(ledger)
    hint = log.hint()
    end = ledger.next_batch_id()
    candidates = [*sorted(hint.waiting), *range(hint.through, end)]
    known_pending = set(uncommitted)
    waiting: list[int] = []
    cleaned, left = hint.cleaned, hint.left
    stop = len(candidates)
    objects = examined = 0
    for i, b in enumerate(candidates):
        if b in known_pending:
            waiting.append(b)
            continue
        over_time = time.monotonic() - started >= max_seconds
        if examined >= max_batches or ((objects >= max_objects or over_time) and out.batches):
            stop, out.deferred = i, True
            break
        examined += 1
        marker = log.cleaned(b)
        if marker is None:
            commit = ledger.commit_record(b)
            if commit is None:
                waiting.append(b)
                continue
            claim = ledger.get_claim(b)
            marker = clean_batch(
                log,
                landing_of(claim),
                open_archive,
                source.clean_source,
                source.clean_archive_to,
                claim,
                commit,
            )
            out.batches += 1
            objects += len(claim.objects)
            out.cleaned += marker.cleaned
            out.left += len(marker.outcomes) - marker.cleaned
        cleaned += marker.cleaned
        left += len(marker.outcomes) - marker.cleaned
    rest = candidates[stop:]
    if not rest:
        through = end
    elif rest[0] < hint.through:  # stopped among the waiting ids
        through = hint.through
    else:
        through = rest[0]
    waiting += [b for b in rest if b < through]
    new = CleanHint(through, tuple(sorted(set(waiting))), cleaned, left)
    if new != hint:
        log.put_hint(new)
    return out
