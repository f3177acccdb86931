"""Start-up cost of a command: import only what it needs.

``lean_imports`` shapes the imports made inside it (the batch path of ``lockgate ingest``:
readers, pyiceberg, Parquet), measured on this machine:

* **pandas is not loaded.** pyiceberg imports ``pyarrow.dataset``, whose module initialisation
  asks pyarrow's pandas shim whether pandas is installed, which imports pandas (about a second
  of a ``lockgate ingest`` process; nothing of Lockgate's ingest path uses pandas). Inside the
  context, ``import pandas`` (and only the top-level name) fails as if pandas were not
  installed, so that question is answered "no" without loading it. Afterwards pandas imports
  as usual: pyarrow's ``to_pandas`` and everything else that needs it imports it on first use
  (the shim retries a failed import whenever pandas is required).
* **Modules pyiceberg imports but the ingest path never calls are loaded on first use**
  (``LAZY``, ``importlib.util.LazyLoader``: the module object exists at once, its code runs
  at the first attribute access): ``pyiceberg.expressions.parser`` (pyparsing; only string row
  filters need it, and the ingest path builds expression objects) and ``strictyaml`` (only
  read when a ``.pyiceberg.yaml`` file exists). Together ~0.2 s of CPU per process (measured
  under load). Python 3.11's ``LazyLoader`` is not safe against two threads' first access at
  once; neither happens: pyiceberg reads its config file (``strictyaml``) at import, in the
  importing thread, and string row filters are parsed by the thread that plans a scan.

Has no effect on modules already imported (e.g. in a Dagster process, which loads pandas).

``gc_paused`` pauses the cyclic garbage collector while a command's modules load (and, for
``lockgate ingest``, while the batch path loads beside the first object's read): imports
create hundreds of thousands of long-lived objects (classes, functions, pydantic schemas),
and the collections they trigger free nothing while holding the GIL, stalling the threads
that read and parse meanwhile. Measured on the 2-core machine (medians of 5-6 alternating
rounds): D1 3.89 -> 3.68 s wall, D4 2.54 -> 2.16 s. The collector resumes at the end of the
block as it was (reference counting frees everything else throughout).

``without_pydantic_plugins`` (the ``lockgate`` command, before anything else): pydantic looks
for plugins when it builds its first model, by reading the entry points of every installed
distribution (``importlib.metadata``; ~15-20 ms of CPU on one core before the first read
among ~180 installed distributions). Lockgate uses no pydantic plugin, so the command
sets pydantic's own switch, ``PYDANTIC_DISABLE_PLUGINS=__all__``, unless it is set already: a
user who wants plugins in the command (e.g. instrumentation) sets it to the empty string.
While the switch says off, pydantic's loader module (``pydantic.plugin._loader``) is stood in
for by one whose ``get_plugins`` returns no plugin, as pydantic's own does then: pydantic's
imports ``importlib.metadata`` at its top (with ``email``, ``zipfile``, ``csv``: ~27 ms on one
core before the first read) only to scan entry points it would not scan. Nothing else in a
``lockgate ingest`` imports it. Should the switch be turned on later in the process, the
stand-in loads pydantic's module and hands over to it.

``without_blas_threads`` (the ``lockgate`` command, before numpy loads): numpy's OpenBLAS
starts a thread per further core when numpy is imported, and each spins for ~0.1 s of CPU
waiting for work before it sleeps. Lockgate makes no BLAS call, so on a 2-core machine that
spin only takes CPU from the parse and the Parquet writes: D4 (1 M CSV rows) 3.37 -> 3.10 CPU
s and 2.15 -> 2.00 s wall (medians of 8 alternating rounds). The command sets
``OPENBLAS_NUM_THREADS=1`` unless it is set already (an operator's value stands).
"""

from __future__ import annotations

import gc
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

#: pydantic's switch for its plugins (``without_pydantic_plugins``).
PYDANTIC_PLUGINS_VARIABLE = "PYDANTIC_DISABLE_PLUGINS"

#: pydantic's values of ``PYDANTIC_DISABLE_PLUGINS`` that turn every plugin off.
PLUGINS_OFF = frozenset({"__all__", "1", "true"})
#: pydantic's plugin loader (``without_pydantic_plugins``).
PYDANTIC_LOADER = "pydantic.plugin._loader"

#: OpenBLAS's thread count (``without_blas_threads``).
BLAS_THREADS_VARIABLE = "OPENBLAS_NUM_THREADS"

#: Modules loaded lazily inside ``lean_imports`` (see the module docstring).
LAZY = frozenset({"pyiceberg.expressions.parser", "strictyaml"})


class _LeanFinder:
    """A ``sys.meta_path`` finder (``find_spec`` is its protocol; ``importlib.abc`` is not
    imported for its base class: it loads ``importlib.resources``, ``tempfile`` and
    ``random``: ~3 ms before the first read, and nothing else in the command needs the first)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "pandas":
            raise ModuleNotFoundError("pandas is not imported at start-up", name="pandas")
        if fullname not in LAZY:
            return None
        # PathFinder, not importlib.util.find_spec: that would ask this finder again
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


@contextmanager
def lean_imports() -> Iterator[None]:
    """Imports made inside load neither pandas nor, until first used, the ``LAZY`` modules
    (see the module docstring)."""
    finder = _LeanFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off inside (see the module docstring); on exit it is
    enabled again if it was enabled on entry."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class LazyModule:
    """Stands for module ``name`` in namespace ``into`` (as its global ``alias``) until an
    attribute is first read: then the module is imported and the global rebound to it, so
    later reads cost nothing. Any thread may read first: concurrent first reads wait for one
    import (the import system's module lock), unlike Python 3.11's ``LazyLoader``."""

    def __init__(self, name: str, into: dict[str, object], alias: str):
        self._name = name
        self._into = into
        self._alias = alias

    def __getattr__(self, attr: str) -> object:
        module = importlib.import_module(self._name)
        self._into[self._alias] = module
        return getattr(module, attr)


def without_pydantic_plugins() -> None:
    """pydantic loads no plugins in this process (and the processes it starts) unless
    ``PYDANTIC_DISABLE_PLUGINS`` is set already (see the module docstring)."""
    os.environ.setdefault(PYDANTIC_PLUGINS_VARIABLE, "__all__")
    if os.environ[PYDANTIC_PLUGINS_VARIABLE] in PLUGINS_OFF and PYDANTIC_LOADER not in sys.modules:
        sys.modules[PYDANTIC_LOADER] = _no_plugins_loader()


def _no_plugins_loader() -> ModuleType:
    """A stand-in for ``pydantic.plugin._loader`` (see the module docstring): no plugin while
    the switch says off; otherwise pydantic's own module, loaded then and put in its place."""
    stand_in = ModuleType(PYDANTIC_LOADER)

    def get_plugins() -> Sequence[object]:
        if os.environ.get(PYDANTIC_PLUGINS_VARIABLE) in PLUGINS_OFF:
            return ()
        plugin_package = importlib.import_module("pydantic.plugin")
        spec = importlib.machinery.PathFinder.find_spec(PYDANTIC_LOADER, plugin_package.__path__)
        if spec is None or spec.loader is None:
            return ()
        real = importlib.util.module_from_spec(spec)
        sys.modules[PYDANTIC_LOADER] = real
        spec.loader.exec_module(real)
        return list(real.get_plugins())

    stand_in.get_plugins = get_plugins  # type: ignore[attr-defined]
    stand_in.PYDANTIC_ENTRY_POINT_GROUP = "pydantic"  # type: ignore[attr-defined]
    return stand_in


def without_blas_threads() -> None:
    """OpenBLAS starts no thread of its own in this process (and the processes it starts)
    unless ``OPENBLAS_NUM_THREADS`` is set already; effective only before numpy loads (see
    the module docstring)."""
    os.environ.setdefault(BLAS_THREADS_VARIABLE, "1")


__all__ = [
    "BLAS_THREADS_VARIABLE",
    "LAZY",
    "PLUGINS_OFF",
    "PYDANTIC_LOADER",
    "PYDANTIC_PLUGINS_VARIABLE",
    "LazyModule",
    "gc_paused",
    "lean_imports",
    "without_blas_threads",
    "without_pydantic_plugins",
]
