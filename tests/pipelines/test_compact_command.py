"""``lockgate compact`` and ``lockgate maintain`` on a source fed by one-object batches: verify
passes before and after, DuckDB and pyiceberg count the same rows, files per day drop; the
config's compaction/maintenance settings reach the commands and the Dagster definitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.pipelines.cli import main as cli_main
from lockgate.pipelines.definitions import build_definitions
from lockgate.pipelines.ingest import ingest_source
from lockgate.pipelines.verify import verify_source
from lockgate.resources.compaction import files_per_day
from lockgate.resources.config import ConfigError, load_config
from lockgate.resources.maintenance import MAINTAINED_AT
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import LocalStore
from tests.platform_helpers import Lander, source_spec, table_ids, write_config
from tests.resources.test_interop_duckdb import duck

DAYS = ("2026-01-05", "2026-01-06")


def setup(tmp_path: Path, objects: int = 12, **extra: object) -> tuple[Path, Runtime, Lander]:
    spec = source_spec("ev", str(tmp_path / "landing"), max_files_per_batch=1, **extra)
    path = write_config(
        tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources={"ev": spec}
    )
    rt = Runtime.from_config(load_config(str(path)))
    lander = Lander(LocalStore(tmp_path / "landing"))
    for i in range(objects):
        lander.land(f"dt={DAYS[i % 2]}/o{i:03d}.jsonl", n=4)
    ingest_source(rt, rt.source("ev"))
    return path, rt, lander


def duck_count(rt: Runtime) -> int:
    location = rt.tables.load("lake.ev").metadata_location
    row = duck().execute(f"SELECT count(*) FROM iceberg_scan('{location}')").fetchone()
    assert row is not None
    return int(row[0])


def test_compact_command_keeps_rows_and_verify_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, rt, lander = setup(tmp_path)
    source = rt.source("ev")
    assert verify_source(rt, source).ok
    per_day = {d: len(f) for d, f in files_per_day(rt.tables.load("lake.ev")).items()}
    assert sorted(per_day.values()) == [6, 6]
    before_duck = duck_count(rt)
    assert before_duck == 48

    assert cli_main(["--config", str(path), "compact", "--min-files", "4"]) == 0
    out = capsys.readouterr().out
    assert "6 -> 1 files" in out and out.count("lake.ev 2026-01-0") == 2

    table = rt.tables.load("lake.ev")
    assert {d: len(f) for d, f in files_per_day(table).items()} == dict.fromkeys(per_day, 1)
    assert verify_source(rt, source).ok
    assert table_ids(rt, "ev") == lander.landed
    assert duck_count(rt) == before_duck
    # new batches land after the compaction, and a second compaction takes them in
    for i in range(12, 16):
        lander.land(f"dt={DAYS[0]}/o{i:03d}.jsonl", n=4)
    ingest_source(rt, source)
    assert cli_main(["--config", str(path), "compact", "--day", DAYS[0], "--min-files", "4"]) == 0
    assert "5 -> 1 files" in capsys.readouterr().out
    assert verify_source(rt, source).ok and table_ids(rt, "ev") == lander.landed


def test_compact_defaults_come_from_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, rt, _ = setup(tmp_path, compaction={"min_files": 7, "schedule": "off"})
    assert rt.source("ev").compaction.cron is None
    assert cli_main(["--config", str(path), "compact", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"  # 6 files a day < 7
    assert cli_main(["--config", str(path), "compact", "--table", "lake.nope"]) == 2


def test_sort_by_from_config_is_recorded(tmp_path: Path) -> None:
    path, rt, _ = setup(tmp_path, sort_by=["v"])
    assert cli_main(["--config", str(path), "compact", "--min-files", "2"]) == 0
    table = rt.tables.load("lake.ev")
    names = [table.schema().find_column_name(f.source_id) for f in table.sort_order().fields]
    assert names == ["v"]


def test_sort_by_unknown_column_is_a_config_error(tmp_path: Path) -> None:
    spec = source_spec("ev", str(tmp_path / "landing"), sort_by=["nope"])
    path = write_config(
        tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources={"ev": spec}
    )
    with pytest.raises(ConfigError, match=r"sources\.ev\.sort_by"):
        load_config(str(path))


def test_orphan_window_shorter_than_a_run_is_refused(tmp_path: Path) -> None:
    spec = source_spec("ev", str(tmp_path / "landing"), maintenance={"orphan_older_than": "1h"})
    path = write_config(
        tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources={"ev": spec}
    )
    with pytest.raises(ConfigError, match="orphan_older_than"):
        load_config(str(path))


def test_maintain_command_records_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, rt, _ = setup(tmp_path, objects=14)
    assert cli_main(["--config", str(path), "maintain"]) == 0
    out = capsys.readouterr().out
    assert "lake.ev: expired" in out
    assert "lake.ev__quarantine: no table yet" in out
    table = rt.tables.load("lake.ev")
    assert MAINTAINED_AT in table.properties
    assert len(table.metadata.snapshots) <= 10


def test_definitions_have_upkeep_jobs_and_schedules(tmp_path: Path) -> None:
    spec = source_spec("ev", str(tmp_path / "landing"), maintenance={"schedule": "off"})
    path = write_config(
        tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources={"ev": spec}
    )
    defs = build_definitions(load_config(str(path)))
    repo = defs.get_repository_def()
    assert {"ev_compaction", "ev_maintenance"} <= {j.name for j in repo.get_all_jobs()}
    schedules = {s.name: s for s in repo.schedule_defs}
    assert schedules["ev_compaction_schedule"].cron_schedule == "0 * * * *"
    assert "ev_maintenance_schedule" not in schedules  # off


def test_compaction_job_runs_in_dagster(tmp_path: Path) -> None:
    path, rt, lander = setup(tmp_path, compaction={"min_files": 3})
    defs = build_definitions(load_config(str(path)))
    job = defs.get_job_def("ev_compaction")
    result = job.execute_in_process()
    assert result.success
    assert result.output_for_node("ev_compact") == 2  # two days compacted
    assert {len(f) for f in files_per_day(rt.tables.load("lake.ev")).values()} == {1}
    assert table_ids(rt, "ev") == lander.landed
    maint = defs.get_job_def("ev_maintenance").execute_in_process()
    assert maint.success and MAINTAINED_AT in rt.tables.load("lake.ev").properties
