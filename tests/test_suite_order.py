"""The order ``make test`` hands files to its workers (tests/conftest.py): heaviest first."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests import conftest

REPO = Path(__file__).resolve().parents[1]


def test_every_heavy_file_exists() -> None:
    """A renamed or split file must be renamed in HEAVY_FILES too, or it loses its place."""
    missing = [path for path in conftest.HEAVY_FILES if not (REPO / path).is_file()]
    assert missing == []


def test_heavy_files_first_longest_first_then_most_tests_each_file_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conftest, "HEAVY_FILES", {"t/test_h1.py": 10, "t/test_h2.py": 50})
    ids = [
        "t/test_one.py::a",
        "t/test_h1.py::b",
        "t/test_many.py::c1",
        "t/test_h2.py::d1",
        "t/test_many.py::c2",
        "t/test_h2.py::d2",
    ]
    items: list[Any] = [SimpleNamespace(nodeid=i) for i in ids]
    conftest.pytest_collection_modifyitems(None, items)  # type: ignore[arg-type]
    assert [i.nodeid for i in items] == [
        "t/test_h2.py::d1",
        "t/test_h2.py::d2",
        "t/test_h1.py::b",
        "t/test_many.py::c1",
        "t/test_many.py::c2",
        "t/test_one.py::a",
    ]
