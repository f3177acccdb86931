"""The declaration a long-lived process acts on: ``lockgate.yaml`` as it is on disk now, not as
it was when a Dagster code location loaded it.

A code location builds its definitions (assets keyed by table, daily partitions from
``partition.start``, resources from ``warehouse`` / ``ledger`` / ``s3``) once, when it loads.
Every sensor tick and every run re-reads the config file instead (``current_source``), so an
edit of anything else -- a moved ``landing``, the format, its options, the declared schema,
discovery settings -- takes effect at the next tick or run without a reload, and the ledger's
fingerprint check (``Ledger.open``) sees the declaration as it is now. An edit of what the
loaded definitions are built from cannot take effect without a reload: it raises
``DefinitionsStale``, which names the change and says to reload the code location; nothing
acts under the stale declaration.

The file is parsed again only when its modification time or size changes.
"""

from __future__ import annotations

import os
from typing import ClassVar

from lockgate.resources.config import LockgateConfig, SourceConfig, load_config
from lockgate.resources.errors import ExitCode, TerminalError

RELOAD_HINT = (
    "reload the code location (UI: Deployment -> Reload, or restart `dagster dev` / `make run`)"
)

_cache: dict[str, tuple[tuple[int, int], LockgateConfig]] = {}


class DefinitionsStale(TerminalError):
    """``lockgate.yaml`` changed something the loaded Dagster definitions are built from (a
    source removed, its table or ``partition.start``, the warehouse, ledger or S3 endpoint):
    they must be reloaded before this source runs again."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFIG


def _read(path: str) -> LockgateConfig:
    st = os.stat(path)
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _cache.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    config = load_config(path)
    _cache[path] = (stamp, config)
    return config


def _stale(loaded: LockgateConfig, now: LockgateConfig, name: str) -> list[str]:
    """What the loaded definitions were built from that differs in ``now``."""
    if name not in now.sources:
        return [f"source {name!r} was removed"]
    old, new = loaded.sources[name], now.sources[name]
    pairs = {
        "table": (old.table, new.table),
        "partition.start": (old.partition_start.isoformat(), new.partition_start.isoformat()),
        "warehouse": (loaded.warehouse, now.warehouse),
        "ledger": (loaded.ledger, now.ledger),
        "s3.endpoint_url": (loaded.s3.endpoint_url, now.s3.endpoint_url),
    }
    return [f"{k}: {a!r} -> {b!r}" for k, (a, b) in pairs.items() if a != b]


def current_source(
    loaded: LockgateConfig, source: SourceConfig
) -> tuple[LockgateConfig, SourceConfig]:
    """``(config, source)`` as ``loaded.path`` declares them now (``ConfigError`` if the file
    became invalid; ``DefinitionsStale`` if the loaded definitions no longer match it)."""
    now = _read(loaded.path)
    stale = _stale(loaded, now, source.name)
    if stale:
        raise DefinitionsStale(
            f"source {source.name!r}: {loaded.path} changed since the Dagster code location "
            f"loaded it ({'; '.join(stale)}); nothing runs under the stale definitions: "
            + RELOAD_HINT
        )
    return now, now.sources[source.name]
