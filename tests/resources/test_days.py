"""The one day parser (resources/days.py): strict days, days in keys, UTC days."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from lockgate.resources.days import check_day, day_from_match, parse_day, utc_day


def test_parse_day_accepts_only_valid_iso_days() -> None:
    assert parse_day("2026-02-28") == date(2026, 2, 28)
    assert check_day("2024-02-29") == "2024-02-29"
    for bad in ("2026-02-30", "20260101", "2026-1-01", " 2026-01-01", "", "2026/01/01"):
        with pytest.raises(ValueError):
            check_day(bad)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        (r"dt=(\d{4}-\d{2}-\d{2})", "dt=2026-01-05/a.csv", date(2026, 1, 5)),
        (r"(\d{8})", "20260102/a.csv", date(2026, 1, 2)),
        (r"(\d{4}/\d{2}/\d{2})", "x/2026/02/03/a.csv", date(2026, 2, 3)),
        (r"(?P<year>\d{4})/(?P<month>\d\d)/(?P<day>\d\d)", "y/2026/03/04/b", date(2026, 3, 4)),
        (r"dt=(\d{4}-\d{2}-\d{2})", "dt=2026-02-31/a.csv", None),
        (r"(\d+)", "123/a.csv", None),
        (r"(x)?y", "y", None),
    ],
)
def test_day_from_match(pattern: str, key: str, expected: date | None) -> None:
    m = re.search(pattern, key)
    assert m is not None
    assert day_from_match(m) == expected


def test_utc_day_converts_offsets_and_takes_naive_as_utc() -> None:
    east = timezone(timedelta(hours=5))
    assert utc_day(datetime(2026, 1, 2, 3, 0, tzinfo=east)) == date(2026, 1, 1)
    assert utc_day(datetime(2026, 1, 2, 23, 0, tzinfo=UTC)) == date(2026, 1, 2)
    assert utc_day(datetime(2026, 1, 2, 23, 0)) == date(2026, 1, 2)
