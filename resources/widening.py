"""The one widening rule: which new Arrow type a table column may take.

A column keeps its Iceberg type or is promoted: ``int -> long`` and ``float -> double``
(Iceberg's safe promotions). Arrow types are compared by the Iceberg type they map to:

* integers of at most 32 bits (signed or not) are Iceberg ``int``, 64-bit integers ``long``;
* ``string``/``large_string`` are one type, as are ``binary``/``large_binary``, and
  timestamps of any unit with the same time-zone-ness;
* nested types are left to pyiceberg's ``union_by_name``.

Contract: ``widens(old, new)`` is true exactly for a promotion (the table must evolve before
taking ``new``); ``compatible(old, new)`` is ``same_type(old, new) or widens(old, new)``;
the table store refuses every other change, and the conformer evolves a table exactly when a
chunk's column ``widens`` the table's.
"""

from __future__ import annotations

import pyarrow as pa

PROMOTIONS = "int->long and float->double"


def same_type(old: pa.DataType, new: pa.DataType) -> bool:
    """Whether ``new`` values fit a column of ``old`` without changing its Iceberg type."""
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
    if pa.types.is_integer(old) and pa.types.is_integer(new):
        return old.bit_width <= 32 < new.bit_width
    if pa.types.is_floating(old) and pa.types.is_floating(new):
        return old.bit_width <= 32 < new.bit_width
    return False


def compatible(old: pa.DataType, new: pa.DataType) -> bool:
    """Whether a column of ``old`` may take ``new`` values (as they are, or after evolving)."""
    return same_type(old, new) or widens(old, new)
