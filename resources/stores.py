"""Opening a store by URL: the one place that knows every ``ObjectStore`` implementation."""

from __future__ import annotations

from lockgate.resources.store import LocalStore, ObjectStore, S3Options


def open_store(url: str, s3: S3Options | None = None) -> ObjectStore:
    """The store for ``url``: ``s3://bucket[/prefix]`` or a local path (``file://`` allowed)."""
    if url.startswith("s3://") or url.startswith("s3a://"):
        from lockgate.resources.store_s3 import S3Store  # s3fs is imported only for S3

        return S3Store(url, s3 or S3Options.from_env())
    if url.startswith("file://"):
        url = url[len("file://") :]
    return LocalStore(url)
