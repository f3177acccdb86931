"""The demo environment: deterministic, idempotent seed; --more waves; a dagster.yaml that
Dagster actually loads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import yaml

from lockgate.pipelines.dagster_yaml import dagster_instance_config
from lockgate.pipelines.formats import FormatOptions, count_accounting, read_object
from lockgate.resources.config import load_config
from lockgate.resources.stores import open_store
from pipelines import demo

REPO = Path(__file__).resolve().parents[2]
TODAY = date(2026, 11, 27)


def demo_config(tmp_path: Path) -> Path:
    shutil.copy(REPO / "lockgate.yaml", tmp_path / "lockgate.yaml")
    return tmp_path / "lockgate.yaml"


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_seed_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    cfg = load_config(str(demo_config(tmp_path)))
    first = demo.seed(cfg, TODAY)
    assert all(r.written and not r.present for r in first)
    landing = tmp_path / ".lockgate" / "landing"
    before = snapshot(landing)
    second = demo.seed(cfg, TODAY)
    assert all(not r.written and r.present for r in second)
    assert snapshot(landing) == before  # nothing rewritten, nothing added

    other = tmp_path / "other"
    other.mkdir()
    demo.seed(load_config(str(demo_config(other))), TODAY)
    again = snapshot(other / ".lockgate" / "landing")
    assert {k: v[0] for k, v in again.items()} == {k: v[0] for k, v in before.items()}


def test_seed_has_bad_records_and_late_keys(tmp_path: Path) -> None:
    cfg = load_config(str(demo_config(tmp_path)))
    reports = {r.source: r for r in demo.seed(cfg, TODAY)}
    for name, report in reports.items():
        written = report.written
        # The oldest day lands after newer days, and its key sorts before the high-water key.
        late = [k for k in written if "2026-11-20" in k]
        assert late, name
        assert written.index(late[0]) > 0
        assert late[0] < max(written[: written.index(late[0])])
        source = cfg.source(name)
        assert any(
            source.partition_pattern and not source.partition_pattern.search(k) for k in written
        )
    assert any(k.endswith(".gz") for k in reports["events"].written)

    reasons: dict[str, list[str]] = {}
    rescues: dict[str, list[str]] = {}
    totals: dict[str, int] = {}
    for source in cfg.sources.values():
        store = open_store(source.landing)
        for info in store.list():
            chunks = list(
                read_object(
                    store,
                    info.key,
                    info.etag,
                    FormatOptions.from_source(source),
                    source.arrow_schema(),
                )
            )
            totals[source.name] = totals.get(source.name, 0) + count_accounting(chunks).records
            for chunk in chunks:
                reasons.setdefault(source.name, []).extend(q.reason for q in chunk.quarantined)
                rescued = chunk.batch.column("_rescued_data").drop_null().to_pylist()
                rescues.setdefault(source.name, []).extend(rescued)
    # a wrong type is rescued (the row lands), only unparseable text is quarantined
    assert len(reasons["events"]) == 1
    assert reasons["events"][0].startswith("malformed JSON")
    assert any('"user_id":"abc"' in r for r in rescues["events"])
    assert reasons["orders"] == ["expected 6 fields, got 7"]
    assert totals["events"] == 6 * demo.EVENTS_PER_OBJECT + 10 + 5
    assert totals["orders"] == 3 * demo.ORDERS_PER_OBJECT + 8 + 3


def test_more_lands_new_waves(tmp_path: Path) -> None:
    cfg = load_config(str(demo_config(tmp_path)))
    demo.seed(cfg, TODAY)
    seeded = {s.name: {i.key for i in open_store(s.landing).list()} for s in cfg.sources.values()}
    wave1 = {r.source: r.written for r in demo.land_more(cfg, TODAY)}
    wave2 = {r.source: r.written for r in demo.land_more(cfg, TODAY)}
    for name, keys in seeded.items():
        assert len(wave1[name]) == 2 and len(wave2[name]) == 2
        assert not set(wave1[name]) & keys and not set(wave2[name]) & set(wave1[name])
        high_water = max(keys | set(wave1[name]))
        assert any(k < high_water for k in wave2[name])  # a late key, out of order
        assert all("-more-0002" in k for k in wave2[name])
    assert demo.seed(cfg, TODAY)[0].written == []


def test_dagster_yaml_contents() -> None:
    conf = dagster_instance_config("/x/home")
    assert conf["telemetry"] == {"enabled": False}
    assert conf["storage"] == {"sqlite": {"base_dir": "/x/home/storage"}}
    assert conf["run_retries"] == {"enabled": True, "max_retries": 2}
    assert conf["concurrency"]["pools"]["default_limit"] == 1
    assert conf["concurrency"]["runs"]["max_concurrent_runs"] == 4
    assert conf["run_coordinator"]["class"] == "QueuedRunCoordinator"


def _run_demo(home: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """``python -m lockgate.pipelines.demo --home HOME --config CONFIG``, as `make run` calls it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lockgate.pipelines.demo",
            "--home",
            str(home),
            "--config",
            str(config),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_main_writes_a_dagster_yaml_that_loads(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    home = tmp_path / ".lockgate" / "dagster_home"
    run = _run_demo(home, config)
    assert run.returncode == 0, run.stderr
    assert "events: 8 object(s) landed" in run.stdout
    written = yaml.safe_load((home / "dagster.yaml").read_text())
    assert written["storage"]["sqlite"]["base_dir"] == str(home / "storage")
    probe = (
        "import dagster\n"
        "i = dagster.DagsterInstance.get()\n"
        "c = i.get_concurrency_config()\n"
        "print(type(i.run_coordinator).__name__, i.run_retries_enabled, i.run_retries_max_retries,"
        " c.pool_config.default_pool_limit, c.pool_config.pool_granularity.value,"
        " c.run_queue_config.max_concurrent_runs)\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    check = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["QueuedRunCoordinator", "True", "2", "1", "run", "4"]
    assert (home / "storage").is_dir()
    # the operator edits dagster.yaml (as the runbook tells them to): a rerun keeps it
    edited = (home / "dagster.yaml").read_text() + "# operator: postgres goes here\n"
    (home / "dagster.yaml").write_text(edited)
    rerun = _run_demo(home, config)
    assert rerun.returncode == 0 and "events: 0 object(s) landed, 8 already there" in rerun.stdout
    assert "(kept as it is)" in rerun.stdout
    assert (home / "dagster.yaml").read_text() == edited


def test_make_run_never_rewrites_an_operators_dagster_yaml(tmp_path: Path) -> None:
    """Regression (on-call issue, item 8): the demo wrote dagster.yaml on every run."""
    from lockgate.pipelines.dagster_yaml import write_dagster_yaml

    path, written = write_dagster_yaml(tmp_path)
    assert written and path.read_text().startswith("# Written by")
    path.write_text("telemetry: {enabled: false}\n")
    again, written_again = write_dagster_yaml(tmp_path)
    assert again == path and not written_again
    assert path.read_text() == "telemetry: {enabled: false}\n"
    assert not list(tmp_path.glob(".dagster.yaml.*.tmp"))
