"""Every command in README.md and docs/operations.md is run here, as written, so the runbook
cannot drift from the code.

A command line is a line of a fenced block that starts with ``lockgate``, ``dagster`` or
``make``. Concrete lines are run in a shell, in document order, against a demo environment
whose config has the source the docs name (``events`` -> ``raw.events``, days from
2026-03-01); each must exit 0. Synopsis lines (with ``[...]`` or upper-case placeholders such
as ``S``, ``N``, ``DAY``) are checked against ``--help`` (in this process): the command exists
and takes every option shown. ``make run`` and ``make test`` are run by
tests/e2e/test_make_run.py and by CI.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lockgate.pipelines.cli import main as cli_main
from tests.platform_helpers import write_config

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", REPO / "docs" / "operations.md"]
PROGRAMS = ("lockgate", "dagster", "make")
ELSEWHERE = {"make run": "tests/e2e/test_make_run.py", "make test": "CI (.ci/run)"}
PLACEHOLDER = re.compile(r"\[|\b(S|N|DAY|T)\b")
DAYS = [f"2026-03-0{d}" for d in range(1, 8)]


def doc_commands() -> list[tuple[str, str]]:
    """``(page, command)`` for every command line of every fenced block, in order."""
    out: list[tuple[str, str]] = []
    for page in PAGES:
        fenced = False
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                fenced = not fenced
                continue
            text = line.strip().removeprefix("$ ")
            if fenced and text.split(" ", 1)[0] in PROGRAMS:
                command = re.sub(r"\s+#.*$", "", text)
                out.append((page.name, command))
    return out


def test_the_docs_have_commands() -> None:
    commands = [c for _, c in doc_commands()]
    assert "make run" in commands and "make test" in commands
    assert any(c.startswith("lockgate backfill") for c in commands)
    assert any(c.startswith("dagster asset materialize") for c in commands)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A config with the docs' source (``events`` -> ``raw.events``), landed and ingested."""
    root = tmp_path_factory.mktemp("docs")
    landing = root / "landing" / "events"
    for i, day in enumerate(DAYS):
        (landing / f"dt={day}").mkdir(parents=True)
        rows = [json.dumps({"id": i * 10 + j, "v": f"r{j}"}) for j in range(5)]
        (landing / f"dt={day}" / "part-0.jsonl").write_text("\n".join(rows) + "\n")
    config = write_config(
        root / "lockgate.yaml",
        warehouse=str(root / "warehouse"),
        ledger=str(root / "ledger"),
        sources={
            "events": {
                "landing": str(landing),
                "format": "jsonl",
                "table": "raw.events",
                "partition": {"pattern": r"dt=(\d{4}-\d{2}-\d{2})", "start": "2026-01-01"},
                "schema": {"id": "long", "v": "string"},
                "min_age": 0,  # written whole before the first ingest
            }
        },
    )
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    bin_dir = str(Path(sys.executable).parent)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    environ.update(
        LOCKGATE_CONFIG=str(config),
        DAGSTER_HOME=str(home),
        PATH=f"{bin_dir}:{environ.get('PATH', '')}",
        CWD=str(root),
    )
    # the demo's own ingest and check, in this process (the docs' commands below run the
    # console script): `lockgate ingest`, then `lockgate verify --json`
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        for key in ("LOCKGATE_CONFIG", "DAGSTER_HOME"):
            mp.setenv(key, environ[key])
        mp.chdir(root)
        assert cli_main(["ingest"]) == 0
        out.truncate(0)
        out.seek(0)
        assert cli_main(["verify", "--json"]) == 0
    assert json.loads(out.getvalue())[0]["rows"] == 5 * len(DAYS)  # the docs act on real rows
    return environ


def _concrete() -> list[tuple[str, str]]:
    return [(p, c) for p, c in doc_commands() if c not in ELSEWHERE and not PLACEHOLDER.search(c)]


@pytest.mark.parametrize(("page", "command"), _concrete())
def test_doc_command_runs_as_written(env: dict[str, str], page: str, command: str) -> None:
    cwd = REPO if command.startswith("dagster ") else Path(env["CWD"])
    run = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"{page}: `{command}` exited {run.returncode}\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("page", "command"), [(p, c) for p, c in doc_commands() if PLACEHOLDER.search(c)]
)
def test_doc_synopsis_matches_the_cli(page: str, command: str) -> None:
    """The parser of ``lockgate``, in this process (the concrete commands above run the
    console script; a process per synopsis would only pay the imports again)."""
    words = command.split()
    sub = [w for w in words[1:3] if re.fullmatch(r"[a-z]+", w)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: object = cli_main([*sub, "--help"])
        except SystemExit as e:  # argparse exits after printing the help
            code = e.code
    assert code in (0, None), f"{page}: `{command}`: {err.getvalue()}"
    for option in re.findall(r"--[a-z][a-z-]*", command):
        assert option in out.getvalue(), f"{page}: `{command}`: {option} is not an option"
