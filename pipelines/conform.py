"""Conforming parsed chunks to a table's schema (evolving it for inferred sources).

Contract: every row of a chunk is kept; a value that does not fit its column is null there
and kept, with its field name, in the row's ``_rescued_data``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import NoSuchTableError

from lockgate.pipelines.lineage import DAY, LINEAGE_SCHEMA, SOURCE_ROW
from lockgate.pipelines.rescue import RESCUED, RESCUED_FIELD, convert_rescuing, merge_column
from lockgate.resources.tables import TableStore
from lockgate.resources.widening import widens


def _normalise_types(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Inferred types Iceberg cannot hold as they are: timestamps become microseconds, null
    columns (all values null) are dropped (nothing to keep; the column appears once a value
    does)."""
    fields, arrays = [], []
    for f, col in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_null(f.type):
            continue
        if pa.types.is_timestamp(f.type) and f.type.unit != "us":
            target = pa.timestamp("us", tz=f.type.tz)
            col = pc.cast(col, target, safe=False)
            f = pa.field(f.name, target)
        fields.append(f)
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


class Conformer:
    """Brings data chunks to a table's schema; evolves the schema (inferred sources) when a
    chunk brings new columns (added nullable; int->long, float->double widened). A value that
    does not fit its column is null there and rescued, with its field name, into the row's
    ``_rescued_data`` (merged with what the reader rescued). Every table gets
    ``_rescued_data`` (added to tables created before it existed)."""

    def __init__(self, tables: TableStore, identifier: str, declared: pa.Schema | None):
        self.tables = tables
        self.identifier = identifier
        self.declared = declared
        self.schema: pa.Schema | None = None  # the table's Arrow schema

    def _ensure(self, data_schema: pa.Schema) -> None:
        if self.schema is None:
            try:
                table = self.tables.load(self.identifier)
            except NoSuchTableError:
                base = self.declared if self.declared is not None else data_schema
                table = self.tables.ensure_table(
                    self.identifier, pa.schema([*base, *LINEAGE_SCHEMA]), DAY
                )
            self.schema = table.schema().as_arrow()
            if self.schema.get_field_index(RESCUED) < 0:
                self.schema = self.tables.evolve(
                    self.identifier, pa.schema([RESCUED_FIELD])
                ).as_arrow()
        assert self.schema is not None
        if self.declared is not None:
            return
        grow = [
            f
            for f in data_schema
            if self.schema.get_field_index(f.name) < 0
            or widens(self.schema.field(f.name).type, f.type)
        ]
        if grow:
            self.schema = self.tables.evolve(self.identifier, pa.schema(grow)).as_arrow()

    def conform(self, data: pa.RecordBatch, lineage: dict[str, pa.Array]) -> pa.RecordBatch:
        """``data`` (data columns, ``_rescued_data``, ``_source_row``) with lineage, in table
        order; values that do not fit the table are rescued (every row is kept)."""
        data = _normalise_types(data)
        own = [n for n in (SOURCE_ROW, RESCUED) if n in data.schema.names]
        data_only = data.drop_columns(own) if own else data
        self._ensure(data_only.schema)
        assert self.schema is not None
        n = data.num_rows
        columns: list[pa.Array] = []
        rescued: dict[int, dict[str, object]] = {}
        rescued_at: int | None = None
        for f in self.schema:
            if f.name in lineage:
                columns.append(lineage[f.name])
                continue
            if f.name == RESCUED:
                rescued_at = len(columns)
                columns.append(pa.nulls(n, pa.string()))  # filled in below
                continue
            if f.name == SOURCE_ROW:
                columns.append(data.column(SOURCE_ROW))
                continue
            idx = data_only.schema.get_field_index(f.name)
            if idx < 0:
                columns.append(pa.nulls(n, f.type))
                continue
            col = data_only.column(idx)
            if col.type == f.type:
                columns.append(col)
                continue

            def convert(a: pa.Array, t: pa.DataType = f.type) -> pa.Array:
                return pc.cast(a, t)

            columns.append(convert_rescuing(col, convert, f.type, f.name, rescued))
        assert rescued_at is not None
        own_rescued = data.column(RESCUED) if RESCUED in data.schema.names else None
        rescued_type = self.schema.field(RESCUED).type
        if rescued:
            columns[rescued_at] = merge_column(own_rescued, n, rescued).cast(rescued_type)
        elif own_rescued is not None:
            columns[rescued_at] = own_rescued.cast(rescued_type)
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)
