"""The installed distribution is one package, ``lockgate``, and nothing else at the top level
of site-packages; every sub-package of the repository's folders is in it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {
    "pipelines": "lockgate.pipelines",
    "resources": "lockgate.resources",
    "sensors": "lockgate.sensors",
}


def _declared_packages() -> list[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(data["tool"]["setuptools"]["packages"])


def test_every_subpackage_is_declared() -> None:
    found = {"lockgate"}
    for folder, package in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            if rel.parts and rel.parts[0] == "_root":
                continue
            found.add(".".join([package, *rel.parts]))
    assert found == set(_declared_packages())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("lockgate-*.whl")
    return whl


def test_wheel_installs_only_lockgate(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"lockgate"}, tops
    assert "lockgate/py.typed" in names
    assert "lockgate/__init__.py" in names
    assert "lockgate/resources/ledger.py" in names
    assert "lockgate/pipelines/commands/ingest.py" in names
    assert not any("_root" in n for n in names), [n for n in names if "_root" in n]
    entry = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "lockgate = lockgate.pipelines.cli:console" in entry


def test_public_api_is_lazy() -> None:
    """``import lockgate`` (and ``lockgate.resources``) does not import Dagster."""
    code = (
        "import sys, lockgate, lockgate.resources.store\n"
        "assert 'dagster' not in sys.modules, 'dagster imported'\n"
        "assert callable(lockgate.load_config) and callable(lockgate.main)\n"
        "print(sorted(lockgate.__all__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        "['LockgateComponent', 'LockgateConfig', 'build_definitions', 'load_config', 'main']"
    )


def test_pip_check_is_clean() -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _arrow_pool(code: str, **env: str) -> str:
    """The backend of Arrow's default pool in a fresh interpreter running ``code``."""
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run(
        [sys.executable, "-c", code + "\nprint(pyarrow.default_memory_pool().backend_name)"],
        capture_output=True,
        text=True,
        check=True,
        env={**environ, **env},
    )
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="jemalloc is chosen on Linux")
def test_import_chooses_jemalloc_unless_told_otherwise() -> None:
    """``import lockgate`` makes jemalloc Arrow's pool, for the process and its children; an
    explicit ``ARROW_DEFAULT_MEMORY_POOL`` stands, and a pyarrow already loaded is left as is."""
    assert _arrow_pool("import lockgate, pyarrow") == "jemalloc"
    child = (
        "import lockgate, subprocess, sys, pyarrow\n"
        "print(subprocess.run([sys.executable, '-c', 'import pyarrow; "
        "print(pyarrow.default_memory_pool().backend_name)'],"
        " capture_output=True, text=True, check=True).stdout.strip())"
    )
    assert _arrow_pool(child).split() == ["jemalloc", "jemalloc"]
    assert _arrow_pool("import lockgate, pyarrow", ARROW_DEFAULT_MEMORY_POOL="system") == "system"
    untouched = "import os, pyarrow, lockgate\nassert 'ARROW_DEFAULT_MEMORY_POOL' not in os.environ"
    assert _arrow_pool(untouched) == "mimalloc"
