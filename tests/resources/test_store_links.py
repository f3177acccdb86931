"""LocalStore never follows symbolic links (inside the root or not) and never opens special
files: listing skips and counts them, open and head refuse them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lockgate.resources.store import (
    SKIPPED_LINK,
    SKIPPED_SPECIAL,
    LocalStore,
    NotFound,
    NotRegularFile,
    ObjectChanged,
)


def test_links_inside_the_root_and_fifos_are_skipped_and_refused(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    (root / "d").mkdir(parents=True)
    (root / "d" / "a.csv").write_bytes(b"id\n1\n")
    (root / "b.csv").symlink_to(root / "d" / "a.csv")  # would ingest a.csv twice
    (root / "alias").symlink_to(root / "d", target_is_directory=True)
    os.mkfifo(root / "pipe.csv")  # opening it would block forever
    store = LocalStore(root)
    assert [o.key for o in store.list()] == ["d/a.csv"]
    assert store.skipped == {SKIPPED_LINK: 2, SKIPPED_SPECIAL: 1}
    for key in ("b.csv", "alias/a.csv", "pipe.csv"):
        with pytest.raises(NotRegularFile):
            store.open(key)
        with pytest.raises(ObjectChanged):  # a claimed file that is no longer one
            store.head(key)
    with pytest.raises(NotFound):
        store.open("d")
    with pytest.raises(NotFound):
        store.open("d/missing.csv")
    assert store.get("d/a.csv") == b"id\n1\n"


def test_listing_under_a_linked_prefix_finds_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.csv").write_bytes(b"id\n1\n")
    root = tmp_path / "landing"
    root.mkdir()
    (root / "in").symlink_to(outside, target_is_directory=True)
    store = LocalStore(root)
    assert list(store.list("in/")) == []
    assert list(store.list()) == []
    assert store.skipped == {SKIPPED_LINK: 1}
