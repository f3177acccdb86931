"""Input made to hurt (issue 12, items 6-10): each test is named after its item and reproduces
it; readers run in a child process where the failure was a crash."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pytest

from lockgate.pipelines.formats import FormatOptions, read_object
from lockgate.resources.ledger import Ledger
from lockgate.resources.store import SKIPPED_LINK, LocalStore, NotRegularFile
from lockgate.sensors.discovery import SKIPPED_NOT_UTF8, DiscoveryRule, discover
from tests.reader_child import run_reader

TODAY = date(2026, 3, 10)

DEPTH = 100_000


def test_deep_nesting_is_quarantined_not_crash(tmp_path: Path) -> None:
    deep_object = b'{"a": ' * DEPTH + b"1" + b"}" * DEPTH
    deep_array = b'{"id": 9, "name": ' + b"[" * DEPTH + b"]" * DEPTH + b"}"
    brackets_in_text = json.dumps({"id": 3, "name": "[" * 500 + "{" * 500}).encode()
    lines = [
        deep_object,  # first in the object: pyarrow's reader crashed on it (SIGSEGV)
        b'{"id": 1, "name": "a"}',
        deep_array,
        brackets_in_text,  # brackets inside strings are not nesting: a row
        b'{"id": 4, "nest": ' + b'{"b": ' * 64 + b"1" + b"}" * 64 + b"}",  # 65 deep
        b'{"id": 5, "nest": ' + b'{"b": ' * 62 + b"1" + b"}" * 62 + b"}",  # 63 deep: a row
    ]
    (tmp_path / "deep.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    for schema in (None, [("id", "int64"), ("name", "string")]):
        result = run_reader(tmp_path, "jsonl", ["deep.jsonl"], schema=schema, timeout=120)
        assert result.returncode == 0, result.stderr
        (obj,) = result.objects
        assert obj["rows"] == 3
        assert obj["quarantined"] == 3
        assert obj["indices_ok"]
        assert not obj["unreadable"]
        assert all("nested deeper than max_nesting_depth (64)" in r for r in obj["reasons"])


def _ledger(root: Path) -> Ledger:
    spec = {"landing": "x", "format": "jsonl", "table": "db.t"}
    return Ledger.open(LocalStore(root / "ledger"), "src", spec)


def test_non_utf8_name_does_not_block_discovery(tmp_path: Path) -> None:
    day = tmp_path / "landing" / "2026-03-01"
    day.mkdir(parents=True)
    for name in [b"a.jsonl", b"b\xff\xfe.jsonl", b"c.jsonl", b"d\xe9.jsonl"]:
        with open(os.fsencode(day) + b"/" + name, "wb") as f:
            f.write(b'{"id": 1}\n')
    ledger = _ledger(tmp_path)
    landing = LocalStore(tmp_path / "landing")
    result = discover(landing, ledger, DiscoveryRule(), full_listing=True, today=TODAY)
    assert [o.key for c in result.claims for o in c.objects] == [
        "2026-03-01/a.jsonl",
        "2026-03-01/c.jsonl",
    ]
    assert result.skipped_unsafe == {SKIPPED_NOT_UTF8: 2}
    assert all(e.isascii() for e in result.skipped_examples)
    assert len(result.skipped_examples) == 2
    # the next tick is not blocked either, and claims nothing twice
    again = discover(landing, ledger, DiscoveryRule(), full_listing=True, today=TODAY)
    assert again.claims == []
    assert again.skipped_unsafe == {SKIPPED_NOT_UTF8: 2}
    assert again.skipped_claimed == 2


def test_symlink_outside_landing_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.jsonl"
    secret.parent.mkdir()
    secret.write_bytes(b'{"id": 666, "name": "secret"}\n')
    day = tmp_path / "landing" / "2026-03-01"
    day.mkdir(parents=True)
    (day / "good.jsonl").write_bytes(b'{"id": 1}\n')
    (day / "link.jsonl").symlink_to(secret)
    (day / "linked_dir").symlink_to(secret.parent, target_is_directory=True)
    landing = LocalStore(tmp_path / "landing")
    result = discover(landing, _ledger(tmp_path), DiscoveryRule(), full_listing=True, today=TODAY)
    assert [o.key for c in result.claims for o in c.objects] == ["2026-03-01/good.jsonl"]
    assert result.skipped_unsafe == {SKIPPED_LINK: 2}
    # reading refuses it, whatever path reaches it: quarantined whole, none of its lines copied
    for key in ("2026-03-01/link.jsonl", "2026-03-01/linked_dir/secret.jsonl"):
        with pytest.raises(NotRegularFile):
            landing.open(key)
        with pytest.raises(NotRegularFile):
            landing.head(key)
        chunks = list(read_object(landing, key, "any-etag", FormatOptions("jsonl"), None))
        assert sum(c.batch.num_rows for c in chunks) == 0
        (entry,) = [q for c in chunks for q in c.quarantined]
        assert entry.record_index is None
        assert "symbolic link" in entry.reason
        assert "secret" not in entry.raw
