"""``_lineage_arrays`` (the constant lineage columns of a chunk, built with ``pa.repeat`` for
speed) equals the obvious per-row construction, for any chunk length."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from lockgate.pipelines.lineage import DAY, lineage_arrays
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
        assert got.type == want.type and got.null_count == 0
        assert got.equals(want), name


def test_lineage_arrays_without_key_have_no_source_columns() -> None:
    arrays = lineage_arrays(_claim(), 2, WHEN, key=None, etag=None)
    assert set(arrays) == {"_batch_id", "_ingested_at", DAY}
