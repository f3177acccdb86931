"""Conforming parsed chunks to a table's schema (evolving it for inferred sources).

Contract: every row of a chunk is kept; a value that does not fit its column is null there
and kept, with its field name, in the row's ``_rescued_data``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import NoSuchTableError

from lockgate.pipelines.lineage import DAY, LINEAGE_SCHEMA, SOURCE_ROW
from lockgate.pipelines.rescue import (
    RESCUED,
    RESCUED_FIELD,
    convert_rescuing,
    extras_per_row,
    merge_column,
)
from lockgate.resources.tables import IncompatibleSchema, TableStore
from lockgate.resources.widening import widens


class DeclaredSchemaRefused(IncompatibleSchema):
    """The declared schema in lockgate.yaml changed in a way the table cannot follow (a type
    narrowed or changed to an unrelated type). Raised before any object is read, so nothing
    is staged or committed under the new declaration."""


def _normalise_types(batch: pa.RecordBatch, rescued: dict[int, dict[str, Any]]) -> pa.RecordBatch:
    """Inferred types Iceberg cannot hold as they are: timestamps become microseconds (a
    value that does not fit -- out of range, or finer than a microsecond -- is null there and
    added to ``rescued[row][field]``, never wrapped or truncated), null columns (all values
    null) are dropped (nothing to keep; the column appears once a value does)."""
    fields, arrays = [], []
    for f, col in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_null(f.type):
            continue
        if pa.types.is_timestamp(f.type) and f.type.unit != "us":
            target = pa.timestamp("us", tz=f.type.tz)

            def convert(a: pa.Array, t: pa.DataType = target) -> pa.Array:
                return pc.cast(a, t, safe=True)

            col = convert_rescuing(col, convert, target, f.name, rescued)
            f = pa.field(f.name, target)
        fields.append(f)
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _plain(t: pa.DataType) -> pa.DataType:
    """``t`` with large string/binary taken as string/binary (Iceberg has one of each)."""
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    return t


def _with_types_of(schema: pa.Schema, columns: list[pa.Array]) -> pa.Schema:
    """``schema`` with the in-memory types of ``columns``: a ``string`` column where the table
    says ``large_string`` (same bytes), a dictionary column where it says the value type."""
    if all(f.type == c.type for f, c in zip(schema, columns, strict=True)):
        return schema
    return pa.schema(
        [
            f if f.type == c.type else f.with_type(c.type)
            for f, c in zip(schema, columns, strict=True)
        ]
    )


class Conformer:
    """Brings data chunks to a table's schema (its Iceberg types; in memory a column may stay
    ``string`` where the table's Arrow schema says ``large_string``, and lineage constants
    are dictionary arrays: no copy is made to change either). Inferred sources: the schema
    evolves when a chunk brings new columns (added nullable; int->long, float->double
    widened). Declared sources: the table follows the declaration (``prepare``, before any
    read): newly declared fields are added, int->long and float->double widened, any other
    type change raises ``DeclaredSchemaRefused``; data never evolves it. A value that does
    not fit its column, or a column the table does not have, is null there / not written and
    rescued, with its field name, into the row's ``_rescued_data`` (merged with what the
    reader rescued): no value is dropped without a trace. Every table gets ``_rescued_data``
    (added to tables created before it existed)."""

    def __init__(self, tables: TableStore, identifier: str, declared: pa.Schema | None):
        self.tables = tables
        self.identifier = identifier
        self.declared = declared
        self.schema: pa.Schema | None = None  # the table's Arrow schema

    def prepare(self) -> None:
        """Declared schema: load (or create) the table and bring it up to the declaration;
        raises ``DeclaredSchemaRefused`` (naming the columns and both types) when the table
        cannot follow it. Call before reading anything. Inferred: nothing to check."""
        if self.declared is not None:
            self._ensure(pa.schema([]))

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
            if self.declared is not None:
                self.schema = self._follow_declared(self.schema)
        assert self.schema is not None
        if self.declared is not None:
            return  # checked against the declaration above; data never evolves it
        grow = [
            f
            for f in data_schema
            if self.schema.get_field_index(f.name) < 0
            or widens(self.schema.field(f.name).type, f.type)
        ]
        if grow:
            self.schema = self.tables.evolve(self.identifier, pa.schema(grow)).as_arrow()

    def _follow_declared(self, current: pa.Schema) -> pa.Schema:
        """The table's Arrow schema after evolving it to the declaration (a no-op commits
        nothing)."""
        assert self.declared is not None
        needed = [
            f
            for f in self.declared
            if current.get_field_index(f.name) < 0
            or _plain(current.field(f.name).type) != _plain(f.type)
        ]
        if not needed:
            return current
        try:
            return self.tables.evolve(self.identifier, pa.schema(needed)).as_arrow()
        except IncompatibleSchema as e:
            changes = ", ".join(
                f"{f.name}: {current.field(f.name).type} -> {f.type}"
                for f in needed
                if current.get_field_index(f.name) >= 0
            )
            raise DeclaredSchemaRefused(
                f"table {self.identifier}: the declared schema in lockgate.yaml changed in a "
                f"way the table cannot follow ({changes}); only new fields, int->long and "
                "float->double are applied. Nothing was read or committed. Restore the "
                "declared type, or declare the field under a new name (its values are kept "
                f"in _rescued_data until then). Cause: {e}"
            ) from e

    def conform(self, data: pa.RecordBatch, lineage: dict[str, pa.Array]) -> pa.RecordBatch:
        """``data`` (data columns, ``_rescued_data``, ``_source_row``) with lineage, in table
        order; values that do not fit the table are rescued (every row is kept)."""
        rescued: dict[int, dict[str, Any]] = {}
        data = _normalise_types(data, rescued)
        own = [n for n in (SOURCE_ROW, RESCUED) if n in data.schema.names]
        data_only = data.drop_columns(own) if own else data
        self._ensure(data_only.schema)
        assert self.schema is not None
        n = data.num_rows
        columns: list[pa.Array] = []
        rescued_at: int | None = None
        schema = self.schema
        extras = [c for c in data_only.schema.names if schema.get_field_index(c) < 0]
        if extras:  # a column the table does not have: kept in _rescued_data, never dropped
            for row, values in extras_per_row(pa.Table.from_batches([data_only]), extras).items():
                rescued.setdefault(row, {}).update(values)
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
            if _plain(col.type) == _plain(f.type):  # string is large_string's bytes: kept
                columns.append(col)
                continue

            def convert(a: pa.Array, t: pa.DataType = f.type) -> pa.Array:
                return pc.cast(a, t)

            columns.append(convert_rescuing(col, convert, f.type, f.name, rescued))
        assert rescued_at is not None
        own_rescued = data.column(RESCUED) if RESCUED in data.schema.names else None
        rescued_type = self.schema.field(RESCUED).type
        if rescued:
            columns[rescued_at] = merge_column(own_rescued, n, rescued)
        elif own_rescued is not None:
            columns[rescued_at] = own_rescued
        if _plain(columns[rescued_at].type) != _plain(rescued_type):
            columns[rescued_at] = columns[rescued_at].cast(rescued_type)
        return pa.RecordBatch.from_arrays(columns, schema=_with_types_of(self.schema, columns))
