"""Staged Parquet data files, written with pyarrow's ``ParquetWriter`` directly.

Contract: ``write_data_file(io, metadata, task)`` writes ``task``'s record batches as ONE
Parquet file at the path pyiceberg's ``write_file`` would choose (the table's location
provider, ``00000-<task id>-<write uuid>.parquet``) and returns the ``DataFile`` that
``write_file`` would return for it: the same Parquet schema (names, repetition, physical and
logical types, ``PARQUET:field_id`` of every column), the same write properties (compression
codec and level, row-group row limit, page size and row limit, dictionary page limit), and
statistics (column sizes, value/null/NaN counts, lower/upper bounds, split offsets) computed by
pyiceberg's own helpers from the written file's footer. It differs from ``write_file`` only in
what costs CPU without changing what readers see:

* batches are not re-projected: their columns are relabelled (field ids, nullability) without
  a copy, so ``string`` stays ``string`` in memory (pyiceberg casts it to ``large_string``;
  both are the same Parquet ``BYTE_ARRAY``/``String`` column);
* dictionary encoding is chosen per column: off for ``_source_row`` (unique by construction)
  and for every column whose first rows are mostly distinct (``mostly_distinct``), where a
  dictionary would only be built to spill; on elsewhere, as pyiceberg has it everywhere;
  ``_source_row`` (counting up) is delta-encoded (``DELTA_COLUMNS``);
* dictionary-encoded input columns (e.g. constant lineage columns) are written from their
  indices; readers get the plain value type back (the Arrow schema is not stored in the file,
  so every reader maps the Parquet column to its logical type).

Anything it does not handle the same way as pyiceberg (nested columns, sanitized column names,
type changes other than ``string``/``binary`` width and int/float widening, a required column
missing or null) is written by pyiceberg's ``write_file`` instead.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    schema_to_pyarrow,
    write_file,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.schema import Schema, sanitize_column_names
from pyiceberg.table import TableProperties, WriteTask
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.typedef import Properties, Record
from pyiceberg.utils.properties import property_as_int

from lockgate.resources.widening import plain_schema, plain_type

#: Columns unique by construction: never dictionary-encoded.
UNIQUE_COLUMNS = frozenset({"_source_row"})
#: Integer columns that count up by construction (0, 1, 2... per object): delta-encoded, so
#: a page is a few bytes and zstd has nothing to do (1 M rows: 32 -> 8 ms of CPU, 1 MB ->
#: 6 KB). Every Parquet reader decodes ``DELTA_BINARY_PACKED`` (a Parquet 1.0 encoding).
DELTA_COLUMNS = frozenset({"_source_row"})
#: Rows of a file's first batch sampled to decide a column's dictionary encoding.
DICTIONARY_SAMPLE_ROWS = 4_096

# Same-bytes variants: relabelled, not cast (Parquet stores both alike).
_SAME_BYTES = {
    (pa.string(), pa.large_string()),
    (pa.binary(), pa.large_binary()),
}
# Widenings the table allows (``lockgate.resources.widening``): cast, as pyiceberg does.
_WIDEN = {
    (pa.int32(), pa.int64()),
    (pa.float32(), pa.float64()),
}


def writer_options(properties: Properties) -> dict[str, Any]:
    """The ``pq.ParquetWriter`` options pyiceberg derives from table ``properties``."""
    codec = properties.get(
        TableProperties.PARQUET_COMPRESSION, TableProperties.PARQUET_COMPRESSION_DEFAULT
    )
    if codec == "uncompressed":
        codec = "none"
    return {
        "compression": codec,
        "compression_level": property_as_int(
            properties,
            TableProperties.PARQUET_COMPRESSION_LEVEL,
            TableProperties.PARQUET_COMPRESSION_LEVEL_DEFAULT,
        ),
        "data_page_size": property_as_int(
            properties,
            TableProperties.PARQUET_PAGE_SIZE_BYTES,
            TableProperties.PARQUET_PAGE_SIZE_BYTES_DEFAULT,
        ),
        "dictionary_pagesize_limit": property_as_int(
            properties,
            TableProperties.PARQUET_DICT_SIZE_BYTES,
            TableProperties.PARQUET_DICT_SIZE_BYTES_DEFAULT,
        ),
        "write_batch_size": property_as_int(
            properties,
            TableProperties.PARQUET_PAGE_ROW_LIMIT,
            TableProperties.PARQUET_PAGE_ROW_LIMIT_DEFAULT,
        ),
    }


def row_group_limit(properties: Properties) -> int:
    """Rows per row group (``write.parquet.row-group-limit``), as pyiceberg writes them."""
    limit = property_as_int(
        properties,
        TableProperties.PARQUET_ROW_GROUP_LIMIT,
        TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT,
    )
    assert limit is not None
    return limit


def mostly_distinct(column: pa.ChunkedArray) -> bool:
    """True when more than half of the non-null values among the column's first
    ``DICTIONARY_SAMPLE_ROWS`` rows are distinct: a dictionary would mostly spill."""
    if isinstance(column.type, pa.DictionaryType) or column.num_chunks == 0:
        return False
    sample = column.chunk(0)[:DICTIONARY_SAMPLE_ROWS]
    valid = len(sample) - sample.null_count
    if valid < 2:
        return False
    distinct = pc.count_distinct(sample, mode="only_valid").as_py()
    return bool(distinct * 2 > valid)


def dictionary_columns(table: pa.Table) -> list[str]:
    """The columns to dictionary-encode (see the module contract)."""
    return [
        f.name
        for f, col in zip(table.schema, table.columns, strict=True)
        if f.name not in UNIQUE_COLUMNS and not mostly_distinct(col)
    ]


def file_table(file_schema: Schema, batches: list[pa.RecordBatch]) -> pa.Table | None:
    """``batches`` as a table in ``file_schema``'s order with its field ids and repetition,
    columns relabelled rather than copied; None when a column needs what only pyiceberg's
    projection does (then ``write_file`` writes the file)."""
    target = schema_to_pyarrow(file_schema, include_field_ids=True)
    data = pa.Table.from_batches(batches)
    if any(isinstance(t, pa.DictionaryType) for t in data.schema.types):
        data = data.unify_dictionaries()  # one dictionary per column: written from indices
    fields: list[pa.Field] = []
    columns: list[pa.ChunkedArray] = []
    matched = 0
    for tf in target:
        if pa.types.is_nested(tf.type):
            return None
        idx = data.schema.get_field_index(tf.name)
        if idx < 0:
            if not tf.nullable:
                return None
            fields.append(tf)
            columns.append(pa.chunked_array([pa.nulls(data.num_rows, tf.type)]))
            continue
        matched += 1
        col = data.column(idx)
        if not tf.nullable and col.null_count:
            return None
        plain = plain_type(col.type)
        if plain == tf.type or (plain, tf.type) in _SAME_BYTES:
            fields.append(pa.field(tf.name, col.type, tf.nullable, tf.metadata))
        elif (col.type, tf.type) in _WIDEN:
            col = col.cast(tf.type)
            fields.append(tf)
        else:
            return None
        columns.append(col)
    if matched != data.num_columns:
        return None  # a batch column the file schema does not have
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def write_data_file(io: FileIO, metadata: TableMetadata, task: WriteTask) -> DataFile:
    """Write ``task`` as one Parquet data file of the table ``metadata`` describes; returns
    its ``DataFile`` (see the module contract). The file is invisible until committed."""
    table_schema = metadata.schema()
    if sanitize_column_names(table_schema) != table_schema:
        return _write_by_pyiceberg(io, metadata, task)
    arrow = file_table(table_schema, list(task.record_batches))
    if arrow is None:
        return _write_by_pyiceberg(io, metadata, task)
    properties = metadata.properties
    locations = load_location_provider(metadata.location, properties)
    file_path = locations.new_data_location(
        data_file_name=task.generate_data_file_filename("parquet"),
        partition_key=task.partition_key,
    )
    with io.new_output(file_path).create(overwrite=True) as out:
        with pq.ParquetWriter(
            out,
            schema=arrow.schema,
            store_decimal_as_integer=True,
            store_schema=False,
            use_dictionary=dictionary_columns(arrow),
            column_encoding={
                n: "DELTA_BINARY_PACKED" for n in arrow.schema.names if n in DELTA_COLUMNS
            },
            **writer_options(properties),
        ) as writer:
            writer.write_table(arrow, row_group_size=row_group_limit(properties))
        size = out.tell()
    statistics = data_file_statistics_from_parquet_metadata(
        parquet_metadata=writer.writer.metadata,
        stats_columns=compute_statistics_plan(table_schema, properties),
        parquet_column_mapping=parquet_path_to_id_mapping(table_schema),
    )
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=file_path,
        file_format=FileFormat.PARQUET,
        partition=task.partition_key.partition if task.partition_key else Record(),
        file_size_in_bytes=size,
        sort_order_id=None,
        spec_id=metadata.default_spec_id,
        equality_ids=None,
        key_metadata=None,
        **statistics.to_serialized_dict(),
    )


def _write_by_pyiceberg(io: FileIO, metadata: TableMetadata, task: WriteTask) -> DataFile:
    """``task`` written by pyiceberg's ``write_file``, its dictionary columns decoded first
    (pyiceberg projects plain types only)."""
    batches = [
        pa.RecordBatch.from_arrays(
            [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in b.columns],
            schema=plain_schema(b.schema),
        )
        for b in task.record_batches
    ]
    return next(iter(write_file(io, metadata, iter([replace(task, record_batches=batches)]))))
