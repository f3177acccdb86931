"""The one widening rule: which new Arrow type a table column may take.

A column keeps its Iceberg type or is promoted: ``int -> long`` and ``float -> double``
(Iceberg's safe promotions). Arrow types are compared by the Iceberg type they map to:

* integers of at most 32 bits (signed or not) are Iceberg ``int``, 64-bit integers ``long``;
* ``string``/``large_string`` are one type, as are ``binary``/``large_binary``, and
  timestamps of any unit with the same time-zone-ness;
* nested types are left to pyiceberg's ``union_by_name``;
* a dictionary type is its value type (``plain_type``: Iceberg has no dictionary type, and
  Parquet files store the values).

Contract: ``widens(old, new)`` is true exactly for a promotion (the table must evolve before
taking ``new``); ``compatible(old, new)`` is ``same_type(old, new) or widens(old, new)``;
the table store refuses every other change, and the conformer evolves a table exactly when a
chunk's column ``widens`` the table's.
"""

from __future__ import annotations

import pyarrow as pa

PROMOTIONS = "int->long and float->double"


def plain_type(t: pa.DataType) -> pa.DataType:
    """``t`` with every dictionary type replaced by its value type (recursively)."""
    if pa.types.is_dictionary(t):
        return plain_type(t.value_type)
    if pa.types.is_map(t):
        return pa.map_(plain_type(t.key_type), plain_type(t.item_type))
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(plain_type(t.value_type)))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(plain_type(t.value_type)), t.list_size)
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(plain_type(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(plain_type(f.type)) for f in t])
    return t


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with ``plain_type`` of every field's type."""
    return pa.schema([f.with_type(plain_type(f.type)) for f in schema])


def same_type(old: pa.DataType, new: pa.DataType) -> bool:
    """Whether ``new`` values fit a column of ``old`` without changing its Iceberg type."""
    old, new = plain_type(old), plain_type(new)
    if old == new:
        return True
    for pred in (pa.types.is_string, pa.types.is_large_string):
        if pred(old) or pred(new):
            return (pa.types.is_string(old) or pa.types.is_large_string(old)) and (
                pa.types.is_string(new) or pa.types.is_large_string(new)
            )
    if pa.types.is_binary(old) or pa.types.is_large_binary(old):
        return pa.types.is_binary(new) or pa.types.is_large_binary(new)
    if pa.types.is_timestamp(old) and pa.types.is_timestamp(new):
        return (old.tz is None) == (new.tz is None)
    if pa.types.is_integer(old) and pa.types.is_integer(new):
        # arrow int32 <-> iceberg int; narrower arrow ints map to iceberg int too
        return (old.bit_width <= 32) == (new.bit_width <= 32)
    return bool(pa.types.is_nested(old) or pa.types.is_nested(new))


def widens(old: pa.DataType, new: pa.DataType) -> bool:
    """Whether ``new`` is a promotion of ``old``: Iceberg ``int -> long`` or ``float -> double``."""
    old, new = plain_type(old), plain_type(new)
    if pa.types.is_integer(old) and pa.types.is_integer(new):
        return old.bit_width <= 32 < new.bit_width
    if pa.types.is_floating(old) and pa.types.is_floating(new):
        return old.bit_width <= 32 < new.bit_width
    return False


def compatible(old: pa.DataType, new: pa.DataType) -> bool:
    """Whether a column of ``old`` may take ``new`` values (as they are, or after evolving)."""
    return same_type(old, new) or widens(old, new)
