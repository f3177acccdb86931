"""The ``_rescued_data`` column: values that do not fit their column are kept, not lost.

Contract:

* ``_rescued_data`` is a nullable string column present in every Lockgate table. For a row it
  is null when nothing was rescued, else a JSON object ``{field: original value, ...}``.
* A value lands in it (and its column is null in that row) when it cannot be converted to its
  column's type, when its field is not in a declared schema, when its field name is reserved
  (lineage columns, ``_day``, ``_rescued_data``), or when it is an earlier occurrence of a
  duplicated JSON key (the last occurrence is the one parsed; earlier ones are rescued, as a
  list when there are several).
* Rescued values are JSON where they are JSON-representable; otherwise (NaN/Infinity,
  bytes, dates, decimals) they are their source-side text (``"NaN"``, ``"Infinity"``,
  ISO dates, the decimal's digits, bytes decoded as UTF-8 with ``\\x..`` escapes).
* A nanosecond timestamp is rescued as ISO text with nine fraction digits. A temporal value
  Python cannot represent (a timestamp or date outside years 1-9999) is
  rescued as its count of units since the epoch, e.g. ``"1000000000000000 s since
  1970-01-01T00:00:00"``: never wrapped into another value.
* Null values are never rescued (nothing to keep).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from lockgate.pipelines.startup import LazyModule
from lockgate.resources.config import LINEAGE_COLUMNS, RESERVED_COLUMNS

if TYPE_CHECKING:
    import pyarrow.compute as pc
else:  # imported at its first use (~70 ms a first read need not wait for)
    pc = LazyModule("pyarrow.compute", globals(), "pc")

RESCUED = "_rescued_data"
RESCUED_FIELD = pa.field(RESCUED, pa.string())
#: Data fields with these names are rescued (they would collide with Lockgate's columns).
RESERVED_NAMES: frozenset[str] = frozenset((*LINEAGE_COLUMNS, *RESERVED_COLUMNS))
ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def jsonable(value: Any) -> Any:
    """``value`` as something ``json.dumps(..., allow_nan=False)`` accepts (see contract)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


def dumps(rescued: Mapping[str, Any]) -> str:
    """The JSON text of a rescued-values object (compact, UTF-8 kept)."""
    return json.dumps(
        {k: jsonable(v) for k, v in rescued.items()},
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    )


def merge(existing: str | None, more: Mapping[str, Any]) -> str:
    """``existing`` (a rescued JSON object or None) with ``more`` added; a field already in
    ``existing`` keeps its value there and ``more``'s value is added under ``<field>#2``."""
    base: dict[str, Any] = json.loads(existing) if existing else {}
    for k, v in more.items():
        name, n = k, 2
        while name in base:
            name, n = f"{k}#{n}", n + 1
        base[name] = jsonable(v)
    return dumps(base)


def merge_column(
    column: pa.Array | pa.ChunkedArray | None, n: int, per_row: Mapping[int, Mapping[str, Any]]
) -> pa.Array:
    """A ``_rescued_data`` array of ``n`` rows: ``column`` (or nulls) with ``per_row`` merged."""
    if not any(per_row.values()):  # the common case: no Python per row
        if column is None:
            return pa.nulls(n, pa.string())
        return single_array(column).cast(pa.string())
    if column is None:
        values: list[str | None] = [None] * n
    else:
        values = column.to_pylist()
    for i, more in per_row.items():
        if more:
            values[i] = merge(values[i], more)
    return pa.array(values, pa.string())


def convert_rescuing(
    col: pa.Array | pa.ChunkedArray,
    convert: Callable[[pa.Array], pa.Array | pa.ChunkedArray],
    target: pa.DataType,
    name: str,
    per_row: dict[int, dict[str, Any]],
) -> pa.Array:
    """``convert(col)``; where that fails, the failing rows are found by bisection (a few
    converts per bad value, not one per row) and become null, and their original values are
    added to ``per_row[row][name]`` (for ``merge_column``). A conversion that is not
    implemented at all fails every non-null row at once."""
    arr = single_array(col)
    out, failed = _convert_or_bisect(arr, convert, target)
    if failed:
        values = _py_values(arr.take(pa.array(failed, pa.int64())))
        for i, v in zip(failed, values, strict=True):
            per_row.setdefault(i, {})[name] = v
    return out


def _convert_or_bisect(
    arr: pa.Array,
    convert: Callable[[pa.Array], pa.Array | pa.ChunkedArray],
    target: pa.DataType,
) -> tuple[pa.Array, list[int]]:
    try:
        return single_array(convert(arr)), []
    except pa.ArrowNotImplementedError:
        valid = arr.is_valid().to_pylist()
        return pa.nulls(len(arr), target), [i for i, v in enumerate(valid) if v]
    except ARROW_ERRORS:
        pass
    pieces: list[pa.Array] = []
    failed: list[int] = []
    stack = [(0, len(arr))]
    while stack:
        lo, hi = stack.pop()
        try:
            pieces.append(single_array(convert(arr.slice(lo, hi - lo))))
            continue
        except ARROW_ERRORS:
            if hi - lo == 1:
                failed.append(lo)
                pieces.append(pa.nulls(1, target))
                continue
        mid = (lo + hi) // 2
        stack.append((mid, hi))
        stack.append((lo, mid))
    return pa.concat_arrays([p.cast(target) for p in pieces]), failed


def _py_values(arr: pa.Array) -> list[Any]:
    """``arr.to_pylist()``, except that a temporal value Python cannot hold becomes its count
    of units since the epoch as text (see the module contract). Nanosecond timestamps become
    ISO text with nine fraction digits (Python's datetime stops at microseconds)."""
    t = arr.type
    if pa.types.is_timestamp(t) and t.unit == "ns":
        text: list[Any] = pc.strftime(arr, "%Y-%m-%dT%H:%M:%S" + ("%z" if t.tz else "")).to_pylist()
        return text
    try:
        return arr.to_pylist()
    except (OverflowError, ValueError):
        pass
    out: list[Any] = []
    for i in range(len(arr)):
        try:
            out.append(arr[i].as_py())
        except (OverflowError, ValueError):
            unit = getattr(t, "unit", "day" if pa.types.is_date32(t) else "ms")
            count = arr.slice(i, 1).view(pa.int64() if t.bit_width == 64 else pa.int32())
            out.append(f"{count[0].as_py()} {unit} since 1970-01-01T00:00:00")
    return out


def single_array(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``a`` as one array: a chunked array of one chunk is that chunk (``combine_chunks``
    would copy it: pyarrow concatenates even a single chunk), of several their concatenation."""
    if not isinstance(a, pa.ChunkedArray):
        return a
    return a.chunk(0) if a.num_chunks == 1 else a.combine_chunks()


#: One value's JSON text as pieces (literal text, or string arrays without nulls) whose
#: element-wise concatenation is the text: rendered by ONE join kernel however deep it nests.
Pieces = list[str | pa.Array]


def extras_json(table: pa.Table, names: Sequence[str]) -> pa.Array:
    """A ``_rescued_data`` array holding, per row, the non-null values of columns ``names``
    as a JSON object (null where a row holds none). Strings, integers, booleans and finite
    floats are rendered column-wise by Arrow; other columns value by value in Python. When no
    column holds a null (the common case) every row's object is rendered by one join kernel
    (``Pieces``); otherwise one fragment per column is joined and rows without any value are
    null. Both give the same text."""
    n = table.num_rows
    columns: list[tuple[str, pa.Array]] = []
    for name in names:
        col = single_array(table.column(name))
        if col.null_count != len(col):
            columns.append((name, col))
    if not columns:
        return pa.nulls(n, pa.string())
    if all(col.null_count == 0 for _, col in columns):
        pieces: Pieces = ["{"]
        for k, (name, col) in enumerate(columns):
            pieces.append(("," if k else "") + json.dumps(name, ensure_ascii=False) + ":")
            pieces += _pieces(col)
        return _concat([*pieces, "}"], n)
    fragments: list[pa.Array] = []
    for name, col in columns:
        prefix = json.dumps(name, ensure_ascii=False) + ":"
        text = _json_text(col)
        fragment = pc.binary_join_element_wise(pa.scalar(prefix), text, pa.scalar(","), "")
        fragments.append(pc.fill_null(fragment, ""))
    # (no nulls reach the join: pyarrow 26 drops all-null rows with null_handling="skip")
    body = pc.binary_join_element_wise(*fragments, "") if len(fragments) > 1 else fragments[0]
    inner = pc.utf8_slice_codeunits(body, 0, -1)  # every fragment ends with ","
    wrapped = pc.binary_join_element_wise("{", inner, "}", "")
    return pc.if_else(pc.equal(body, ""), pa.scalar(None, pa.string()), wrapped)


def _concat(pieces: Pieces, n: int) -> pa.Array:
    """The element-wise concatenation of ``pieces`` (``n`` rows), by one kernel."""
    merged: Pieces = []
    for p in pieces:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        elif not (isinstance(p, str) and not p):
            merged.append(p)
    if len(merged) == 1 and not isinstance(merged[0], str):
        return merged[0]
    args = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in merged]
    if all(isinstance(p, str) for p in merged):  # no array: broadcast the text to n rows
        return pa.repeat(pa.scalar("".join(merged), pa.string()), n)
    return pc.binary_join_element_wise(*args, "")


def _pieces(col: pa.Array) -> Pieces:
    """The JSON text of each value of ``col`` (which holds no null) as ``Pieces``."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return ['"', _escaped(col), '"']
    if pa.types.is_struct(t):
        return _struct_pieces(col)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _list_pieces(col)
    return [_json_text(col)]


def _needs_escape(text: pa.Array) -> bool:
    """Whether a value of string array ``text`` may hold a byte JSON escapes (scanned over
    the value bytes in one vectorised pass; bytes of null slots count too: conservative)."""
    if not len(text):
        return False
    buffers = text.buffers()
    if buffers[2] is None:
        return False
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=width)[text.offset : text.offset + len(text) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8)[int(offsets[0]) : int(offsets[-1])]
    # control characters, '"' and "\\": three SIMD comparisons (~4x cheaper than a lookup)
    return bool(
        np.count_nonzero(data < 0x20)
        or np.count_nonzero(data == 0x22)
        or np.count_nonzero(data == 0x5C)
    )


def _escaped(col: pa.Array) -> pa.Array:
    """String values escaped for a JSON string (without the quotes; nulls stay null)."""
    text = col.cast(pa.string())
    if _needs_escape(text):
        text = pc.replace_substring(text, "\\", "\\\\")
        text = pc.replace_substring(text, '"', '\\"')
        for code in range(32):
            ch = chr(code)
            if pc.any(pc.match_substring(text, ch)).as_py():
                text = pc.replace_substring(text, ch, f"\\u{code:04x}")
    return text


def _json_text(col: pa.Array) -> pa.Array:
    """Each non-null value of ``col`` as JSON text (nulls stay null)."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pc.binary_join_element_wise('"', _escaped(col), '"', "")
    if pa.types.is_integer(t):
        return col.cast(pa.string())
    if pa.types.is_boolean(t):
        return pc.if_else(col, pa.scalar("true"), pa.scalar("false"))
    if pa.types.is_floating(t) and pc.all(pc.is_finite(col)).as_py() is not False:
        return col.cast(pa.string())  # shortest round-trip text, e.g. 2.5, 1e+20
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _valid_only(col, _concat(_list_pieces(col), len(col)))
    if pa.types.is_struct(t):
        return _valid_only(col, _concat(_struct_pieces(col), len(col)))
    values = col.to_pylist()
    return pa.array(
        [
            None
            if v is None
            else json.dumps(jsonable(v), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            for v in values
        ],
        pa.string(),
    )


def _valid_only(col: pa.Array, text: pa.Array) -> pa.Array:
    """``text`` where ``col`` is valid, null where it is null."""
    if not col.null_count:
        return text
    return pc.if_else(col.is_valid(), text, pa.scalar(None, pa.string()))


def _list_pieces(col: pa.Array) -> Pieces:
    """``[e1,e2,...]`` per list (meaningless where a list is null): its elements' text
    (``null`` for null elements) joined column-wise, with the original list boundaries.
    Lists of strings without nulls (the common case) are joined by one kernel over the lists
    themselves (``","`` between escaped elements), quoted by the caller's join."""
    if not col.null_count and pa.types.is_string(col.type.value_type):
        flat = col.flatten()
        if not flat.null_count:
            lists = col
            if _needs_escape(flat):  # the same lists over the escaped values
                offsets = col.offsets
                if offsets[0].as_py():
                    offsets = pc.subtract(offsets, offsets[0])
                lists = type(col).from_arrays(offsets, _escaped(flat))
            joined = pc.binary_join(lists, '","')
            lengths = pc.list_value_length(col)
            quote: str | pa.Array = '"'
            if pc.min(lengths).as_py() == 0:  # "[]", not '[""]'
                quote = pc.if_else(pc.greater(lengths, 0), pa.scalar('"'), pa.scalar(""))
            return ["[", quote, joined, quote, "]"]
    lengths = pc.fill_null(pc.list_value_length(col), 0).cast(pa.int64())
    offsets = pa.concat_arrays(
        [pa.array([0], pa.int64()), pc.cumulative_sum(lengths).cast(pa.int64())]
    )
    flat = col.flatten()  # slice- and null-aware
    if flat.null_count:
        elements = pc.fill_null(_json_text(flat), "null")
    else:
        elements = _concat(_pieces(flat), len(flat))
    return ["[", pc.binary_join(pa.LargeListArray.from_arrays(offsets, elements), ","), "]"]


def _struct_pieces(col: pa.Array) -> Pieces:
    """``{"f":v,...}`` per struct (meaningless where a struct is null), every field in order
    (``null`` for null values), as ``jsonable`` renders the struct's dict."""
    out: Pieces = ["{"]
    for i in range(col.type.num_fields):
        out.append(("," if i else "") + json.dumps(str(col.type.field(i).name), ensure_ascii=False))
        out.append(":")
        child = single_array(pc.struct_field(col, [i]))
        if child.null_count:
            out.append(pc.fill_null(_json_text(child), "null"))
        else:
            out += _pieces(child)
    out.append("}")
    return out


def extras_per_row(table: pa.Table, names: Sequence[str]) -> dict[int, dict[str, Any]]:
    """``{row: {field: value}}`` of the non-null values of columns ``names`` (only rows that
    hold at least one)."""
    out: dict[int, dict[str, Any]] = {}
    for name in names:
        col = table.column(name)
        if col.null_count == len(col):
            continue
        values = col.to_pylist()
        for i, v in enumerate(values):
            if v is not None:
                out.setdefault(i, {})[name] = v
    return out


__all__ = [
    "ARROW_ERRORS",
    "RESCUED",
    "RESCUED_FIELD",
    "RESERVED_NAMES",
    "convert_rescuing",
    "dumps",
    "extras_json",
    "extras_per_row",
    "jsonable",
    "merge",
    "merge_column",
]
