"""The S3 backend of the object store (``s3://bucket[/prefix]``).

Contract, beyond ``lockgate.resources.store``:

* Every request goes through one path: s3fs holds the aiobotocore session (made here, with
  the process's shared botocore data loader), credentials and event loop; this module calls
  the client's operations directly (raw botocore errors, no hidden s3fs retries) and retries
  transient failures with ``lockgate.resources.retry`` only. botocore's own retries are off
  (``total_max_attempts=1``) and so is aiohttp's silent resend of a PUT on a dropped
  keep-alive connection, so behaviour is ours and predictable.
* ``put_if_absent`` is one ``PutObject`` with ``If-None-Match: *`` (objects below
  ``multipart_threshold``; otherwise a multipart upload whose *complete* carries the
  header and which is aborted on any failure, so no orphan upload is left behind).
  A first-attempt 412 is ``AlreadyExists``. A 412 on a *retried* attempt is resolved by
  reading the object back: the same bytes mean our earlier attempt succeeded and only
  its response was lost (success); different bytes mean ``AlreadyExists``.
* Before its first write (put / put_if_absent / delete) a store runs
  ``lockgate.resources.probe.ensure_safe``: once per process per endpoint and bucket it checks that
  the endpoint honours create-only puts and raises ``UnsafeEndpoint`` if it does not.
* ``open`` streams over one GET (ranged ``If-Match`` re-GETs after a seek or a dropped
  connection): memory is bounded by ``read_buffer`` whatever the object's size, and a
  stream never mixes two versions of an object (``ObjectChanged``).
* ``list`` pages ListObjectsV2 (``StartAfter``); ``list_requests`` counts its requests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, TypeVar
from urllib.parse import urlsplit

from lockgate.resources.crashpoints import crash_point
from lockgate.resources.errors import ExitCode, TerminalError, TransientError
from lockgate.resources.retry import (
    RetryPolicy,
    error_code,
    http_status,
    is_transient,
    retry_call,
)
from lockgate.resources.store import (
    AlreadyExists,
    NotFound,
    ObjectChanged,
    ObjectInfo,
    ObjectStore,
    S3Options,
    SizeMismatch,
    StoreError,
    validate_key,
)

if TYPE_CHECKING:
    from s3fs import S3FileSystem

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1024 * 1024
DEFAULT_READ_BUFFER = 1 * MiB
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB
#: Largest object one ``CopyObject`` copies (S3's limit); larger ones are copied in parts.
MAX_SINGLE_COPY = 5 * 1024 * MiB
COPY_PART_SIZE = 512 * MiB
_COMPARE_CHUNK = 1 * MiB

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})


class S3Error(StoreError):
    """An S3 request failed for a reason other than the store's named errors. A family: what
    is raised is ``S3Refused`` or ``S3Unavailable`` (``S3Error.of`` picks one)."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status

    @staticmethod
    def of(
        message: str, code: str | None = None, status: int | None = None, *, transient: bool
    ) -> S3Error:
        """``S3Unavailable`` if the failure was ``transient`` (throttling, 5xx, a dropped
        connection, after every retry), else ``S3Refused``."""
        cls: type[S3Error] = S3Unavailable if transient else S3Refused
        return cls(message, code, status)


class S3Refused(S3Error, TerminalError):
    """The endpoint refused the request (access denied, no such bucket, a bad request)."""

    exit_code: ClassVar[ExitCode] = ExitCode.STORE_REFUSED
    hint: str | None = "check the bucket, the credentials and `s3.endpoint_url`"


class S3Unavailable(S3Error, TransientError):
    """The endpoint did not answer or throttled, and the retry policy gave up."""

    exit_code: ClassVar[ExitCode] = ExitCode.STORE_UNAVAILABLE


def _is_precondition_failed(exc: BaseException) -> bool:
    return error_code(exc) in _PRECONDITION_CODES or http_status(exc) == 412


def _is_not_found(exc: BaseException) -> bool:
    code = error_code(exc)
    if code == "NoSuchBucket":
        return False
    return code in _NOT_FOUND_CODES or http_status(exc) == 404


def redact_url(url: str | None) -> str:
    """``url`` without any ``user:password@`` part (endpoint URLs are printed and logged)."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host).geturl()


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; ``ValueError`` if bad."""
    for scheme in ("s3://", "s3a://"):
        if url.startswith(scheme):
            rest = url[len(scheme) :]
            break
    else:
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    prefix = prefix.strip("/")
    if prefix:
        validate_key(prefix)
    return bucket, prefix


def _no_hidden_retry_session_cls() -> type:
    """aiobotocore's aiohttp session class, minus aiohttp's silent resend.

    aiohttp re-sends an "idempotent" request (PUT included) once when a reused connection
    drops before the response. For ``PUT If-None-Match: *`` that is fatal: the first send
    may have created the object, the silent second one gets 412, and a create we won would
    be reported as lost -- on what we believe is the first attempt. All resends must be
    ours (``retry_call``), where a 412 after a possibly-delivered attempt is read back.
    """
    from aiobotocore.httpsession import AIOHTTPSession

    class NoResendAIOHTTPSession(AIOHTTPSession):
        async def _get_session(self, proxy_url: Any) -> Any:
            session = await super()._get_session(proxy_url)
            if not hasattr(session, "_retry_connection"):
                raise RuntimeError(
                    "this aiohttp has no _retry_connection switch; Lockgate cannot turn off "
                    "its silent PUT resend (pin aiohttp or update resources/store_s3.py)"
                )
            session._retry_connection = False
            return session

    return NoResendAIOHTTPSession


_LOADERS: dict[str | None, Any] = {}
_LOADERS_LOCK = threading.Lock()


def _aio_session() -> Any:
    """A new aiobotocore session -- its own credentials and config, as s3fs would make it --
    whose botocore data loader (the parsed service models, endpoint rules) is shared by every
    session of this process with the same ``data_path``: parsing that JSON cost ~0.2 CPU s per
    store opened (a listing, a ledger and a warehouse each opened their own)."""
    from aiobotocore.session import AioSession
    from botocore.loaders import create_loader

    session = AioSession()
    data_path = session.get_config_variable("data_path")
    with _LOADERS_LOCK:
        loader = _LOADERS.get(data_path)
        if loader is None:
            loader = _LOADERS[data_path] = create_loader(data_path)
    session.register_component("data_loader", loader)
    return session


class _Connection:
    """The s3fs filesystem (session, credentials, event loop) shared by a store and its
    children. Recreated after ``fork`` (the parent's event loop thread does not exist in
    the child)."""

    def __init__(self, options: S3Options, max_pool_connections: int = 64):
        self.options = options
        self.max_pool_connections = max_pool_connections
        self._lock = threading.Lock()
        self._fs: S3FileSystem | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        # picklable (spawned processes, Dagster): the session is rebuilt on first use
        return {"options": self.options, "max_pool_connections": self.max_pool_connections}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["options"], state["max_pool_connections"])  # type: ignore[misc]

    def fs(self) -> S3FileSystem:
        with self._lock:
            if self._fs is None or self._pid != os.getpid():
                self._fs = self._make_fs()
                self._pid = os.getpid()
            return self._fs

    def _make_fs(self) -> S3FileSystem:
        from s3fs import S3FileSystem

        o = self.options
        client_kwargs: dict[str, Any] = {}
        if o.endpoint_url:
            client_kwargs["endpoint_url"] = o.endpoint_url
        if o.region:
            client_kwargs["region_name"] = o.region
        creds: dict[str, Any] = {}
        if o.access_key_id and o.secret_access_key:
            creds = {"key": o.access_key_id, "secret": o.secret_access_key}
            if o.session_token:
                creds["token"] = o.session_token
        fs = S3FileSystem(
            session=_aio_session(),
            client_kwargs=client_kwargs,
            config_kwargs={
                # our retry helper is the only one: botocore must not retry behind it
                "retries": {"total_max_attempts": 1, "mode": "standard"},
                "connect_timeout": 10,
                "read_timeout": 60,
                "max_pool_connections": self.max_pool_connections,
                "http_session_cls": _no_hidden_retry_session_cls(),
            },
            use_listings_cache=False,
            skip_instance_cache=True,
            default_block_size=DEFAULT_READ_BUFFER,
            **creds,
        )
        fs.retries = 1  # s3fs's own retry loop (used by its file objects) off as well
        return fs

    def run(self, coro_fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``coro_fn(client, *args)`` on the filesystem's event loop; return its result."""
        from fsspec.asyn import sync

        fs = self.fs()

        async def go() -> Any:
            client = await fs.set_session()
            return await coro_fn(client, *args)

        return sync(fs.loop, go)

    def call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """One S3 API call (``put_object``, ...) with raw botocore errors."""

        async def op(client: Any) -> Any:
            return await getattr(client, method)(**kwargs)

        result: dict[str, Any] = self.run(op)
        return result

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Schedule a plain callback on the event loop (thread-safe, non-blocking)."""
        fs = self._fs
        if fs is None or self._pid != os.getpid():
            return
        with contextlib.suppress(RuntimeError):
            fs.loop.call_soon_threadsafe(fn)


class S3Store(ObjectStore):
    """An S3 bucket, optionally below a prefix; see the module docstring for the contract."""

    def __init__(
        self,
        url: str,
        options: S3Options,
        *,
        retry: RetryPolicy | None = None,
        read_buffer: int = DEFAULT_READ_BUFFER,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        page_size: int = 1000,
        _connection: _Connection | None = None,
    ):
        self.bucket, self.root = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.root}" if self.root else f"s3://{self.bucket}"
        self.options = options
        self.retry_policy = retry or RetryPolicy.from_env()
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be >= {MIN_PART_SIZE} bytes (S3's minimum)")
        if multipart_threshold < part_size:
            raise ValueError("multipart_threshold must be >= part_size")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000 (S3's MaxKeys)")
        self.page_size = page_size
        self.read_buffer = read_buffer
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._conn = _connection or _Connection(options)
        self._counter_lock = threading.Lock()
        self.list_requests = 0

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint_url!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_counter_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._counter_lock = threading.Lock()

    # -- naming ---------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The endpoint, printable (no credentials in it)."""
        if self.options.endpoint_url:
            return redact_url(self.options.endpoint_url)
        return "the default AWS S3 endpoint"

    @property
    def endpoint_id(self) -> str:
        """What the conditional-write probe is cached by: endpoint and bucket."""
        return f"{self.options.endpoint_url or 'aws'}|{self.bucket}"

    def _full(self, key: str) -> str:
        validate_key(key)
        return f"{self.root}/{key}" if self.root else key

    def _full_prefix(self, prefix: str) -> str:
        return f"{self.root}/{prefix}" if self.root else prefix

    def _rel(self, full_key: str) -> str:
        return full_key[len(self.root) + 1 :] if self.root else full_key

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._full(key)}" if key else self.url

    def child(self, prefix: str) -> S3Store:
        return S3Store(
            self.uri(validate_key(prefix.strip("/"))),
            self.options,
            retry=self.retry_policy,
            read_buffer=self.read_buffer,
            multipart_threshold=self.multipart_threshold,
            part_size=self.part_size,
            page_size=self.page_size,
            _connection=self._conn,
        )

    # -- plumbing -------------------------------------------------------------------------

    def _retry(self, fn: Callable[[int], T], what: str) -> T:
        return retry_call(fn, self.retry_policy, what=what)

    def _error(self, exc: BaseException, op: str, key: str | None = None) -> StoreError:
        """The store error for a failed request (``NotFound`` for missing keys)."""
        where = self.uri(key) if key else self.url
        code, status = error_code(exc), http_status(exc)
        if key is not None and _is_not_found(exc):
            return NotFound(where)
        transient = is_transient(exc)
        if code == "NoSuchBucket":
            return S3Error.of(
                f"{op} {where}: bucket {self.bucket!r} does not exist at {self.endpoint_url}",
                code,
                status,
                transient=False,
            )
        if code is not None or status is not None:
            message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
            text = f"{op} {where}: {code} (HTTP {status}) {message}".rstrip()
            return S3Error.of(text, code, status, transient=transient)
        return S3Error.of(f"{op} {where}: {type(exc).__name__}: {exc}", transient=transient)

    def _call(self, op: str, key: str | None, method: str, **kwargs: Any) -> dict[str, Any]:
        """One retried request; errors mapped to store errors."""
        try:
            return self._retry(lambda _n: self._conn.call(method, **kwargs), f"{op} {key or ''}")
        except StoreError:
            raise
        except Exception as e:
            raise self._error(e, op, key) from e

    def _guard(self) -> None:
        from lockgate.resources.probe import ensure_safe

        ensure_safe(self)  # a dictionary lookup once the endpoint is known to be safe

    @staticmethod
    def _etag(raw: str) -> str:
        return raw.strip('"')

    @staticmethod
    def _utc(ts: datetime) -> datetime:
        return ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)

    # -- reading --------------------------------------------------------------------------

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self._full_prefix(prefix),
            "MaxKeys": self.page_size,
        }
        if start_after is not None:
            kwargs["StartAfter"] = self._full_prefix(start_after)
        while True:
            page = self._call("list", None, "list_objects_v2", **kwargs)
            with self._counter_lock:
                self.list_requests += 1
            for obj in page.get("Contents", []):
                yield ObjectInfo(
                    key=self._rel(obj["Key"]),
                    size=int(obj["Size"]),
                    etag=self._etag(obj["ETag"]),
                    last_modified=self._utc(obj["LastModified"]),
                )
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def head(self, key: str) -> ObjectInfo:
        r = self._call("head", key, "head_object", Bucket=self.bucket, Key=self._full(key))
        return ObjectInfo(
            key=key,
            size=int(r["ContentLength"]),
            etag=self._etag(r["ETag"]),
            last_modified=self._utc(r["LastModified"]),
        )

    def open(self, key: str, etag: str | None = None, size: int | None = None) -> BinaryIO:
        info = self.head(key)
        if etag is not None and info.etag != etag:
            raise ObjectChanged(f"{self.uri(key)}: expected etag {etag}, found {info.etag}")
        if size is not None and info.size != size:
            # Same etag, another length: the endpoint misreports it on HEAD. The claim's size
            # (from the listing) is what the GET must deliver, counted below.
            log.warning(
                "%s: HEAD reports %d bytes, the claim says %d; reading the claimed length",
                self.uri(key),
                info.size,
                size,
            )
            info = dataclasses.replace(info, size=size)
        raw = _S3RawReader(self, key, info, check_end=size is not None)
        return io.BufferedReader(raw, buffer_size=self.read_buffer)

    def get(self, key: str) -> bytes:
        full = self._full(key)

        async def fetch(client: Any) -> bytes:
            resp = await client.get_object(Bucket=self.bucket, Key=full)
            async with resp["Body"] as body:
                data: bytes = await body.read()
            return data

        try:
            data: bytes = self._retry(lambda _n: self._conn.run(fetch), f"get {key}")
            return data
        except Exception as e:
            raise self._error(e, "get", key) from e

    def _holds(self, key: str, data: bytes) -> bool:
        """Whether ``key`` holds exactly ``data`` (streamed compare, bounded memory)."""
        try:
            info = self.head(key)
            if info.size != len(data):
                return False
            with self.open(key, etag=info.etag) as f:
                view = memoryview(data)
                pos = 0
                while pos < len(data):
                    chunk = f.read(_COMPARE_CHUNK)
                    if not chunk or view[pos : pos + len(chunk)] != chunk:
                        return False
                    pos += len(chunk)
                return f.read(1) == b""
        except (NotFound, ObjectChanged):
            return False

    # -- writing --------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        full = self._full(key)
        self._guard()
        if len(data) >= self.multipart_threshold:
            self._put_multipart(key, data, create_only=False)
            return
        self._call("put", key, "put_object", Bucket=self.bucket, Key=full, Body=data)

    def put_if_absent(self, key: str, data: bytes) -> None:
        from lockgate.resources.probe import in_probe

        full = self._full(key)
        self._guard()
        probing = in_probe()  # the probe's own writes are not crash points of the pipeline
        if not probing:
            crash_point("store.put_if_absent.before")
        if len(data) >= self.multipart_threshold:
            self._put_multipart(key, data, create_only=True)
        else:

            def attempt(n: int) -> None:
                try:
                    self._conn.call(
                        "put_object", Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*"
                    )
                except Exception as e:
                    if not _is_precondition_failed(e):
                        raise
                    if n > 0 and self._holds(key, data):
                        log.info("put_if_absent %s: lost response resolved by read-back", key)
                        return
                    raise AlreadyExists(self.uri(key)) from e

            try:
                self._retry(attempt, f"put_if_absent {key}")
            except StoreError:
                raise
            except Exception as e:
                raise self._error(e, "put_if_absent", key) from e
        if not probing:
            crash_point("store.put_if_absent.after")

    def _put_multipart(self, key: str, data: bytes, *, create_only: bool) -> None:
        """Multipart upload of ``data``; aborted (no orphan parts) unless it completes."""
        full = self._full(key)
        op = "put_if_absent" if create_only else "put"
        if create_only and self.exists(key):
            raise AlreadyExists(self.uri(key))
        upload_id = self._call(op, key, "create_multipart_upload", Bucket=self.bucket, Key=full)[
            "UploadId"
        ]
        try:
            parts: list[dict[str, Any]] = []
            view = memoryview(data)
            for number, offset in enumerate(range(0, len(data), self.part_size), start=1):
                body = bytes(view[offset : offset + self.part_size])
                r = self._call(
                    op,
                    key,
                    "upload_part",
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                )
                parts.append({"ETag": r["ETag"], "PartNumber": number})
            condition = {"IfNoneMatch": "*"} if create_only else {}

            def complete(n: int) -> None:
                try:
                    self._conn.call(
                        "complete_multipart_upload",
                        Bucket=self.bucket,
                        Key=full,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                        **condition,
                    )
                except Exception as e:
                    lost = n > 0 and (_is_precondition_failed(e) or error_code(e) == "NoSuchUpload")
                    if lost and self._holds(key, data):
                        return
                    if create_only and _is_precondition_failed(e):
                        raise AlreadyExists(self.uri(key)) from e
                    raise

            try:
                self._retry(complete, f"{op} {key} (complete multipart)")
            except StoreError:
                raise
            except Exception as e:
                raise self._error(e, op, key) from e
        except BaseException:
            self._abort_upload(full, upload_id)
            raise

    def _abort_upload(self, full: str, upload_id: str) -> None:
        def abort(_n: int) -> None:
            try:
                self._conn.call(
                    "abort_multipart_upload", Bucket=self.bucket, Key=full, UploadId=upload_id
                )
            except Exception as e:
                if error_code(e) != "NoSuchUpload":
                    raise

        try:
            self._retry(abort, f"abort multipart {full}")
        except Exception as e:  # the caller's error matters more; leave a trace
            log.warning("could not abort multipart upload %s of %s: %s", upload_id, full, e)

    def delete(self, key: str) -> None:
        full = self._full(key)
        self._guard()
        with contextlib.suppress(NotFound):
            self._call("delete", key, "delete_object", Bucket=self.bucket, Key=full)

    # -- cleaning (copy, conditional delete) ----------------------------------------------

    def copy_version(self, key: str, etag: str, dest: ObjectStore, dest_key: str) -> ObjectInfo:
        """Into another ``S3Store`` (same endpoint): a server-side ``CopyObject`` (multipart
        ``UploadPartCopy`` above ``MAX_SINGLE_COPY``) with ``x-amz-copy-source-if-match``, so
        only version ``etag`` is copied. A single-part object's copy keeps its etag (the MD5 of
        its bytes); a copy whose etag differs from a single-part ``etag`` means the endpoint
        ignored the condition and copied another version: ``ObjectChanged``."""
        if not isinstance(dest, S3Store):
            return super().copy_version(key, etag, dest, dest_key)
        dest._guard()
        info = self.head(key)
        if info.etag != etag:
            raise ObjectChanged(f"{self.uri(key)}: expected etag {etag}, found {info.etag}")
        source = {"Bucket": self.bucket, "Key": self._full(key)}
        try:
            if info.size <= MAX_SINGLE_COPY:
                r = self._call(
                    "copy",
                    key,
                    "copy_object",
                    Bucket=dest.bucket,
                    Key=dest._full(dest_key),
                    CopySource=source,
                    CopySourceIfMatch=f'"{etag}"',
                )
                copied = self._etag(str(r.get("CopyObjectResult", {}).get("ETag", "")))
            else:
                copied = dest._copy_multipart(source, etag, info.size, dest_key)
        except S3Error as e:
            if e.status == 412:
                raise ObjectChanged(f"{self.uri(key)}: no longer version {etag}") from e
            raise
        if "-" not in etag and copied != etag:
            raise ObjectChanged(
                f"{self.uri(key)}: the copy has etag {copied}, not {etag}: the endpoint copied "
                "another version"
            )
        return dest.head(dest_key)

    def _copy_multipart(self, source: dict[str, str], etag: str, size: int, key: str) -> str:
        """``UploadPartCopy`` of ``source`` (each part conditional on ``etag``) into ``key``;
        aborted unless it completes. Returns the copy's etag."""
        full = self._full(key)
        upload_id = self._call(
            "copy", key, "create_multipart_upload", Bucket=self.bucket, Key=full
        )["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            for number, start in enumerate(range(0, size, COPY_PART_SIZE), start=1):
                end = min(start + COPY_PART_SIZE, size) - 1
                r = self._call(
                    "copy",
                    key,
                    "upload_part_copy",
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={start}-{end}",
                    CopySourceIfMatch=f'"{etag}"',
                )
                parts.append({"ETag": r["CopyPartResult"]["ETag"], "PartNumber": number})
            done = self._call(
                "copy",
                key,
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            return self._etag(str(done.get("ETag", "")))
        except BaseException:
            self._abort_upload(full, upload_id)
            raise

    def delete_version(self, key: str, etag: str) -> bool:
        """A ``DeleteObject`` with ``If-Match: etag`` (after a HEAD, so an endpoint that ignores
        the header still only deletes what was just checked: the window is then the time
        between the two requests)."""
        self._guard()
        try:
            info = self.head(key)
        except NotFound:
            return False
        if info.etag != etag:
            raise ObjectChanged(f"{self.uri(key)}: expected etag {etag}, found {info.etag}")
        try:
            self._call(
                "delete",
                key,
                "delete_object",
                Bucket=self.bucket,
                Key=self._full(key),
                IfMatch=f'"{etag}"',
            )
        except NotFound:
            return False  # gone meanwhile (or our earlier attempt deleted it: lost response)
        except S3Error as e:
            if e.status == 412:
                raise ObjectChanged(f"{self.uri(key)}: no longer version {etag}") from e
            raise
        return True

    # -- doctor ---------------------------------------------------------------------------

    def check_bucket(self) -> None:
        """Raise ``S3Error`` unless the bucket answers (HEAD bucket)."""
        try:
            self._retry(lambda _n: self._conn.call("head_bucket", Bucket=self.bucket), "head")
        except Exception as e:
            if _is_not_found(e) or error_code(e) == "NoSuchBucket":
                raise S3Error.of(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint_url}",
                    "404",
                    404,
                    transient=False,
                ) from e
            raise self._error(e, "head bucket") from e


class _S3RawReader(io.RawIOBase):
    """A seekable raw stream over one object version (``info.etag``).

    Reads continue one open GET; after a seek or a transient failure the GET is reissued
    from the current position with ``If-Match`` so the bytes always belong to one version.
    ``info.size`` bytes are delivered: a body that ends before is a transient error (retried
    from where it stopped). With ``check_end``, reaching ``info.size`` also checks that the
    object holds no further byte (``SizeMismatch`` if it does), so neither a short nor a long
    length reported by the endpoint makes a read end at the wrong place silently.
    """

    def __init__(self, store: S3Store, key: str, info: ObjectInfo, check_end: bool = False):
        super().__init__()
        self._store = store
        self._key = key
        self._full = store._full(key)
        self._info = info
        self._pos = 0
        self._body: Any = None
        self._check_end = check_end

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            new = offset
        elif whence == io.SEEK_CUR:
            new = self._pos + offset
        elif whence == io.SEEK_END:
            new = self._info.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if new < 0:
            raise ValueError("negative seek position")
        if new != self._pos:
            self._drop_body()
            self._pos = new
        return self._pos

    def _open_body(self) -> None:
        store, info = self._store, self._info
        kwargs: dict[str, Any] = {"Bucket": store.bucket, "Key": self._full, "IfMatch": info.etag}
        if self._pos:
            kwargs["Range"] = f"bytes={self._pos}-"
        try:
            resp = store._conn.call("get_object", **kwargs)
        except Exception as e:
            if _is_precondition_failed(e) or _is_not_found(e):
                raise ObjectChanged(
                    f"{store.uri(self._key)}: changed while being read (etag {info.etag})"
                ) from e
            raise
        if S3Store._etag(str(resp.get("ETag", info.etag))) != info.etag:
            resp["Body"].close()
            raise ObjectChanged(f"{store.uri(self._key)}: changed while being read")
        self._body = resp["Body"]

    def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            self._store._conn.call_soon(body.close)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._info.size - self._pos)
        if want <= 0:
            if self._check_end and len(view) and self._pos >= self._info.size:
                self._verify_end()
            return 0
        store = self._store

        def attempt(n: int) -> int:
            if n > 0:
                self._drop_body()
            if self._body is None:
                self._open_body()
            body = self._body

            async def fill(_client: Any) -> int:
                # one event-loop hop per buffer: loop over the network chunks in here
                got = 0
                while got < want:
                    chunk: bytes = await body.read(want - got)
                    if not chunk:
                        break
                    view[got : got + len(chunk)] = chunk
                    got += len(chunk)
                return got

            got: int = store._conn.run(fill)
            if got < want:
                raise ConnectionError(
                    f"{store.uri(self._key)}: stream ended early at byte {self._pos + got} "
                    f"of {self._info.size}"
                )
            return got

        try:
            got = store._retry(attempt, f"read {self._key}")
        except StoreError:
            raise
        except Exception as e:
            self._drop_body()
            raise store._error(e, "read", self._key) from e
        self._pos += got
        return got

    def _verify_end(self) -> None:
        """The claimed length is read: the object must hold no further byte."""
        self._check_end = False  # once
        store = self._store
        if self._body is None:
            try:
                self._open_body()
            except StoreError:
                raise
            except Exception as e:
                if http_status(e) == 416 or error_code(e) == "InvalidRange":
                    return  # nothing after the claimed length
                raise store._error(e, "read", self._key) from e
        body = self._body

        async def one(_client: Any) -> bytes:
            extra: bytes = await body.read(1)
            return extra

        try:
            extra = store._conn.run(one)
        except Exception as e:
            raise store._error(e, "read", self._key) from e
        if extra:
            raise SizeMismatch(
                store.uri(self._key),
                self._pos + len(extra),
                self._info.size,
                "the object holds more bytes than claimed",
            )

    def readall(self) -> bytes:
        out = bytearray()
        buf = bytearray(min(DEFAULT_READ_BUFFER, max(self._info.size - self._pos, 1)))
        while True:
            n = self.readinto(buf)
            if not n:
                return bytes(out)
            out += buf[:n]

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._drop_body()
        super().close()
