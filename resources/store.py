"""The object store: one interface over a local folder and S3.

Contract (both backends):

* Keys are ``/``-separated, relative to the store's root, never start with ``/`` and never
  contain ``..`` segments (``validate_key`` enforces it, so no key can escape the root).
* ``list`` yields objects in lexicographic key order, strictly after ``start_after``.
* ``put_if_absent`` is atomic: of any number of concurrent creators of one key exactly one
  returns, the others raise ``AlreadyExists``. A reader never sees a partial object.
* ``open`` streams: memory stays bounded whatever the object's size. Given an ``etag``, it
  raises ``ObjectChanged`` when the object is no longer that version. Given a ``size`` (the
  claim's, from the listing), the stream delivers exactly that many bytes or raises
  ``SizeMismatch``: the length an endpoint reports on HEAD is never trusted over the claim.
  raises ``ObjectChanged`` when the object is no longer that version.
* Local folders: only regular files are objects. Symbolic links (to files or folders, inside
  the root or not) are never followed: ``list`` skips them and special files (FIFOs, sockets,
  devices), counting them in ``skipped`` by reason, and ``open`` / ``head`` refuse them
  (``NotRegularFile``), whatever the path component that is a link. (A link inside the root
  would ingest its target twice; one outside would ingest any readable file.)
"""

from __future__ import annotations

import abc
import contextlib
import errno
import io
import os
import stat
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from lockgate.resources.crashpoints import crash_point
from lockgate.resources.errors import ExitCode, LockgateError, TerminalError, TransientError

TMP_PREFIX = ".lockgate-tmp-"
#: ``LocalStore.skipped`` reasons.
SKIPPED_LINK = "symbolic link (not followed)"
SKIPPED_SPECIAL = "not a regular file"


class StoreError(LockgateError):
    """Base of the object store's errors (a family: never raised itself)."""


class AlreadyExists(StoreError, TransientError):
    """A create-only put found the key taken (S3: HTTP 412 on ``If-None-Match: *``): a lost
    race; the caller re-reads and re-plans."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFLICT


class NotFound(StoreError, TerminalError, FileNotFoundError):
    """The key does not exist."""

    exit_code: ClassVar[ExitCode] = ExitCode.OBJECT_CHANGED


class ObjectChanged(StoreError, TerminalError):
    """The object under a key is no longer the version (etag) that was listed."""

    exit_code: ClassVar[ExitCode] = ExitCode.OBJECT_CHANGED


class SizeMismatch(StoreError, TransientError):
    """An object's bytes as read differ in number from its claimed size while its etag still
    matches: a lying or truncating endpoint. A transient read error (the read is retried,
    then the batch fails); never a reason to commit fewer records. A size that legitimately
    changed comes with a new etag (``ObjectChanged``)."""

    exit_code: ClassVar[ExitCode] = ExitCode.STORE_UNAVAILABLE

    def __init__(self, key: str, consumed: int, claimed: int, detail: str = ""):
        what = f"{key}: read {consumed} bytes but the claim says {claimed}"
        super().__init__(f"{what} ({detail})" if detail else what)
        self.key = key
        self.consumed = consumed
        self.claimed = claimed


class NotRegularFile(ObjectChanged):
    """The key names a symbolic link (or passes through one) or a special file: never followed
    or read. A subclass of ``ObjectChanged``: what was claimed as a file is not one now."""


class UnsafeEndpoint(StoreError, TerminalError):
    """The endpoint does not honour create-only puts: exactly-once cannot be guaranteed."""

    exit_code: ClassVar[ExitCode] = ExitCode.UNSAFE_ENDPOINT
    hint: str | None = "run `lockgate doctor` to check an endpoint"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime  # timezone-aware, UTC


@dataclass(frozen=True)
class S3Options:
    """Where S3 is and how to reach it. Credentials come from the usual AWS variables or
    the explicit fields; they are never logged (``__repr__`` hides them)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, endpoint_url: str | None = None, region: str | None = None) -> S3Options:
        return cls(
            endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None,
            region=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        )


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise ``ValueError``."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid object key {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")[:-1]) or key.split("/")[-1] in (
        ".",
        "..",
    ):
        raise ValueError(f"invalid object key {key!r}")
    return key


def join_key(*parts: str) -> str:
    """Join key segments with single slashes (empty parts are skipped)."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


class ObjectStore(abc.ABC):
    """Abstract object store rooted at ``url``."""

    url: str

    @abc.abstractmethod
    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` and sorts after ``start_after``, in order."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Metadata of one object; ``NotFound`` if missing."""

    @abc.abstractmethod
    def open(self, key: str, etag: str | None = None, size: int | None = None) -> BinaryIO:
        """A streaming binary reader; ``NotFound`` / ``ObjectChanged`` / ``SizeMismatch`` as
        documented (``size``: the object's claimed length, checked while reading)."""

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write (or overwrite) an object atomically."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> None:
        """Create ``key`` with ``data``; ``AlreadyExists`` if it exists (never overwrites)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; a missing key is not an error."""

    @abc.abstractmethod
    def uri(self, key: str = "") -> str:
        """Absolute location of ``key`` (a path, or ``s3://bucket/...``) for other readers."""

    @abc.abstractmethod
    def child(self, prefix: str) -> ObjectStore:
        """The same store rooted at ``prefix`` below this root."""

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except NotFound:
            return False
        return True

    def copy_version(self, key: str, etag: str, dest: ObjectStore, dest_key: str) -> ObjectInfo:
        """Copy version ``etag`` of ``key`` to ``dest_key`` of ``dest`` (replacing what is
        there) and return the copy's info; its etag may differ from ``etag`` (stores name
        versions their own way). ``NotFound`` / ``ObjectChanged`` when ``key`` is no longer that
        version. This generic copy reads the object into memory through a pinned ``open``;
        stores override it with a copy that does not."""
        with self.open(key, etag=etag) as f:
            data = f.read()
        dest.put(dest_key, data)
        return dest.head(dest_key)

    def delete_version(self, key: str, etag: str) -> bool:
        """Delete ``key`` only while it is version ``etag``: True if deleted, False if there is
        no such key; ``ObjectChanged`` (nothing deleted) when another version is there. This
        generic form checks, then deletes: a version put between the two would be deleted;
        stores with a conditional delete override it."""
        try:
            info = self.head(key)
        except NotFound:
            return False
        if info.etag != etag:
            raise ObjectChanged(f"{self.uri(key)}: expected etag {etag}, found {info.etag}")
        self.delete(key)
        return True


class _PinnedFile(io.RawIOBase):
    """A local file read as ONE version: never more than the size it had when opened, and at
    the end of the stream its etag (inode, mtime, size) is checked again, so a file appended
    to, truncated or touched while it was read raises ``ObjectChanged`` instead of handing
    out a mix of two versions (a local file, unlike an S3 object, can change in place)."""

    def __init__(
        self,
        f: io.BufferedReader,
        key: str,
        info: ObjectInfo,
        info_of: Callable[[str, os.stat_result], ObjectInfo],
    ):
        self._f = f
        self._key = key
        self._info = info
        self._info_of = info_of
        self._left = info.size

    def readable(self) -> bool:
        return True

    def _check(self) -> None:
        if self._info_of(self._key, os.fstat(self._f.fileno())).etag != self._info.etag:
            raise ObjectChanged(f"{self._key}: changed while being read (etag {self._info.etag})")

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = self._f.readinto(view[: min(len(view), self._left)]) if self._left else 0
        self._left -= n
        if not n:
            self._check()
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def read_into(stream: BinaryIO, view: memoryview) -> int:
    """``stream.readinto(view)`` (no intermediate copy) where the stream has it, else a
    ``read`` copied into ``view``; the byte count (0 at the end)."""
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        n = readinto(view)
        return 0 if n is None else int(n)
    data = stream.read(len(view))
    view[: len(data)] = data
    return len(data)


class SizedReader(io.RawIOBase):
    """``raw``, counted: raises ``SizeMismatch`` as soon as more than ``size`` bytes come, or
    when the stream ends before ``size`` bytes. ``consumed`` is the count so far."""

    def __init__(self, raw: BinaryIO, key: str, size: int):
        super().__init__()
        self.raw = raw
        self.key = key
        self.size = size
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = read_into(self.raw, view)
        if n == 0 and self.consumed < self.size and len(view):
            raise SizeMismatch(self.key, self.consumed, self.size, "the stream ended early")
        self.consumed += n
        if self.consumed > self.size:
            raise SizeMismatch(self.key, self.consumed, self.size, "more bytes than claimed")
        return n

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()


class LocalStore(ObjectStore):
    """A folder on the local filesystem.

    Writes go to a temporary file in the target folder, are fsynced, then published with
    ``os.link`` (create-only: fails if the name exists) or ``os.replace`` (overwrite), so a
    reader sees either nothing or the whole object. Temporary names start with
    ``TMP_PREFIX`` and are never listed.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.url = str(self.root)
        #: Entries ``list`` left out, by reason (cumulative over this store's listings).
        self.skipped: Counter[str] = Counter()

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def uri(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self.root / validate_key(prefix.strip("/")))

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}",
            last_modified=datetime.fromtimestamp(st.st_mtime, tz=UTC),
        )

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        """In key order, lazily: each folder is read when the walk reaches it, and a folder
        whose every key sorts at or before ``start_after`` (or outside ``prefix``) is never
        read, so a listing that starts late in the tree or stops early costs what it lists.
        Symbolic links and special files are counted in ``skipped`` when the walk meets them."""
        base_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root / base_rel if base_rel else self.root
        if not base.is_dir() or any(
            p.is_symlink() for p in [base, *base.parents] if p.is_relative_to(self.root)
        ):
            return
        yield from self._walk(str(base), base_rel, prefix, start_after)

    def _walk(
        self, dirpath: str, rel_dir: str, prefix: str, start_after: str | None
    ) -> Iterator[ObjectInfo]:
        """The keys under ``rel_dir`` in order. A folder ``d`` holds exactly the keys that start
        with ``d/``, so sorting a folder's entries by ``name`` for files and ``name + "/"`` for
        folders is the order of their keys."""
        try:
            entries = list(os.scandir(dirpath))
        except (FileNotFoundError, NotADirectoryError):
            return
        ordered: list[tuple[str, os.DirEntry[str], bool]] = []
        for e in entries:
            if e.name.startswith(TMP_PREFIX):
                continue
            key = f"{rel_dir}/{e.name}" if rel_dir else e.name
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                continue
            ordered.append((key + "/" if is_dir else key, e, is_dir))
        ordered.sort(key=lambda t: t[0])
        for sort_key, e, is_dir in ordered:
            if is_dir:
                if not (sort_key.startswith(prefix) or prefix.startswith(sort_key)):
                    continue
                if (
                    start_after is not None
                    and sort_key < start_after
                    and not start_after.startswith(sort_key)
                ):
                    continue  # every key below it sorts before start_after
                yield from self._walk(e.path, sort_key[:-1], prefix, start_after)
                continue
            key = sort_key
            if not key.startswith(prefix) or (start_after is not None and key <= start_after):
                continue
            try:
                st = os.lstat(e.path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                self.skipped[SKIPPED_LINK] += 1
            elif not stat.S_ISREG(st.st_mode):
                self.skipped[SKIPPED_SPECIAL] += 1
            else:
                yield self._info(key, st)

    def _open_regular(self, key: str) -> int:
        """A read-only descriptor of the regular file ``key``, reached without following any
        symbolic link (each component below the root opened with ``O_NOFOLLOW``: no window
        between a check and the open). ``NotFound`` / ``NotRegularFile``."""
        parts = validate_key(key).split("/")
        try:
            dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError as e:
            raise NotFound(key) from e
        try:
            for seg in parts[:-1]:
                nxt = os.open(seg, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                os.close(dir_fd)
                dir_fd = nxt
            # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError) as e:
            if os.path.islink(self.root / key) or any(
                (self.root / key).parents[i].is_symlink() for i in range(len(parts) - 1)
            ):
                raise NotRegularFile(f"{key}: passes through a symbolic link") from e
            raise NotFound(key) from e
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise NotRegularFile(f"{key}: a symbolic link (not followed)") from e
            raise
        finally:
            os.close(dir_fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise NotFound(key)
            raise NotRegularFile(f"{key}: not a regular file")
        return fd

    def head(self, key: str) -> ObjectInfo:
        fd = self._open_regular(key)
        try:
            return self._info(key, os.fstat(fd))
        finally:
            os.close(fd)

    def open(self, key: str, etag: str | None = None, size: int | None = None) -> BinaryIO:
        fd = self._open_regular(key)
        f = os.fdopen(fd, "rb")
        if etag is None:
            return f
        info = self._info(key, os.fstat(fd))
        if info.etag != etag:
            f.close()
            raise ObjectChanged(f"{key}: expected etag {etag}")
        pinned = _PinnedFile(f, key, info, self._info)
        if size is None:
            return pinned  # type: ignore[return-value]
        return io.BufferedReader(SizedReader(pinned, key, size))  # type: ignore[arg-type]

    def _write_temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        os.replace(tmp, path)

    def put_if_absent(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.exists():
            raise AlreadyExists(key)
        tmp = self._write_temp(path, data)
        crash_point("store.put_if_absent.before")
        try:
            os.link(tmp, path)
        except FileExistsError as e:
            raise AlreadyExists(key) from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        crash_point("store.put_if_absent.after")

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def copy_version(self, key: str, etag: str, dest: ObjectStore, dest_key: str) -> ObjectInfo:
        """Into another ``LocalStore``: a hard link of the claimed file (same inode and mtime,
        so the copy keeps ``etag``), checked after linking to be that version; across file
        systems a byte copy from the descriptor, mtime kept, checked at its end (its etag then
        differs: another inode). Published with ``os.replace``, so a reader of ``dest_key``
        sees a whole object."""
        if not isinstance(dest, LocalStore):
            return super().copy_version(key, etag, dest, dest_key)
        fd = self._open_regular(key)
        try:
            st = os.fstat(fd)
            if self._info(key, st).etag != etag:
                raise ObjectChanged(f"{key}: expected etag {etag}")
            path = dest._path(dest_key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
            try:
                try:
                    os.link(self._path(key), tmp, follow_symlinks=False)
                    linked = os.lstat(tmp)
                    if not stat.S_ISREG(linked.st_mode) or (linked.st_ino, linked.st_dev) != (
                        st.st_ino,
                        st.st_dev,
                    ):
                        raise ObjectChanged(f"{key}: replaced while being archived")
                except OSError as e:
                    if e.errno != errno.EXDEV:
                        raise
                    _copy_fd(fd, tmp, st)
                if self._info(key, os.fstat(fd)).etag != etag:
                    raise ObjectChanged(f"{key}: changed while being archived")
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        finally:
            os.close(fd)
        return dest.head(dest_key)

    def delete_version(self, key: str, etag: str) -> bool:
        """Check, then unlink: a file put under ``key`` in the microseconds between the two
        would be deleted (a local folder has no conditional delete)."""
        try:
            info = self.head(key)
        except NotFound:
            return False
        if info.etag != etag:
            raise ObjectChanged(f"{key}: expected etag {etag}, found {info.etag}")
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True


def _copy_fd(fd: int, dest: Path, st: os.stat_result) -> None:
    """Copy the file open as ``fd`` (from its start) to the new file ``dest``, fsynced, with the
    source's modification time."""
    offset = 0
    with open(dest, "xb") as out:
        while chunk := os.pread(fd, 1024 * 1024, offset):
            out.write(chunk)
            offset += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
