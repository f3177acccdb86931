"""Keeping a source's tables fast to read: compaction and maintenance, as ``lockgate compact``,
``lockgate maintain`` and the Dagster jobs of ``lockgate.pipelines.upkeep_jobs`` run them.

Contract:

* ``compact_source`` compacts the source's table only (never its quarantine table) with the
  source's ``compaction`` settings and ``sort_by`` (each overridable per call); one ``replace``
  commit per compacted day (``lockgate.resources.compaction``). A table that does not exist yet
  compacts nothing.
* ``maintain_source`` maintains the source's table and its quarantine table: snapshot expiry
  and the maintenance state (in the table's properties), metadata retirement, and orphan-file
  cleanup of files unreferenced for ``maintenance.orphan_older_than`` (refused when shorter
  than the longest run plus ``VACUUM_MARGIN``). Missing tables are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from lockgate.resources.compaction import (
    MIN_MEMORY_BUDGET,
    CompactionPolicy,
    DayCompaction,
    compact_table,
)
from lockgate.resources.config import SourceConfig
from lockgate.resources.maintenance import (
    MaintenancePolicy,
    MaintenanceReport,
    maintain,
    min_vacuum_window,
)
from lockgate.resources.runtime import Runtime, quarantine_table

Progress = Callable[[str], None]


def compaction_policy(
    source: SourceConfig, target_file_size: int | None = None, min_files: int | None = None
) -> CompactionPolicy:
    """The source's compaction policy, with the given overrides. A sorted compaction holds at
    most the source's batch budget (``max_bytes_per_batch``, at least ``MIN_MEMORY_BUDGET``)."""
    c = source.compaction
    return CompactionPolicy(
        target_file_size_bytes=target_file_size or c.target_file_size,
        min_files=min_files or c.min_files,
        sort_by=c.sort_by,
        memory_budget_bytes=max(MIN_MEMORY_BUDGET, source.max_bytes_per_batch),
    )


def compact_source(
    rt: Runtime,
    source: SourceConfig,
    days: Iterable[date] | None = None,
    target_file_size: int | None = None,
    min_files: int | None = None,
    progress: Progress | None = None,
) -> list[DayCompaction]:
    """Compact ``days`` (default: every day with enough small files) of the source's table."""
    policy = compaction_policy(source, target_file_size, min_files)
    return compact_table(rt.tables, source.table, policy, days=days, progress=progress)


@dataclass(frozen=True)
class TableMaintenance:
    """One table's maintenance outcome (``report`` None: the table does not exist yet)."""

    table: str
    report: MaintenanceReport | None

    def line(self) -> str:
        if self.report is None:
            return f"{self.table}: no table yet, nothing to maintain"
        return self.report.line(self.table)


def maintain_source(
    rt: Runtime, source: SourceConfig, orphans: bool = True
) -> list[TableMaintenance]:
    """Maintain the source's table and quarantine table (see the module contract);
    ``orphans=False`` skips the orphan-file cleanup."""
    policy = rt.tables.settings.maintenance or MaintenancePolicy()
    window = timedelta(seconds=source.maintenance.orphan_older_than_s)
    min_window = min_vacuum_window(rt.config.dagster.longest_run_s(rt.config.sources.values()))
    out = []
    for table in (source.table, quarantine_table(source)):
        if not rt.tables.catalog.table_exists(table):
            out.append(TableMaintenance(table, None))
            continue
        report = maintain(
            rt.tables.catalog,
            table,
            policy,
            orphans_older_than=window if orphans else None,
            min_window=min_window,
        )
        out.append(TableMaintenance(table, report))
    return out
