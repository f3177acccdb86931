"""``lockgate.resources.found``: objects claimed per discovery path, from the claims, with a
hint so that a call reads only the claims since the last one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from lockgate.resources.found import FOUND_HINT, FoundCounts, found_counts
from lockgate.resources.ledger import FOUND_BY_NOTIFICATIONS, Ledger
from lockgate.resources.store import ObjectInfo
from lockgate.resources.stores import open_store

FP = {"landing": "/landing", "format": "jsonl", "table": "db.t"}
T = datetime(2026, 3, 1, tzinfo=UTC)


def info(key: str) -> ObjectInfo:
    return ObjectInfo(key=key, size=3, etag=f"e-{key}", last_modified=T)


def test_counts_by_path_survive_processes_and_read_only_new_claims(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "ledger"))
    led = Ledger.open(store, "src", FP)
    led.claim("2026-03-01", [info("a"), info("b")])  # a listing (the default)
    led.claim("2026-03-01", [info("c")], FOUND_BY_NOTIFICATIONS)
    assert json.loads(store.get("src/offsets/" + "0" * 19 + "1.json"))["found_by"] == (
        "notifications"
    )
    assert "found_by" not in json.loads(store.get("src/offsets/" + "0" * 20 + ".json"))
    assert found_counts(led) == FoundCounts(2, notifications=1, listing=2)
    hint = json.loads(store.get(f"src/{FOUND_HINT}"))
    assert (hint["through"], hint["notifications"], hint["listing"]) == (2, 1, 2)
    # a new process: the hint is read, only the claims after it are
    again = Ledger.open(store, "src", FP)
    again.claim("2026-03-02", [info("d"), info("e"), info("f")], FOUND_BY_NOTIFICATIONS)
    assert found_counts(Ledger.open(store, "src", FP)) == FoundCounts(3, 4, 2)
    # the claims below the hint are not read again: a planted hint's counts are trusted
    store.put(
        f"src/{FOUND_HINT}", json.dumps({"through": 2, "notifications": 10, "listing": 20}).encode()
    )
    assert found_counts(Ledger.open(store, "src", FP)) == FoundCounts(3, 13, 20)


def test_a_bad_or_impossible_hint_is_recomputed(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "ledger"))
    led = Ledger.open(store, "src", FP)
    led.claim("2026-03-01", [info("a")], FOUND_BY_NOTIFICATIONS)
    for bad in (b"not json", b'{"through": 9, "notifications": 0, "listing": 0}'):
        store.put(f"src/{FOUND_HINT}", bad)
        assert found_counts(led, write_hint=False) == FoundCounts(1, 1, 0)
