"""Code that Python generates while modules load, compiled once and then cached on disk.

On Python 3.11 a ``@dataclass`` compiles each generated method (``__init__``, ``__repr__``,
``__eq__``, ``__setattr__``, ...) from source text with ``exec``, and ``typing.ForwardRef``
compiles every string annotation (pydantic resolves hundreds). A ``lockgate ingest`` process
creates ~150 dataclasses (pyiceberg, pydantic, Lockgate's own) and ~1,000 forward references:
~0.15-0.2 s of CPU per process (measured: ~1.1 ms per frozen dataclass), most of it on one core
before the first object is read. Modules also compile ~100 regular expressions as they load
(yaml, pydantic, pyiceberg, Lockgate): ~30 ms, ~22 of them before the first read. Unlike
module bytecode, Python caches none of it.

Contract:

* ``install()`` routes those two compilers (``dataclasses``' ``exec`` and ``typing``'s
  ``compile``) through ``code_for``: source text compiled before (by any process, on the same
  interpreter) is taken from the cache, other text is compiled as Python would. Cached code is
  what compiling the same text gives: the key is the exact text and mode, the compile is
  ``compile(text, "<string>", mode, dont_inherit=True)`` (neither module uses a ``__future__``
  import, so nothing is inherited either way), and the file is per interpreter version,
  bytecode magic and optimisation level. A stale entry is therefore never wrong, only unused.
* ``install()`` also routes ``re``'s compiler (``re._compiler.compile``, called for patterns
  not in ``re``'s own in-process cache) through ``regex_for``: the program ``re`` compiles for
  a pattern and its flags (the arguments of ``_sre.compile``) is cached the same way. A
  program is kept only after the pattern built from it equals the one ``re`` builds
  (``Pattern.__eq__`` compares pattern, flags and compiled code); if it ever differs (another
  Python's ``re`` internals), regular expressions are no longer cached in that process. That
  check compiles a pattern twice, so a process that will not save (see ``save``) compiles a
  pattern the cache lacks once, as ``re`` would, and keeps nothing. ``re.DEBUG`` patterns are
  never cached.
* The cache file sits beside this module's bytecode (``__pycache__``), with the trust of a
  ``.pyc``. A missing, unreadable, foreign or corrupt file is ignored: everything compiles.
* ``save()`` writes the texts this process compiled or took, added to those already cached
  (all of them dropped when the total would exceed ``MAX_TEXT_BYTES``), atomically (a
  temporary file, then ``os.replace``). Like bytecode, nothing is written when Python does not
  write bytecode (``PYTHONDONTWRITEBYTECODE``, ``-B``) unless asked for: ``python -m
  lockgate.pipelines.codecache`` loads the modules of every ``lockgate`` command and writes
  the cache (``make`` runs it beside ``compileall``). A failed write is ignored.
"""

from __future__ import annotations

import _sre
import builtins
import importlib.util
import marshal
import os
import re
import sys
import threading
from pathlib import Path
from re import _compiler as _re_compiler  # type: ignore[attr-defined]
from types import CodeType
from typing import Any

#: The cached texts' total size above which the file restarts from this process's texts.
MAX_TEXT_BYTES = 8 * 1024 * 1024

_HEADER = importlib.util.MAGIC_NUMBER + bytes([sys.flags.optimize])
_PATH = Path(__file__).with_name("__pycache__") / f"codecache.{sys.implementation.cache_tag}.bin"

#: What ``_sre.compile`` takes after the pattern: flags, code, groups, groupindex, indexgroup.
Program = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...]]
#: ``(mode, text)`` -> code; ``("re", pattern, flags)`` -> its regular expression's program.
Key = tuple[str, str] | tuple[str, str | bytes, int]

_cache: dict[Key, CodeType | Program] = {}
_used: dict[Key, CodeType | Program] = {}
_compiled = 0
_lock = threading.Lock()
_installed = False
_RE_COMPILE: Any = _re_compiler.compile  # re's own compiler (install() routes it here)
_re_checked = True  # False once a cached program was not what re compiles
_warming = False  # warm() runs: what compiles is saved even without bytecode writing


def code_for(text: str, mode: str) -> CodeType:
    """``text`` compiled in ``mode`` ("exec"/"eval"), as ``compile(text, "<string>", mode,
    dont_inherit=True)`` returns it: from the cache when it holds the text."""
    global _compiled
    key = (mode, text)
    code = _cache.get(key)
    if not isinstance(code, CodeType):
        code = builtins.compile(text, "<string>", mode, dont_inherit=True)
        _compiled += 1
        _cache[key] = code
    _used[key] = code
    return code


def _program(pattern: str | bytes, flags: int) -> Program:
    """The arguments ``re._compiler.compile`` passes to ``_sre.compile`` for ``pattern``."""
    from re import _parser  # type: ignore[attr-defined]

    parsed = _parser.parse(pattern, flags)
    code = _re_compiler._code(parsed, flags)
    groupindex = dict(parsed.state.groupdict)
    indexgroup: list[str | None] = [None] * parsed.state.groups
    for name, i in groupindex.items():
        indexgroup[i] = name
    return (
        int(flags | parsed.state.flags),
        [int(op) for op in code],  # opcodes are int subclasses (marshal takes ints)
        parsed.state.groups - 1,
        groupindex,
        tuple(indexgroup),
    )


def regex_for(pattern: Any, flags: int = 0) -> Any:
    """``re._compiler.compile(pattern, flags)``: the compiled pattern, its program from the
    cache when it holds it (see the module contract)."""
    global _compiled, _re_checked
    if not _re_checked or type(pattern) not in (str, bytes) or flags & re.DEBUG:
        return _RE_COMPILE(pattern, flags)
    key = ("re", pattern, int(flags))
    cached = _cache.get(key)
    if isinstance(cached, tuple):
        _used[key] = cached
        return _sre.compile(pattern, *cached)
    compiled = _RE_COMPILE(pattern, flags)
    if sys.dont_write_bytecode and not _warming:
        return compiled  # this process saves nothing: no second compile to check a program
    try:
        program = _program(pattern, flags)
        same = _sre.compile(pattern, *program) == compiled
    except Exception:
        same = False
    if not same:
        _re_checked = False
        return compiled
    _compiled += 1
    _cache[key] = _used[key] = program
    return compiled


def _exec(source: Any, globals: Any = None, locals: Any = None, /, **kwargs: Any) -> None:
    """``exec`` for ``dataclasses``: source text goes through ``code_for``."""
    if globals is None:  # exec's default: the caller's namespaces
        caller = sys._getframe(1)
        globals = caller.f_globals
        if locals is None:
            locals = caller.f_locals
    if type(source) is str:
        source = code_for(source, "exec")
    builtins.exec(source, globals, locals, **kwargs)


def _compile(
    source: Any,
    filename: Any,
    mode: str,
    flags: int = 0,
    dont_inherit: bool = False,
    optimize: int = -1,
    **kwargs: Any,
) -> Any:
    """``compile`` for ``typing``: a forward reference's text goes through ``code_for``."""
    plain = not flags and optimize == -1 and not kwargs and mode in ("exec", "eval")
    if plain and type(source) is str and filename == "<string>":
        return code_for(source, mode)
    return builtins.compile(source, filename, mode, flags, dont_inherit, optimize, **kwargs)


def _entry(key: Any, value: Any) -> bool:
    """Whether ``key: value`` (read from a file) is a well-formed cache entry."""
    if not isinstance(key, tuple):
        return False
    if len(key) == 2:
        return isinstance(value, CodeType)
    return (
        len(key) == 3
        and key[0] == "re"
        and isinstance(key[1], str | bytes)
        and isinstance(key[2], int)
        and isinstance(value, tuple)
        and len(value) == 5
        and [type(v) for v in value] == [int, list, int, dict, tuple]
    )


def _read() -> dict[Key, CodeType | Program]:
    try:
        data = _PATH.read_bytes()
        if not data.startswith(_HEADER):
            return {}
        loaded = marshal.loads(data[len(_HEADER) :])
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {k: v for k, v in loaded.items() if _entry(k, v)}


def install() -> None:
    """Load the cache and route ``dataclasses``', ``typing``'s and ``re``'s compiles through
    it. Idempotent."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        _cache.update(_read())
    import dataclasses
    import typing

    dataclasses.exec = _exec  # type: ignore[attr-defined]
    typing.compile = _compile  # type: ignore[attr-defined]
    _re_compiler.compile = regex_for


def save(force: bool = False) -> bool:
    """Write the cache (see the module contract); True when a file was written. Without
    ``force``, only when Python writes bytecode and this process compiled something new."""
    if not force and (sys.dont_write_bytecode or not _compiled):
        return False
    entries = _read()
    entries.update(_used)
    if sum(len(key[1]) for key in entries) > MAX_TEXT_BYTES:
        entries = dict(_used)
    tmp = _PATH.with_name(f"{_PATH.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        _PATH.parent.mkdir(exist_ok=True)
        tmp.write_bytes(_HEADER + marshal.dumps(entries))
        os.replace(tmp, _PATH)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True


def stats() -> tuple[int, int]:
    """(texts and patterns taken from the cache or compiled in this process, of which
    compiled)."""
    return len(_used), _compiled


def warm() -> int:
    """Load the modules of every ``lockgate`` command (``lockgate.pipelines.commands``) and of
    the batch path, then write the cache; the number of texts it holds for them."""
    global _warming
    _warming = True
    install()
    import pkgutil

    from lockgate.pipelines import commands
    from lockgate.pipelines.startup import lean_imports

    for info in pkgutil.iter_modules(commands.__path__, f"{commands.__name__}."):
        importlib.import_module(info.name)
    with lean_imports():
        importlib.import_module("lockgate.pipelines.batch")
    save(force=True)
    return len(_used)


if __name__ == "__main__":
    print(f"lockgate: {warm()} generated code objects and regular expressions cached in {_PATH}")
