"""``lockgate.pipelines.rescue``: a chunked column becomes one array without a copy when it has
one chunk (pyarrow's ``combine_chunks`` copies even then), and the coercer keeps a parsed
column that already has its declared type as it is."""

from __future__ import annotations

import pyarrow as pa

from lockgate.pipelines.formats import _Coercer
from lockgate.pipelines.rescue import RESCUED, single_array


def _data(a: pa.Array) -> int:
    return int(a.buffers()[-1].address)


def test_one_chunk_is_taken_as_it_is_several_are_joined() -> None:
    text = pa.array(["a", "bb", None, "ccc"], pa.string())
    one = single_array(pa.chunked_array([text]))
    assert one.equals(text) and _data(one) == _data(text)  # the chunk itself: no copy
    assert single_array(text) is text
    joined = single_array(pa.chunked_array([text.slice(0, 2), text.slice(2)]))
    assert joined.to_pylist() == ["a", "bb", None, "ccc"]
    empty = single_array(pa.chunked_array([], pa.int64()))
    assert empty.type == pa.int64() and len(empty) == 0


def test_a_column_of_its_declared_type_is_not_copied() -> None:
    declared = pa.schema([("id", pa.int64()), ("user", pa.string()), ("qty", pa.int32())])
    ids = pa.array([1, 2, 3], pa.int64())
    users = pa.array(["u1", "u2", "u3"], pa.string())
    parsed = pa.table({"id": ids, "user": users, "qty": pa.array(["1", "x", "3"])})
    out = _Coercer(declared).coerce(parsed)
    assert _data(out.column("id").chunk(0)) == _data(ids)
    assert _data(out.column("user").chunk(0)) == _data(users)
    assert out.column("qty").to_pylist() == [1, None, 3]  # converted, the bad value rescued
    assert out.column(RESCUED).to_pylist() == [None, '{"qty":"x"}', None]
