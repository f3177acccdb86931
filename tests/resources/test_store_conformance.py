"""The object store contract, checked on both backends (local folder and S3 over HTTP).

Every test here runs against ``LocalStore`` and ``S3Store`` (moto server) through the
``store`` fixture, except the memory measurement, which needs the S3 server out of the
test process (see ``measured_store``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lockgate.resources.store import (
    AlreadyExists,
    LocalStore,
    NotFound,
    ObjectChanged,
    ObjectStore,
    S3Options,
    validate_key,
)
from tests.conftest import MOTO_ENV, create_bucket
from tests.helpers_s3 import external_moto

MiB = 1024 * 1024


def _pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-enough bytes (cheap to regenerate for comparison)."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    reps, rest = divmod(size, len(block))
    return block * reps + block[:rest]


# -- create-only ----------------------------------------------------------------------------


def _race(store: ObjectStore, key: str, threads: int) -> dict[str, list[object]]:
    """``threads`` creators of ``key`` released together; outcome lists by kind."""
    barrier = threading.Barrier(threads)
    outcomes: dict[str, list[object]] = {"won": [], "lost": [], "error": []}
    lock = threading.Lock()

    def contend(i: int) -> None:
        kind: str
        value: object
        barrier.wait()
        try:
            store.put_if_absent(key, f"{key} writer {i}".encode())
        except AlreadyExists:
            kind, value = "lost", i
        except BaseException as e:  # recorded, asserted by the caller
            kind, value = "error", e
        else:
            kind, value = "won", i
        with lock:
            outcomes[kind].append(value)

    workers = [threading.Thread(target=contend, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return outcomes


def test_create_only_race_has_exactly_one_winner(store: ObjectStore) -> None:
    threads, rounds = 16, 20
    for r in range(rounds):
        key = f"race/{r:02d}.json"
        outcomes = _race(store, key, threads)
        assert outcomes["error"] == []
        assert len(outcomes["won"]) == 1, f"round {r}: winners {outcomes['won']}"
        assert len(outcomes["lost"]) == threads - 1
        assert store.get(key) == f"{key} writer {outcomes['won'][0]}".encode()


def test_put_if_absent_never_overwrites(store: ObjectStore) -> None:
    store.put_if_absent("a/claim.json", b"first")
    with pytest.raises(AlreadyExists):
        store.put_if_absent("a/claim.json", b"second")
    with pytest.raises(AlreadyExists):
        store.put_if_absent("a/claim.json", b"first")  # same bytes, first attempt: still taken
    assert store.get("a/claim.json") == b"first"
    store.put("a/claim.json", b"overwritten")  # plain put does overwrite
    assert store.get("a/claim.json") == b"overwritten"


# -- listing --------------------------------------------------------------------------------


def _check_listing(store: ObjectStore, n: int) -> None:
    keys = [f"land/{i:05d}.csv" for i in range(n)]
    # (no key may also be a "folder" of another key: a local folder cannot be both)
    noise = ["lan", "land-x/1", "land.txt", "lane/1", "zz/1"]

    def put(key: str) -> None:
        store.put(key, key.encode())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, keys + noise))

    listed = list(store.list("land/"))
    assert [o.key for o in listed] == keys
    assert all(o.size == len(o.key) for o in listed)
    assert all(o.etag and '"' not in o.etag for o in listed)
    assert all(o.last_modified.tzinfo is not None for o in listed)

    mid = n // 2
    assert [o.key for o in store.list("land/", start_after=keys[mid])] == keys[mid + 1 :]
    assert [o.key for o in store.list("land/", start_after=keys[mid][:-2])] == keys[mid:]
    assert [o.key for o in store.list("land/001")] == keys[100:200]
    assert [o.key for o in store.list("land/", start_after="land/99999")] == []
    assert [o.key for o in store.list("lan")][:3] == ["lan", "land-x/1", "land.txt"]
    everything = [o.key for o in store.list()]
    assert everything == sorted(keys + noise)
    assert [o.key for o in store.list(start_after=keys[-1])] == ["lane/1", "zz/1"]
    assert list(store.list("nothing-here/")) == []


def test_listing_order_start_after_prefix_and_paging(store: ObjectStore) -> None:
    """Fast variant: 250 keys; on S3 with 100-key pages so that paging is exercised."""
    from lockgate.resources.store_s3 import S3Store

    if isinstance(store, S3Store):
        store.page_size = 100
    _check_listing(store, 250)
    if isinstance(store, S3Store):
        assert store.list_requests > 10


@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_listing_2500_keys_with_default_pages(backend: str, request: pytest.FixtureRequest) -> None:
    """2,500 keys: S3 pages at its 1,000-key maximum (the fast variant above checks the
    other listing rules; this one checks paging at full size)."""
    from lockgate.resources.store_s3 import S3Store

    store: ObjectStore = request.getfixturevalue(f"{backend}_store")
    keys = [f"land/{i:05d}.csv" for i in range(2500)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: store.put(k, k.encode()), [*keys, "lan", "lane/1"]))
    before = store.list_requests if isinstance(store, S3Store) else 0
    assert [o.key for o in store.list("land/")] == keys
    if isinstance(store, S3Store):
        assert store.list_requests - before == 3  # 1,000 + 1,000 + 500
    assert [o.key for o in store.list("land/", start_after=keys[999])] == keys[1000:]
    assert [o.key for o in store.list("lan", start_after=keys[-1])] == ["lane/1"]


def test_listing_order_is_lexicographic_by_code_point(store: ObjectStore) -> None:
    keys = ["a-b", "a.b", "a/b", "a0", "aB", "a_b", "ab", "a~", "a\u00e9", "a\u4e2d"]
    for k in keys:
        store.put(k, b"x")
    assert [o.key for o in store.list("a")] == sorted(keys)
    assert [o.key for o in store.list("a", start_after="a/b")] == sorted(keys)[3:]


# -- reading --------------------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def measured_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ObjectStore]:
    """Like ``store``, but S3 is a moto server in its own process, so that the test
    process's memory is the client's alone."""
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
        return
    from lockgate.resources.store_s3 import S3Store

    for k, v in MOTO_ENV.items():
        monkeypatch.setenv(k, v)
    with external_moto() as url:
        bucket = create_bucket(url)
        yield S3Store(f"s3://{bucket}/root", S3Options(endpoint_url=url, region="us-east-1"))


def test_streaming_read_of_50_mb_keeps_memory_bounded(measured_store: ObjectStore) -> None:
    size = 50 * MiB
    data = _pattern(size, seed=50)
    expected = hashlib.sha256(data).hexdigest()
    measured_store.put("big/object.bin", data)
    del data
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        digest = hashlib.sha256()
        total = 0
        with measured_store.open("big/object.bin") as f:
            while chunk := f.read(MiB):
                digest.update(chunk)
                total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = peak - base
    print(
        f"\n50 MB streaming read on {type(measured_store).__name__}: peak +{growth / MiB:.1f} MiB"
    )
    assert total == size
    assert digest.hexdigest() == expected
    assert growth < 20 * MiB


def test_reader_supports_seek_and_partial_reads(store: ObjectStore) -> None:
    data = _pattern(3 * MiB + 17, seed=3)
    store.put("seek/obj", data)
    with store.open("seek/obj") as f:
        assert f.read(10) == data[:10]
        f.seek(2 * MiB)
        assert f.read(100) == data[2 * MiB : 2 * MiB + 100]
        f.seek(-7, os.SEEK_END)
        assert f.read() == data[-7:]
        assert f.read(5) == b""
        f.seek(5)
        assert f.tell() == 5
        assert f.read() == data[5:]


def test_empty_object(store: ObjectStore) -> None:
    store.put_if_absent("empty", b"")
    assert store.get("empty") == b""
    assert store.head("empty").size == 0
    with store.open("empty") as f:
        assert f.read() == b""


def test_no_partial_reads_during_a_put(store: ObjectStore) -> None:
    """A concurrent reader sees NotFound or a whole version, never a prefix or a mix."""
    versions = [_pattern(8 * MiB, seed=s) for s in (1, 2, 3)]
    done = threading.Event()
    seen: list[str] = []
    bad: list[str] = []

    def reader() -> None:
        while True:
            finished = done.is_set()
            try:
                got = store.get("hot/object")
            except NotFound:
                seen.append("missing")
            else:
                if got in versions:
                    seen.append(f"v{versions.index(got)}")
                else:
                    bad.append(f"read {len(got)} bytes matching no version")
            if finished:  # the read after the last put must see the last version
                return

    t = threading.Thread(target=reader)
    t.start()
    try:
        store.put_if_absent("hot/object", versions[0])
        store.put("hot/object", versions[1])
        store.put("hot/object", versions[2])
    finally:
        done.set()
        t.join()
    assert bad == []
    assert seen[-1] == "v2"
    assert set(seen) <= {"missing", "v0", "v1", "v2"}


# -- errors ---------------------------------------------------------------------------------


def test_missing_keys(store: ObjectStore) -> None:
    with pytest.raises(NotFound):
        store.open("no/such/key")
    with pytest.raises(NotFound):
        store.head("no/such/key")
    with pytest.raises(NotFound):
        store.get("no/such/key")
    with pytest.raises(FileNotFoundError):  # NotFound is also a FileNotFoundError
        store.get("no/such/key")
    store.delete("no/such/key")  # not an error
    assert not store.exists("no/such/key")
    store.put("k", b"v")
    assert store.exists("k")
    store.delete("k")
    store.delete("k")
    assert not store.exists("k")


def test_object_changed_on_etag_mismatch(store: ObjectStore) -> None:
    store.put("v/obj", b"version one")
    first = store.head("v/obj")
    with store.open("v/obj", etag=first.etag) as f:
        assert f.read() == b"version one"
    store.put("v/obj", b"version two, longer")
    second = store.head("v/obj")
    assert second.etag != first.etag
    with pytest.raises(ObjectChanged):
        store.open("v/obj", etag=first.etag)
    with store.open("v/obj", etag=second.etag) as f:
        assert f.read() == b"version two, longer"


def test_a_stream_never_mixes_versions(store: ObjectStore) -> None:
    old = _pattern(2 * MiB, seed=10)
    new = _pattern(2 * MiB, seed=11)
    store.put("mix/obj", old)
    f = store.open("mix/obj")
    try:
        head = f.read(1000)
        store.put("mix/obj", new)
        try:
            f.seek(MiB)
            rest = f.read()
        except ObjectChanged:
            rest = None
    finally:
        f.close()
    assert head == old[:1000]
    if rest is not None:  # the local backend keeps reading the version it opened
        assert rest == old[MiB:]


def test_invalid_keys_are_rejected(store: ObjectStore) -> None:
    for bad in ("../escape", "a/../b", "a/..", "/abs", "", "a//b", "./a", "a\\b", "a\x00b"):
        with pytest.raises(ValueError):
            validate_key(bad)
    for bad in ("../escape", "/abs", "a/../../b"):
        with pytest.raises(ValueError):
            store.put(bad, b"x")
        with pytest.raises(ValueError):
            store.put_if_absent(bad, b"x")
        with pytest.raises(ValueError):
            store.get(bad)
        with pytest.raises(ValueError):
            store.head(bad)
        with pytest.raises(ValueError):
            store.open(bad)
        with pytest.raises(ValueError):
            store.delete(bad)
    with pytest.raises(ValueError):
        store.child("../up")
    assert validate_key("a/b.c/d-e_f") == "a/b.c/d-e_f"


def test_child_store_is_rooted_below(store: ObjectStore) -> None:
    child = store.child("sub/dir")
    child.put("k.txt", b"in child")
    assert store.get("sub/dir/k.txt") == b"in child"
    assert [o.key for o in child.list()] == ["k.txt"]
    assert child.uri("k.txt") == store.uri("sub/dir/k.txt")
