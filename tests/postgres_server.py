"""A real PostgreSQL server for the tests (``lockgate.pipelines.local_postgres``): one per
pytest worker session, on a free loopback port, in a temp folder, stopped by PID at the end.
Tests get a fresh database each (``postgres_url``), so Dagster run keys of one test never
collide with another's. Skipped, with the reason, only where no PostgreSQL binaries exist.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockgate.pipelines import local_postgres
from lockgate.pipelines.local_postgres import LocalPostgres, PostgresMissing
from tests.conftest import free_port


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    try:
        local_postgres.bin_dir()
    except PostgresMissing as e:
        pytest.skip(f"PostgreSQL tests skipped: {e}")
    # not under pytest's tmp_path: as root the server runs as `postgres`, which must be able
    # to reach its folder
    folder = Path(tempfile.mkdtemp(prefix="lockgate-pg-"))
    folder.chmod(0o755)
    server = local_postgres.start(folder / "data", free_port())
    try:
        yield server
    finally:
        stopped = local_postgres.stop(server.data)
        shutil.rmtree(folder, ignore_errors=True)
        assert stopped, f"PostgreSQL (pid {server.pid}) was not running at the end"


@pytest.fixture
def postgres_url(postgres_server: LocalPostgres) -> str:
    """The URL of a new, empty database on the session's server."""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
