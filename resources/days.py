"""Partition days: the one parser of ``YYYY-MM-DD`` days and of days found in object keys.

Contract:

* ``check_day(text)`` returns ``text`` if it is a valid ``YYYY-MM-DD`` calendar date, else
  raises ``ValueError`` (``parse_day`` returns the ``date``).
* ``day_from_match(m)`` is the day a partition-pattern match denotes: the named groups
  ``year``/``month``/``day`` when all are present, else the first group as ``YYYY-MM-DD``,
  ``YYYYMMDD`` or ``YYYY/MM/DD``; None when that is not a valid date (never a guess).
* ``utc_day(t)`` is the UTC calendar day of a timestamp (naive timestamps are taken as UTC).
* ``check_days_in_range`` refuses (``DayOutOfRange``, a terminal error, exit 2) days before a
  source's ``partition.start`` or after today (UTC): no such partition exists.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import ClassVar

from lockgate.resources.errors import ExitCode, TerminalError

DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAY_GROUPS = ("year", "month", "day")


def parse_day(text: str) -> date:
    """The date of a ``YYYY-MM-DD`` day; ``ValueError`` on anything else."""
    if not isinstance(text, str) or not DAY.match(text):
        raise ValueError(f"invalid partition day {text!r} (expected YYYY-MM-DD)")
    return date.fromisoformat(text)


def check_day(day: str) -> str:
    """Return ``day`` if it is a valid ``YYYY-MM-DD`` date, else raise ``ValueError``."""
    parse_day(day)
    return day


def day_from_match(m: re.Match[str]) -> date | None:
    """The date a partition-pattern match denotes, or None if it is not a valid date."""
    groups = m.groupdict()
    try:
        if all(groups.get(g) for g in DAY_GROUPS):
            return date(int(groups["year"]), int(groups["month"]), int(groups["day"]))
        text = m.group(1)
        if text is None:
            return None
        digits = text.replace("-", "").replace("/", "")
        if len(digits) != 8 or not digits.isdigit():
            return None
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def utc_day(t: datetime) -> date:
    """The UTC calendar day of ``t`` (a naive ``t`` is taken as UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).date()


class DayOutOfRange(TerminalError):
    """A request for days outside a source's partitions: before its ``partition.start``, or
    after today (UTC). Retrying cannot help: the request or the config must change."""

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE
    hint: str | None = (
        "a source's days run from its partition.start to today (UTC); "
        "see docs/operations.md, 'Days out of range'"
    )


def check_days_in_range(
    source: str, start: date, days: Sequence[date], today: date | None = None
) -> None:
    """Raise ``DayOutOfRange`` naming the first and last offending day unless every day of
    ``days`` lies in ``[start, today]`` (``today``: the current UTC day)."""
    last = today or datetime.now(UTC).date()
    early = sorted(d for d in days if d < start)
    late = sorted(d for d in days if d > last)
    problems = []
    if early:
        problems.append(
            f"{_span(early)} {'is' if len(early) == 1 else 'are'} before its partition.start "
            f"{start.isoformat()}"
        )
    if late:
        problems.append(
            f"{_span(late)} {'is' if len(late) == 1 else 'are'} in the future "
            f"(today is {last.isoformat()} UTC)"
        )
    if problems:
        raise DayOutOfRange(f"source {source!r}: " + "; ".join(problems) + "; nothing was done")


def _span(days: Sequence[date]) -> str:
    if len(days) == 1:
        return f"day {days[0].isoformat()}"
    return f"{len(days)} days ({days[0].isoformat()} .. {days[-1].isoformat()})"
