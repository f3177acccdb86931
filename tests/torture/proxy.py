"""The object-store helper's ``FaultProxy`` plus the two faults the torture needs that it
lacks: ``reset_before_body`` (the connection is closed before the request body is read: the
client sees a reset while sending; nothing reaches S3) and ``latency`` (the request is held
back 50-500 ms, then forwarded normally). Both are drawn before the body is read, with
their own seeded generator, and counted in ``faults`` like the base kinds."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler

from tests.s3_fault_proxy import FaultProxy, _ProxyHandler

EXTRA_KINDS: tuple[str, ...] = ("reset_before_body", "latency")


class TortureProxy(FaultProxy):
    def __init__(self, upstream: str, *, seed: int = 0, timeout: float = 60.0) -> None:
        super().__init__(upstream, seed=seed, timeout=timeout, history_size=1)
        self._extra_rng = random.Random(seed ^ 0x5EED)
        self._extra: dict[str, float] = {}

    def set_extra_rates(self, rates: Mapping[str, float]) -> None:
        unknown = set(rates) - set(EXTRA_KINDS)
        if unknown:
            raise ValueError(f"unknown extra fault kinds {sorted(unknown)}")
        with self._lock:
            self._extra = dict(rates)

    def clear(self) -> None:
        super().clear()
        with self._lock:
            self._extra = {}

    def _draw_extra(self) -> str | None:
        with self._lock:
            if not self._extra:
                return None
            draw = self._extra_rng.random()
            for kind in sorted(self._extra):
                draw -= self._extra[kind]
                if draw < 0:
                    self.faults[kind] += 1
                    return kind
        return None

    def _handler_base(self) -> type[BaseHTTPRequestHandler]:
        return _TortureHandler


class _TortureHandler(_ProxyHandler):
    owner: TortureProxy

    def _handle_torture(self) -> None:
        kind = self.owner._draw_extra()
        if kind == "reset_before_body":
            self.close_connection = True
            return
        if kind == "latency":
            time.sleep(random.uniform(0.05, 0.5))
        self._handle()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle_torture
