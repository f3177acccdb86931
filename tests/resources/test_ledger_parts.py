"""The ledger's parts on their own (compaction, index, fingerprint) and its on-disk layout, byte
for byte: the facade split must never change a file a deployed ledger holds."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lockgate.resources import fingerprint as fingerprints
from lockgate.resources import ledger as ledger_mod
from lockgate.resources import ledger_compaction
from lockgate.resources.ledger import ClaimedObject, CommitRecord, Ledger
from lockgate.resources.ledger_compaction import Compaction
from lockgate.resources.ledger_index import ClaimIndex
from lockgate.resources.ledger_records import Claim, FingerprintMismatch, LedgerCorrupt
from lockgate.resources.store import LocalStore

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LM = datetime(2026, 1, 1, tzinfo=UTC)

# sha256[:16] of every file of the ledger ``test_layout_is_byte_stable`` writes, as written by
# the Ledger before it was split into log, compaction, index and fingerprint modules.
LAYOUT = {
    "src/_source.json": "c33eaad8ae24cd44",
    "src/commits/00000000000000000000.json": "1e08af81d26885a9",
    "src/commits/00000000000000000002.json": "1c9396d00a4afd7f",
    "src/compact/00000000000000000003.json": "7a730879f8c8d5f5",
    "src/fingerprints/000001.json": "095dda262253fc12",
    "src/offsets/00000000000000000000.json": "f5aea6125e24d909",
    "src/offsets/00000000000000000001.json": "8a7869d1ad467c85",
    "src/offsets/00000000000000000002.json": "26ac3a4c45e98645",
    "src/offsets/00000000000000000003.json": "b9797431105ca8a0",
    "src/offsets/00000000000000000004.json": "8ab95ab8510b40c2",
    "src/segments/00000000000000000000-00000000000000000001.json": "26c08eda069c4f5a",
    "src/segments/00000000000000000002-00000000000000000003.json": "186be4433ada84e2",
}


def test_layout_is_byte_stable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in (ledger_mod, ledger_compaction, fingerprints):
        monkeypatch.setattr(mod, "utcnow", lambda: WHEN)
    store = LocalStore(tmp_path)
    led = Ledger.open(store, "src", {"landing": "x"}, compact_interval=2)
    for i in range(5):
        led.claim(f"2026-01-0{1 + i % 2}", [ClaimedObject(f"k{i}", f"e{i}", i, LM)])
    for i in (0, 2):
        led.record_commit(CommitRecord(i, 1, 2, 3, 0, 4, 1, committed_at=LM))
    assert led.maybe_compact() == 3
    Ledger.open(store, "src", {"landing": "y"}, reset=True, compact_interval=2)
    found = {
        str(p.relative_to(tmp_path)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(tmp_path.rglob("*"))
        if p.is_file()
    }
    assert found == LAYOUT


def claims(n: int, start: int = 0) -> list[Claim]:
    return [
        Claim("src", b, f"2026-01-0{1 + b % 3}", (ClaimedObject(f"k{b:03d}", "e", 1, LM),), WHEN)
        for b in range(start, start + n)
    ]


def test_compaction_cuts_segments_at_interval_and_reuses_identical_ones(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    comp = Compaction(store, "src", interval=4)
    assert comp.due(3) == -1 and comp.due(9) == 7
    cs = claims(10)
    comp.compact(None, 9, lambda ids: [cs[i] for i in ids], lambda b: b % 2 == 0)
    m = comp.latest()
    assert m is not None and m.upto == 9
    assert [(s.first, s.upto) for s in m.segments] == [(0, 3), (4, 7), (8, 9)]
    assert m.uncommitted == (1, 3, 5, 7, 9) and m.committed_below == 1
    assert m.high_water_key == "k009"
    assert comp.latest(m) is None  # nothing newer
    # a crashed compaction's segment is reused when identical, refused when not
    assert comp.write_segment(cs[0:4]) == m.segments[0]
    changed = [Claim("src", 0, "2026-01-01", (ClaimedObject("zz", "e", 1, LM),), WHEN), *cs[1:4]]
    with pytest.raises(LedgerCorrupt, match="differs"):
        comp.write_segment(changed)
    with pytest.raises(ValueError):
        Compaction(store, "src", interval=0)


def test_index_from_claims_and_segments(tmp_path: Path) -> None:
    comp = Compaction(LocalStore(tmp_path), "src", interval=4)
    cs = claims(6)
    ref = comp.write_segment(cs[0:4])
    index = ClaimIndex()
    assert not index.has_segment(ref)
    index.add_segment(ref, comp.read_segment(ref), "src/seg")
    index.add_claim(cs[4])
    assert index.has_segment(ref)
    assert index.batch_of("k002", "e") == 2 and index.batch_of("k002", "other") is None
    assert index.batch_of("k004", "e") == 4 and index.high_water == "k004"
    assert index.segment_days[ref.file][1] == (1, "2026-01-02")
    assert index.nth_highest_key(1) == "k004" and index.nth_highest_key(6) is None
    state = index.view(next_batch_id=5, complete_from="k003")
    assert list(state.window("k003")) == [("k003", frozenset({"e"})), ("k004", frozenset({"e"}))]
    with pytest.raises(ValueError):
        state.is_claimed("k000", "e")  # outside the complete window: never a guess
    with pytest.raises(LedgerCorrupt, match="malformed segment"):
        ClaimIndex().add_segment(ref, {"keys": [["k", "e"]]}, "src/seg")


def test_fingerprint_settle_refuses_changes_unless_reset(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert fingerprints.read_fingerprint(store, "src") is None
    fp0 = fingerprints.settle(store, "src", {"a": "1"}, False, lambda _fp: 0)
    assert fp0.version == 0 and fingerprints.read_fingerprint(store, "src") == fp0
    with pytest.raises(FingerprintMismatch) as e:
        fingerprints.settle(store, "src", {"a": "2"}, False, lambda _fp: 7)
    assert e.value.changes == {"a": ("1", "2")}
    fp1 = fingerprints.settle(store, "src", {"a": "2"}, True, lambda _fp: 7)
    assert (fp1.version, fp1.from_batch, dict(fp1.values)) == (1, 7, {"a": "2"})
    assert fingerprints.settle(store, "src", {"a": "2"}, True, lambda _fp: 9) == fp1  # no-op
    assert fingerprints.changes({"a": "1", "b": "x"}, {"a": "1"}) == {"b": ("x", None)}
