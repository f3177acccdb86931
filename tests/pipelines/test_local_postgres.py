"""The local PostgreSQL server (``lockgate.pipelines.local_postgres``, used by the tests and
``make run-postgres``) and the demo's PostgreSQL ``dagster.yaml``: the instance really runs on
the server, and the URL stays in the environment, never in the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from lockgate.pipelines import local_postgres
from lockgate.pipelines.dagster_yaml import dagster_instance_config
from lockgate.pipelines.local_postgres import LocalPostgres
from tests.conftest import free_port
from tests.platform_helpers import REPO
from tests.postgres_server import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]  # fixtures

URL_ENV = "LOCKGATE_TEST_PG_URL"


def test_postgres_instance_config() -> None:
    conf = dagster_instance_config("/x/home", postgres_url_env="PG_URL")
    assert conf["storage"] == {"postgres": {"postgres_url": {"env": "PG_URL"}}}
    assert conf["run_coordinator"]["config"] == {
        "dequeue_use_threads": True,
        "dequeue_num_workers": 4,
    }
    assert "config" not in dagster_instance_config("/x/home")["run_coordinator"]


def test_demo_instance_runs_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    home = tmp_path / "dagster_home"
    config = tmp_path / "lockgate.yaml"
    shutil.copy(REPO / "lockgate.yaml", config)  # the demo's own config
    demo = subprocess.run(
        [sys.executable, "-m", "lockgate.pipelines.demo", "--home", str(home), "--config",
         str(config), "--postgres-url-env", URL_ENV],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    text = (home / "dagster.yaml").read_text()
    assert postgres_url not in text and "127.0.0.1" not in text
    assert yaml.safe_load(text)["storage"] == {"postgres": {"postgres_url": {"env": URL_ENV}}}
    probe = (
        "import dagster\n"
        "i = dagster.DagsterInstance.get()\n"
        "print(type(i.run_storage).__name__, len(i.get_runs()))\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home), URL_ENV: postgres_url}
    check = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["PostgresRunStorage", "0"]


def test_start_reuses_and_stop_ends_the_server_by_pid(postgres_server: LocalPostgres) -> None:
    # a second server of its own (the session's stays up), in a folder `postgres` can reach
    folder = Path(tempfile.mkdtemp(prefix="lockgate-pg-t-"))
    folder.chmod(0o755)
    data = folder / "data"
    try:
        first = local_postgres.start(data, free_port())
        again = local_postgres.start(data, first.port)
        assert again.pid == first.pid  # already running: reused
        assert first.url.startswith("postgresql+psycopg2://lockgate@127.0.0.1:")
        assert local_postgres.stop(data) is True
        try:
            os.kill(first.pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive
        assert local_postgres.stop(data) is False  # nothing running
        cli = subprocess.run(
            [sys.executable, "-m", "lockgate.pipelines.local_postgres", "stop", "--data",
             str(data)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert cli.returncode == 0 and cli.stdout.strip() == "not running"
    finally:
        local_postgres.stop(data)
        shutil.rmtree(folder, ignore_errors=True)
