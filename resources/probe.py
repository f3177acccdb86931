"""The conditional-write probe: does an endpoint honour create-only puts?

Every exactly-once guarantee of Lockgate (claims, commits, commit records) rests on
``put_if_absent`` never overwriting. Some S3 imitations accept ``If-None-Match: *`` and
ignore it. ``probe_conditional_writes`` detects that by creating one probe object twice
with different content: the second create must fail with ``AlreadyExists``.

``ensure_safe(store)`` runs the probe at most once per process per endpoint and bucket
(the verdict, good or bad, is cached; errors such as a network failure are not) and is a
no-op for a local folder. ``S3Store`` calls it before its first write.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid

from lockgate.resources.store import (
    AlreadyExists,
    LocalStore,
    ObjectStore,
    StoreError,
    UnsafeEndpoint,
)

log = logging.getLogger(__name__)

PROBE_PREFIX = "_lockgate/probe/"

_registry_lock = threading.Lock()
_endpoint_locks: dict[str, threading.Lock] = {}
_verdicts: dict[str, str | None] = {}  # endpoint id -> None (safe) or the UnsafeEndpoint text
_bypass = threading.local()


def _endpoint_of(store: ObjectStore) -> str:
    return str(getattr(store, "endpoint_url", None) or store.url)


def _endpoint_id(store: ObjectStore) -> str:
    return str(getattr(store, "endpoint_id", None) or store.url)


def unsafe_message(store: ObjectStore) -> str:
    """What a user reads when the endpoint silently overwrote a create-only put."""
    return (
        f"The S3 endpoint {_endpoint_of(store)} silently overwrote a create-only put "
        f"(PUT with 'If-None-Match: *') under {store.uri(PROBE_PREFIX)}: it ignores "
        "conditional writes, so Lockgate cannot guarantee exactly-once ingestion there "
        "(two writers could both 'win' a claim or a commit) and refuses to write. "
        "Use AWS S3, a recent MinIO (2024 or later), or another endpoint that supports "
        "If-None-Match on PutObject."
    )


def probe_conditional_writes(store: ObjectStore) -> None:
    """Raise ``UnsafeEndpoint`` unless ``store`` refuses a second create of one key.

    Writes ``_lockgate/probe/<uuid>`` below the store's root twice (create-only, different
    content) and deletes it afterwards. Other errors (unreachable, access denied)
    propagate unchanged: they say nothing about the endpoint's safety.
    """
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    previous = getattr(_bypass, "active", False)
    _bypass.active = True  # the probe's own writes must not trigger the probe
    try:
        try:
            store.put_if_absent(key, b"lockgate conditional-write probe: first")
        except StoreError as e:
            if getattr(e, "status", None) == 501 or getattr(e, "code", None) == "NotImplemented":
                raise UnsafeEndpoint(
                    f"The S3 endpoint {_endpoint_of(store)} rejects create-only puts "
                    f"('If-None-Match: *' is not implemented): {e}. Lockgate needs them for "
                    "exactly-once ingestion; use AWS S3, a recent MinIO (2024 or later), or "
                    "another endpoint that supports If-None-Match on PutObject."
                ) from e
            raise
        try:
            try:
                store.put_if_absent(key, b"lockgate conditional-write probe: second")
            except AlreadyExists:
                return
            raise UnsafeEndpoint(unsafe_message(store))
        finally:
            with contextlib.suppress(Exception):
                store.delete(key)
    finally:
        _bypass.active = previous


def in_probe() -> bool:
    """Whether this thread is running the probe (its writes are not pipeline writes)."""
    return bool(getattr(_bypass, "active", False))


def ensure_safe(store: ObjectStore) -> None:
    """Probe ``store``'s endpoint once per process (cached verdict); no-op for local folders."""
    if isinstance(store, LocalStore) or in_probe():
        return
    endpoint = _endpoint_id(store)
    verdict = _verdicts.get(endpoint, "")
    if verdict is None:
        return
    with _registry_lock:
        lock = _endpoint_locks.setdefault(endpoint, threading.Lock())
    with lock:
        if endpoint in _verdicts:
            cached = _verdicts[endpoint]
            if cached is not None:
                raise UnsafeEndpoint(cached)
            return
        try:
            probe_conditional_writes(store)
        except UnsafeEndpoint as e:
            _verdicts[endpoint] = str(e)
            log.error("%s", e)
            raise
        _verdicts[endpoint] = None
        log.info("endpoint %s honours create-only puts", _endpoint_of(store))


def reset_probe_cache() -> None:
    """Forget every cached verdict (tests)."""
    with _registry_lock:
        _verdicts.clear()
        _endpoint_locks.clear()
