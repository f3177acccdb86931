"""Several Lockgate configs in one Dagster project, and catalog secrets through ``dg.EnvVar``.

(No ``from __future__ import annotations``: Dagster reads the assets' annotations.)
"""

from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
import yaml
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from lockgate.pipelines.component import LockgateComponent
from lockgate.pipelines.definitions import (
    ComponentCollision,
    build_definitions,
    build_named_definitions,
    check_distinct,
)
from lockgate.pipelines.ingest import ingest_source
from lockgate.resources.config import LockgateConfig, load_config
from lockgate.resources.dagster_resources import Namespace, TableStoreResource
from lockgate.resources.runtime import Runtime
from lockgate.resources.stores import open_store
from tests.platform_helpers import Lander, source_spec, table_ids, write_config

DAY = "2026-03-01"
SECRET = "s3cr3t-catalog-value-never-shown"


def _config(root: Path, table: str, catalog: dict[str, Any] | None = None) -> LockgateConfig:
    """A config of its own (warehouse, ledger, landing) with one source ``events``."""
    path = write_config(
        root / "lockgate.yaml",
        warehouse=str(root / "warehouse"),
        ledger=str(root / "ledger"),
        sources={"events": source_spec("events", str(root / "landing"), table=table)},
    )
    if catalog is not None:
        doc = yaml.safe_load(path.read_text())
        doc["catalog"] = catalog
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(str(path))


def _tick_and_run(
    defs: dg.Definitions, instance: dg.DagsterInstance, label: str
) -> list[dg.ExecuteInProcessResult]:
    """One tick of ``label``'s sensor, then every run it requests, as the daemon would."""
    repo = defs.get_repository_def()
    ctx = dg.build_sensor_context(instance=instance, resources=defs.resources, repository_def=repo)
    tick = repo.get_sensor_def(f"{label}_sensor").evaluate_tick(ctx)
    assert tick.run_requests, tick.skip_message
    job = repo.get_job(f"{label}_batches")
    results = []
    for req in tick.run_requests:
        assert req.run_key is not None and req.run_key.startswith(f"{label}:")
        results.append(
            job.execute_in_process(
                partition_key=req.partition_key,
                tags=req.tags,
                resources=defs.resources,
                instance=instance,
            )
        )
    return results


def test_two_named_configs_merge_and_each_runs_its_batches(tmp_path: Path) -> None:
    a = _config(tmp_path / "a", "team_a.events")
    b = _config(tmp_path / "b", "team_b.events")
    landers = {
        "a": Lander(open_store(str(tmp_path / "a" / "landing"))),
        "b": Lander(open_store(str(tmp_path / "b" / "landing")), start=1000),
    }
    landers["a"].land(f"{DAY}/x.jsonl", 3)
    landers["b"].land(f"{DAY}/x.jsonl", 4)  # the same key in the other landing
    merged = dg.Definitions.merge(build_definitions(a, "a"), build_definitions(b, "b"))
    resources = set(merged.resources or {})
    assert {f"lockgate_{n}_{k}" for n in "ab" for k in ("object_store", "ledger")} <= resources
    assert "lockgate_object_store" not in resources and "lockgate_io_manager" not in resources
    repo = merged.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"team_a/events", "team_b/events", "landing/a/events", "landing/b/events"} <= keys
    assert repo.get_schedule_def("b__events_exactly_once_schedule").cron_schedule == "0 3 * * *"
    with dg.instance_for_test() as instance:
        for name, config in (("a", a), ("b", b)):
            runs = _tick_and_run(merged, instance, f"{name}__events")
            assert [r.success for r in runs] == [True]
            assert table_ids(Runtime.from_config(config), "events") == landers[name].landed
        # each sensor sees only its own runs: a second tick of a requests nothing new
        ctx = dg.build_sensor_context(
            instance=instance, resources=merged.resources, repository_def=repo
        )
        again = repo.get_sensor_def("a__events_sensor").evaluate_tick(ctx)
        assert not again.run_requests


def test_default_names_are_unchanged() -> None:
    ns = Namespace()
    assert (ns.object_store, ns.ledger, ns.table_store, ns.io_manager) == (
        "lockgate_object_store",
        "lockgate_ledger",
        "lockgate_table_store",
        "lockgate_io_manager",
    )
    assert ns.label("events") == "events"
    assert Namespace("team_a").label("events") == "team_a__events"
    for bad in ("a__b", "_a", "1a", "a-b", "", "a_"):
        with pytest.raises(ValueError, match="invalid Lockgate component name"):
            Namespace(bad)


def test_an_invalid_component_name_is_a_clear_error() -> None:
    with pytest.raises(dg.DagsterInvalidConfigError, match="invalid Lockgate component name"):
        LockgateComponent(name="team__a").namespace()
    assert LockgateComponent(name="team_a").namespace().table_store == "lockgate_team_a_table_store"


def test_colliding_components_are_refused_naming_both(tmp_path: Path) -> None:
    a = _config(tmp_path / "a", "lake.events")
    b = _config(tmp_path / "b", "lake.events")
    c = _config(tmp_path / "c", "lake.other")
    with pytest.raises(ComponentCollision) as same_name:
        check_distinct(("defs/a", Namespace(), a), ("defs/c", Namespace(), c))
    assert "defs/a and defs/c" in str(same_name.value) and "no name" in str(same_name.value)
    with pytest.raises(ComponentCollision) as same_table:
        check_distinct(("defs/a", Namespace("a"), a), ("defs/b", Namespace("b"), b))
    text = str(same_table.value)
    assert "lake/events" in text and "defs/a (source events)" in text and "defs/b" in text
    check_distinct(("defs/a", Namespace("a"), a), ("defs/c", Namespace(), c))  # no error
    # the same through Python: both config files are named, not only the key
    with pytest.raises(ComponentCollision) as merged:
        build_named_definitions({"a": a, "b": b})
    assert f"{a.path} (name a) (source events)" in str(merged.value) and b.path in str(merged.value)
    repo = build_named_definitions({"a": a, "c": c}).get_repository_def()
    assert repo.get_sensor_def("c__events_sensor").name == "c__events_sensor"


def test_catalog_secrets_are_env_vars_never_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQL catalog whose URI and a token come from the environment: resource config, the
    repository snapshot (launchpad defaults, metadata) and the run's events name the
    variables, never the values -- and the run really uses them."""
    uri = f"sqlite:///{tmp_path / (SECRET + '.db')}"
    monkeypatch.setenv("LG_TEST_CATALOG_URI", uri)
    monkeypatch.setenv("LG_TEST_CATALOG_TOKEN", SECRET)
    config = _config(
        tmp_path,
        "lake.events",
        catalog={
            "type": "sql",
            "uri": {"env": "LG_TEST_CATALOG_URI"},
            "token": "${LG_TEST_CATALOG_TOKEN}",
        },
    )
    assert SECRET not in repr(config) and dict(config.catalog) == {"type": "sql"}
    lander = Lander(open_store(str(tmp_path / "landing")))
    lander.land(f"{DAY}/x.jsonl", 3)
    defs = build_definitions(config)
    table_store = (defs.resources or {})["lockgate_table_store"]
    assert table_store.catalog == {"uri": "LG_TEST_CATALOG_URI", "token": "LG_TEST_CATALOG_TOKEN"}
    assert all(isinstance(v, dg.EnvVar) for v in table_store.catalog.values())
    snap = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    assert SECRET not in snap
    assert '{\\"env\\": \\"LG_TEST_CATALOG_URI\\"}' in snap  # the launchpad shows the name
    with dg.instance_for_test() as instance:
        (run,) = _tick_and_run(defs, instance, "events")
        assert run.success
        records = instance.get_records_for_run(run.run_id).records
        events = serialize_value([r.event_log_entry for r in records])
        assert "dagster/row_count" in events and SECRET not in events
        assert SECRET not in serialize_value(instance.get_run_by_id(run.run_id))
    # the run committed through the SQL catalog named by the variable
    assert (tmp_path / (SECRET + ".db")).exists()
    assert table_ids(Runtime.from_config(config), "events") == lander.landed


def test_io_manager_reads_the_catalog_through_the_table_store_resource(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The IO manager takes ``{env: NAME}`` catalog references from the table-store resource
    as Dagster resolved it, not from the process environment: here the config's variable is
    unset and the resource names another one (as a run's resource config may). Reading
    ``$LG_TEST_IO_URI`` behind the resource's back fails with "LG_TEST_IO_URI is not set"."""
    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    monkeypatch.setenv("LG_TEST_IO_URI", uri)
    config = _config(
        tmp_path, "lake.events", catalog={"type": "sql", "uri": {"env": "LG_TEST_IO_URI"}}
    )
    lander = Lander(open_store(str(tmp_path / "landing")))
    lander.land(f"{DAY}/x.jsonl", 3)
    ingest_source(Runtime.from_config(config), config.source("events"))
    monkeypatch.delenv("LG_TEST_IO_URI")
    monkeypatch.setenv("LG_TEST_IO_URI_FOR_DAGSTER", uri)
    defs = build_definitions(config, "team_a")
    resources = dict(defs.resources or {})
    resources["lockgate_team_a_table_store"] = TableStoreResource(
        warehouse=config.warehouse, catalog={"uri": dg.EnvVar("LG_TEST_IO_URI_FOR_DAGSTER")}
    )
    received: dict[str, Any] = {}

    @dg.asset(
        partitions_def=dg.DailyPartitionsDefinition(start_date="2026-01-01"),
        ins={"events": dg.AssetIn(key=dg.AssetKey(["lake", "events"]))},
    )
    def daily(events: pa.Table) -> None:
        received["rows"] = sorted(events.column("id").to_pylist())

    table_asset = next(a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition))
    result = dg.materialize(
        [daily, table_asset], selection=[daily.key], partition_key=DAY, resources=resources
    )
    assert result.success
    assert received["rows"] == sorted(lander.landed.elements()) and len(received["rows"]) == 3
