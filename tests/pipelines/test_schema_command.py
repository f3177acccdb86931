"""``lockgate schema`` prints the JSON Schema of lockgate.yaml (for editor completion)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lockgate.pipelines.cli import main
from lockgate.resources.config import config_json_schema
from tests.platform_helpers import CLI_TIMEOUT_S, LOCKGATE


def test_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == config_json_schema()
    assert printed["$schema"].endswith("2020-12/schema")


def test_schema_command_needs_no_config(tmp_path: Path) -> None:
    """The installed console script prints the schema where no lockgate.yaml exists."""
    env = {k: v for k, v in os.environ.items() if k != "LOCKGATE_CONFIG"}
    done = subprocess.run(
        [str(LOCKGATE), "schema"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["title"] == "lockgate.yaml"


def test_a_closed_pipe_is_not_an_error() -> None:
    """``lockgate schema | head -c 10``: the reader leaves early; no traceback, exit 0."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "lockgate"
    run = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{exe} schema | head -c 10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and run.stdout.startswith("{")
