"""Issue 12, items 1 and 4: the world changes under a batch (DESIGN, "When the world changes
under a batch"). A version of an object counts as ingested only if it was read:

* an object re-written or deleted between its claim and the run's read is recorded by the batch
  as *changed before read* / *gone before read* (no row, no quarantine entry, 0 records),
  visible in ``status`` and ``verify``; discovery then claims the key's current version as a
  NEW object, and its rows land;
* a local file is claimable only once it has not changed for ``min_age``;
* a rebuild that cannot read a claimed object exactly as claimed refuses and changes nothing.

Local folders and the moto S3 server over HTTP; changes during a read are made by a wrapper
store around the real one (never by patching boto).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from lockgate.pipelines.batch import execute_batch
from lockgate.pipelines.commands.status import source_status
from lockgate.pipelines.ingest import ingest_source
from lockgate.pipelines.rebuild import RebuildRefused, rebuild
from lockgate.pipelines.stage import stage_claims
from lockgate.pipelines.verify import verify_source
from lockgate.resources.config import (
    DEFAULT_LOCAL_MIN_AGE_S,
    ConfigError,
    LockgateConfig,
    SourceConfig,
    load_config,
)
from lockgate.resources.ledger import CHANGED_BEFORE_READ, GONE_BEFORE_READ, Claim, Ledger
from lockgate.resources.runtime import Runtime, quarantine_table
from lockgate.resources.store import LocalStore, ObjectChanged, ObjectInfo, ObjectStore
from lockgate.sensors.discovery import discover, rule_for_source
from tests.platform_helpers import (
    Lander,
    landing_store,
    s3_config,
    source_spec,
    table_ids,
    write_config,
)

DAY = "2026-03-01"


@pytest.fixture(params=["local", "s3"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> LockgateConfig:
    """One JSONL source ``events``, on a local folder or on the moto S3 server."""
    if request.param == "s3":
        moto_server: str = request.getfixturevalue("moto_server")
        bucket: str = request.getfixturevalue("bucket")
        return s3_config(tmp_path / "lockgate.yaml", moto_server, bucket, ["events"])
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={"events": source_spec("events", str(tmp_path / "landing"))},
    )
    return load_config(str(path))


def _quarantined(rt: Runtime) -> int:
    from pyiceberg.exceptions import NoSuchTableError

    try:
        table = rt.tables.load(quarantine_table(rt.source("events")))
    except NoSuchTableError:
        return 0
    return int(table.scan().to_arrow().num_rows)


def test_object_changed_between_claim_and_read_is_not_lost(config: LockgateConfig) -> None:
    rt = Runtime.from_config(config)
    source = rt.source("events")
    lander = Lander(landing_store(config, "events"))
    key = f"{DAY}/a.jsonl"
    lander.land(key, 3)
    ledger = rt.ledger(source)
    [claim] = discover(rt.landing(source), ledger, rule_for_source(source)).claims
    time.sleep(0.01)  # a new mtime (local etag) even on coarse clocks
    new_ids = lander.land(key, 4)  # the producer re-puts the object before the run reads it

    outcome = execute_batch(rt, source, ledger, claim)
    assert (outcome.rows, outcome.quarantined) == (0, 0)
    assert outcome.unread == {key: CHANGED_BEFORE_READ}
    rec = ledger.commit_record(claim.batch_id)
    assert rec is not None and rec.unread == {key: CHANGED_BEFORE_READ}
    assert rec.record_counts == {key: 0}
    assert _quarantined(rt) == 0  # no quarantine of content that was never read

    # the next discovery claims the current version as a NEW object, and its rows land
    report = ingest_source(rt, source)
    assert report.discoveries[0].reclaimed_unread == 1
    assert not report.discoveries[0].overwritten
    assert table_ids(rt, "events") == Counter(new_ids)
    v = verify_source(rt, source)
    assert v.ok, v.violations
    assert v.not_read == [(claim.batch_id, key, CHANGED_BEFORE_READ)]
    assert v.to_json()["not_read"] == [
        {"batch_id": claim.batch_id, "key": key, "outcome": CHANGED_BEFORE_READ}
    ]
    status = source_status(rt, source)
    assert status["not_read"] == [
        {"batch_id": claim.batch_id, "key": key, "outcome": CHANGED_BEFORE_READ}
    ]
    assert status["pending_batches"] == []

    # a rebuild of the day does not expect the version that was not read
    out = rebuild(rt, source, [date.fromisoformat(DAY)])
    assert out.rows == len(new_ids)
    assert table_ids(rt, "events") == Counter(new_ids)
    assert verify_source(rt, source).ok

    # a later re-write of the version that WAS read is an overwrite: ignored, nothing twice
    lander.land(key, 2)
    again = ingest_source(rt, source)
    assert [o.key for o in again.discoveries[0].overwritten] == [key]
    assert table_ids(rt, "events") == Counter(new_ids)


def test_object_deleted_between_claim_and_read_is_recorded(config: LockgateConfig) -> None:
    rt = Runtime.from_config(config)
    source = rt.source("events")
    store = landing_store(config, "events")
    lander = Lander(store)
    gone, stays = f"{DAY}/a.jsonl", f"{DAY}/b.jsonl"
    lander.land(gone, 3)
    kept = lander.land(stays, 2)
    ledger = rt.ledger(source)
    [claim] = discover(rt.landing(source), ledger, rule_for_source(source)).claims
    store.delete(gone)

    outcome = execute_batch(rt, source, ledger, claim)
    assert (outcome.rows, outcome.quarantined) == (len(kept), 0)
    assert outcome.unread == {gone: GONE_BEFORE_READ}
    assert outcome.metadata()["gone_before_read"] == 1
    assert table_ids(rt, "events") == Counter(kept)
    assert _quarantined(rt) == 0

    # never a crash loop: later ingests have nothing to do and raise nothing
    for _ in range(2):
        report = ingest_source(rt, source)
        assert not [b for b in report.batches if not b.already_committed]
    v = verify_source(rt, source)
    assert v.ok, v.violations
    assert v.not_read == [(claim.batch_id, gone, GONE_BEFORE_READ)]
    assert source_status(rt, source)["not_read"][0]["outcome"] == GONE_BEFORE_READ

    # the key landing again is a new object (its earlier version was never read)
    back = lander.land(gone, 2)
    ingest_source(rt, source)
    assert table_ids(rt, "events") == Counter(kept + back)
    assert verify_source(rt, source).ok


def test_local_file_claimable_only_after_min_age(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={
            "events": source_spec("events", str(landing), min_age=2),
            "dflt": {**source_spec("dflt", str(tmp_path / "l2")), "min_age": None},
            "remote": {**source_spec("remote", "s3://bkt/landing"), "min_age": None},
        },
    )
    config = load_config(str(path))
    assert config.source("events").effective_min_age_s == 2.0
    assert config.source("dflt").effective_min_age_s == DEFAULT_LOCAL_MIN_AGE_S > 0
    assert config.source("remote").effective_min_age_s == 0.0  # S3 objects appear atomically
    rt = Runtime.from_config(config)
    source = rt.source("events")
    rule = rule_for_source(source)
    assert rule.min_age_s == 2.0
    store = LocalStore(landing)
    key = f"{DAY}/a.jsonl"
    store.put(key, b'{"id": 1, "v": "r1"}\n')  # still being written, as far as anyone knows
    ledger = rt.ledger(source)

    now = datetime.now(UTC)
    first = discover(store, ledger, rule, now=now)
    assert (first.claims, first.too_young) == ([], 1)
    assert ingest_source(rt, source).out_of_range == {"too_young": 1}
    assert table_ids(rt, "events") == Counter()

    # the copy goes on: appended, so its clock starts again
    mtime = (now - timedelta(seconds=10)).timestamp()
    os.utime(landing / key, (mtime, mtime))
    with open(landing / key, "ab") as f:
        f.write(b'{"id": 2, "v": "r2"}\n')
    assert discover(store, ledger, rule).too_young == 1

    # stable for min_age: claimed whole, both records land
    later = datetime.now(UTC) + timedelta(seconds=3)
    [claim] = discover(store, ledger, rule, now=later).claims
    assert claim.objects[0].size == (landing / key).stat().st_size
    # the real clock need not wait: age the file. Its mtime is part of the local etag, so the
    # claimed version is gone: recorded as not read, and the aged version is claimed as new.
    os.utime(landing / key, (mtime, mtime))
    report = ingest_source(rt, source)
    assert [b.unread for b in report.batches] == [{key: CHANGED_BEFORE_READ}, {}]
    assert table_ids(rt, "events") == Counter([1, 2])
    v = verify_source(rt, source)
    assert v.ok, v.violations
    assert v.not_read == [(claim.batch_id, key, CHANGED_BEFORE_READ)]


@pytest.mark.parametrize("bad", [-1, "soon", True, 10**6])
def test_min_age_refuses_bad_values(tmp_path: Path, bad: Any) -> None:
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={"events": source_spec("events", str(tmp_path / "l"), min_age=bad)},
    )
    with pytest.raises(ConfigError, match="min_age"):
        load_config(str(path))


class _ChangingStore(ObjectStore):
    """A landing store that re-writes (or deletes) ``target`` right when the run opens it --
    after any presence check -- and otherwise is the wrapped store."""

    def __init__(self, inner: ObjectStore, target: str, change: str):
        self.inner = inner
        self.url = inner.url
        self.target = target
        self.change = change
        self.fired = False

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix, start_after)

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def open(self, key: str, etag: str | None = None, size: int | None = None) -> BinaryIO:
        if key == self.target and etag is not None and not self.fired:
            self.fired = True
            if self.change == "delete":
                self.inner.delete(key)
            else:
                time.sleep(0.01)
                self.inner.put(key, b'{"id": 900, "v": "r900"}\n')
        return self.inner.open(key, etag, size)

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> None:
        self.inner.put_if_absent(key, data)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def uri(self, key: str = "") -> str:
        return self.inner.uri(key)

    def child(self, prefix: str) -> ObjectStore:
        return self.inner.child(prefix)


@pytest.mark.parametrize("change", ["rewrite", "delete"])
def test_rebuild_refuses_when_object_changes_during_read(
    config: LockgateConfig, change: str
) -> None:
    rt = Runtime.from_config(config)
    source = rt.source("events")
    lander = Lander(landing_store(config, "events"))
    target = f"{DAY}/a.jsonl"
    lander.land(target, 3)
    lander.land(f"{DAY}/b.jsonl", 2)
    ingest_source(rt, source)
    assert table_ids(rt, "events") == lander.landed
    version = rt.tables.current_version(source.table)

    changing = _ChangingStore(rt.landing(source), target, change)
    rt2 = Runtime(
        config=rt.config,
        open_landing=lambda _url: changing,
        ledger_store=rt.ledger_store,
        open_tables=rt.open_tables,
    )
    with pytest.raises(RebuildRefused, match=target):
        rebuild(rt2, source, [date.fromisoformat(DAY)])
    assert changing.fired  # the change happened after the presence check, during the read
    assert rt.tables.current_version(source.table) == version  # nothing changed
    assert table_ids(rt, "events") == lander.landed
    v = verify_source(rt, source)
    assert v.ok, v.violations


class _FailingStream:
    """Reads the wrapped stream, then -- after ``fail_at`` bytes -- finds the version gone."""

    def __init__(self, raw: BinaryIO, fail_at: int, on_fail: Any):
        self.raw = raw
        self.fail_at = fail_at
        self.read_so_far = 0
        self.on_fail = on_fail

    def read(self, n: int = -1) -> bytes:
        if self.read_so_far >= self.fail_at:
            self.on_fail()
            raise ObjectChanged("changed while being read")
        data = self.raw.read(n if n >= 0 else self.fail_at)
        self.read_so_far += len(data)
        return data

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> _FailingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _MidReadStore(_ChangingStore):
    """The first read of ``target`` yields rows, then the object is re-written under it."""

    def __init__(self, inner: ObjectStore, target: str, fail_at: int):
        super().__init__(inner, target, "rewrite")
        self.fail_at = fail_at

    def open(self, key: str, etag: str | None = None, size: int | None = None) -> BinaryIO:
        raw = self.inner.open(key, etag, size)
        if key != self.target or self.fired:
            return raw

        def rewrite() -> None:
            self.fired = True
            time.sleep(0.01)
            self.inner.put(key, b'{"id": 900, "v": "r900"}\n')

        return _FailingStream(raw, self.fail_at, rewrite)  # type: ignore[return-value]


def test_object_changed_part_way_through_its_read_contributes_nothing(tmp_path: Path) -> None:
    """Rows already read from a version that vanishes mid-read are not committed: the batch
    is staged again with that object recorded as changed before read."""
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={"events": source_spec("events", str(tmp_path / "landing"))},
    )
    rt = Runtime.from_config(load_config(str(path)))
    source = rt.source("events")
    store = LocalStore(tmp_path / "landing")
    big = f"{DAY}/a.jsonl"
    body = b"".join(
        json.dumps({"id": i, "v": "x" * 1000}).encode() + b"\n" for i in range(5000)
    )  # > one 4 MiB block: the first block's rows are produced before the failure
    store.put(big, body)
    Lander(store, start=10_000).land(f"{DAY}/b.jsonl", 2)
    ledger = rt.ledger(source)
    claims = discover(store, ledger, rule_for_source(source)).claims
    mid = _MidReadStore(store, big, fail_at=len(body) - 1000)
    rt2 = Runtime(
        config=rt.config,
        open_landing=lambda _url: mid,
        ledger_store=rt.ledger_store,
        open_tables=rt.open_tables,
    )
    outcomes = [execute_batch(rt2, source, ledger, c) for c in claims]
    assert mid.fired
    unread = {k: o for out in outcomes for k, o in out.unread.items()}
    assert unread == {big: CHANGED_BEFORE_READ}
    assert table_ids(rt, "events") == Counter([10_000, 10_001])
    v = verify_source(rt, source)
    assert v.ok, v.violations
    ingest_source(rt, source)  # the new version is claimed as new
    assert table_ids(rt, "events") == Counter([10_000, 10_001, 900])


def _one_claimed_object(tmp_path: Path) -> tuple[Runtime, SourceConfig, Lander, str, Claim]:
    """A local source with one object (3 records) landed and claimed, not yet run."""
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={"events": source_spec("events", str(tmp_path / "landing"))},
    )
    rt = Runtime.from_config(load_config(str(path)))
    source = rt.source("events")
    lander = Lander(LocalStore(tmp_path / "landing"))
    key = f"{DAY}/a.jsonl"
    lander.land(key, 3)
    [claim] = discover(rt.landing(source), rt.ledger(source), rule_for_source(source)).claims
    return rt, source, lander, key, claim


def _lose_commit_record(rt: Runtime, source: SourceConfig, claim: Claim) -> Ledger:
    """Simulate a crash between the table commit and the commit record; a fresh ledger."""
    rt.ledger_store.child("events").delete(f"commits/{claim.batch_id:020d}.json")
    return rt.ledger(source)


def test_repaired_commit_record_keeps_changed_before_read(tmp_path: Path) -> None:
    """A crash between the table commit and the commit record: the repaired record still says
    the object was not read, so its current version is claimed as new (not ignored)."""
    rt, source, lander, key, claim = _one_claimed_object(tmp_path)
    ledger = rt.ledger(source)
    time.sleep(0.01)
    new_ids = lander.land(key, 2)
    execute_batch(rt, source, ledger, claim)
    # simulate the crash: the table holds the batch's marker, the commit record is missing
    ledger = _lose_commit_record(rt, source, claim)
    assert ledger.commit_record(claim.batch_id) is None
    repaired = execute_batch(rt, source, ledger, claim)
    assert repaired.duplicate and repaired.unread == {key: CHANGED_BEFORE_READ}
    ingest_source(rt, source)
    assert table_ids(rt, "events") == Counter(new_ids)
    assert verify_source(rt, source).ok


def _quarantined_raw(rt: Runtime, batch_id: int) -> list[str]:
    """The ``raw`` of the quarantine entries of ``batch_id`` (none if no quarantine table)."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        table = rt.tables.load(quarantine_table(rt.source("events")))
    except NoSuchTableError:
        return []
    rows = table.scan(row_filter=f"_batch_id == {batch_id}", selected_fields=("raw",))
    return sorted(rows.to_arrow().column("raw").to_pylist())


def test_rerun_after_crash_between_quarantine_and_table_commit_drops_unread_entries(
    config: LockgateConfig,
) -> None:
    """A run reads an object (one good, one bad record), commits the batch's quarantine and
    dies before the table commit; the object is re-written before the batch is run again. The
    re-run records it as changed before read, so the crashed run's quarantine entry of that
    version is deleted: no record of a version that was not read counts, and the key's new
    version is claimed and ingested whole."""
    rt = Runtime.from_config(config)
    source = rt.source("events")
    store = landing_store(config, "events")
    key, other = f"{DAY}/a.jsonl", f"{DAY}/b.jsonl"
    store.put(key, b'{"id": 1, "v": "r1"}\n{"id": 2, "v"\n')
    store.put(other, b'{"id": 3, "v": "r3"}\n{"id": 4, "v"\n')
    ledger = rt.ledger(source)
    [claim] = discover(rt.landing(source), ledger, rule_for_source(source)).claims
    # the crashed run: staged, quarantine committed (execute_batch's first commit), killed at
    # commit.quarantine_committed -- no table commit, no commit record
    staged = stage_claims(rt, source, [claim])
    assert staged.quarantine_files and not staged.unread
    q_ident = quarantine_table(source)
    rt.tables.commit_batch(q_ident, source.name, claim.batch_id, staged.quarantine_files)
    assert _quarantined_raw(rt, claim.batch_id) == ['{"id": 2, "v"', '{"id": 4, "v"']
    time.sleep(0.01)  # a new mtime (local etag) even on coarse clocks
    store.put(key, b'{"id": 5, "v": "r5"}\n{"id": 6, "v"\n')

    outcome = execute_batch(rt, source, ledger, claim)
    assert outcome.unread == {key: CHANGED_BEFORE_READ}
    assert (outcome.rows, outcome.quarantined) == (1, 1)
    assert table_ids(rt, "events") == Counter([3])
    # the entry of the version that was not read is gone; the other object's stays
    assert _quarantined_raw(rt, claim.batch_id) == ['{"id": 4, "v"']
    assert rt.tables.delete_batch_objects(q_ident, source.name, claim.batch_id, [key]) is None
    v = verify_source(rt, source)
    assert v.ok, v.violations
    assert v.not_read == [(claim.batch_id, key, CHANGED_BEFORE_READ)]

    # the new version is a new object: its good record lands, its bad one is quarantined
    report = ingest_source(rt, source)
    assert report.discoveries[0].reclaimed_unread == 1
    assert table_ids(rt, "events") == Counter([3, 5])
    assert _quarantined(rt) == 2
    v = verify_source(rt, source)
    assert v.ok, v.violations


@pytest.mark.parametrize("change", ["append", "truncate"])
def test_local_file_changed_in_place_while_read_is_not_mixed(tmp_path: Path, change: str) -> None:
    """A local file can change in place under an open handle: the pinned stream never hands
    out more than the claimed version's bytes and raises ObjectChanged at its end."""
    store = LocalStore(tmp_path)
    store.put("a.jsonl", b"x" * 100_000)
    etag = store.head("a.jsonl").etag
    with store.open("a.jsonl", etag) as f:
        first = f.read(10)
        with open(tmp_path / "a.jsonl", "r+b") as w:
            if change == "append":
                w.seek(0, os.SEEK_END)
                w.write(b"more")
            else:
                w.truncate(50_000)
        with pytest.raises(ObjectChanged):
            while f.read(65536):
                pass
    assert first == b"x" * 10
    with store.open("a.jsonl", store.head("a.jsonl").etag) as f:  # the current version reads
        assert len(f.read()) == (100_004 if change == "append" else 50_000)


def test_repaired_commit_record_with_an_object_replaced_by_a_link(tmp_path: Path) -> None:
    """Found by the torture harness: a crash before the commit record, then the claimed file
    is replaced by a symbolic link. The repair must record it as changed before read (a link
    is not the object), not fail every later ingest with ``NotRegularFile``."""
    rt, source, _lander, key, claim = _one_claimed_object(tmp_path)
    ledger = rt.ledger(source)
    link = tmp_path / "landing" / key
    outside = tmp_path / "outside.jsonl"
    link.rename(outside)
    link.symlink_to(outside)
    execute_batch(rt, source, ledger, claim)
    ledger = _lose_commit_record(rt, source, claim)
    repaired = execute_batch(rt, source, ledger, claim)
    assert repaired.duplicate and repaired.unread == {key: CHANGED_BEFORE_READ}
    ingest_source(rt, source)  # the link is never claimed nor read: no error, no rows
    assert table_ids(rt, "events") == Counter()
    assert verify_source(rt, source).ok
