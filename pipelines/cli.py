"""The ``lockgate`` command. Each subcommand is one module in ``lockgate.pipelines.commands`` with
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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
    "doctor": ("lockgate.pipelines.commands.doctor", "check the environment and the S3 endpoint"),
    "ledger": ("lockgate.pipelines.commands.ledger", "inspect a source's ledger"),
    "schema": ("lockgate.pipelines.commands.schema", "print the JSON Schema of lockgate.yaml"),
}


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first token that is one), if any."""
    return next((a for a in argv if a in COMMANDS), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser. Only the chosen command's module is imported (the others only name
    themselves), so ``lockgate doctor`` does not pay for importing Dagster or pyiceberg."""
    parser = argparse.ArgumentParser(
        prog="lockgate", description="Exactly-once ingestion of landed files into Iceberg tables."
    )
    parser.add_argument(
        "--config",
        help="path to lockgate.yaml (default: $LOCKGATE_CONFIG, else ./lockgate.yaml)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name != chosen:
            continue
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
