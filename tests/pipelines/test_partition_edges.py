"""Partition edge cases: a run without a partition, or for a day before ``partition.start`` or
in the future, is refused with a terminal error and never retried; ``lockgate backfill`` of
such days exits 2 with one line."""

from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from lockgate.pipelines.assets import run_days
from lockgate.pipelines.definitions import build_definitions
from lockgate.resources.config import LockgateConfig, load_config
from lockgate.resources.days import DayOutOfRange
from lockgate.sensors.runs import MAX_RETRIES_TAG, TERMINAL_TAG, WILL_RETRY_TAG
from tests.platform_helpers import run_lockgate, source_spec, write_config

TODAY = date(2026, 3, 10)


def _config(tmp_path: Path) -> tuple[Path, LockgateConfig]:
    (tmp_path / "landing").mkdir()
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        ledger=str(tmp_path / "ledger"),
        sources={"events": source_spec("events", str(tmp_path / "landing"))},
    )
    return path, load_config(str(path))


def test_run_days_accepts_only_days_of_the_partitions(tmp_path: Path) -> None:
    source = _config(tmp_path)[1].source("events")  # start 2026-01-01
    assert run_days(source, {"dagster/partition": "2026-03-10"}, TODAY) == ["2026-03-10"]
    ranged = {
        "dagster/asset_partition_range_start": "2026-01-30",
        "dagster/asset_partition_range_end": "2026-02-01",
    }
    assert run_days(source, ranged, TODAY) == ["2026-01-30", "2026-01-31", "2026-02-01"]
    cases = {
        "needs a partition": {},
        "day 2025-12-31 is before its partition.start 2026-01-01": {
            "dagster/partition": "2025-12-31"
        },
        "day 2026-03-11 is in the future": {"dagster/partition": "2026-03-11"},
        "3 days (2025-12-29 .. 2025-12-31) are before": {
            "dagster/asset_partition_range_start": "2025-12-29",
            "dagster/asset_partition_range_end": "2026-01-02",
        },
        "invalid partition day": {"dagster/partition": "2026-02-30"},
    }
    for message, tags in cases.items():
        with pytest.raises(DayOutOfRange, match=message.replace("(", r"\(").replace(")", r"\)")):
            run_days(source, tags, TODAY)


def test_an_impossible_run_fails_for_good_and_a_valid_one_succeeds(tmp_path: Path) -> None:
    _, config = _config(tmp_path)
    defs = build_definitions(config)
    job = defs.get_repository_def().get_job("events_batches")
    retries = {"run_retries": {"enabled": True, "max_retries": 2}}
    with dg.instance_for_test(overrides=retries) as instance:
        for extra in ({}, {"dagster/partition": "2099-01-01"}, {"dagster/partition": "2020-01-01"}):
            result = job.execute_in_process(
                resources=defs.resources,
                instance=instance,
                raise_on_error=False,
                tags={MAX_RETRIES_TAG: "2", **extra},
            )
            assert not result.success, extra
            assert not result.get_asset_materialization_events()  # no partition=None record
            tags = instance.get_run_by_id(result.run_id).tags  # type: ignore[union-attr]
            assert tags[TERMINAL_TAG] == "DayOutOfRange"
            assert tags[MAX_RETRIES_TAG] == "0" and tags[WILL_RETRY_TAG] == "false", tags
        # the control: a day of the partitions runs (a rebuild of a day with nothing claimed)
        ok = job.execute_in_process(
            resources=defs.resources, instance=instance, partition_key="2026-01-05"
        )
        assert ok.success
        assert TERMINAL_TAG not in instance.get_run_by_id(ok.run_id).tags  # type: ignore[union-attr]


def test_backfill_of_days_out_of_range_exits_2_with_one_line(tmp_path: Path) -> None:
    path, _ = _config(tmp_path)
    early = run_lockgate(path, "backfill", "--source", "events", "--from", "2025-12-25",
                         "--to", "2026-01-02")  # fmt: skip
    assert early.returncode == 2, early.stdout + early.stderr
    (line,) = early.stderr.strip().splitlines()
    assert "7 days (2025-12-25 .. 2025-12-31) are before its partition.start 2026-01-01" in line
    assert "rebuilt" not in early.stdout
    late = run_lockgate(path, "backfill", "--source", "events", "--from", "2099-01-01",
                        "--to", "2099-01-01")  # fmt: skip
    assert late.returncode == 2 and "is in the future" in late.stderr, late.stderr
    ok = run_lockgate(path, "backfill", "--source", "events", "--from", "2026-01-01",
                      "--to", "2026-01-02")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
