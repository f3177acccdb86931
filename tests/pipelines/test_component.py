"""``lockgate.LockgateComponent`` in a ``dg`` project, checked through the ``dg`` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).parent / "dg"

PYPROJECT = """\
[project]
name = "userproj"
version = "0.1.0"
requires-python = ">=3.11"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "userproj"
registry_modules = ["lockgate"]
"""
DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""
INLINE = """\
type: lockgate.LockgateComponent
attributes:
  warehouse: ../../../../warehouse
  ledger: ../../../../ledger
  sources:
    events:
      landing: ../../../../landing/events
      format: jsonl
      table: lake.events
      partition: {pattern: '(\\d{4}-\\d{2}-\\d{2})', start: 2026-01-01}
"""
BY_PATH = """\
type: lockgate.LockgateComponent
attributes:
  config: lockgate.yaml
"""
LOCKGATE_YAML = """\
warehouse: wh
ledger: led
sources:
  orders:
    landing: landing/orders
    format: csv
    table: lake.orders
    partition: {pattern: '(\\d{4}-\\d{2}-\\d{2})', start: 2026-01-01}
"""


def _project(root: Path, by_path: bool = False) -> Path:
    """A ``dg`` project with one Lockgate component (one component holds every source)."""
    pkg = root / "src" / "userproj"
    (pkg / "defs" / "ingest").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "__init__.py").write_text("")
    (pkg / "definitions.py").write_text(DEFINITIONS)
    (pkg / "defs" / "ingest" / "defs.yaml").write_text(BY_PATH if by_path else INLINE)
    if by_path:
        (pkg / "defs" / "ingest" / "lockgate.yaml").write_text(LOCKGATE_YAML)
    return root


def _dg(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env["PYTHONPATH"] = str(project / "src")
    env["DAGSTER_HOME"] = str(project / "dagster_home")
    (project / "dagster_home").mkdir(exist_ok=True)
    (project / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return subprocess.run(
        [str(DG), *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


def _team(project: Path, folder: str, attributes: str) -> None:
    """One more Lockgate component, ``defs/<folder>``, with its own ``lockgate.yaml``."""
    team = project / "src/userproj/defs" / folder
    team.mkdir(parents=True)
    (team / "defs.yaml").write_text(
        f"type: lockgate.LockgateComponent\nattributes:\n{attributes}  config: lockgate.yaml\n"
    )
    (team / "lockgate.yaml").write_text(LOCKGATE_YAML.replace("lake.orders", f"{folder}.orders"))


@pytest.fixture(scope="module")
def teams(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The inline component's project plus two named components (``team_a``, ``team_b``, each
    with its own ``lockgate.yaml``; every name they define carries ``team_``), and its
    ``dg list defs --json``: one ``dg`` process for the two tests that read it."""
    project = _project(tmp_path_factory.mktemp("teams") / "userproj")
    _team(project, "team_a", "  name: team_a\n")
    _team(project, "team_b", "  name: team_b\n")
    listed = _dg(project, "list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs: dict[str, Any] = json.loads(listed.stdout)
    return project, defs


def _inline(names: set[str]) -> set[str]:
    """The names the inline component defines (not the teams')."""
    return {n for n in names if "team_" not in n}


@pytest.mark.skipif(not DG.exists(), reason="dg not installed")
def test_component_from_defs_yaml_yields_lockgate_definitions(
    teams: tuple[Path, dict[str, Any]],
) -> None:
    """The inline component's definitions, read from the listing of ``teams`` (which
    test_two_components_in_one_project_do_not_collide checks whole)."""
    project, defs = teams
    assets = {a["asset_key"]: a for a in defs["assets"] if "team_" not in a["asset_key"]}
    assert set(assets) == {"lake/events", "landing/events"}
    assert assets["lake/events"]["dependency_keys"] == ["landing/events"]
    assert assets["lake/events"]["is_executable"] and not assets["landing/events"]["is_executable"]
    checks = _inline({c["key"] for c in defs["asset_checks"]})
    assert checks == {
        f"lake/events:{c}" for c in ("exactly_once", "ledger_lag", "stuck_batches", "deep_verify")
    }
    sensors = _inline({s["name"] for s in defs["sensors"]})
    assert sensors == {"events_sensor"}
    jobs = {j["name"] for j in defs["jobs"]}
    assert "events_batches" in jobs
    schedules = _inline({s["name"] for s in defs["schedules"]})
    assert schedules == {
        "events_exactly_once_schedule",
        "events_compaction_schedule",
        "events_maintenance_schedule",
    }
    # relative paths resolve against the component's folder
    assert str(project / "landing" / "events") in assets["landing/events"]["description"]
    # `dg check defs` of this very project: test_two_components_in_one_project_do_not_collide


@pytest.mark.skipif(not DG.exists(), reason="dg not installed")
def test_component_loads_a_lockgate_yaml_by_path(tmp_path: Path) -> None:
    project = _project(tmp_path / "userproj", by_path=True)
    listed = _dg(project, "list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs: dict[str, Any] = json.loads(listed.stdout)
    assert {a["asset_key"] for a in defs["assets"]} == {"lake/orders", "landing/orders"}
    assert {s["name"] for s in defs["sensors"]} == {"orders_sensor"}


@pytest.mark.skipif(not DG.exists(), reason="dg not installed")
def test_component_refuses_a_bad_attribute_with_its_key_path(tmp_path: Path) -> None:
    project = _project(tmp_path / "userproj")
    bad = INLINE.replace("format: jsonl", "format: jsonl\n      max_files_per_batch: -3")
    (project / "src/userproj/defs/ingest/defs.yaml").write_text(bad)
    checked = _dg(project, "check", "defs")
    assert checked.returncode != 0
    assert "sources.events.max_files_per_batch" in checked.stdout + checked.stderr


@pytest.mark.skipif(not DG.exists(), reason="dg not installed")
def test_repository_is_a_dg_project() -> None:
    """``dg list defs`` in the repository lists the demo config's definitions."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    out = subprocess.run(
        [str(DG), "list", "defs", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    keys = {a["asset_key"] for a in json.loads(out.stdout)["assets"]}
    assert {"raw/events", "raw/orders", "landing/events", "landing/orders"} <= keys


@pytest.mark.skipif(not DG.exists(), reason="dg not installed")
def test_two_components_in_one_project_do_not_collide(teams: tuple[Path, dict[str, Any]]) -> None:
    """Two named components (two config folders, the same source name ``orders``) next to
    an unnamed one: each set of definitions under its own names; ``dg check defs`` passes."""
    project, defs = teams
    assert {a["asset_key"] for a in defs["assets"]} == {
        "lake/events",
        "landing/events",
        "team_a/orders",
        "landing/team_a/orders",
        "team_b/orders",
        "landing/team_b/orders",
    }
    assert {s["name"] for s in defs["sensors"]} == {
        "events_sensor",
        "team_a__orders_sensor",
        "team_b__orders_sensor",
    }
    assert {"team_a__orders_batches", "team_b__orders_batches"} <= {j["name"] for j in defs["jobs"]}
    assert "team_b__orders_exactly_once_schedule" in {s["name"] for s in defs["schedules"]}
    checked = _dg(project, "check", "defs")
    assert checked.returncode == 0, checked.stderr[-3000:]


@pytest.mark.skipif(not DG.exists(), reason="dg not installed")
def test_colliding_components_fail_naming_both(tmp_path: Path) -> None:
    project = _project(tmp_path / "userproj")
    _team(project, "team_a", "")  # no name, like the inline component
    checked = _dg(project, "check", "defs")
    assert checked.returncode != 0
    out = checked.stdout + checked.stderr
    assert "defs/ingest" in out and "defs/team_a" in out and "distinct `name`" in out
    _team(project, "team_b", "  name: team_b\n")
    (project / "src/userproj/defs/team_a").rename(project / "src/userproj/defs/old")
    (project / "src/userproj/defs/old/defs.yaml").unlink()
    # team_b declares the inline component's table: one asset, two components
    (project / "src/userproj/defs/team_b/lockgate.yaml").write_text(
        LOCKGATE_YAML.replace("lake.orders", "lake.events")
    )
    checked = _dg(project, "check", "defs")
    assert checked.returncode != 0
    out = checked.stdout + checked.stderr
    assert "asset key lake/events is defined by both Lockgate components" in out, out[-3000:]
    assert "defs/ingest (source events)" in out and "defs/team_b (source orders)" in out
