"""Rebuild accounting and conflicts (issue 19, items 2 and 3): a rebuild leaves a rebuild record
that ``verify`` and ``verify --deep`` honour, and only a batch of a rebuilt day makes it re-plan.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from lockgate.pipelines.batch import execute_batch
from lockgate.pipelines.commands.status import source_status
from lockgate.pipelines.rebuild import rebuild
from lockgate.pipelines.verify import verify_source
from lockgate.pipelines.verify_deep import verify_deep
from lockgate.resources.config import load_config
from lockgate.resources.ledger import GONE_BEFORE_READ
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import LocalStore
from tests.pipelines.helpers import (
    DAY,
    SOURCE,
    claim_keys,
    lander,
    local_runtime,
    src,
    table_ids,
)
from tests.platform_helpers import Lander, source_spec, write_config

D = date.fromisoformat(DAY)
OTHER = "2026-01-06"


def test_restored_object_and_rebuilt_day_leave_verify_green(tmp_path: Path) -> None:
    """An object gone before its batch read it, then restored (the same version: same inode
    and mtime, so the same etag), then its day rebuilt: its rows are back, and ``verify`` and
    ``verify --deep`` are green because the rebuild record supersedes the commit record."""
    rt, land = local_runtime(tmp_path), lander(tmp_path)
    kept = land.land(f"{DAY}/a.jsonl", 2)
    lost = land.land(f"{DAY}/b.jsonl", 3)
    claim = claim_keys(rt, [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl"])
    landing = tmp_path / "landing" / DAY
    os.rename(landing / "b.jsonl", tmp_path / "b.jsonl.away")  # gone before the run reads it
    out = execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)
    assert out.unread == {f"{DAY}/b.jsonl": GONE_BEFORE_READ} and out.rows == 2
    first = verify_source(rt, src(rt))
    assert first.ok and first.not_read == [(0, f"{DAY}/b.jsonl", GONE_BEFORE_READ)]
    assert [n["key"] for n in source_status(rt, src(rt))["not_read"]] == [f"{DAY}/b.jsonl"]

    os.rename(tmp_path / "b.jsonl.away", landing / "b.jsonl")  # restored: the claimed version
    result = rebuild(rt, src(rt), [D])
    assert result.rows == 5 and result.batches == [0]
    assert table_ids(rt) == {i: 1 for i in kept + lost}

    ledger = rt.ledger(src(rt))
    [record] = ledger.rebuild_records()
    assert record.table_version == result.table_version and record.days == (DAY,)
    account = ledger.account(0)
    assert account is not None and not account.unread
    assert dict(account.record_counts or {}) == {f"{DAY}/a.jsonl": 2, f"{DAY}/b.jsonl": 3}
    # the batch's own commit record is untouched (create-only): it still says "not read"
    commit = ledger.commit_record(0)
    assert commit is not None and commit.unread == {f"{DAY}/b.jsonl": GONE_BEFORE_READ}
    # the rebuild read that version: it is ingested now (discovery must not take it as unread)
    ledger.claim_state()
    assert ledger.was_read(f"{DAY}/b.jsonl", claim.objects[1].etag) is True

    report = verify_source(rt, src(rt))
    assert report.ok, report.violations
    assert report.rows == 5 and report.not_read == []
    assert source_status(rt, src(rt))["not_read"] == []  # status agrees with verify
    deep = verify_deep(rt, src(rt))
    assert deep.ok, deep.violations
    assert (deep.checked, deep.records, deep.not_read) == (2, 5, 0)


def test_object_not_restored_stays_not_read_after_a_rebuild(tmp_path: Path) -> None:
    """A rebuild of a day whose not-read object is still gone skips it, records it as not read
    again, and ``verify`` / ``verify --deep`` stay green."""
    rt, land = local_runtime(tmp_path), lander(tmp_path)
    kept = land.land(f"{DAY}/a.jsonl", 2)
    land.land(f"{DAY}/b.jsonl", 3)
    claim = claim_keys(rt, [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl"])
    (tmp_path / "landing" / DAY / "b.jsonl").unlink()
    execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)
    result = rebuild(rt, src(rt), [D])
    assert result.rows == 2 and table_ids(rt) == {i: 1 for i in kept}
    account = rt.ledger(src(rt)).account(0)
    assert account is not None and account.unread == {f"{DAY}/b.jsonl": GONE_BEFORE_READ}
    assert verify_source(rt, src(rt)).ok
    deep = verify_deep(rt, src(rt))
    assert deep.ok and deep.not_read == 1 and deep.checked == 1


def test_rebuild_converges_while_batches_keep_committing_on_another_day(tmp_path: Path) -> None:
    """A slow rebuild of day A while a batch of day B commits at every attempt: no re-plan,
    B's rows survive the overwrite of A, and its marker id stays."""
    rt, land = local_runtime(tmp_path), lander(tmp_path)
    ids = land.land(f"{DAY}/a.jsonl", 3)
    execute_batch(rt, src(rt), rt.ledger(src(rt)), claim_keys(rt, [f"{DAY}/a.jsonl"]))
    on_b: list[int] = []

    def ingest_continues(msg: str) -> None:
        # after each plan (base and claims read), a batch of day B commits
        if msg.startswith("attempt"):
            n = len(on_b)
            on_b.extend(land.land(f"{OTHER}/b{n}.jsonl", 2))
            claim = claim_keys(rt, [f"{OTHER}/b{n}.jsonl"], OTHER)
            execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)

    out = rebuild(rt, src(rt), [D], progress=ingest_continues)
    assert out.attempts == 1 and out.batches == [0] and out.rows == 3
    assert len(on_b) == 2 and table_ids(rt) == {i: 1 for i in ids + on_b}
    assert set(rt.tables.committed(src(rt).table, src(rt).name)) == {0, 1}
    assert verify_source(rt, src(rt)).ok


def test_batch_of_the_rebuilt_day_forces_exactly_one_replan(tmp_path: Path) -> None:
    """Batches of day B at every attempt and one batch of day A during the first attempt: the
    rebuild re-plans once (for A's batch only) and then commits, reading A's new batch."""
    rt, land = local_runtime(tmp_path), lander(tmp_path)
    ids = land.land(f"{DAY}/a.jsonl", 3)
    execute_batch(rt, src(rt), rt.ledger(src(rt)), claim_keys(rt, [f"{DAY}/a.jsonl"]))
    late: list[int] = []
    seen: list[str] = []

    def meanwhile(msg: str) -> None:
        seen.append(msg)
        if not msg.startswith("attempt"):
            return
        n = len(late)
        late.extend(land.land(f"{OTHER}/b{n}.jsonl", 1))
        execute_batch(
            rt,
            src(rt),
            rt.ledger(src(rt)),
            claim_keys(rt, [f"{OTHER}/b{n}.jsonl"], OTHER),
        )
        if msg.startswith("attempt 1:"):
            late.extend(land.land(f"{DAY}/late.jsonl", 2))
            claim = claim_keys(rt, [f"{DAY}/late.jsonl"])
            execute_batch(rt, src(rt), rt.ledger(src(rt)), claim)

    out = rebuild(rt, src(rt), [D], progress=meanwhile)
    assert out.attempts == 2 and out.rows == 5
    conflicts = [m for m in seen if m.startswith("conflict")]
    assert len(conflicts) == 1 and "batches 2 of ev" in conflicts[0]
    assert table_ids(rt) == {i: 1 for i in ids + late}
    assert verify_source(rt, src(rt)).ok


def test_rebuild_record_counts_two_versions_of_one_key_per_batch(tmp_path: Path) -> None:
    """A source moved to a new landing with ``allow_overwrites``: two batches of a day hold one
    relative key, one in each landing. The rebuild reads each in its own landing and its record
    accounts each version to its own batch; ``verify`` stays green."""
    rt, land = local_runtime(tmp_path, allow_overwrites=True), lander(tmp_path)
    key = f"{DAY}/a.jsonl"
    first = land.land(key, 3)
    execute_batch(rt, src(rt), rt.ledger(src(rt)), claim_keys(rt, [key]))
    spec = source_spec(SOURCE, str(tmp_path / "moved"), allow_overwrites=True)
    path = write_config(
        tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources={SOURCE: spec}
    )
    rt = Runtime.from_config(load_config(str(path)))
    rt.ledger(src(rt), reset=True)  # the move is accepted
    second = Lander(LocalStore(tmp_path / "moved"), start=100).land(key, 4)
    execute_batch(rt, src(rt), rt.ledger(src(rt)), claim_keys(rt, [key]))
    out = rebuild(rt, src(rt), [D])
    assert out.rows == 7 and table_ids(rt) == {i: 1 for i in first + second}
    ledger = rt.ledger(src(rt))
    accounts = [ledger.account(b) for b in (0, 1)]
    counts = [dict(a.record_counts or {}) for a in accounts if a is not None]
    assert counts == [{key: 3}, {key: 4}]
    report = verify_source(rt, src(rt))
    assert report.ok, report.violations
