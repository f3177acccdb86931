"""Operator retry requests, kept in the ledger root next to the source's ledger.

Dagster never launches a run_key twice for a sensor, so a batch whose runs exhausted their
retries would stay blocked. ``lockgate retry`` writes ``<source>/retries/<batch>-<n>.json``
(create-only, n = 1, 2, ...); the sensor then requests the batch under the run_key
``<source>:<batch>:retry<n>`` -- a new key that the ledger still maps to the same batch, which
commits at most once whatever the number of runs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from lockgate.resources.store import AlreadyExists, ObjectStore

PREFIX = "retries/"


def _name(batch_id: int, n: int) -> str:
    return f"{PREFIX}{batch_id:020d}-{n:04d}.json"


def request_retry(source_store: ObjectStore, batch_id: int, reason: str = "") -> int:
    """Record one more retry request of ``batch_id``; returns its number (1, 2, ...)."""
    n = retry_generation(source_store, batch_id) + 1
    while True:
        body = {"batch_id": batch_id, "n": n, "reason": reason, "at": datetime.now(UTC).isoformat()}
        try:
            source_store.put_if_absent(_name(batch_id, n), json.dumps(body).encode())
            return n
        except AlreadyExists:
            n += 1


def retry_generation(source_store: ObjectStore, batch_id: int) -> int:
    """The number of retry requests of ``batch_id`` (0: none)."""
    n = 0
    for info in source_store.list(f"{PREFIX}{batch_id:020d}-"):
        n = max(n, int(info.key.rsplit("-", 1)[1].split(".")[0]))
    return n


def all_generations(source_store: ObjectStore) -> dict[int, int]:
    """``batch id -> latest retry number`` of every batch ever retried (a short list)."""
    out: dict[int, int] = {}
    for info in source_store.list(PREFIX):
        stem = info.key[len(PREFIX) :].split(".")[0]
        batch, n = stem.split("-")
        out[int(batch)] = max(out.get(int(batch), 0), int(n))
    return out


def run_key(source: str, batch_id: int, generation: int) -> str:
    return f"{source}:{batch_id}" if generation == 0 else f"{source}:{batch_id}:retry{generation}"
