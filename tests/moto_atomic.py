"""A moto S3 server whose create-only puts are atomic, as on S3.

moto implements ``If-None-Match: *`` as check-then-write on a threaded server, so two racing
creators can both "succeed" (the second silently overwrites the first): with plain moto,
8 processes x 50 commits lost a batch to exactly that race. Real S3 and the local backend are
atomic. This server wraps moto's WSGI app so that mutating requests (PUT, POST, DELETE) run
one at a time; reads stay concurrent. Every test that talks to S3 uses it.

In-process: ``start(port) -> stop``. Own process: ``python -m tests.moto_atomic -p PORT``.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterable
from typing import Any


class SerialisedWrites:
    """WSGI middleware: one mutating request at a time."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("REQUEST_METHOD") not in ("PUT", "POST", "DELETE"):
            return list(self.app(environ, start_response))
        with self.lock:
            result = self.app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


def make(port: int, host: str = "127.0.0.1") -> Any:
    """A werkzeug server for moto behind ``SerialisedWrites`` (not started)."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = SerialisedWrites(DomainDispatcherApplication(create_backend_app))
    return make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)


def start(port: int) -> Callable[[], None]:
    """Serve on 127.0.0.1:``port`` in a daemon thread; returns the function that stops it."""
    server = make(port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join()

    return stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    args = parser.parse_args()
    make(args.port, args.host).serve_forever()


if __name__ == "__main__":
    main()
