"""IdRanges: the compact marker of committed batch ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockgate.resources.markers import IdRanges, marker_property


def test_parse_format_roundtrip() -> None:
    r = IdRanges.parse("0-811,813-900")
    assert r.format() == "0-811,813-900"
    assert 811 in r and 812 not in r and 813 in r and 900 in r and 901 not in r
    assert len(r) == 812 + 88


def test_single_ids_and_merging() -> None:
    r = IdRanges().add(3).add(1).add(2).add(7)
    assert r.format() == "1-3,7"
    assert r.add(4).add(5).add(6).format() == "1-7"
    assert IdRanges.parse("5,1-2,3").format() == "1-3,5"


def test_empty() -> None:
    assert IdRanges.parse(None).format() == ""
    assert IdRanges.parse("").format() == ""
    assert len(IdRanges()) == 0 and not IdRanges() and 0 not in IdRanges()


@pytest.mark.parametrize("bad", ["a", "1-", "-1", "3-1", "1,,2", "1;2", "1.5"])
def test_malformed_marker_is_an_error_not_empty(bad: str) -> None:
    with pytest.raises(ValueError):
        IdRanges.parse(bad)


def test_negative_id_rejected() -> None:
    with pytest.raises(ValueError):
        IdRanges().add(-1)


def test_union_difference() -> None:
    a = IdRanges.parse("0-10,20-30")
    b = IdRanges.parse("5-25")
    assert a.union(b).format() == "0-30"
    assert a.difference(b).format() == "0-4,26-30"
    assert b.difference(a).format() == "11-19"
    assert IdRanges.parse("1-3").issubset(a)
    assert not b.issubset(a)


def test_marker_property_name() -> None:
    assert marker_property("events") == "lockgate.committed.events"
    with pytest.raises(ValueError):
        marker_property("bad name")


@given(st.sets(st.integers(min_value=0, max_value=500)), st.sets(st.integers(0, 500)))
def test_matches_python_sets(xs: set[int], ys: set[int]) -> None:
    a, b = IdRanges.of(xs), IdRanges.of(ys)
    assert set(a) == xs and len(a) == len(xs)
    assert set(a.union(b)) == xs | ys
    assert set(a.difference(b)) == xs - ys
    assert IdRanges.parse(a.format()) == a
    assert all((i in a) == (i in xs) for i in range(-1, 502))
    acc = IdRanges()
    for x in xs:
        acc = acc.add(x)
    assert acc == a


@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 20)), max_size=12),
    st.integers(0, 220),
    st.integers(0, 20),
)
def test_add_range_and_covers_match_python_sets(
    ranges: list[tuple[int, int]], lo: int, width: int
) -> None:
    acc, ids = IdRanges(), set()
    for start, n in ranges:
        acc = acc.add_range(start, start + n)
        ids |= set(range(start, start + n + 1))
    assert acc == IdRanges.of(ids)
    assert acc.covers(lo, lo + width) == set(range(lo, lo + width + 1)).issubset(ids)
    assert acc.add_range(5, 4) is acc  # an empty range adds nothing
