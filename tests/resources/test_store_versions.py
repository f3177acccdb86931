"""``copy_version`` and ``delete_version`` on both backends (local folder, S3 over HTTP): only
the named version is copied or deleted; another version under the key is never touched."""

from __future__ import annotations

import pytest

from lockgate.resources.store import NotFound, ObjectChanged, ObjectStore


def test_copy_version_copies_that_version_and_keeps_its_etag(store: ObjectStore) -> None:
    store.put("land/a.jsonl", b'{"id": 1}\n')
    info = store.head("land/a.jsonl")
    archive = store.child("archive")
    copy = store.copy_version("land/a.jsonl", info.etag, archive, "land/a.jsonl")
    assert archive.get("land/a.jsonl") == b'{"id": 1}\n'
    # local: a hard link (same inode and mtime); S3: a single-part copy keeps its MD5
    assert (copy.etag, copy.size) == (info.etag, info.size)
    again = store.copy_version("land/a.jsonl", info.etag, archive, "land/a.jsonl")
    assert again.etag == copy.etag  # idempotent
    assert store.get("land/a.jsonl") == b'{"id": 1}\n'  # the source is untouched


def test_copy_version_refuses_another_version(store: ObjectStore) -> None:
    store.put("land/a.jsonl", b"old\n")
    old = store.head("land/a.jsonl").etag
    store.delete("land/a.jsonl")
    store.put("land/a.jsonl", b"newer version\n")
    archive = store.child("archive")
    with pytest.raises(ObjectChanged):
        store.copy_version("land/a.jsonl", old, archive, "land/a.jsonl")
    assert not archive.exists("land/a.jsonl")
    with pytest.raises(NotFound):
        store.copy_version("land/missing.jsonl", old, archive, "land/missing.jsonl")


def test_delete_version_deletes_only_that_version(store: ObjectStore) -> None:
    store.put("land/a.jsonl", b"old\n")
    old = store.head("land/a.jsonl").etag
    store.delete("land/a.jsonl")
    store.put("land/a.jsonl", b"newer version\n")
    with pytest.raises(ObjectChanged):
        store.delete_version("land/a.jsonl", old)
    assert store.get("land/a.jsonl") == b"newer version\n"
    current = store.head("land/a.jsonl").etag
    assert store.delete_version("land/a.jsonl", current) is True
    assert not store.exists("land/a.jsonl")
    assert store.delete_version("land/a.jsonl", current) is False  # already gone: no error
