"""S3 test helpers of the object-store suite (loopback only).

* ``external_moto()``: a moto server in its own process, for measurements that must not
  count the server's memory (the session fixture's moto runs inside the test process).
* ``LaxS3Server``: just enough of S3 (PUT/GET/HEAD/DELETE object, HEAD bucket,
  ListObjectsV2) over HTTP, and it IGNORES ``If-None-Match`` -- the kind of endpoint the
  conditional-write probe must refuse.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from tests.conftest import MOTO_ENV, free_port

VENV_BIN = Path(sys.executable).parent


@contextlib.contextmanager
def external_moto() -> Iterator[str]:
    """A ``moto_server`` subprocess on a free loopback port; yields its URL, then stops it
    by PID (also on failure)."""
    port = free_port()
    env = {**os.environ, **MOTO_ENV, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [str(VENV_BIN / "python"), "-m", "tests.moto_atomic", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _decode_aws_chunked(body: bytes) -> bytes:
    """The payload of an ``aws-chunked`` body (``hex-size[;ext]\\r\\n data \\r\\n ... 0``)."""
    out = bytearray()
    pos = 0
    while pos < len(body):
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            break
        out += body[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2
    return bytes(out)


class LaxS3Server:
    """A header-ignoring S3 imitation; ``url`` valid between ``start()`` and ``stop()``.

    ``puts`` counts PUT requests, ``conditional_puts`` those that carried If-None-Match.
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, datetime]] = {}
        self.lock = threading.Lock()
        self.puts = 0
        self.conditional_puts = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> str:
        owner = self

        class Handler(_LaxHandler):
            server_state = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> LaxS3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _LaxHandler(BaseHTTPRequestHandler):
    server_state: LaxS3Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        return bucket, key, parse_qs(parts.query)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response_only(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self) -> None:
        xml = b"<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>"
        self._send(404, b"" if self.command == "HEAD" else xml)

    def _object_headers(self, data: bytes, modified: datetime) -> dict[str, str]:
        return {
            "ETag": f'"{hashlib.md5(data).hexdigest()}"',
            "Last-Modified": format_datetime(modified, usegmt=True),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(data)),
        }

    def do_PUT(self) -> None:
        bucket, key, _ = self._target()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "aws-chunked" in self.headers.get("Content-Encoding", ""):
            body = _decode_aws_chunked(body)
        state = self.server_state
        with state.lock:
            state.puts += 1
            if self.headers.get("If-None-Match"):
                state.conditional_puts += 1  # ...and ignored, like some S3 imitations
            state.objects[(bucket, key)] = (body, datetime.now(UTC).replace(microsecond=0))
        self._send(200, headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def do_GET(self) -> None:
        bucket, key, query = self._target()
        if not key:
            self._list(bucket, query)
            return
        with self.server_state.lock:
            found = self.server_state.objects.get((bucket, key))
        if found is None:
            self._not_found()
            return
        data, modified = found
        headers = self._object_headers(data, modified)
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start_s, _, end_s = rng[len("bytes=") :].partition("-")
            start = int(start_s)
            end = int(end_s) if end_s else len(data) - 1
            headers["ETag"] = f'"{hashlib.md5(data).hexdigest()}"'
            data = data[start : end + 1]
            headers["Content-Length"] = str(len(data))
            status = 206
        self._send(status, data, headers)

    def do_HEAD(self) -> None:
        bucket, key, _ = self._target()
        if not key:
            self._send(200)
            return
        with self.server_state.lock:
            found = self.server_state.objects.get((bucket, key))
        if found is None:
            self._not_found()
            return
        self._send(200, b"", self._object_headers(*found))

    def do_DELETE(self) -> None:
        bucket, key, _ = self._target()
        with self.server_state.lock:
            self.server_state.objects.pop((bucket, key), None)
        self._send(204)

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        prefix = query.get("prefix", [""])[0]
        after = query.get("start-after", [""])[0]
        with self.server_state.lock:
            items = sorted(
                (k, v)
                for (b, k), v in self.server_state.objects.items()
                if b == bucket and k.startswith(prefix) and k > after
            )
        contents = "".join(
            f"<Contents><Key>{escape(k)}</Key><Size>{len(d)}</Size>"
            f'<ETag>"{hashlib.md5(d).hexdigest()}"</ETag>'
            f"<LastModified>{m.strftime('%Y-%m-%dT%H:%M:%S.000Z')}</LastModified></Contents>"
            for k, (d, m) in items
        )
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(items)}</KeyCount><MaxKeys>1000</MaxKeys>"
            f"<IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"
        ).encode()
        self._send(200, xml, {"Content-Type": "application/xml"})
