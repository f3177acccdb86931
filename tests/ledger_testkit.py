"""Test helpers for the ledger and discovery tests: an in-memory object store, a store wrapper
that interposes on writes (to count, forbid, interleave or crash), and brute-force readers of a
ledger's files used as the oracle."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from io import BufferedReader, BytesIO
from typing import BinaryIO

from lockgate.resources.ledger import OFFSETS, Claim, _loads, batch_name
from lockgate.resources.store import (
    AlreadyExists,
    NotFound,
    ObjectChanged,
    ObjectInfo,
    ObjectStore,
    SizedReader,
    join_key,
    validate_key,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class SimulatedCrash(BaseException):
    """A planner 'dies' here. BaseException so no ``except Exception`` in the code swallows it."""


class MemoryStore(ObjectStore):
    """A thread-safe in-memory store with the ``ObjectStore`` contract. Etags change on every
    write of a key; ``last_modified`` is settable for partition tests."""

    def __init__(
        self,
        url: str = "mem://",
        _data: dict[str, tuple[bytes, str, datetime]] | None = None,
        _prefix: str = "",
        _lock: threading.Lock | None = None,
    ):
        self.url = url
        self._data = _data if _data is not None else {}
        self._prefix = _prefix
        self._lock = _lock or threading.Lock()
        self._seq = [0]
        self.list_requests = 0
        self.gets = 0

    def _full(self, key: str) -> str:
        return join_key(self._prefix, validate_key(key))

    def _info(self, full: str) -> ObjectInfo:
        data, etag, lm = self._data[full]
        return ObjectInfo(
            full[len(self._prefix) + 1 :] if self._prefix else full, len(data), etag, lm
        )

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        with self._lock:
            self.list_requests += 1
            full_prefix = self._prefix + "/" + prefix if self._prefix else prefix
            keys = sorted(k for k in self._data if k.startswith(full_prefix))
            infos = [self._info(k) for k in keys]
        return iter([i for i in infos if start_after is None or i.key > start_after])

    def head(self, key: str) -> ObjectInfo:
        with self._lock:
            full = self._full(key)
            if full not in self._data:
                raise NotFound(key)
            return self._info(full)

    def open(self, key: str, etag: str | None = None, size: int | None = None) -> BinaryIO:
        with self._lock:
            self.gets += 1
            full = self._full(key)
            if full not in self._data:
                raise NotFound(key)
            data, e, _ = self._data[full]
        if etag is not None and e != etag:
            raise ObjectChanged(key)
        if size is not None:
            return BufferedReader(SizedReader(BytesIO(data), key, size))
        return BytesIO(data)

    def _write(self, key: str, data: bytes, last_modified: datetime | None) -> None:
        import uuid

        self._data[self._full(key)] = (data, uuid.uuid4().hex, last_modified or datetime.now(UTC))

    def put(self, key: str, data: bytes, last_modified: datetime | None = None) -> None:
        with self._lock:
            self._write(key, data, last_modified)

    def put_if_absent(self, key: str, data: bytes) -> None:
        with self._lock:
            if self._full(key) in self._data:
                raise AlreadyExists(key)
            self._write(key, data, None)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(self._full(key), None)

    def uri(self, key: str = "") -> str:
        return f"{self.url}{self._full(key) if key else self._prefix}"

    def child(self, prefix: str) -> MemoryStore:
        child = MemoryStore(self.url, self._data, self._full(prefix.strip("/")), self._lock)
        return child


class HookStore(ObjectStore):
    """Wraps a store. ``before_write(key)`` / ``after_write(key)`` run around every create-only
    put (they may raise ``SimulatedCrash``); ``put`` and ``delete`` are forbidden (the ledger
    must only ever create); ``writes`` counts create-only puts."""

    def __init__(
        self,
        inner: ObjectStore,
        before_write: Callable[[str], None] | None = None,
        after_write: Callable[[str], None] | None = None,
        counters: dict[str, int] | None = None,
    ):
        self.inner = inner
        self.url = inner.url
        self.before_write = before_write
        self.after_write = after_write
        self.counters = counters if counters is not None else {"writes": 0, "gets": 0, "lists": 0}

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        self.counters["lists"] += 1
        return self.inner.list(prefix, start_after)

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def open(self, key: str, etag: str | None = None, size: int | None = None) -> BinaryIO:
        self.counters["gets"] += 1
        return self.inner.open(key, etag, size)

    def get(self, key: str) -> bytes:
        self.counters["gets"] += 1
        return self.inner.get(key)

    def put(self, key: str, data: bytes) -> None:
        raise AssertionError(f"the ledger overwrote {key}")

    def put_if_absent(self, key: str, data: bytes) -> None:
        if self.before_write:
            self.before_write(key)
        self.inner.put_if_absent(key, data)
        self.counters["writes"] += 1
        if self.after_write:
            self.after_write(key)

    def delete(self, key: str) -> None:
        raise AssertionError(f"the ledger deleted {key}")

    def uri(self, key: str = "") -> str:
        return self.inner.uri(key)

    def child(self, prefix: str) -> HookStore:
        return HookStore(
            self.inner.child(prefix), self.before_write, self.after_write, self.counters
        )


def obj(key: str, etag: str = "e1", size: int = 10, day: int = 0) -> ObjectInfo:
    return ObjectInfo(key, size, etag, EPOCH + timedelta(days=day))


def read_all_claims(store: ObjectStore, source: str) -> list[Claim]:
    """Every claim of ``source``, straight from the files (the oracle; O(history))."""
    sub = store.child(source)
    names = sorted(o.key for o in sub.list(OFFSETS))
    claims = [Claim.from_json(_loads(sub.get(n), n)) for n in names]
    for i, (n, c) in enumerate(zip(names, claims, strict=True)):
        assert n == OFFSETS + batch_name(i), f"batch ids not consecutive: {names}"
        assert c.batch_id == i
    return claims


def committed_ids(store: ObjectStore, source: str) -> set[int]:
    sub = store.child(source)
    return {int(o.key.rsplit("/", 1)[1].split(".")[0]) for o in sub.list("commits/")}


def brute_state(claims: list[Claim]) -> dict[str, dict[str, int]]:
    state: dict[str, dict[str, int]] = {}
    for c in claims:
        for o in c.objects:
            assert o.etag not in state.get(o.key, {}), f"{o.key}/{o.etag} claimed twice"
            state.setdefault(o.key, {})[o.etag] = c.batch_id
    return state
