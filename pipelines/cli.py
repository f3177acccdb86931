"""The ``lockgate`` command. Each subcommand is one module in ``lockgate.pipelines.commands`` with
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code).

Contract: an expected error (any ``LockgateError``, and pyiceberg's ``NoSuchTableError`` as
``MissingTable``) a command raises is printed as ONE line on stderr,
``lockgate: error: <message> (hint: ...)``, and the command exits with the error's
``exit_code`` (``lockgate.resources.errors.ExitCode``); anything else propagates with its
traceback (exit 1). ``--config`` is accepted before or after the subcommand.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Sequence

from lockgate.pipelines import codecache
from lockgate.pipelines.startup import gc_paused, without_blas_threads, without_pydantic_plugins
from lockgate.resources.errors import ExitCode, LockgateError, MissingTable

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": (
        "lockgate.pipelines.commands.ingest",
        "discover, claim and commit every pending batch",
    ),
    "status": ("lockgate.pipelines.commands.status", "per-source progress, lag and stuck batches"),
    "verify": ("lockgate.pipelines.commands.verify", "check the exactly-once invariants"),
    "backfill": ("lockgate.pipelines.commands.backfill", "rebuild the partitions of a day range"),
    "retry": ("lockgate.pipelines.commands.retry", "re-request a stuck batch"),
    "vacuum": ("lockgate.pipelines.commands.vacuum", "delete unreferenced data files"),
    "compact": (
        "lockgate.pipelines.commands.compact",
        "rewrite each day's small data files into few large ones",
    ),
    "maintain": (
        "lockgate.pipelines.commands.maintain",
        "expire snapshots, retire metadata, delete orphan files",
    ),
    "doctor": ("lockgate.pipelines.commands.doctor", "check the environment and the S3 endpoint"),
    "ledger": ("lockgate.pipelines.commands.ledger", "inspect a source's ledger"),
    "schema": ("lockgate.pipelines.commands.schema", "print the JSON Schema of lockgate.yaml"),
    "quarantine": ("lockgate.pipelines.commands.quarantine", "show a source's quarantine entries"),
    "notifications": (
        "lockgate.pipelines.commands.notifications",
        "print (or --apply) the S3 event notification and queue policy of a source",
    ),
}


CONFIG_HELP = "path to lockgate.yaml (default: $LOCKGATE_CONFIG, else ./lockgate.yaml)"


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first token that is one and is not the value of
    ``--config``), if any."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--config":
            skip = True
        elif a in COMMANDS:
            return a
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser. Only the chosen command's module is imported (the others only name
    themselves), so ``lockgate doctor`` does not pay for importing Dagster or pyiceberg."""
    parser = argparse.ArgumentParser(
        prog="lockgate", description="Exactly-once ingestion of landed files into Iceberg tables."
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # after the subcommand too; SUPPRESS keeps a --config given before it
        p.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
        if name != chosen:
            continue
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _expected(exc: Exception) -> LockgateError | None:
    """``exc`` as a ``LockgateError`` if it is an expected error, else None."""
    if isinstance(exc, LockgateError):
        return exc
    # pyiceberg is imported only by the commands that need it: if it is not loaded, no
    # exception can be one of its classes
    iceberg = sys.modules.get("pyiceberg.exceptions")
    if iceberg is not None and isinstance(exc, iceberg.NoSuchTableError):
        return MissingTable(" ".join(str(exc).split()) or "the table does not exist")
    if isinstance(exc, OSError):
        from lockgate.resources.retry import is_transient

        if is_transient(exc):
            # e.g. Arrow's S3 filesystem (pyiceberg's FileIO) failing after its retries and ours
            from lockgate.resources.store_s3 import S3Unavailable

            return S3Unavailable(" ".join(str(exc).split()))
    return None


def report(err: LockgateError) -> int:
    """Print ``err`` as one line on stderr; its exit code."""
    print(f"lockgate: error: {err.one_line()}", file=sys.stderr)
    return int(err.exit_code)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with gc_paused():  # the command's modules load (lockgate.pipelines.startup)
        args = build_parser(argv).parse_args(argv)
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print("lockgate: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # the reader went away (`lockgate schema | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
    except Exception as exc:
        err = _expected(exc)
        if err is None:
            raise  # unexpected: its traceback is the report
        return report(err)


def console() -> None:
    """The ``lockgate`` console script: ``main``, then exit with its code. On a normal return
    the interpreter's teardown is skipped (``os._exit``) after everything it would run that
    matters has run: non-daemon threads joined (``threading._shutdown``), ``atexit`` handlers
    (logging flushed), stdout/stderr flushed. Tearing down pyiceberg, pandas and Arrow module
    state changes nothing on disk and cost ~1.5 s of CPU per ``lockgate ingest``. An exception
    (or ``SystemExit``, e.g. ``--help``) leaves the ordinary way. pydantic's plugins are off
    unless asked for (``lockgate.pipelines.startup.without_pydantic_plugins``), OpenBLAS
    starts no threads (``without_blas_threads``: Lockgate makes no BLAS call), and the code
    Python generates as modules load comes from its cache (``lockgate.pipelines.codecache``)."""
    without_pydantic_plugins()
    without_blas_threads()
    codecache.install()
    code = main()
    codecache.save()
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a reader gone or a stream closed: nothing left to keep
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
