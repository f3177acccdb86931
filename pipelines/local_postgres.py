"""A throwaway local PostgreSQL server for the demo (``make run-postgres``) and the tests:
``python -m lockgate.pipelines.local_postgres start|stop --data DIR [--port N]``.

Contract:

* ``start`` runs ``initdb`` (once; trust authentication, superuser ``lockgate``) and ``pg_ctl
  start`` into ``DIR``, listening on ``127.0.0.1`` only (its Unix socket in ``DIR`` too), and
  creates the database ``dagster``. It prints the connection URL (no password: loopback only).
  A server already running in ``DIR`` is reused.
* ``stop`` stops the server of ``DIR`` by the PID in its ``postmaster.pid`` (SIGINT: a fast
  shutdown; SIGQUIT, then SIGKILL if it does not end) and waits for it to exit. With
  ``--drain S [--instance HOME]`` it first waits (at most S seconds) until no client has
  been connected for 2 s and no process of the Dagster instance ``HOME`` (a process whose
  ``DAGSTER_HOME`` is ``HOME``) is left, so that processes still finishing after Ctrl-C (a
  run worker writing its last events, a code server waiting out its heartbeat) are not cut
  off mid-write and left retrying a vanished server.
* PostgreSQL refuses to run as root: as root, ``DIR`` is given to the ``postgres`` user
  (Debian's package creates it) and the binaries run as that user (``DIR``'s parent folders
  must let that user through).
* The binaries are found in ``$LOCKGATE_PG_BIN``, else Debian's ``/usr/lib/postgresql/<v>/bin``
  (highest version), else on ``PATH``; ``PostgresMissing`` says so when there are none.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lockgate.resources.errors import ExitCode, TerminalError

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "lockgate"
DATABASE = "dagster"
RUN_AS_ROOT_USER = "postgres"
DEFAULT_PORT = 5439
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
DRAIN_QUIET_S = 2.0


class PostgresMissing(TerminalError):
    """No PostgreSQL server binaries on this machine (install them: ``make postgres``): the
    environment is not set up, like a missing config."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFIG


@dataclass(frozen=True)
class LocalPostgres:
    """A running server: its data folder, port and postmaster PID."""

    data: Path
    port: int
    pid: int

    @property
    def url(self) -> str:
        """``postgresql+psycopg2://lockgate@127.0.0.1:<port>/dagster`` (trust auth: no password;
        the driver named because SQLAlchemy 2.1 defaults to psycopg 3, which dagster-postgres
        does not install)."""
        return self.database_url(DATABASE)

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (an existing one is kept) and return its URL."""
        _createdb(bin_dir(), self.port, name)
        return self.database_url(name)

    def stop(self) -> None:
        stop(self.data)


def bin_dir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``createdb`` (see the module docstring)."""
    env = os.environ.get("LOCKGATE_PG_BIN")
    candidates = [Path(env)] if env else []
    if DEBIAN_ROOT.is_dir():
        versions = sorted(
            (p for p in DEBIAN_ROOT.iterdir() if p.name.isdigit()),
            key=lambda p: int(p.name),
            reverse=True,
        )
        candidates += [v / "bin" for v in versions]
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    raise PostgresMissing(
        "no PostgreSQL server binaries (initdb, pg_ctl): install Debian's `postgresql` package "
        "(`make postgres` as root) or set LOCKGATE_PG_BIN"
    )


def _user() -> str | None:
    """The user the server runs as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(RUN_AS_ROOT_USER)
    except KeyError as e:
        raise PostgresMissing(
            f"running as root and no {RUN_AS_ROOT_USER!r} user to run PostgreSQL as"
        ) from e
    return RUN_AS_ROOT_USER


def _run(args: Sequence[str], user: str | None, log: Path | None = None) -> None:
    out = subprocess.run(
        list(args), user=user, cwd="/", capture_output=True, text=True, check=False, timeout=120
    )
    if out.returncode != 0:
        tail = f"\n(server log: {log})" if log else ""
        raise RuntimeError(f"{' '.join(args)} failed: {out.stderr.strip()}{tail}")


def _pid(data: Path) -> int | None:
    try:
        first = (data / "postmaster.pid").read_text().splitlines()[0]
        return int(first)
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(data: str | os.PathLike[str], port: int = DEFAULT_PORT) -> LocalPostgres:
    """Start (initialising if needed) the server of ``data`` on ``127.0.0.1:port``."""
    bins = bin_dir()
    user = _user()
    root = Path(data).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if user is not None:
        shutil.chown(root, user=user)
        root.chmod(0o700)
    pid = _pid(root)
    if pid is not None and _alive(pid):
        return LocalPostgres(root, port, pid)
    log = root / "server.log"
    if not (root / "PG_VERSION").exists():
        _run(
            [
                str(bins / "initdb"),
                "-D",
                str(root),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            user,
        )
    opts = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
    _run(
        [
            str(bins / "pg_ctl"),
            "-D",
            str(root),
            "-l",
            str(log),
            "-o",
            opts,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        ],
        user,
        log,
    )
    pid = _pid(root)
    if pid is None:
        raise RuntimeError(f"PostgreSQL in {root} started but wrote no postmaster.pid ({log})")
    server = LocalPostgres(root, port, pid)
    try:
        _createdb(bins, port, DATABASE)
    except RuntimeError:
        server.stop()
        raise
    return server


def _createdb(bins: Path, port: int, name: str) -> None:
    created = subprocess.run(
        [str(bins / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, name],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise RuntimeError(f"createdb {name} failed: {created.stderr.strip()}")


def _client_backends(pid: int) -> list[int]:
    """PIDs of the server's client connections (children of the postmaster ``pid`` titled
    ``postgres: <user> <database> ...``), read from ``/proc``; empty where there is none."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = _ppid(int(entry.name))
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if ppid == pid and title.startswith(f"postgres: {SUPERUSER} "):
                found.append(int(entry.name))
    return found


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _instance_processes(home: str, server: int) -> list[int]:
    """PIDs of processes whose environment has ``DAGSTER_HOME=home``, other than this process,
    its ancestors (the shell and make that run ``stop`` carry it too) and the server ``server``
    with its own processes (started by make, so they carry it as well)."""
    mine = {os.getpid(), server}
    with contextlib.suppress(OSError, IndexError, ValueError):
        parent = os.getppid()
        while parent > 1 and parent not in mine:
            mine.add(parent)
            parent = _ppid(parent)
    needle = b"DAGSTER_HOME=" + os.fsencode(home)
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(entry.name)
            if pid in mine or _ppid(pid) == server:
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(pid)
    return found


def _drain(pid: int, timeout_s: float, instance: str | None = None) -> None:
    """Wait until no client has been connected and no process of the Dagster instance
    ``instance`` has been alive for ``DRAIN_QUIET_S``, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and _alive(pid):
        if _client_backends(pid) or (instance and _instance_processes(instance, pid)):
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= DRAIN_QUIET_S:
            return
        time.sleep(0.25)


def stop(data: str | os.PathLike[str], drain_s: float = 0.0, instance: str | None = None) -> bool:
    """Stop the server of ``data`` by its PID, after draining its clients (and the processes
    of the Dagster instance ``instance``) for at most ``drain_s`` seconds; False if none was
    running."""
    pid = _pid(Path(data))
    if pid is None or not _alive(pid):
        return False
    if drain_s > 0:
        _drain(pid, drain_s, instance)
    for sig, grace in (
        (signal.SIGINT, STOP_TIMEOUT_S),
        (signal.SIGQUIT, 10.0),
        (signal.SIGKILL, 10.0),
    ):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(0.1)
    return not _alive(pid)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lockgate.pipelines.local_postgres",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--data", required=True, help="the server's data folder")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="loopback port")
    parser.add_argument(
        "--drain",
        type=float,
        default=0.0,
        metavar="S",
        help="stop: first wait at most S seconds until no client has been connected for 2 s",
    )
    parser.add_argument(
        "--instance",
        metavar="DAGSTER_HOME",
        help="stop --drain: also wait until no process of this Dagster instance is left",
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            server = start(args.data, args.port)
            print(server.url)
        else:
            print("stopped" if stop(args.data, args.drain, args.instance) else "not running")
    except (PostgresMissing, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
