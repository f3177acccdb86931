"""The generated-code cache: cached code is exactly what compiling gives, a second process takes
its dataclass methods and forward references from the file instead of compiling them, classes
behave the same either way, and a bad, foreign or oversized cache only costs a compile."""

from __future__ import annotations

import marshal
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockgate.pipelines import codecache
from tests.platform_helpers import python_result

SOURCE = "def __create_fn__(x):\n def __init__(self, a: x = 1):\n  self.a = a\n return __init__\n"


@pytest.fixture
def cache_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The cache in ``tmp_path``, empty, with this process's records cleared."""
    path = tmp_path / "__pycache__" / "codecache.bin"
    monkeypatch.setattr(codecache, "_PATH", path)
    monkeypatch.setattr(codecache, "_cache", {})
    monkeypatch.setattr(codecache, "_used", {})
    monkeypatch.setattr(codecache, "_compiled", 0)
    yield path


def test_cached_code_is_what_compile_gives(cache_file: Path) -> None:
    compiled = compile(SOURCE, "<string>", "exec", dont_inherit=True)
    first = codecache.code_for(SOURCE, "exec")
    assert marshal.dumps(first) == marshal.dumps(compiled)
    assert codecache.save(force=True)
    codecache._cache.clear()
    codecache._cache.update(codecache._read())
    again = codecache.code_for(SOURCE, "exec")
    assert marshal.dumps(again) == marshal.dumps(compiled)
    assert codecache.stats() == (1, 1)  # compiled once, then read from the file


def test_a_bad_or_foreign_file_is_ignored(cache_file: Path) -> None:
    codecache.code_for(SOURCE, "exec")
    assert codecache.save(force=True)
    assert codecache._read()
    good = cache_file.read_bytes()
    for bad in (b"", b"garbage", b"\x00" * 4 + good[4:], good[: len(good) // 2]):
        cache_file.write_bytes(bad)
        assert codecache._read() == {}, bad[:8]


def test_save_follows_python_bytecode_rules_unless_forced(
    cache_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not codecache.save()  # nothing compiled: nothing to write
    codecache.code_for(SOURCE, "exec")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert not codecache.save() and not cache_file.exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert codecache.save() and cache_file.exists()


def test_an_oversized_cache_restarts_from_this_process(
    cache_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codecache.code_for("x = 1\n", "exec")
    assert codecache.save(force=True)
    codecache._used.clear()
    codecache.code_for(SOURCE, "exec")
    monkeypatch.setattr(codecache, "MAX_TEXT_BYTES", len(SOURCE) + 1)
    assert codecache.save(force=True)
    assert set(codecache._read()) == {("exec", SOURCE)}


def test_forward_references_keep_their_errors(cache_file: Path) -> None:
    codecache.install()  # idempotent; stays installed for this process, as in the CLI
    ref = typing.ForwardRef("dict[str, int] | None")
    assert eval(ref.__forward_code__) == (dict[str, int] | None)
    assert ("eval", "dict[str, int] | None") in codecache._used
    with pytest.raises(SyntaxError, match="Forward reference must be an expression"):
        typing.ForwardRef("not an expression!")


CHILD = """
import dataclasses, json, sys, typing
from pathlib import Path
from lockgate.pipelines import codecache
codecache._PATH = Path(sys.argv[1])
codecache.install()

@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: "typing.Optional[int]" = None

p = Point(1)
try:
    p.x = 2
    frozen = False
except dataclasses.FrozenInstanceError:
    frozen = True
hints = typing.get_type_hints(Point)
codecache.save(force=True)
print("RESULT", json.dumps({"repr": repr(p), "eq": p == Point(1, None),
      "hash": hash(p) == hash(Point(1)), "frozen": frozen, "hint": str(hints["y"]),
      "stats": codecache.stats()}))
"""


def run_child(cache: Path) -> dict[str, typing.Any]:
    result: dict[str, typing.Any] = python_result(CHILD, str(cache))[0]
    return result


def test_a_second_process_takes_generated_code_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "__pycache__" / "codecache.bin"
    first = run_child(cache)
    second = run_child(cache)
    used, compiled = first.pop("stats")
    assert compiled > 0 and used >= compiled
    assert second.pop("stats") == [used, 0]  # everything from the file, nothing compiled
    assert (
        first
        == second
        == {
            "repr": "Point(x=1, y=None)",
            "eq": True,
            "hash": True,
            "frozen": True,
            "hint": "typing.Optional[int]",
        }
    )
