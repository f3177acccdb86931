"""Start-up cost of a command: import only what it needs.

``without_pandas``: pyiceberg imports ``pyarrow.dataset``, whose module initialisation asks
pyarrow's pandas shim whether pandas is installed, which imports pandas (about a second of a
``lockgate ingest`` process on this machine; nothing of Lockgate's ingest path uses pandas).
Inside the context, ``import pandas`` (and only the top-level name) fails as if pandas were not
installed, so that question is answered "no" without loading it. Afterwards pandas imports as
usual: pyarrow's ``to_pandas`` and everything else that needs it imports it on first use (the
shim retries a failed import whenever pandas is required). Has no effect when pandas is
already imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType


class _RefusePandas(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "pandas":
            raise ModuleNotFoundError("pandas is not imported at start-up", name="pandas")
        return None


@contextmanager
def without_pandas() -> Iterator[None]:
    """Imports made inside do not load pandas (see the module docstring)."""
    if "pandas" in sys.modules:
        yield
        return
    finder = _RefusePandas()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


__all__ = ["without_pandas"]
