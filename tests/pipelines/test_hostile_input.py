"""Input made to hurt (issue 12, items 6-10): each test is named after its item and reproduces
it; readers run in a child process where the failure was a crash."""

from __future__ import annotations

import json
from pathlib import Path

from tests.reader_child import run_reader

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
