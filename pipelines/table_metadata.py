"""The Dagster metadata of a Lockgate table: column schema, name, URI, a partition's rows.

Contract: ``dagster/row_count`` is the number of rows of the whole partition (every batch of
the day), taken from the data files' record counts of the current snapshot; Lockgate writes
no delete files, so it is exact.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pyiceberg.table import Table

from lockgate.resources.config import SourceConfig


def column_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=f.name,
                type=str(f.field_type),
                description=f.doc or "",
                constraints=dg.TableColumnConstraints(nullable=not f.required),
            )
            for f in table.schema().fields
        ]
    )


def partition_rows(table: Table, days: list[str]) -> int:
    """Rows of ``days`` in the current snapshot (from the data files' record counts)."""
    if table.current_snapshot() is None or not days:
        return 0
    row_filter = " or ".join(f"_day == '{d}'" for d in days)
    return sum(task.file.record_count for task in table.scan(row_filter=row_filter).plan_files())


def table_metadata(source: SourceConfig, table: Table, days: list[str]) -> dict[str, Any]:
    return {
        "dagster/column_schema": column_schema(table),
        "dagster/table_name": source.table,
        "dagster/uri": table.location(),
        "dagster/row_count": partition_rows(table, days),
    }
