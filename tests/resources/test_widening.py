"""The one widening rule (resources/widening.py), as the table store and the conformer see it."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lockgate.resources.widening import compatible, same_type, widens

# (table type as Arrow, new type, same, widens)
CASES = [
    (pa.int32(), pa.int32(), True, False),
    (pa.int32(), pa.int16(), True, False),
    (pa.int32(), pa.uint32(), True, False),
    (pa.int32(), pa.int64(), False, True),
    (pa.int32(), pa.uint64(), False, True),
    (pa.int64(), pa.uint64(), True, False),
    (pa.int64(), pa.int32(), False, False),
    (pa.float32(), pa.float64(), False, True),
    (pa.float64(), pa.float32(), False, False),
    (pa.large_string(), pa.string(), True, False),
    (pa.string(), pa.int64(), False, False),
    (pa.binary(), pa.large_binary(), True, False),
    (pa.timestamp("us"), pa.timestamp("ns"), True, False),
    (pa.timestamp("us", tz="UTC"), pa.timestamp("us"), False, False),
    (pa.int64(), pa.float64(), False, False),
]


@pytest.mark.parametrize(("old", "new", "same", "promotes"), CASES)
def test_rule(old: pa.DataType, new: pa.DataType, same: bool, promotes: bool) -> None:
    assert same_type(old, new) is same
    assert widens(old, new) is promotes
    assert compatible(old, new) is (same or promotes)
