"""sensors/retries.py: operator retry requests (create-only, numbered) and their run keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lockgate.resources.store import LocalStore, ObjectInfo
from lockgate.sensors.retries import all_generations, request_retry, retry_generation, run_key


def test_requests_are_numbered_per_batch_and_never_overwritten(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert retry_generation(store, 7) == 0 and all_generations(store) == {}
    assert request_retry(store, 7, "disk full") == 1
    assert request_retry(store, 7) == 2
    assert request_retry(store, 12, "x") == 1
    assert retry_generation(store, 7) == 2 and retry_generation(store, 12) == 1
    assert retry_generation(store, 1) == 0
    assert all_generations(store) == {7: 2, 12: 1}
    body = json.loads(store.get(f"retries/{7:020d}-0001.json"))
    assert (body["batch_id"], body["n"], body["reason"]) == (7, 1, "disk full")


class _LateListing(LocalStore):
    """A store whose listings do not show the newest requests yet (written by a concurrent
    operator between our listing and our put)."""

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        return iter(())


def test_a_taken_number_moves_on(tmp_path: Path) -> None:
    LocalStore(tmp_path).put_if_absent(f"retries/{3:020d}-0001.json", b"{}")
    LocalStore(tmp_path).put_if_absent(f"retries/{3:020d}-0002.json", b"{}")
    late = _LateListing(tmp_path)
    assert request_retry(late, 3, "again") == 3
    assert LocalStore(tmp_path).get(f"retries/{3:020d}-0001.json") == b"{}"  # not overwritten
    assert retry_generation(LocalStore(tmp_path), 3) == 3


def test_run_keys() -> None:
    assert run_key("ev", 4, 0) == "ev:4"
    assert run_key("ev", 4, 2) == "ev:4:retry2"
