"""A batch of 10,000 small objects on S3: ``python -m bench.s3_small [--scale 1] [--no-append]``.

This benchmark starts a moto S3 server (``ThreadedMotoServer``) on 127.0.0.1 in a child
process of its own (stopped through its pipe, else by its PID), lands D3's objects (10,000 x
1 KB JSON lines at scale 1) in bucket ``landing`` straight into moto's backend, and runs the
real ``lockgate ingest`` console script over HTTP on them as ONE batch
(``max_files_per_batch: 10000``; local warehouse and ledger, so every S3 request is the
landing's). A WSGI wrapper in the server counts the object GETs it serves and the most that
were in flight at once (request received -> response body sent). Reported: wall and time per
object, GETs in flight (goal >= 16).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.common import (
    SummaryRow,
    load_average,
    lockgate_ingest,
    report_rows,
    write_config,
)
from bench.generate import DECLARED, Datasets, ensure

GOAL_GETS = 16
BUCKET = "landing"
PREFIX = "d3"
STATS_PATH = "/__bench/gets"
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


class GetCounter:
    """WSGI wrapper: counts object GETs (not listings) and the most in flight at once."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.gets = 0

    def _done(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = str(environ.get("PATH_INFO", ""))
        if path == STATS_PATH:
            with self.lock:
                body = json.dumps({"gets": self.gets, "max_in_flight": self.max_in_flight}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        query = str(environ.get("QUERY_STRING", ""))
        is_object_get = (
            environ.get("REQUEST_METHOD") == "GET"
            and path.strip("/").count("/") >= 1
            and "list-type" not in query
        )
        if not is_object_get:
            return self.app(environ, start_response)
        with self.lock:
            self.gets += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            result = self.app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return _Closing(result, self._done)


class _Closing:
    """A WSGI response body that calls ``done`` once it was sent (closed)."""

    def __init__(self, inner: Iterable[bytes], done: Callable[[], None]) -> None:
        self.inner = inner
        self.done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.inner)

    def close(self) -> None:
        try:
            close = getattr(self.inner, "close", None)
            if close is not None:
                close()
        finally:
            self.done()


def _server_main(conn: Connection, port: int) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.s3.models import s3_backends
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    class CountingServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = GetCounter(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    server = CountingServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        conn.send("ready")
        while True:
            msg = conn.recv()
            if msg[0] != "land":
                break
            _, folder = msg
            backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
            backend.create_bucket(BUCKET, "us-east-1")
            n = 0
            for p in sorted(Path(folder).iterdir()):
                if not p.name.startswith("."):
                    backend.put_object(BUCKET, f"{PREFIX}/{p.name}", p.read_bytes())
                    n += 1
            conn.send(n)
    finally:
        server.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingMoto:
    """The moto server child process of this benchmark (loopback only)."""

    def __init__(self) -> None:
        self.port = _free_port()
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_server_main, args=(child, self.port), daemon=True)
        self.proc.start()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            self.stop()
            raise RuntimeError("moto server did not start")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def land(self, folder: Path) -> int:
        self.conn.send(("land", str(folder)))
        if not self.conn.poll(600):
            raise RuntimeError("moto server did not land the objects in 600 s")
        return int(self.conn.recv())

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.endpoint + STATS_PATH, timeout=30) as r:
            return dict(json.loads(r.read()))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.proc.join(30)
        if self.proc.is_alive() and self.proc.pid is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.join(10)


@dataclass
class S3Result:
    objects: int
    bytes: int
    rows: int
    wall: float
    batch_seconds: float
    cpu: float
    peak_rss: int
    batches: int
    gets: int
    max_in_flight: int

    @property
    def ms_per_object(self) -> float:
        return 1000 * self.wall / self.objects


def measure(ds: Datasets) -> S3Result:
    """One ``lockgate ingest`` of D3's objects from moto over HTTP, as one batch."""
    for k, v in MOTO_ENV.items():
        os.environ.setdefault(k, v)
    server = CountingMoto()
    try:
        objects = server.land(ds.path("d3"))
        with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as d:
            cfg = write_config(
                Path(d) / "lg",
                f"s3://{BUCKET}/{PREFIX}",
                "jsonl",
                DECLARED,
                extra_source={"max_files_per_batch": max(objects, 1)},
                extra_top={"s3": {"endpoint_url": server.endpoint, "region": "us-east-1"}},
            )
            run = lockgate_ingest(cfg, env=MOTO_ENV)
        stats = server.stats()
    finally:
        server.stop()
    if run.rows != ds.rows("d3") or run.quarantined:
        raise RuntimeError(f"s3 small objects: {run.rows} rows, expected {ds.rows('d3')}")
    res = S3Result(
        objects,
        ds.bytes("d3"),
        run.rows,
        run.measured.wall_s,
        run.batch_seconds,
        run.measured.cpu_s,
        run.measured.peak_rss_bytes,
        run.batches,
        int(stats["gets"]),
        int(stats["max_in_flight"]),
    )
    print(
        f"  s3 small objects: {objects} objects, wall {res.wall:.2f}s, {res.batches} batch(es), "
        f"{res.gets} GETs, max {res.max_in_flight} in flight",
        file=sys.stderr,
        flush=True,
    )
    return res


def rows(res: S3Result) -> list[SummaryRow]:
    return [
        SummaryRow(
            "small objects on S3 (moto over HTTP): GETs in flight",
            f"D3 on S3 ({res.objects} objects in {res.batches} batch, {res.bytes / 1e6:.2f} MB)",
            f"{res.wall:.2f} s = {res.ms_per_object:.2f} ms/object "
            f"(batch {res.batch_seconds:.2f} s, CPU {res.cpu:.1f} s)",
            f"{res.gets} object GETs served",
            f"max {res.max_in_flight} GETs in flight",
            f">= {GOAL_GETS}",
            res.max_in_flight >= GOAL_GETS and res.gets >= res.objects,
            f"{res.peak_rss / 2**20:.0f} / -",
        )
    ]


def skipped_rows(why: str) -> list[SummaryRow]:
    return [
        SummaryRow(
            "small objects on S3 (moto over HTTP): GETs in flight",
            "D3 on S3",
            "-",
            "-",
            "-",
            f">= {GOAL_GETS}",
            None,
            note=why,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args(argv)
    before = load_average()
    ds = ensure(args.scale, ("d3",))
    found = rows(measure(ds))
    return report_rows(
        found,
        "Small objects on S3: one batch over moto (issue 13)",
        "bench.s3_small",
        argv,
        f"Scale {args.scale:g}, 1 round; moto ThreadedMotoServer on 127.0.0.1.",
        before,
        append=not args.no_append,
    )


if __name__ == "__main__":
    sys.exit(main())
