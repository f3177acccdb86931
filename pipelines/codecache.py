"""Code that Python generates while modules load, compiled once and then cached on disk.

On Python 3.11 a ``@dataclass`` compiles each generated method (``__init__``, ``__repr__``,
``__eq__``, ``__setattr__``, ...) from source text with ``exec``, and ``typing.ForwardRef``
compiles every string annotation (pydantic resolves hundreds). A ``lockgate ingest`` process
creates ~150 dataclasses (pyiceberg, pydantic, Lockgate's own) and ~1,000 forward references:
~0.15-0.2 s of CPU per process (measured: ~1.1 ms per frozen dataclass), most of it on one core
before the first object is read. Unlike module bytecode, Python caches none of it.

Contract:

* ``install()`` routes those two compilers (``dataclasses``' ``exec`` and ``typing``'s
  ``compile``) through ``code_for``: source text compiled before (by any process, on the same
  interpreter) is taken from the cache, other text is compiled as Python would. Cached code is
  what compiling the same text gives: the key is the exact text and mode, the compile is
  ``compile(text, "<string>", mode, dont_inherit=True)`` (neither module uses a ``__future__``
  import, so nothing is inherited either way), and the file is per interpreter version,
  bytecode magic and optimisation level. A stale entry is therefore never wrong, only unused.
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

import builtins
import importlib.util
import marshal
import os
import sys
import threading
from pathlib import Path
from types import CodeType
from typing import Any

#: The cached texts' total size above which the file restarts from this process's texts.
MAX_TEXT_BYTES = 8 * 1024 * 1024

_HEADER = importlib.util.MAGIC_NUMBER + bytes([sys.flags.optimize])
_PATH = Path(__file__).with_name("__pycache__") / f"codecache.{sys.implementation.cache_tag}.bin"

_cache: dict[tuple[str, str], CodeType] = {}
_used: dict[tuple[str, str], CodeType] = {}
_compiled = 0
_lock = threading.Lock()
_installed = False


def code_for(text: str, mode: str) -> CodeType:
    """``text`` compiled in ``mode`` ("exec"/"eval"), as ``compile(text, "<string>", mode,
    dont_inherit=True)`` returns it: from the cache when it holds the text."""
    global _compiled
    key = (mode, text)
    code = _cache.get(key)
    if code is None:
        code = builtins.compile(text, "<string>", mode, dont_inherit=True)
        _compiled += 1
        _cache[key] = code
    _used[key] = code
    return code


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


def _read() -> dict[tuple[str, str], CodeType]:
    try:
        data = _PATH.read_bytes()
        if not data.startswith(_HEADER):
            return {}
        loaded = marshal.loads(data[len(_HEADER) :])
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {
        k: v
        for k, v in loaded.items()
        if isinstance(k, tuple) and len(k) == 2 and isinstance(v, CodeType)
    }


def install() -> None:
    """Load the cache and route ``dataclasses``' and ``typing``'s compiles through it.
    Idempotent."""
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


def save(force: bool = False) -> bool:
    """Write the cache (see the module contract); True when a file was written. Without
    ``force``, only when Python writes bytecode and this process compiled something new."""
    if not force and (sys.dont_write_bytecode or not _compiled):
        return False
    entries = _read()
    entries.update(_used)
    if sum(len(text) for _, text in entries) > MAX_TEXT_BYTES:
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
    """(texts taken from the cache or compiled in this process, of which compiled)."""
    return len(_used), _compiled


def warm() -> int:
    """Load the modules of every ``lockgate`` command (``lockgate.pipelines.commands``) and of
    the batch path, then write the cache; the number of texts it holds for them."""
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
    print(f"lockgate: {warm()} generated code objects cached in {_PATH}")
