"""A real headless browser for UI smoke tests: Debian's Chromium, driven over the DevTools
protocol on a pipe (``--remote-debugging-pipe``; standard library only, no driver, no port).

Why not ``chromium --screenshot/--dump-dom``: the Dagster UI is a single-page app that keeps
polling, so the one-shot flags either capture the empty shell at the load event or never
finish (``--virtual-time-budget`` waits for a network that never idles). Here the caller
waits, bounded, for the text that proves the data arrived, then captures.

Contract:

* ``Chromium`` runs in its own session (process group); ``close()`` (or leaving the ``with``
  block) ends the browser and every helper process it started, falling back to SIGKILL of the
  group, also when the test failed.
* Every wait is bounded: ``BrowserError`` when a page does not show the expected text in
  time, or when the browser does not answer a command.
* Only loopback URLs are opened by the tests; the flags turn off background networking,
  component updates, sync and QUIC so the browser itself contacts nothing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

CHROMIUM = Path("/usr/bin/chromium")

FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


class BrowserError(RuntimeError):
    """The browser did not start, did not answer, or a page did not show what was expected."""


def chromium_available(binary: Path = CHROMIUM) -> bool:
    return binary.is_file() and os.access(binary, os.X_OK)


@dataclass(frozen=True)
class Capture:
    """What a page showed once its expected text appeared."""

    url: str
    text: str  # document.body.innerText
    html: str  # document.documentElement.outerHTML (the rendered DOM)
    seconds: float  # from navigation until the expected text appeared


class Chromium:
    """One headless browser process. Not thread-safe: one command at a time."""

    def __init__(
        self,
        user_data_dir: Path,
        *,
        window: tuple[int, int] = (1400, 900),
        binary: Path = CHROMIUM,
        log_path: Path | None = None,
        command_timeout: float = 60.0,
    ) -> None:
        self.user_data_dir = user_data_dir
        self.window = window
        self.binary = binary
        self.log_path = log_path
        self.command_timeout = command_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_browser = -1
        self._from_browser = -1
        self._buffer = b""
        self._next_id = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Chromium:
        if not chromium_available(self.binary):
            raise BrowserError(f"{self.binary} is missing: install it (`make browser`, as root)")
        self.user_data_dir.mkdir(parents=True, exist_ok=True)
        cmd_r, cmd_w = os.pipe()  # we write commands, the browser reads them on fd 3
        out_r, out_w = os.pipe()  # the browser writes answers on fd 4, we read them

        def _child_fds() -> None:
            # Copy both ends above 4 first so that dup2 onto 3 cannot clobber the other end;
            # every other descriptor of ours is close-on-exec (PEP 446).
            a, b = os.dup2(cmd_r, 100), os.dup2(out_w, 101)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.close(a)
            os.close(b)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)

        argv = [
            str(self.binary),
            *FLAGS,
            f"--user-data-dir={self.user_data_dir}",
            f"--window-size={self.window[0]},{self.window[1]}",
            "about:blank",
        ]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=False,  # fds 3 and 4 are set up by _child_fds
                preexec_fn=_child_fds,
                start_new_session=True,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
            os.close(cmd_r)
            os.close(out_w)
        self._to_browser, self._from_browser = cmd_w, out_r
        self.call("Browser.getVersion")
        return self

    def close(self, grace: float = 10.0) -> None:
        """End the browser and its helpers; SIGKILL the group if it lingers; wait until every
        helper seen is gone. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        helpers: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            helpers = psutil.Process(proc.pid).children(recursive=True)
        try:
            if proc.poll() is None:
                with contextlib.suppress(OSError, BrowserError):
                    self._send("Browser.close", {})
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
        finally:
            with contextlib.suppress(ProcessLookupError):  # helpers (zygote, renderers) too
                os.killpg(proc.pid, signal.SIGKILL)
            for helper in helpers:  # a helper that left the group
                with contextlib.suppress(psutil.Error):
                    helper.kill()
            proc.wait(timeout=30)
            psutil.wait_procs(helpers, timeout=30)
            for fd in (self._to_browser, self._from_browser):
                if fd >= 0:
                    os.close(fd)
            self._to_browser = self._from_browser = -1

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -- protocol ----------------------------------------------------------------------------

    def _send(self, method: str, params: dict[str, Any], session: str | None = None) -> int:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data) :]
        return self._next_id

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("the browser did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError("the browser closed its DevTools pipe (did it crash?)")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and return its result (events in between are dropped)."""
        if self._proc is None:
            raise BrowserError("the browser is not running")
        msg_id = self._send(method, params or {}, session)
        deadline = time.monotonic() + self.command_timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") != msg_id:
                continue
            if "error" in message:
                raise BrowserError(f"{method}: {message['error']}")
            result: dict[str, Any] = message.get("result", {})
            return result

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    # -- pages -------------------------------------------------------------------------------

    def open(self, url: str) -> str:
        """Open ``url`` in a new tab of the window's size; return the tab's session id."""
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        session: str = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": self.window[0],
                "height": self.window[1],
                "deviceScaleFactor": 1,
                "mobile": False,
            },
            session,
        )
        return session

    def wait_for_text(
        self, session: str, url: str, needles: Sequence[str], timeout: float, started: float
    ) -> Capture:
        """Poll the page until its visible text contains every needle; ``BrowserError`` (with
        what the page showed) after ``timeout`` seconds."""
        deadline = started + timeout
        text = ""
        while True:
            text = self.evaluate(session, "document.body ? document.body.innerText : ''") or ""
            if all(n in text for n in needles):
                html = self.evaluate(session, "document.documentElement.outerHTML") or ""
                return Capture(url=url, text=text, html=html, seconds=time.monotonic() - started)
            if time.monotonic() >= deadline:
                missing = [n for n in needles if n not in text]
                raise BrowserError(
                    f"{url} did not show {missing} within {timeout:.0f} s; it showed: "
                    f"{text[:600]!r}"
                )
            time.sleep(0.5)

    def screenshot(self, session: str, path: Path) -> Path:
        """Save a PNG of the tab's viewport to ``path``."""
        data = self.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def capture(
        self, url: str, needles: Sequence[str], png: Path, *, timeout: float = 60.0
    ) -> Capture:
        """Open ``url``, wait (bounded) until its text shows every needle, let rendering
        settle, then save a screenshot to ``png`` and return the rendered text and DOM."""
        started = time.monotonic()
        session = self.open(url)
        try:
            found = self.wait_for_text(session, url, needles, timeout, started)
            time.sleep(1.0)  # one more paint: spinners and skeletons resolve after the data
            self.screenshot(session, png)
            return found
        finally:
            self.call("Target.detachFromTarget", {"sessionId": session})
