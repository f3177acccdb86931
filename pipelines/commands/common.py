"""What the commands share: opening the runtime from ``--config`` with readable errors, and
printing JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lockgate.pipelines.batch import ClaimFingerprintChanged
from lockgate.pipelines.conform import DeclaredSchemaRefused
from lockgate.resources.config import ConfigError
from lockgate.resources.ledger import FingerprintMismatch
from lockgate.resources.runtime import Runtime


class CommandError(Exception):
    """A user-facing failure: printed without a traceback, exit code 2."""


def runtime(args: argparse.Namespace) -> Runtime:
    try:
        return Runtime.from_config(getattr(args, "config", None))
    except ConfigError as e:
        raise CommandError(str(e)) from None


def add_source_argument(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--source", required=required, help="source name from lockgate.yaml (default: all)"
    )


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def guarded(fn: Any) -> Any:
    """Turn known user-facing errors into a message and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except (
            CommandError,
            ConfigError,
            FingerprintMismatch,
            ClaimFingerprintChanged,
            DeclaredSchemaRefused,
        ) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"lockgate {args.command}: {msg}", file=sys.stderr)
            return 2

    return run
