"""``lockgate.pipelines.prefetch``: a read begun while the batch path is imported hands its
consumer exactly what ``read_object`` would (chunks, quarantine, meter, and the read's error
at the same point), once; it is never begun for a batch that is not to be read now; and a
batch executed with it stages the same rows as one without."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from lockgate.pipelines.batch import execute_batch
from lockgate.pipelines.formats import (
    SMALL_OBJECT_BYTES,
    FormatOptions,
    ReadChunk,
    ReadMeter,
    VersionNotRead,
    read_object,
)
from lockgate.pipelines.prefetch import Prefetch, import_while_reading
from lockgate.pipelines.stage import READ_AHEAD_BYTES, READ_AHEAD_OBJECTS
from lockgate.resources.ledger import ClaimedObject, CommitRecord
from lockgate.resources.store import LocalStore
from tests.pipelines.helpers import DAY, claim_keys, local_runtime, src, table_ids

FMT = FormatOptions("jsonl", block_bytes=8 * 1024)  # many chunks
SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])


def body(n: int, bad_every: int = 0) -> bytes:
    lines = []
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            lines.append(b"{not json")
        else:
            lines.append(json.dumps({"id": i, "v": f"r{i:06d}" * 12}).encode())
    return b"\n".join(lines) + b"\n"


def land(store: LocalStore, key: str, data: bytes) -> ClaimedObject:
    store.put(key, data)
    return ClaimedObject.from_info(store.head(key))


def prefetch_of(store: LocalStore, obj: ClaimedObject, budget: int = 1 << 30) -> Prefetch:
    return Prefetch(
        7,
        obj,
        lambda meter: read_object(store, obj.key, obj.etag, FMT, SCHEMA, obj.size, meter),
        budget=budget,
    )


def setup(
    tmp_path: Path, n: int, budget: int = 1 << 30
) -> tuple[LocalStore, ClaimedObject, Prefetch]:
    """An object of ``n`` lines landed as ``a.jsonl`` and a prefetch of it (batch 7)."""
    store = LocalStore(tmp_path / "landing")
    obj = land(store, "a.jsonl", body(n))
    return store, obj, prefetch_of(store, obj, budget)


def rows_taken(p: Prefetch, obj: ClaimedObject) -> int:
    """The rows of ``obj``'s whole read, taken from ``p`` (which must hold it)."""
    taken = p.take(7, obj)
    assert taken is not None
    return sum(c.batch.num_rows for c in taken)


def as_rows(chunks: list[ReadChunk]) -> tuple[list[dict[str, object]], list[tuple[object, ...]]]:
    rows = [r for c in chunks for r in c.batch.to_pylist()]
    bad = [(q.record_index, q.reason) for c in chunks for q in c.quarantined]
    return rows, bad


def test_taken_read_equals_read_object(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "landing")
    obj = land(store, "a.jsonl", body(2_000, bad_every=97))
    direct_meter = ReadMeter()
    direct = list(read_object(store, obj.key, obj.etag, FMT, SCHEMA, obj.size, direct_meter))
    p = prefetch_of(store, obj)
    pulled = 0
    while pulled < 3 and p.pull():
        pulled += 1
    assert pulled == 3  # some chunks buffered before the consumer comes
    taken = p.take(7, obj)
    assert taken is not None
    got = list(taken)
    assert as_rows(got) == as_rows(direct)
    assert len(as_rows(got)[1]) == 2_000 // 97
    assert (
        (p.meter.consumed, p.meter.complete)
        == (direct_meter.consumed, True)
        == (
            obj.size,
            True,
        )
    )
    assert p.take(7, obj) is None  # handed over once


def test_take_refuses_another_object_or_batch(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "landing")
    a = land(store, "a.jsonl", body(50))
    b = land(store, "b.jsonl", body(60))
    p = prefetch_of(store, a)
    assert p.take(7, b) is None
    assert p.take(8, a) is None
    assert rows_taken(p, a) == 50


def test_the_reads_error_comes_after_the_buffered_chunks(tmp_path: Path) -> None:
    _, obj, p = setup(tmp_path, 2_000)
    assert p.pull()
    with open(tmp_path / "landing" / "a.jsonl", "ab") as f:  # appended to while being read
        f.write(body(10))
    while p.pull():
        pass
    taken = p.take(7, obj)
    assert taken is not None
    seen = 0
    with pytest.raises(VersionNotRead):
        for chunk in taken:
            seen += chunk.batch.num_rows
    assert seen > 0  # the chunks read before the change came first, as read_object has it


def test_gone_before_read_is_raised_to_the_consumer(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "landing")
    obj = land(store, "a.jsonl", body(100))
    store.delete("a.jsonl")
    p = prefetch_of(store, obj)
    assert not p.pull() and p.full
    taken = p.take(7, obj)
    assert taken is not None
    with pytest.raises(VersionNotRead):
        list(taken)


def test_prefetch_holds_at_most_its_budget(tmp_path: Path) -> None:
    _, obj, p = setup(tmp_path, 5_000, budget=20_000)
    p.start()
    p.stop()  # the background puller stops at the budget on its own, or here
    pulls = 0
    while p.pull():
        pulls += 1
    assert p.full and len(p._buffered) < 20  # stopped at the budget, far from the end
    assert rows_taken(p, obj) == 5_000


def test_import_while_reading_stops_pulling_when_the_import_is_done(tmp_path: Path) -> None:
    _, obj, p = setup(tmp_path, 20_000)
    during: list[int] = []

    def slow_import() -> str:
        time.sleep(0.2)
        during.append(len(p._buffered))
        return "imported"

    assert import_while_reading(slow_import, p) == "imported"
    assert not any(t.name == "lockgate-prefetch" for t in threading.enumerate())
    assert during[0] >= 1  # read meanwhile
    assert rows_taken(p, obj) == 20_000
    assert import_while_reading(lambda: 5, None) == 5


def test_first_of_skips_small_objects_and_batches_not_to_read(tmp_path: Path) -> None:
    rt = local_runtime(tmp_path)
    landing = LocalStore(tmp_path / "landing")
    small = body(10)
    big = body(SMALL_OBJECT_BYTES // 100 + 2_000)
    assert len(small) <= SMALL_OBJECT_BYTES < len(big)
    landing.put(f"{DAY}/a.jsonl", small)
    landing.put(f"{DAY}/b.jsonl", big)
    landing.put(f"{DAY}/c.jsonl", small)
    only_small = claim_keys(rt, [f"{DAY}/a.jsonl"])
    ledger = rt.ledger(src(rt))
    assert Prefetch.first_of(rt, src(rt), ledger, only_small) is None
    claim = claim_keys(rt, [f"{DAY}/c.jsonl", f"{DAY}/b.jsonl"])
    ledger = rt.ledger(src(rt))
    p = Prefetch.first_of(rt, src(rt), ledger, claim)
    assert p is not None and p.key == f"{DAY}/b.jsonl"
    p.close()
    ledger.record_commit(
        CommitRecord(
            batch_id=claim.batch_id,
            snapshot_id=1,
            table_version=1,
            rows=0,
            quarantined=0,
            bytes=0,
            objects=2,
        )
    )
    assert Prefetch.first_of(rt, src(rt), rt.ledger(src(rt)), claim) is None


def test_batch_with_a_prefetch_commits_the_same_rows(tmp_path: Path) -> None:
    rt = local_runtime(tmp_path)
    landing = LocalStore(tmp_path / "landing")
    data = b"".join(json.dumps({"id": i, "v": "x" * 90}).encode() + b"\n" for i in range(4_000))
    landing.put(f"{DAY}/b.jsonl", data)
    claim = claim_keys(rt, [f"{DAY}/b.jsonl"])
    ledger = rt.ledger(src(rt))
    p = Prefetch.first_of(rt, src(rt), ledger, claim)
    assert p is not None and p.pull()
    out = execute_batch(rt, src(rt), ledger, claim, p)
    assert (out.rows, out.quarantined) == (4_000, 0)
    rec = rt.ledger(src(rt)).commit_record(claim.batch_id)
    assert rec is not None and rec.bytes_read == {f"{DAY}/b.jsonl": len(data)}
    assert table_ids(rt) == {i: 1 for i in range(4_000)}
    assert p.take(claim.batch_id, claim.objects[0]) is None  # consumed, closed


def test_objects_read_ahead_keep_their_accounting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects read alone are read ``READ_AHEAD_OBJECTS`` ahead of the current one
    (``stage``), each within its share of ``READ_AHEAD_BYTES``: a gone object in the middle is
    recorded as not read, the others commit exactly once with their byte counts."""
    reading: list[str] = []  # begun ahead, not taken yet
    ahead_of: dict[str, list[str]] = {}  # key -> the reads begun ahead of it when taken
    start, take = Prefetch.start, Prefetch.take

    def started(self: Prefetch) -> None:
        assert self.budget == READ_AHEAD_BYTES // READ_AHEAD_OBJECTS
        reading.append(self.key)
        start(self)

    def taken(self: Prefetch, batch_id: int, obj: ClaimedObject) -> Iterator[ReadChunk] | None:
        reading.remove(self.key)
        ahead_of[self.key] = sorted(reading)
        return take(self, batch_id, obj)

    monkeypatch.setattr(Prefetch, "start", started)
    monkeypatch.setattr(Prefetch, "take", taken)
    rt = local_runtime(tmp_path)
    landing = LocalStore(tmp_path / "landing")
    sizes = {}
    for n, name in enumerate("abcd"):
        data = b"".join(
            json.dumps({"id": n * 10_000 + i, "v": "x" * 90}).encode() + b"\n" for i in range(3_000)
        )
        assert len(data) > SMALL_OBJECT_BYTES
        landing.put(f"{DAY}/{name}.jsonl", data)
        sizes[f"{DAY}/{name}.jsonl"] = len(data)
    claim = claim_keys(rt, [f"{DAY}/{name}.jsonl" for name in "abcd"])
    landing.delete(f"{DAY}/c.jsonl")
    out = execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)
    assert (out.rows, out.quarantined) == (9_000, 0)
    rec = rt.ledger(src(rt)).commit_record(claim.batch_id)
    assert rec is not None and rec.unread == {f"{DAY}/c.jsonl": "gone_before_read"}
    del sizes[f"{DAY}/c.jsonl"]
    assert rec.bytes_read == sizes
    assert table_ids(rt) == {n * 10_000 + i: 1 for n in (0, 1, 3) for i in range(3_000)}
    assert not any(t.name == "lockgate-prefetch" for t in threading.enumerate())
    assert READ_AHEAD_OBJECTS == 2 and not reading
    # while a was read, b and c were read ahead (c found gone); while b was, c and d
    b, c, d = (f"{DAY}/{name}.jsonl" for name in "bcd")
    assert ahead_of == {b: [c, d], c: [d], d: []}


def test_first_of_leaves_an_error_to_the_batch_path(tmp_path: Path) -> None:
    """A ledger that cannot be read now: no prefetch; the batch path meets the error itself."""
    rt = local_runtime(tmp_path)
    LocalStore(tmp_path / "landing").put(f"{DAY}/b.jsonl", body(SMALL_OBJECT_BYTES // 100 + 2_000))
    claim = claim_keys(rt, [f"{DAY}/b.jsonl"])

    class Unreadable:
        def commit_record(self, batch_id: int) -> None:
            raise OSError("ledger unreachable")

    assert Prefetch.first_of(rt, src(rt), Unreadable(), claim) is None  # type: ignore[arg-type]
