"""A fault-injecting HTTP proxy for S3 tests (loopback only, threaded).

Put it between an S3 client and a real S3 imitation (the moto server)::

    with FaultProxy(moto_url, seed=7) as proxy:
        store = S3Store(f"s3://{bucket}/x", S3Options(endpoint_url=proxy.url))
        proxy.inject("slowdown", count=2, method="PUT")   # the next 2 PUTs answer 503
        proxy.set_rates({"drop_response": 0.05})            # then 5% of requests lose it
        ...
        assert proxy.faults["slowdown"] == 2

Fault kinds (``KINDS``):

* ``slowdown``       answer ``503 SlowDown`` without forwarding;
* ``internal_error`` answer ``500 InternalError`` without forwarding;
* ``access_denied``  answer ``403 AccessDenied`` without forwarding (a permanent error);
* ``drop_request``   close the connection without forwarding (nothing happened upstream);
* ``drop_response``  forward the request (it takes effect upstream), then close the
  connection without answering: the client cannot know it succeeded;
* ``truncate_body``  forward, send the status, headers and half of the body, then close.

A *lying endpoint* (``lie(Lie(...))`` until ``honest()``) answers every request on keys under
``Lie.key_prefix`` with a wrong length and status 200: HEAD reports ``head_length`` bytes,
ListObjectsV2 reports ``list_size`` bytes, and a GET body is cut to ``get_fraction`` of itself
with a ``Content-Length`` that matches the cut and no ``x-amz-checksum-*`` headers (so the
client sees a clean, short response).
``lies`` counts the lies told, by ``head`` / ``list`` / ``get``.

Scripted faults (``inject``) fire first, in order, on matching requests; otherwise each
request draws from ``set_rates`` with a seeded ``random.Random``. ``faults`` counts
injected faults by kind; ``requests`` counts requests seen; ``history`` keeps the last
``history_size`` requests as ``(method, path, fault kind or None)``. ``before_forward`` (optional)
is called with each forwarded ``ProxyRequest`` before it goes upstream, to stage races.
"""

from __future__ import annotations

import html
import http.client
import random
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

KINDS: tuple[str, ...] = (
    "slowdown",
    "internal_error",
    "access_denied",
    "drop_request",
    "drop_response",
    "truncate_body",
)
_ERROR_REPLIES: dict[str, tuple[int, str, str]] = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal_error": (500, "InternalError", "We encountered an internal error."),
    "access_denied": (403, "AccessDenied", "Access Denied"),
}
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_COPY_CHUNK = 256 * 1024


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    path: str  # path and query, as sent
    headers: Mapping[str, str]
    body: bytes


@dataclass
class _Rule:
    kind: str
    remaining: int
    method: str | None = None
    path_contains: str | None = None

    def matches(self, req: ProxyRequest) -> bool:
        if self.method is not None and req.method != self.method:
            return False
        return self.path_contains is None or self.path_contains in req.path


@dataclass(frozen=True)
class Lie:
    """What a lying endpoint misreports for the keys under ``key_prefix`` (bucket-relative;
    "" is every key). None leaves that answer honest."""

    key_prefix: str = ""
    head_length: int | None = 0
    list_size: int | None = None
    get_fraction: float | None = None

    def covers(self, key: str) -> bool:
        return key.startswith(self.key_prefix)


def _split_target(path: str) -> tuple[str, str, dict[str, list[str]]]:
    """``(bucket, key, query)`` of a path-style S3 request path."""
    parts = urlsplit(path)
    bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
    return bucket, key, parse_qs(parts.query, keep_blank_values=True)


_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.S)
_KEY = re.compile(rb"<Key>(.*?)</Key>", re.S)
_SIZE = re.compile(rb"<Size>\d+</Size>")


@dataclass
class _Rates:
    rates: dict[str, float] = field(default_factory=dict)
    methods: frozenset[str] | None = None


class FaultProxy:
    """See the module docstring. ``url`` is valid between ``start()`` and ``stop()``."""

    def __init__(
        self, upstream: str, *, seed: int = 0, timeout: float = 60.0, history_size: int = 10_000
    ):
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"FaultProxy forwards to loopback only, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.timeout = timeout
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rules: list[_Rule] = []
        self._rates = _Rates()
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.forwarded = 0
        self.history: deque[tuple[str, str, str | None]] = deque(maxlen=history_size)
        self.before_forward: Callable[[ProxyRequest], None] | None = None
        self.lying: Lie | None = None
        self.lies: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- control --------------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        count: int = 1,
        *,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Make the next ``count`` matching requests fail with ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        with self._lock:
            self._rules.append(_Rule(kind, count, method, path_contains))

    def set_rates(
        self,
        rates: Mapping[str, float],
        *,
        methods: tuple[str, ...] | None = None,
        seed: int | None = None,
    ) -> None:
        """Fail each (matching-method) request with ``kind`` at probability ``rates[kind]``."""
        unknown = set(rates) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        if sum(rates.values()) > 1:
            raise ValueError("fault rates add up to more than 1")
        with self._lock:
            self._rates = _Rates(dict(rates), frozenset(methods) if methods else None)
            if seed is not None:
                self._rng = random.Random(seed)

    def lie(self, lie: Lie) -> None:
        """Answer as a lying endpoint (see the module docstring) until ``honest()``."""
        with self._lock:
            self.lying = lie

    def honest(self) -> None:
        """Stop lying (``lies`` is kept)."""
        with self._lock:
            self.lying = None

    def _count_lie(self, kind: str) -> None:
        with self._lock:
            self.lies[kind] += 1

    def clear(self) -> None:
        """Drop scripted faults and rates (counters are kept)."""
        with self._lock:
            self._rules.clear()
            self._rates = _Rates()

    def pending(self) -> int:
        """Scripted faults not fired yet."""
        with self._lock:
            return sum(r.remaining for r in self._rules)

    def requests_for(self, method: str, path_contains: str = "") -> int:
        """How many recorded requests had ``method`` and a path containing the text."""
        with self._lock:
            return sum(1 for m, p, _ in self.history if m == method and path_contains in p)

    def _choose(self, req: ProxyRequest) -> str | None:
        kind = self._draw(req)
        with self._lock:
            self.history.append((req.method, req.path, kind))
        return kind

    def _draw(self, req: ProxyRequest) -> str | None:
        with self._lock:
            self.requests += 1
            for rule in self._rules:
                if rule.remaining > 0 and rule.matches(req):
                    rule.remaining -= 1
                    self.faults[rule.kind] += 1
                    return rule.kind
            self._rules = [r for r in self._rules if r.remaining > 0]
            rates = self._rates
            if rates.rates and (rates.methods is None or req.method in rates.methods):
                draw = self._rng.random()
                for kind in sorted(rates.rates):
                    draw -= rates.rates[kind]
                    if draw < 0:
                        self.faults[kind] += 1
                        return kind
            return None

    # -- lifecycle ------------------------------------------------------------------------

    def _handler_base(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class (subclasses add fault kinds by overriding this)."""
        return _ProxyHandler

    def start(self) -> str:
        handler = type("Handler", (self._handler_base(),), {"owner": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="s3-fault-proxy", daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _lie_about_sizes(body: bytes, lie: Lie, owner: FaultProxy) -> bytes:
    """A ListObjectsV2 answer whose ``<Size>`` of covered keys is ``lie.list_size``."""

    def entry(m: re.Match[bytes]) -> bytes:
        found = _KEY.search(m.group(0))
        key = html.unescape(found.group(1).decode()) if found else ""
        if not lie.covers(key):
            return m.group(0)
        owner._count_lie("list")
        return _SIZE.sub(f"<Size>{lie.list_size}</Size>".encode(), m.group(0))

    return _CONTENTS.sub(entry, body)


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        req = ProxyRequest(self.command, self.path, dict(self.headers.items()), body)
        kind = self.owner._choose(req)
        if kind in _ERROR_REPLIES:
            self._reply_error(*_ERROR_REPLIES[kind])
            return
        if kind == "drop_request":
            self.close_connection = True
            return
        if self.owner.before_forward is not None:
            self.owner.before_forward(req)
        with self.owner._lock:
            self.owner.forwarded += 1
        conn = http.client.HTTPConnection(
            self.owner.upstream_host, self.owner.upstream_port, timeout=self.owner.timeout
        )
        try:
            headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            if kind == "drop_response":
                resp.read()
                self.close_connection = True
                return
            lie = self.owner.lying
            if lie is not None and kind is None and self._lie(resp, req, lie):
                return
            self._relay(resp, truncate=kind == "truncate_body")
        finally:
            conn.close()

    def _relay(self, resp: http.client.HTTPResponse, *, truncate: bool) -> None:
        length_header = resp.getheader("Content-Length")
        if length_header is None and self.command != "HEAD":
            payload: bytes | None = resp.read()
            length = len(payload or b"")
        else:
            payload = None
            length = int(length_header or 0)
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        budget = length // 2 if truncate else length
        if payload is not None:
            self.wfile.write(payload[:budget])
        else:
            while budget > 0:
                chunk = resp.read(min(_COPY_CHUNK, budget))
                if not chunk:
                    break
                self.wfile.write(chunk)
                budget -= len(chunk)
        if truncate:
            self.wfile.flush()
            self.close_connection = True

    def _lie(self, resp: http.client.HTTPResponse, req: ProxyRequest, lie: Lie) -> bool:
        """Relay ``resp`` with the lengths ``lie`` asks for; False if it covers nothing here."""
        if resp.status >= 300:
            return False
        _bucket, key, query = _split_target(req.path)
        payload = b""
        if req.method == "HEAD" and key and lie.covers(key) and lie.head_length is not None:
            length = lie.head_length
            self.owner._count_lie("head")
        elif req.method == "GET" and not key and "list-type" in query:
            if lie.list_size is None:
                return False
            payload = _lie_about_sizes(resp.read(), lie, self.owner)
            length = len(payload)
        elif req.method == "GET" and key and lie.covers(key) and lie.get_fraction is not None:
            whole = resp.read()
            payload = whole[: int(len(whole) * lie.get_fraction)]
            length = len(payload)
            if length < len(whole):
                self.owner._count_lie("get")
        else:
            return False
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            # a gateway that rewrites lengths sends no checksum of the real bytes either
            if k.lower() in _HOP_BY_HOP | {"content-length", "content-range"}:
                continue
            if not k.lower().startswith("x-amz-checksum"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if req.method != "HEAD":
            self.wfile.write(payload)
        return True

    def _reply_error(self, status: int, code: str, message: str) -> None:
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            "<RequestId>lockgate-fault-proxy</RequestId></Error>"
        ).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(xml)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(xml)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
