"""What the commands share: opening the runtime from ``--config``, the ``--source`` and
``--component`` arguments, printing JSON, and ``CommandError``.

Commands raise their expected errors (``LockgateError``); ``lockgate.pipelines.cli.main`` prints
each as one line and exits with its code.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, ClassVar

from lockgate.resources.errors import ExitCode, TerminalError

if TYPE_CHECKING:  # the runtime imports pyiceberg: only commands that open it pay for it
    from lockgate.resources.dagster_resources import Namespace
    from lockgate.resources.runtime import Runtime


class CommandError(TerminalError):
    """Bad arguments to a command (an impossible day range, a missing ``--yes``, ...)."""

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE


def runtime(args: argparse.Namespace) -> Runtime:
    """The runtime of ``--config`` (``ConfigError`` if it is missing or invalid)."""
    from lockgate.resources.runtime import Runtime

    return Runtime.from_config(getattr(args, "config", None))


def add_source_argument(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--source", required=required, help="source name from lockgate.yaml (default: all)"
    )


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def add_component_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--component",
        metavar="NAME",
        help="the name of the Lockgate component in the Dagster project (the name given to "
        "build_definitions or the LockgateComponent): its sensors, jobs and run keys are "
        "NAME__<source>; default: the unnamed component",
    )


def namespace(args: argparse.Namespace) -> Namespace:
    """The ``Namespace`` of ``--component`` (the unnamed one without it); ``CommandError``
    for an invalid name."""
    from lockgate.resources.dagster_resources import Namespace

    try:
        return Namespace(getattr(args, "component", None))
    except ValueError as e:
        raise CommandError(str(e)) from None
