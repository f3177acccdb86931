"""A throwaway local PostgreSQL server for the demo (``make run-postgres``) and the tests:
``python -m lockgate.pipelines.local_postgres start|stop --data DIR [--port N]``.

Contract:

* ``start`` runs ``initdb`` (once; trust authentication, superuser ``lockgate``) and ``pg_ctl
  start`` into ``DIR``, listening on ``127.0.0.1`` only (its Unix socket in ``DIR`` too), and
  creates the database ``dagster``. It prints the connection URL (no password: loopback only).
  A server already running in ``DIR`` is reused.
* ``stop`` stops the server of ``DIR`` by the PID in its ``postmaster.pid`` (SIGINT: a fast
  shutdown; SIGQUIT, then SIGKILL if it does not end) and waits for it to exit.
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


def stop(data: str | os.PathLike[str]) -> bool:
    """Stop the server of ``data`` by its PID; False if none was running."""
    pid = _pid(Path(data))
    if pid is None or not _alive(pid):
        return False
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
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            server = start(args.data, args.port)
            print(server.url)
        else:
            print("stopped" if stop(args.data) else "not running")
    except (PostgresMissing, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
