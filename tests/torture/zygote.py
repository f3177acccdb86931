"""A fork server for the torture harness: import the ``lockgate`` CLI once, fork per run.

Starting the real console script costs an interpreter start plus ~3 s of CPU for imports
(pyiceberg, pyarrow, dagster); on a loaded 2-core machine that is 10-15 s of wall time per
process, which would cap a torture run at a few dozen trials. The zygote pays the imports
once; each run is a ``fork`` of it that calls ``lockgate.pipelines.cli.main(argv)`` -- the very
function ``.venv/bin/lockgate`` calls -- with its own environment, working directory and
log file, and exits with its return code (or dies by SIGKILL at a crash point).

Contract of a forked run (what makes it equivalent to a fresh ``lockgate`` process):

* the zygote has done no I/O against any store before forking (nothing cached: no S3
  session, no probed endpoint, no table), and runs no Python thread;
* ``os.environ`` is replaced by the request's environment before ``main`` runs, and the
  crash-point target (read from the environment at import time) is re-read from it;
* the ``random`` module is re-seeded from ``os.urandom`` (children must not share jitter).

Protocol (JSON lines): request ``{"id", "argv", "env", "cwd", "log"}`` on stdin; replies
``{"id", "pid"}`` once forked and ``{"id", "pid", "rc"}`` when the child is reaped (``rc`` as
``subprocess``: negative = killed by that signal). EOF on stdin: wait for children, exit.
"""

from __future__ import annotations

import json
import os
import random
import select
import sys
import traceback
from typing import Any


def _child(req: dict[str, Any]) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        random.seed()
        import lockgate.resources.crashpoints as cp

        cp._TARGET = cp._parse(os.environ.get(cp.ENV))
        cp._hits.clear()
        from pipelines import cli

        try:
            code = int(cli.main(req["argv"]))
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    import importlib

    from pipelines import cli

    for module, _help in cli.COMMANDS.values():  # what any run may need, imported once
        importlib.import_module(module)
    out = sys.stdout

    def send(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    children: dict[int, str] = {}
    buf = b""
    stdin_fd = sys.stdin.fileno()
    open_input = True
    send({"ready": True, "pid": os.getpid()})
    while open_input or children:
        if open_input:
            ready, _, _ = select.select([stdin_fd], [], [], 0.02)
            if ready:
                data = os.read(stdin_fd, 1 << 16)
                if not data:
                    open_input = False
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    req = json.loads(line)
                    pid = os.fork()
                    if pid == 0:
                        _child(req)
                    children[pid] = req["id"]
                    send({"id": req["id"], "pid": pid})
        else:
            select.select([], [], [], 0.02)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            rid = children.pop(pid, None)
            if rid is not None:
                send({"id": rid, "pid": pid, "rc": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    main()
