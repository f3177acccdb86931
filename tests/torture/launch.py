"""Starting ``lockgate`` processes for the torture harness, and killing them.

Two launchers with one interface (``start(argv, env, cwd, log) -> Proc``):

* ``ExecLauncher``: the real console script ``.venv/bin/lockgate`` as a subprocess;
* ``ForkLauncher``: a fork of ``tests.torture.zygote`` (same entry point,
  ``lockgate.pipelines.cli.main``, imports paid once; see that module for why it is equivalent).

A ``Proc`` knows its pid and, once it ended, its return code as ``subprocess`` reports it
(``-9``: killed by SIGKILL, by its own crash point or by us). Every process started is
stopped by pid in ``close()``, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

VENV_BIN = Path(sys.executable).parent
LOCKGATE = VENV_BIN / "lockgate"
REPO = Path(__file__).resolve().parents[2]


class Proc:
    """One started ``lockgate`` process."""

    def __init__(self, pid: int, argv: Sequence[str], launcher: str) -> None:
        self.pid = pid
        self.argv = list(argv)
        self.launcher = launcher
        self.started = time.monotonic()
        self.ended: float | None = None
        self.rc: int | None = None
        self.killed_by_us = False
        self._done = threading.Event()
        self._popen: subprocess.Popen[bytes] | None = None

    def _finish(self, rc: int) -> None:
        self.rc = rc
        self.ended = time.monotonic()
        self._done.set()

    @property
    def duration(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def wait(self, timeout: float | None = None) -> int | None:
        if self._popen is not None:
            try:
                rc = self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
            if self.rc is None:
                self._finish(rc)
            return self.rc
        self._done.wait(timeout)
        return self.rc

    def running(self) -> bool:
        if self._popen is not None:
            self.wait(0)
        return self.rc is None

    def kill(self) -> bool:
        """SIGKILL it if it still runs; True if the signal was sent."""
        if self.pid <= 0 or not self.running():
            return False
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.killed_by_us = True
        return True


class ExecLauncher:
    name = "exec"

    def __init__(self) -> None:
        self._procs: list[Proc] = []

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: str, log: str) -> Proc:
        with open(log, "ab") as f:
            popen = subprocess.Popen(
                [str(LOCKGATE), *argv],
                env=dict(env),
                cwd=cwd,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        proc = Proc(popen.pid, argv, self.name)
        proc._popen = popen
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for p in self._procs:
            p.kill()
            p.wait(30)
        self._procs.clear()


class ForkLauncher:
    """One zygote process; a reader thread matches its replies to ``Proc`` objects."""

    name = "fork"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        zenv = dict(env or os.environ)
        zenv["PYTHONPATH"] = str(REPO)
        self._zygote = subprocess.Popen(
            [sys.executable, "-m", "tests.torture.zygote"],
            cwd=str(REPO),
            env=zenv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._zygote.stdin is not None and self._zygote.stdout is not None
        self._in: IO[bytes] = self._zygote.stdin
        self._out: IO[bytes] = self._zygote.stdout
        self._lock = threading.Lock()
        self._next = 0
        self._pending: dict[str, threading.Event] = {}
        self._procs: dict[str, Proc] = {}
        first = json.loads(self._out.readline() or b"{}")
        if not first.get("ready"):
            raise RuntimeError("the torture zygote did not start")
        self._reader = threading.Thread(target=self._read, name="zygote-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._out:
            msg = json.loads(line)
            rid = msg["id"]
            with self._lock:
                proc = self._procs.get(rid)
                if proc is None:
                    continue
                proc.pid = int(msg["pid"])
                if "rc" in msg:
                    del self._procs[rid]
                    proc._finish(int(msg["rc"]))
                waiter = self._pending.pop(rid, None)
            if waiter is not None:
                waiter.set()
        with self._lock:  # the zygote is gone: nothing will report any more
            for proc in self._procs.values():
                proc._finish(-999)
            self._procs.clear()

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: str, log: str) -> Proc:
        with self._lock:
            self._next += 1
            rid = str(self._next)
            ev = threading.Event()
            self._pending[rid] = ev
            proc = Proc(-1, argv, self.name)
            self._procs[rid] = proc
            req = {"id": rid, "argv": list(argv), "env": dict(env), "cwd": cwd, "log": log}
            self._in.write((json.dumps(req) + "\n").encode())
            self._in.flush()
        if not ev.wait(120):
            raise RuntimeError("the torture zygote did not fork")
        return proc

    def close(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            p.kill()
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self._zygote.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(self._zygote.pid, signal.SIGKILL)
            self._zygote.wait(10)
        self._reader.join(10)
