"""Helpers of the platform tests (sensor, CLI, daemon): configs written to a temp folder,
landed JSONL objects with known ids, the table's id multiset, and the real ``lockgate``
console script run as a subprocess.

Every landed record is ``{"id": <int>, "v": "r<id>"}`` with ids unique across a test, so
"each input record exactly once" is ``Counter(table ids) == Counter(landed ids)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockgate.pipelines.verify import VerifyReport, verify_source
from lockgate.resources.config import LockgateConfig, load_config
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import ObjectStore, S3Options
from lockgate.resources.stores import open_store
from tests.conftest import MOTO_ENV

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LOCKGATE = VENV_BIN / "lockgate"
PARTITION_PATTERN = r"(\d{4}-\d{2}-\d{2})"
PARTITION_START = "2026-01-01"
CLI_TIMEOUT_S = 300


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment a process needs to reach the moto server (credentials are dummies)."""
    return {**MOTO_ENV, "AWS_ENDPOINT_URL": endpoint}


def source_spec(name: str, landing: str, **extra: Any) -> dict[str, Any]:
    """A JSONL source with a declared schema ``{id: long, v: string}``, day from the key."""
    spec: dict[str, Any] = {
        "landing": landing,
        "format": "jsonl",
        "table": f"lake.{name}",
        "partition": {"pattern": PARTITION_PATTERN, "start": PARTITION_START},
        "schema": {"id": "long", "v": "string"},
        "max_files_per_batch": 2,
        "min_age": 0,  # files are written whole before a tick lists them
    }
    spec.update(extra)
    return spec


def write_config(
    path: Path,
    *,
    warehouse: str,
    sources: Mapping[str, Mapping[str, Any]],
    ledger: str | None = None,
    endpoint: str | None = None,
    dagster: Mapping[str, Any] | None = None,
) -> Path:
    """Write a ``lockgate.yaml`` at ``path`` and return the path."""
    doc: dict[str, Any] = {
        "warehouse": warehouse,
        "sources": {k: dict(v) for k, v in sources.items()},
    }
    if ledger is not None:
        doc["ledger"] = ledger
    if endpoint is not None:
        doc["s3"] = {"endpoint_url": endpoint, "region": "us-east-1"}
    if dagster is not None:
        doc["dagster"] = dict(dagster)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def s3_config(
    path: Path, endpoint: str, bucket: str, names: Iterable[str] = ("events",), **dagster: Any
) -> LockgateConfig:
    """A config whose landing, warehouse and ledger all live in ``s3://bucket``."""
    write_config(
        path,
        warehouse=f"s3://{bucket}/warehouse",
        ledger=f"s3://{bucket}/ledger",
        endpoint=endpoint,
        sources={n: source_spec(n, f"s3://{bucket}/landing/{n}") for n in names},
        dagster=dagster or None,
    )
    return load_config(str(path))


def landing_store(config: LockgateConfig, source: str) -> ObjectStore:
    opts = S3Options(endpoint_url=config.s3.endpoint_url, region="us-east-1")
    return open_store(config.source(source).landing, opts)


class Lander:
    """Lands JSONL objects with fresh ids and remembers every id landed."""

    def __init__(self, store: ObjectStore, start: int = 0):
        self.store = store
        self.next_id = start
        self.landed: Counter[int] = Counter()

    def body(self, n: int) -> tuple[bytes, list[int]]:
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        return "\n".join(json.dumps({"id": i, "v": f"r{i}"}) for i in ids).encode() + b"\n", ids

    def land(self, key: str, n: int = 3) -> list[int]:
        data, ids = self.body(n)
        self.store.put(key, data)
        self.landed.update(ids)
        return ids


def table_ids(rt: Runtime, source: str) -> Counter[int]:
    """The multiset of ``id`` values in the source's table (empty if it does not exist)."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        table = rt.tables.load(rt.source(source).table)
    except NoSuchTableError:
        return Counter()
    return Counter(table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())


def verify(rt: Runtime, source: str) -> VerifyReport:
    return verify_source(rt, rt.source(source))


def run_lockgate(
    config: Path | str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``lockgate`` console script (a real process) and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_CRASH")}
    full_env.update(env or {})
    return subprocess.run(
        [str(LOCKGATE), "--config", str(config), *args],
        env=full_env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def python_result(code: str, *args: str, env: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """``code`` run by a fresh interpreter (``python -c``, in the repository, with ``args``):
    the JSON its ``RESULT <json>`` line printed, and its whole stdout. Fails the test if the
    interpreter fails."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :]), proc.stdout


def lockgate_in_process(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config: Path | str,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``lockgate --config config *args`` in this process: the ``main`` the console script
    calls, with ``env`` set only for the call, answered as ``run_lockgate`` answers (exit code,
    stdout, stderr). For tests about a command's behaviour, not about the console script: it
    saves the process start and imports (~2-3 CPU s a command)."""
    from lockgate.pipelines.cli import main

    argv = ["--config", str(config), *args]
    with monkeypatch.context() as mp:
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["lockgate", *argv], code, out, err)


def dagster_instance(folder: Path) -> tuple[Path, Path]:
    """``(home, workspace)``: a Dagster home ``folder/dagster_home`` holding Lockgate's
    ``dagster.yaml``, and ``folder/workspace.yaml`` loading ``lockgate.pipelines.definitions`` from
    this checkout."""
    from lockgate.pipelines.dagster_yaml import write_dagster_yaml

    home = folder / "dagster_home"
    write_dagster_yaml(home)
    workspace = folder / "workspace.yaml"
    module = {"module_name": "lockgate.pipelines.definitions", "working_directory": str(REPO)}
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": module}]}))
    return home, workspace


def start_daemon(workspace: Path, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``dagster-daemon run -w workspace`` leading its own session (its process group id is
    its PID: stop it, and everything it started, with ``os.killpg``); output appended to
    ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(workspace)],
            env=dict(env),
            cwd=str(workspace.parent),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
