"""``lockgate.LockgateComponent``: Lockgate as a Dagster Component for ``dg`` projects.

In a project, ``defs/<name>/defs.yaml``::

    type: lockgate.LockgateComponent
    attributes:
      config: lockgate.yaml          # a path relative to this folder, or inline keys:
      # warehouse: s3://bucket/warehouse
      # ledger: s3://bucket/ledger
      # sources: {events: {landing: ..., format: jsonl, table: lake.events}}

Contract: the attributes are the keys of ``lockgate.yaml`` (``warehouse``, ``ledger``,
``catalog``, ``s3``, ``dagster``, ``sources``) with the same meaning, validated by the same
model, or ``config`` naming a ``lockgate.yaml``; relative paths resolve against the
component's folder. The component yields exactly ``build_definitions(config)``: the same
assets, checks, jobs, sensors and schedules as the ``lockgate`` code location.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from lockgate.pipelines.definitions import build_definitions
from lockgate.resources.config import LockgateConfig, load_config, parse_config

CONFIG_KEYS = ("warehouse", "ledger", "catalog", "s3", "dagster", "sources")


class LockgateComponent(dg.Component, dg.Model, dg.Resolvable):
    """Ingest landed files into Iceberg tables exactly once (see ``lockgate.yaml``)."""

    config: str | None = None
    warehouse: str | None = None
    ledger: str | None = None
    catalog: dict[str, Any] | None = None
    s3: dict[str, Any] | None = None
    dagster: dict[str, Any] | None = None
    sources: dict[str, dict[str, Any]] | None = None

    def lockgate_config(self, folder: str) -> LockgateConfig:
        """The validated config: from ``config`` (relative to ``folder``) or the inline keys."""
        inline = {k: getattr(self, k) for k in CONFIG_KEYS if getattr(self, k) is not None}
        if self.config is not None:
            if inline:
                raise dg.DagsterInvalidConfigError(
                    "LockgateComponent: give either `config` or inline keys, not both "
                    f"(inline: {', '.join(sorted(inline))})",
                    [],
                    None,
                )
            path = self.config if self.config.startswith("/") else f"{folder}/{self.config}"
            return load_config(path)
        return parse_config(inline, f"{folder}/defs.yaml")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        # inline keys live in defs.yaml, not in a lockgate.yaml that runs could re-read
        config = self.lockgate_config(str(context.path))
        return build_definitions(config, live=self.config is not None)
