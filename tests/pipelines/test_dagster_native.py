"""Lockgate inside a user's Dagster project: merge-safe definitions, downstream loading.

(No ``from __future__ import annotations``: Dagster reads the inputs' annotations.)
"""

from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from lockgate.pipelines.assets import asset_key, landing_key
from lockgate.pipelines.definitions import build_definitions
from lockgate.pipelines.ingest import ingest_source
from lockgate.resources.config import LockgateConfig, load_config
from lockgate.resources.runtime import Runtime
from lockgate.resources.stores import open_store
from tests.platform_helpers import Lander, source_spec, write_config

DAYS = ["2026-03-01", "2026-03-02"]


@pytest.fixture
def ingested(tmp_path: Path) -> tuple[LockgateConfig, Lander]:
    """A local source with two days of rows, ingested (one batch per object)."""
    landing = tmp_path / "landing"
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "warehouse"),
        ledger=str(tmp_path / "ledger"),
        sources={"events": source_spec("events", str(landing))},
    )
    config = load_config(str(path))
    lander = Lander(open_store(str(landing)))
    lander.land(f"{DAYS[0]}/a.jsonl", 4)
    lander.land(f"{DAYS[1]}/b.jsonl", 3)
    lander.land(f"{DAYS[1]}/c.jsonl", 2)
    rt = Runtime.from_config(config)
    ingest_source(rt, config.source("events"))
    return config, lander


class UserStore(dg.ConfigurableResource):
    """A user's own resource under a generic key that Lockgate must not collide with."""

    name: str = "users"


def test_definitions_merge_with_a_users_own_resources_and_executor(
    ingested: tuple[LockgateConfig, Lander],
) -> None:
    config, _ = ingested

    @dg.asset
    def users(object_store: UserStore) -> str:
        return object_store.name

    user_defs = dg.Definitions(
        assets=[users],
        resources={"object_store": UserStore(), "ledger": UserStore(name="l")},
        executor=dg.multiprocess_executor,
    )
    merged = dg.Definitions.merge(user_defs, build_definitions(config))
    repo = merged.get_repository_def()
    assert {"lockgate_object_store", "lockgate_ledger", "lockgate_table_store"} <= set(
        merged.resources or {}
    )
    assert isinstance((merged.resources or {})["object_store"], UserStore)
    assert repo.get_sensor_def("events_sensor") is not None
    assert repo.get_job("events_batches").executor_def is dg.in_process_executor
    keys = set(repo.asset_graph.get_all_asset_keys())
    assert {asset_key(config.source("events")), landing_key(config.source("events"))} <= keys
    # the user's asset still runs with the user's resource
    result = dg.materialize(
        [users], resources={"object_store": UserStore(name="mine")}, raise_on_error=True
    )
    assert result.output_for_node("users") == "mine"
    # and Lockgate's batch job runs in the merged definitions
    job = repo.get_job("events_batches")
    run = job.execute_in_process(partition_key=DAYS[1], resources=merged.resources)
    assert run.success
    (mat,) = run.get_asset_materialization_events()
    assert mat.materialization.metadata["dagster/row_count"].value == 5


def _downstream(table_key: dg.AssetKey, kind: type) -> dg.AssetsDefinition:
    received: dict[str, Any] = {}

    @dg.asset(
        partitions_def=dg.DailyPartitionsDefinition(start_date="2026-01-01"),
        ins={"events": dg.AssetIn(key=table_key)},
        metadata={"kind": kind.__name__},
    )
    def daily(events: kind) -> None:  # type: ignore[valid-type]
        received["value"] = events

    daily.received = received  # type: ignore[attr-defined]
    return daily


@pytest.mark.parametrize("kind", [pd.DataFrame, pa.Table])
def test_downstream_asset_receives_exactly_its_days_rows(
    ingested: tuple[LockgateConfig, Lander], kind: type
) -> None:
    config, lander = ingested
    defs = build_definitions(config)
    table_key = asset_key(config.source("events"))
    daily = _downstream(table_key, kind)
    table_asset = next(a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition))
    result = dg.materialize(
        [daily, table_asset],
        selection=[daily.key],
        partition_key=DAYS[1],
        resources=defs.resources,
    )
    assert result.success
    got = daily.received["value"]  # type: ignore[attr-defined]
    assert isinstance(got, kind)
    table = got if isinstance(got, pa.Table) else pa.Table.from_pandas(got)
    ids = sorted(table.column("id").to_pylist())
    assert ids == [4, 5, 6, 7, 8]  # b.jsonl (3) and c.jsonl (2) of DAYS[1], nothing else
    assert "_source_key" not in table.column_names  # lineage left out by default
    assert {"v", "_day"} <= set(table.column_names)
    assert sum(lander.landed.values()) == 9


def test_owners_tags_freshness_and_check_schedule_come_from_the_config(tmp_path: Path) -> None:
    spec = source_spec(
        "events",
        str(tmp_path / "landing"),
        owners=["team:data", "ana@example.com"],
        tags={"tier": "gold"},
        freshness={"max_lag": "2h"},
        checks={"exactly_once": "15 4 * * *"},
    )
    path = write_config(
        tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources={"events": spec}
    )
    config = load_config(str(path))
    repo = build_definitions(config).get_repository_def()
    key = asset_key(config.source("events"))
    node = repo.asset_graph.get(key)
    assert set(node.owners) == {"team:data", "ana@example.com"}
    assert node.tags.get("tier") == "gold"
    policy = node.freshness_policy
    assert policy is not None and policy.fail_window.to_timedelta().total_seconds() == 7200  # type: ignore[attr-defined]
    schedule = repo.get_schedule_def("events_exactly_once_schedule")
    assert schedule.cron_schedule == "15 4 * * *"
    default = build_definitions(ingested_config(tmp_path)).get_repository_def()
    assert default.get_schedule_def("events_exactly_once_schedule").cron_schedule == "0 3 * * *"
    assert default.asset_graph.get(key).freshness_policy is None


def ingested_config(tmp_path: Path) -> LockgateConfig:
    path = write_config(
        tmp_path / "plain.yaml",
        warehouse=str(tmp_path / "wh2"),
        sources={"events": source_spec("events", str(tmp_path / "landing2"))},
    )
    return load_config(str(path))
