"""``LocalStore.list`` is lazy and in key order: the order of every key of a random tree equals
a sort of all keys (for any ``prefix`` and ``start_after``), and a listing that starts late in
the tree never reads the folders before it, so a bounded sensor tick costs what it lists."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest

from lockgate.resources.store import LocalStore

NAMES = ["a", "a-b", "a.b", "a0", "b", "b/c", "ab", "z", "é", "2026-01-01", "2026-01-01.x"]


def _tree(root: Path, rng: random.Random, n: int) -> list[str]:
    keys: set[str] = set()
    while len(keys) < n:
        depth = rng.randint(1, 3)
        parts = [rng.choice(NAMES).replace("/", "_") for _ in range(depth)]
        key = "/".join(parts)
        if any(k.startswith(key + "/") or key.startswith(k + "/") or k == key for k in keys):
            continue  # a key cannot be both a file and a folder
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        keys.add(key)
    return sorted(keys)


@pytest.mark.parametrize("seed", range(4))
def test_order_prefix_and_start_after_match_a_sort(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    keys = _tree(tmp_path, rng, 40)
    store = LocalStore(tmp_path)
    assert [o.key for o in store.list()] == keys
    probes = [None, "", *rng.sample(keys, 5), "a", "a/", "a-", "b/", "zz", "2026-01-01/"]
    for prefix, start in itertools.product(["", "a", "a/", "2026-01-01", "é/"], probes):
        want = [k for k in keys if k.startswith(prefix) and (start is None or k > start)]
        got = [o.key for o in store.list(prefix, start_after=start)]
        assert got == want, (prefix, start)


def test_a_late_start_reads_no_earlier_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for day in range(1, 31):
        for i in range(3):
            p = tmp_path / f"2026-01-{day:02d}" / f"k{i}.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x")
    store = LocalStore(tmp_path)
    read: list[str] = []
    real = os.scandir

    def counting(path: str) -> object:
        read.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    got = [o.key for o in store.list(start_after="2026-01-29/k1.json")]
    assert got == ["2026-01-29/k2.json", "2026-01-30/k0.json", "2026-01-30/k1.json",
                   "2026-01-30/k2.json"]  # fmt: skip
    assert sorted(read) == sorted([tmp_path.name, "2026-01-29", "2026-01-30"])

    read.clear()  # a listing consumed only in part reads only what it reached
    it = store.list()
    first = [next(it).key for _ in range(4)]
    assert first[-1] == "2026-01-02/k0.json"
    assert sorted(read) == sorted([tmp_path.name, "2026-01-01", "2026-01-02"])
