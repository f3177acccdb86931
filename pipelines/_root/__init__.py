"""Lockgate: exactly-once ingestion of landed files into Apache Iceberg tables, on Dagster.

The installed package ``lockgate`` is three layers, each importing only those below it:

* ``lockgate.resources`` -- durable state and how to open it (config model, object stores,
  ledger, Iceberg catalog and tables, crash points);
* ``lockgate.sensors`` -- the claiming half (discovery, claims, run requests);
* ``lockgate.pipelines`` -- the running half (read, stage, commit, rebuild, verify), the CLI
  and the Dagster definitions.

The public API below is imported lazily, so ``import lockgate`` costs nothing and importing
``lockgate.resources`` does not import Dagster.

Contract: ``load_config``, ``LockgateConfig``, ``build_definitions``, ``LockgateComponent``
and ``main`` are the stable entry points; everything else may move between minor versions.

(In the repository this file is ``pipelines/_root/__init__.py``: the top level of the
repository is fixed, and setuptools' ``package-dir`` maps it to ``lockgate``.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lockgate.pipelines.cli import main
    from lockgate.pipelines.component import LockgateComponent
    from lockgate.pipelines.definitions import build_definitions
    from lockgate.resources.config import LockgateConfig, load_config

__all__ = ["LockgateComponent", "LockgateConfig", "build_definitions", "load_config", "main"]

_EXPORTS = {
    "LockgateConfig": "lockgate.resources.config",
    "load_config": "lockgate.resources.config",
    "build_definitions": "lockgate.pipelines.definitions",
    "main": "lockgate.pipelines.cli",
    "LockgateComponent": "lockgate.pipelines.component",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lockgate' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
