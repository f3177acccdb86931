"""The ledger's logs (resources/ledger_log.py): create-only add, read-back on 412, strict get."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lockgate.resources.ledger_log import ClaimLog, CommitLog
from lockgate.resources.ledger_records import Claim, ClaimedObject, CommitRecord, LedgerCorrupt
from lockgate.resources.store import LocalStore

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def claim(batch: int, key: str = "a.csv", source: str = "src") -> Claim:
    return Claim(source, batch, "2026-01-02", (ClaimedObject(key, "e1", 10, WHEN),), WHEN)


def test_claim_add_is_create_only_and_reads_back_its_own_put(tmp_path: Path) -> None:
    log = ClaimLog(LocalStore(tmp_path), "src")
    assert log.get(0) is None
    assert log.add(claim(0)) is True
    assert log.get(0) == claim(0)
    # a lost response: the retry meets 412, reads back the same bytes, and it was ours
    assert log.add(claim(0)) is True
    # another planner's claim holds the id: not ours, and the stored claim is unchanged
    assert log.add(claim(0, key="b.csv")) is False
    assert log.get(0) == claim(0)
    assert (tmp_path / "offsets" / f"{0:020d}.json").is_file()


def test_claim_get_refuses_a_claim_of_another_batch_or_source(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("offsets/" + f"{1:020d}.json", b"not json")
    log = ClaimLog(store, "src")
    with pytest.raises(LedgerCorrupt):
        log.get(1)  # not JSON
    other = ClaimLog(store, "other")
    assert other.add(claim(2, source="other"))
    with pytest.raises(LedgerCorrupt, match="holds batch 2 of other"):
        ClaimLog(store, "src").get(2)
    with pytest.raises(ValueError):
        log.add(claim(3, source="other"))


def test_commit_add_never_overwrites(tmp_path: Path) -> None:
    log = CommitLog(LocalStore(tmp_path), "src")
    first = CommitRecord(4, 11, 2, rows=5, quarantined=1, bytes=9, objects=1, committed_at=WHEN)
    second = CommitRecord(4, 12, 3, rows=7, quarantined=0, bytes=9, objects=1, committed_at=WHEN)
    assert not log.exists(4)
    assert log.add(first) is first
    assert log.exists(4)
    assert log.add(second) == first  # the record that was there first, unchanged
    assert log.get(4) == first
    assert log.get(5) is None
