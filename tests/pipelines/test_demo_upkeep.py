"""Under ``make run`` the demo tables get compacted and their snapshots expired without anyone
running a command: the demo config (``lockgate.yaml``) schedules the compaction and maintenance
jobs every few minutes, and those jobs, run as their schedules run them (in-process Dagster
execution of the schedule's job against the demo definitions, after seeding and ingesting the
demo objects), leave fewer files per day and expired snapshots."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, date, datetime
from pathlib import Path

from dagster._utils.schedules import cron_string_iterator

from lockgate.pipelines import demo
from lockgate.pipelines.definitions import build_definitions
from lockgate.pipelines.ingest import ingest_source
from lockgate.pipelines.verify import verify_source
from lockgate.resources.compaction import files_per_day
from lockgate.resources.config import load_config
from lockgate.resources.maintenance import MAINTAINED_AT
from lockgate.resources.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]
TODAY = date(2026, 11, 27)


def _minutes_between_ticks(cron: str) -> float:
    ticks = cron_string_iterator(datetime(2026, 1, 1, tzinfo=UTC).timestamp(), cron, "UTC")
    first, second = next(ticks), next(ticks)
    return (second - first).total_seconds() / 60


def test_demo_schedules_compact_and_expire_within_minutes(tmp_path: Path) -> None:
    shutil.copy(REPO / "lockgate.yaml", tmp_path / "lockgate.yaml")
    cfg = load_config(str(tmp_path / "lockgate.yaml"))
    events = cfg.source("events")
    defs = build_definitions(cfg)
    schedules = {s.name: s for s in defs.get_repository_def().schedule_defs}
    compaction = schedules["events_compaction_schedule"]
    maintenance = schedules["events_maintenance_schedule"]
    assert _minutes_between_ticks(compaction.cron_schedule) <= 5  # type: ignore[arg-type]
    assert _minutes_between_ticks(maintenance.cron_schedule) <= 5  # type: ignore[arg-type]
    assert "orders_maintenance_schedule" in schedules

    demo.seed(cfg, TODAY)
    old = time.time() - 3600  # past min_age, as after a few sensor ticks
    for root, _dirs, files in os.walk(tmp_path / ".lockgate" / "landing"):
        for name in files:
            os.utime(Path(root) / name, (old, old))
    rt = Runtime.from_config(cfg)
    for source in cfg.sources.values():
        ingest_source(rt, source)
    before = {d: len(f) for d, f in files_per_day(rt.tables.load(events.table)).items()}
    assert max(before.values()) >= 2, before  # one-object batches: days with small files
    snapshots_before = len(rt.tables.load(events.table).metadata.snapshots)
    rows_before = rt.tables.load(events.table).scan().to_arrow().num_rows

    run = defs.get_job_def(compaction.job_name).execute_in_process()
    assert run.success
    assert run.output_for_node("events_compact") >= 1
    after = {d: len(f) for d, f in files_per_day(rt.tables.load(events.table)).items()}
    assert set(after) == set(before) and all(n == 1 for n in after.values()), after
    assert sum(after.values()) < sum(before.values())

    maint = defs.get_job_def(maintenance.job_name).execute_in_process()
    assert maint.success
    table = rt.tables.load(events.table)
    expired = maint.output_for_node("events_maintain")
    assert expired >= 1  # tables maintained
    assert MAINTAINED_AT in table.properties
    assert len(table.metadata.snapshots) < snapshots_before + len(before)  # some expired
    assert table.scan().to_arrow().num_rows == rows_before
    assert verify_source(rt, events).ok
