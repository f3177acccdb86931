"""``Ledger.fingerprint_changes``: what changed in a source's declaration between the
fingerprint a claim was made under and the current one (local store and moto over HTTP)."""

from __future__ import annotations

import pytest

from lockgate.resources.ledger import Ledger, LedgerCorrupt
from lockgate.resources.ledger_records import Claim
from lockgate.resources.store import ObjectStore
from tests.ledger_testkit import obj

FP = {"landing": "s3://landing/src", "format": "csv", "table": "db.t"}
DAY = "2026-01-01"


def test_fingerprint_changes_follow_resets_both_ways(store: ObjectStore) -> None:
    first = Ledger.open(store, "src", FP).claim(DAY, [obj("k1")])
    assert Ledger.open(store, "src", FP).fingerprint_changes(first) == {}

    jsonl = {**FP, "format": "jsonl"}
    led = Ledger.open(store, "src", jsonl, reset=True)
    assert led.fingerprint_changes(first) == {"format": ("csv", "jsonl")}
    second = led.claim(DAY, [obj("k2")])
    assert second.fingerprint_version == 1 and led.fingerprint_changes(second) == {}

    back = Ledger.open(store, "src", FP, reset=True)  # version 2, same values as version 0
    assert back.fingerprint.version == 2
    assert back.fingerprint_changes(first) == {}
    assert back.fingerprint_changes(second) == {"format": ("jsonl", "csv")}


def test_fingerprint_changes_of_an_unknown_version_is_corruption(store: ObjectStore) -> None:
    led = Ledger.open(store, "src", FP)
    claim = led.claim(DAY, [obj("k1")])
    forged = Claim(
        claim.source, claim.batch_id, claim.partition, claim.objects, claim.created_at, 7
    )
    with pytest.raises(LedgerCorrupt, match="fingerprint version 7"):
        led.fingerprint_changes(forged)
