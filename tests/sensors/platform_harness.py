"""The platform through Dagster, shared by tests/sensors/test_platform_sensor*.py: the
Definitions of one config, sensor ticks against a real Dagster instance, and in-process runs
with the tags the sensor gave them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dagster as dg

from lockgate.pipelines.assets import asset_key
from lockgate.pipelines.definitions import build_definitions
from lockgate.resources.config import LockgateConfig
from lockgate.resources.runtime import Runtime
from lockgate.sensors.runs import BATCH_TAG, RUN_KEY_TAG
from tests.conftest import create_bucket
from tests.platform_helpers import Lander, s3_config, table_ids, verify


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


class Harness:
    """The Definitions of one config, a sensor with its cursor, and in-process runs that carry
    the tags the daemon would give them (the request's tags plus ``dagster/run_key``)."""

    def __init__(self, config: LockgateConfig, source: str, instance: dg.DagsterInstance):
        self.config = config
        self.source = source
        self.instance = instance
        self.defs = build_definitions(config)
        self.repo = self.defs.get_repository_def()
        self.sensor = self.repo.get_sensor_def(f"{source}_sensor")
        self.key = asset_key(config.source(source))
        self.job = self.defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection={self.key}, asset_check_selection=set()
        )
        self.cursor: str | None = None
        self.log: list[str] = []
        self.rt = Runtime.from_config(config)

    def context(self) -> dg.SensorEvaluationContext:
        return dg.build_sensor_context(
            instance=self.instance,
            resources=self.defs.resources,
            repository_def=self.repo,
            cursor=self.cursor,
        )

    def tick(self) -> Any:
        """Evaluate one tick; its log lines (warnings included) go to ``self.log``."""
        ctx = self.context()
        handler = _ListHandler()
        ctx.log.addHandler(handler)
        try:
            result = self.sensor.evaluate_tick(ctx)
        finally:
            ctx.log.removeHandler(handler)
        self.log = handler.lines
        self.cursor = result.cursor
        return result

    def run(self, rr: dg.RunRequest, ok: bool = True) -> dg.ExecuteInProcessResult:
        result = self.job.execute_in_process(
            instance=self.instance,
            partition_key=rr.partition_key,
            tags={**rr.tags, RUN_KEY_TAG: rr.run_key or ""},
            resources=self.defs.resources,
            raise_on_error=False,
        )
        assert result.success is ok, rr.run_key
        return result

    def assert_exactly_once(self, lander: Lander) -> None:
        report = verify(self.rt, self.source)
        assert report.ok, report.violations
        assert table_ids(self.rt, self.source) == lander.landed
        assert report.rows == sum(lander.landed.values())
        assert not self.rt.ledger(self.rt.source(self.source)).pending()


def platform_config(tmp_path: Path, moto_server: str, name: str, **dagster: Any) -> LockgateConfig:
    bucket = create_bucket(moto_server)
    return s3_config(tmp_path / "lockgate.yaml", moto_server, bucket, [name], **dagster)


def batch_of(rr: dg.RunRequest) -> int:
    return int(rr.tags[BATCH_TAG])
