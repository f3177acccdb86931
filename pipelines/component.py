"""``lockgate.LockgateComponent``: Lockgate as a Dagster Component for ``dg`` projects.

In a project, ``defs/<name>/defs.yaml``::

    type: lockgate.LockgateComponent
    attributes:
      name: team_a                   # optional; needed when a project has several
      config: lockgate.yaml          # a path relative to this folder, or inline keys:
      # warehouse: s3://bucket/warehouse
      # ledger: s3://bucket/ledger
      # sources: {events: {landing: ..., format: jsonl, table: lake.events}}

Contract: the attributes are the keys of ``lockgate.yaml`` (``warehouse``, ``ledger``,
``catalog``, ``s3``, ``dagster``, ``sources``) with the same meaning, validated by the same
model, or ``config`` naming a ``lockgate.yaml``; relative paths resolve against the
component's folder. The component yields exactly ``build_definitions(config, name)``: the
same assets, checks, jobs, sensors and schedules as the ``lockgate`` code location, under
the default names when ``name`` is not given.

Several Lockgate components in one project: each gets its own resource keys, job, sensor and
schedule names and landing assets from its ``name`` (``Namespace``). Loading refuses, naming
both components' folders, two components with the same ``name`` (or both without one) and
two components that define the same asset key (a table declared by both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from lockgate.pipelines.definitions import build_definitions, check_distinct
from lockgate.resources.config import LockgateConfig, load_config, parse_config
from lockgate.resources.dagster_resources import Namespace

CONFIG_KEYS = ("warehouse", "ledger", "catalog", "s3", "dagster", "sources")


class LockgateComponent(dg.Component, dg.Model, dg.Resolvable):
    """Ingest landed files into Iceberg tables exactly once (see ``lockgate.yaml``)."""

    name: str | None = None
    config: str | None = None
    warehouse: str | None = None
    ledger: str | None = None
    catalog: dict[str, Any] | None = None
    s3: dict[str, Any] | None = None
    dagster: dict[str, Any] | None = None
    sources: dict[str, dict[str, Any]] | None = None
    _folder: str | None = PrivateAttr(default=None)

    @classmethod
    def load(cls, attributes: Any, context: dg.ComponentLoadContext) -> LockgateComponent:
        component = super().load(attributes, context)
        component._folder = str(context.path)
        return component

    def namespace(self) -> Namespace:
        try:
            return Namespace(self.name)
        except ValueError as err:
            raise dg.DagsterInvalidConfigError(f"LockgateComponent: {err}", [], None) from None

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
        folder = str(context.path)
        ns = self.namespace()
        # inline keys live in defs.yaml, not in a lockgate.yaml that runs could re-read
        config = self.lockgate_config(folder)
        others = [
            c
            for c in context.component_tree.get_all_components(of_type=LockgateComponent)
            if c._folder is not None and c._folder != folder
        ]
        if others:
            where = _relative(folder, context.defs_module_path)
            for other in others:
                there = _relative(other._folder or "", context.defs_module_path)
                check_distinct(
                    (where, ns, config),
                    (there, other.namespace(), other.lockgate_config(other._folder or "")),
                )
        return build_definitions(config, ns.name, live=self.config is not None)


def _relative(folder: str, defs_root: Path) -> str:
    try:
        return str(Path(folder).relative_to(defs_root.parent))
    except ValueError:
        return folder
