"""The docs stand alone: no page refers to files outside the repository, and every
repository path a page names in backquotes exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [*REPO.glob("docs/*.md"), *(REPO / n for n in ("README.md", "RELIABILITY.md", "BENCHMARKS.md"))]
)
#: what a page must not contain: the steering repo's copy of the design, parent paths
OUTSIDE = re.compile(r"shared/|DESIGN\.md|\.\./")
#: a backquoted repository path such as `tests/torture/dagster_kill.py` or `docs/operations.md`
PATH = re.compile(r"`((?:docs|tests|resources|sensors|pipelines|bench)/[\w./-]+\.(?:py|md))`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_refers_outside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not OUTSIDE.findall(text), f"{page.name} refers outside the repository"
    missing = [p for p in PATH.findall(text) if not (REPO / p).exists()]
    assert missing == [], f"{page.name} names paths that do not exist: {missing}"


def test_architecture_carries_the_design() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for heading in (
        "## The path of one object",
        "## The exactly-once invariants",
        "## Hazards",
        "## The catalog: commits on plain object storage",
        "## Discovery",
        "## Module map",
    ):
        assert heading in text, heading
