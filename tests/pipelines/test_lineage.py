"""``lineage_arrays`` (the constant lineage columns of a chunk, dictionary arrays built in C)
and ``repeated`` (per-object values of a small-object batch) equal the obvious per-row
construction, for any chunk length."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from lockgate.pipelines.lineage import DAY, LINEAGE_INDEX, lineage_arrays, repeated
from lockgate.resources.ledger import Claim, ClaimedObject

WHEN = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)


def _claim() -> Claim:
    obj = ClaimedObject("events-2024-03-01.jsonl", "e1", 10, WHEN)
    return Claim("src", 7, "2024-03-01", (obj,), WHEN, 0)


@pytest.mark.parametrize("n", [0, 1, 3, 1000])
def test_lineage_arrays_match_per_row_values(n: int) -> None:
    arrays = lineage_arrays(_claim(), n, WHEN, "events-2024-03-01.jsonl", "e1")
    expected = {
        "_batch_id": pa.array([7] * n, pa.int64()),
        "_ingested_at": pa.array([WHEN] * n, pa.timestamp("us", tz="UTC")),
        DAY: pa.array([date(2024, 3, 1)] * n, pa.date32()),
        "_source_key": pa.array(["events-2024-03-01.jsonl"] * n, pa.string()),
        "_source_etag": pa.array(["e1"] * n, pa.string()),
    }
    assert set(arrays) == set(expected)
    for name, want in expected.items():
        got = arrays[name]
        assert got.null_count == 0
        if name == DAY:  # split by value when staged: plain
            assert got.type == want.type
        else:
            assert got.type == pa.dictionary(LINEAGE_INDEX, want.type), name
            assert len(got.dictionary) == 1
            got = got.dictionary_decode()
        assert got.equals(want), name


@pytest.mark.parametrize("counts", [[], [0], [3], [2, 0, 1], [1] * 300])
def test_repeated_matches_per_row_values(counts: list[int]) -> None:
    keys = [f"k{i}" for i in range(len(counts))]
    got = repeated(keys, counts)
    assert got.type == pa.dictionary(LINEAGE_INDEX, pa.string())
    want = [k for k, c in zip(keys, counts, strict=True) for _ in range(c)]
    assert got.dictionary_decode().to_pylist() == want


def test_lineage_arrays_without_key_have_no_source_columns() -> None:
    arrays = lineage_arrays(_claim(), 2, WHEN, key=None, etag=None)
    assert set(arrays) == {"_batch_id", "_ingested_at", DAY}
