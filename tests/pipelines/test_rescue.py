"""``lockgate.pipelines.rescue``: a chunked column becomes one array without a copy when it has
one chunk (pyarrow's ``combine_chunks`` copies even then)."""

from __future__ import annotations

import pyarrow as pa

from lockgate.pipelines.rescue import single_array


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
