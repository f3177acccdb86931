"""``lockgate schema``: print the JSON Schema of ``lockgate.yaml`` on stdout, for editors
(``# yaml-language-server: $schema=<file>``). Reads no config and touches no state."""

from __future__ import annotations

import argparse
import json
import sys

from lockgate.resources.config import config_json_schema


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: redirect stdout to save the schema."""


def run(args: argparse.Namespace) -> int:
    json.dump(config_json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
