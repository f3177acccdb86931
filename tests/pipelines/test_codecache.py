"""The generated-code cache: cached code is exactly what compiling gives (and a cached regular
expression what ``re`` compiles), a second process takes its dataclass methods, forward
references and regular expressions from the file instead of compiling them, classes and
patterns behave the same either way, and a bad, foreign or oversized cache only costs a
compile."""

from __future__ import annotations

import marshal
import re
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
    monkeypatch.setattr(codecache, "_re_checked", True)
    monkeypatch.setattr(codecache, "_warming", True)  # programs are kept as by warm()
    yield path


PATTERNS: list[tuple[str | bytes, int]] = [
    (r"(?P<day>\d{4}-\d{2}-\d{2})/(?P<rest>.*)", 0),
    (r"^[a-z_][a-z0-9_]*$", re.IGNORECASE),
    (r"(?<=\$)\d+(\.\d+)?|(?:é|ü)+", re.UNICODE | re.MULTILINE),
    (rb"\x00[\x01-\x7f]{2,}\Z", 0),
    (r"(a)(b)?(?(2)c|d)", re.VERBOSE),
]


def test_a_cached_regular_expression_is_what_re_compiles(cache_file: Path) -> None:
    for pattern, flags in PATTERNS:
        assert codecache.regex_for(pattern, flags) == codecache._RE_COMPILE(pattern, flags)
    assert codecache.save(force=True)
    codecache._cache.clear()
    codecache._cache.update(codecache._read())
    for pattern, flags in PATTERNS:
        cached = codecache.regex_for(pattern, flags)
        own = codecache._RE_COMPILE(pattern, flags)
        assert cached == own  # same pattern, flags and compiled code
        assert (cached.groups, cached.groupindex, cached.flags) == (
            own.groups,
            own.groupindex,
            own.flags,
        )
    text = "2026-11-30/x.jsonl"
    match = codecache.regex_for(*PATTERNS[0]).match(text)
    assert match is not None and match.group("day", "rest") == ("2026-11-30", "x.jsonl")
    assert codecache.stats() == (len(PATTERNS), len(PATTERNS))  # compiled once each


def test_a_program_that_is_not_what_re_compiles_turns_the_cache_off(
    cache_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Another Python's ``re`` internals, say): ``re``'s own pattern, nothing cached."""
    wrong = codecache._program("b+", 0)
    monkeypatch.setattr(codecache, "_program", lambda pattern, flags: wrong)
    got = codecache.regex_for("a+", 0)
    assert got.pattern == "a+" and got.match("aa") and not got.match("bb")
    assert not codecache._re_checked and codecache.stats() == (0, 0)
    assert codecache.regex_for("c+", 0).match("cc")  # no longer checked or cached
    assert codecache.stats() == (0, 0)


def test_a_process_that_saves_nothing_compiles_a_pattern_once(
    cache_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codecache, "_warming", False)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(codecache, "_program", lambda pattern, flags: pytest.fail("compiled"))
    assert codecache.regex_for("a+", 0).match("aa")
    assert codecache.stats() == (0, 0) and codecache._re_checked


def test_debug_patterns_are_not_cached(
    cache_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert codecache.regex_for("x", re.DEBUG).match("x")
    assert codecache.stats() == (0, 0)
    assert capsys.readouterr().out  # re printed its program, as it does without the cache


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
    program = codecache._program("a+", 0)
    entries = {
        ("re", "a+", 0): program,  # well formed: kept
        ("re", "b+", 0): program[:4],
        ("re", "c+", "0"): program,
        ("rx", "d+", 0): program,
        ("re", "e+", 0): (str(program[0]), *program[1:]),
        ("exec", "x = 1\n"): program,
    }
    cache_file.write_bytes(cache_file.read_bytes()[:0] + good[: len(codecache._HEADER)])
    cache_file.write_bytes(cache_file.read_bytes() + marshal.dumps(entries))
    assert codecache._read() == {("re", "a+", 0): program}


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
import dataclasses, json, re, sys, typing
from pathlib import Path
from lockgate.pipelines import codecache
codecache._PATH = Path(sys.argv[1])
codecache._warming = True  # kept and saved even where Python writes no bytecode, as by warm()
codecache.install()
day = re.compile(r"(?P<day>\\d{4}-\\d{2}-\\d{2})", re.ASCII).search("at 2026-11-30 and")

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
      "day": [day.group("day"), day.span()], "stats": codecache.stats()}))
"""


def run_child(cache: Path) -> dict[str, typing.Any]:
    result: dict[str, typing.Any] = python_result(CHILD, str(cache))[0]
    return result


def test_a_second_process_takes_generated_code_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "__pycache__" / "codecache.bin"
    first = run_child(cache)
    second = run_child(cache)
    used, compiled = first.pop("stats")
    assert compiled > 0 and used >= compiled
    day = ("re", r"(?P<day>\d{4}-\d{2}-\d{2})", int(re.ASCII))
    monkeypatch.setattr(codecache, "_PATH", cache)
    assert day in codecache._read()  # the pattern's program is in the file
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
            "day": ["2026-11-30", [3, 13]],
        }
    )
