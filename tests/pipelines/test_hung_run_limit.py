"""The hung-run limit: by default derived from a source's bytes budget (120-240 s), so that
run monitoring (every 15 s in the dagster.yaml we write) releases a hung batch run's table
within 5 minutes; ``dagster.max_runtime_seconds`` overrides it, and it is the tag the sensor
sets on every batch run."""

from pathlib import Path

import yaml

from lockgate.pipelines.dagster_yaml import dagster_instance_config
from lockgate.resources.config import (
    HUNG_RUN_MAX_S,
    HUNG_RUN_MIN_S,
    DagsterSettings,
    load_config,
)
from tests.platform_helpers import source_spec, write_config

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, dagster: dict[str, object] | None = None) -> Path:
    return write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={
            "small": source_spec("small", str(tmp_path / "a"), max_bytes_per_batch="1MiB"),
            "mid": source_spec("mid", str(tmp_path / "b"), max_bytes_per_batch="150MiB"),
            "default": source_spec("default", str(tmp_path / "c")),  # 256 MiB
        },
        dagster=dagster,
    )


def test_default_limit_follows_the_bytes_budget_within_bounds(tmp_path: Path) -> None:
    cfg = load_config(str(_config(tmp_path)))
    assert cfg.dagster.max_runtime_seconds is None
    limits = {name: cfg.dagster.batch_max_runtime_s(s) for name, s in cfg.sources.items()}
    assert limits == {"small": HUNG_RUN_MIN_S, "mid": 150, "default": HUNG_RUN_MAX_S}
    assert cfg.dagster.longest_batch_runtime_s(cfg.sources.values()) == HUNG_RUN_MAX_S
    assert DagsterSettings().longest_batch_runtime_s() == HUNG_RUN_MAX_S


def test_max_runtime_seconds_overrides_every_source(tmp_path: Path) -> None:
    cfg = load_config(str(_config(tmp_path, dagster={"max_runtime_seconds": "10m"})))
    assert {cfg.dagster.batch_max_runtime_s(s) for s in cfg.sources.values()} == {600}
    assert cfg.dagster.longest_batch_runtime_s(cfg.sources.values()) == 600


def test_monitoring_acts_within_five_minutes_of_a_default_hang(tmp_path: Path) -> None:
    monitoring = dagster_instance_config(tmp_path)["run_monitoring"]
    assert monitoring["enabled"] is True
    assert HUNG_RUN_MAX_S + monitoring["poll_interval_seconds"] < 300
    # the demo config keeps the default (derived) limit
    demo = load_config(str(REPO / "lockgate.yaml"))
    assert demo.dagster.max_runtime_seconds is None
    assert (
        yaml.safe_load((REPO / "lockgate.yaml").read_text())["dagster"].get("max_runtime_seconds")
        is None
    )
    assert all(demo.dagster.batch_max_runtime_s(s) <= HUNG_RUN_MAX_S for s in demo.sources.values())
