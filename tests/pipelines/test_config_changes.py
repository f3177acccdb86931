"""Config edits and odd values between runs (issue 12, items 3, 5 and 11):

* a field added to a declared schema evolves the table: its values land in the new column,
  never dropped; an incompatible declared change is refused before anything is read;
* an out-of-range timestamp is rescued into ``_rescued_data``, never wrapped;
* a claimed key the store refuses makes a rebuild refuse (moto over HTTP);
* ``partition.start`` moved past pending claims: ticks keep working and report them;
* a pending claim made under another source fingerprint is not run silently;
* ``lockgate vacuum`` refuses a window shorter than the longest run, and cleans the
  ``__quarantine`` tables too.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lockgate.pipelines.cli import main as cli_main
from lockgate.pipelines.definitions import build_definitions
from lockgate.pipelines.ingest import ingest_source
from lockgate.pipelines.verify import verify_source
from lockgate.resources.config import load_config
from lockgate.resources.maintenance import vacuum
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import LocalStore
from lockgate.sensors.discovery import discover, rule_for_source
from tests.conftest import create_bucket
from tests.platform_helpers import (
    Lander,
    landing_store,
    s3_config,
    table_ids,
    write_config,
)

DAY = "2026-03-01"


def _spec(tmp_path: Path, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "landing": str(tmp_path / "landing" / name),
        "format": "jsonl",
        "table": f"lake.{name}",
        "partition": {"pattern": r"(\d{4}-\d{2}-\d{2})", "start": "2026-01-01"},
        "min_age": 0,  # objects are written whole before each ingest
        **extra,
    }


def _runtime(tmp_path: Path, dagster: dict[str, Any] | None = None, **sources: Any) -> Runtime:
    """A local config (rewritten in place on every call: a config edit between runs)."""
    specs = {name: _spec(tmp_path, name, **spec) for name, spec in sources.items()}
    path = write_config(
        tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources=specs, dagster=dagster
    )
    return Runtime.from_config(load_config(str(path)))


def _land(tmp_path: Path, source: str, key: str, *records: dict[str, Any]) -> None:
    store = LocalStore(tmp_path / "landing" / source)
    store.put(key, b"".join(json.dumps(r).encode() + b"\n" for r in records))


def _rows(rt: Runtime, source: str, *names: str) -> list[tuple[Any, ...]]:
    table = rt.tables.load(rt.source(source).table).scan().to_arrow()
    table = table.sort_by([("_source_key", "ascending"), ("_source_row", "ascending")])
    return [tuple(r.get(n) for n in names) for r in table.to_pylist()]


# -- item 3: declared schema changes -------------------------------------------------------------


def test_declared_schema_field_added_is_not_dropped(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, ev={"schema": {"id": "long", "v": "string"}})
    _land(tmp_path, "ev", f"{DAY}/1.jsonl", {"id": 1, "v": "a", "w": 5})
    ingest_source(rt, rt.source("ev"))
    assert _rows(rt, "ev", "id", "_rescued_data") == [(1, '{"w":5}')]

    # the operator declares w (and widens nothing else); new objects carry it
    rt = _runtime(tmp_path, ev={"schema": {"id": "long", "v": "string", "w": "long"}})
    _land(tmp_path, "ev", f"{DAY}/2.jsonl", {"id": 2, "v": "b", "w": 6, "x": True})
    report = ingest_source(rt, rt.source("ev"))
    assert report.rows == 1
    schema = rt.tables.load("lake.ev").schema().as_arrow()
    assert schema.field("w").type == pa.int64()
    # the new row has w in its column; the undeclared x is rescued; the old row keeps its trace
    assert _rows(rt, "ev", "id", "w", "_rescued_data") == [
        (1, None, '{"w":5}'),
        (2, 6, '{"x":true}'),
    ]
    assert verify_source(rt, rt.source("ev")).ok
    # a backfill of the day reads the first object again under the new declaration
    from lockgate.pipelines.rebuild import rebuild

    rebuild(rt, rt.source("ev"), [date.fromisoformat(DAY)])
    assert _rows(rt, "ev", "id", "w", "_rescued_data") == [(1, 5, None), (2, 6, '{"x":true}')]
    assert verify_source(rt, rt.source("ev")).ok


def test_declared_schema_widening_is_applied(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, ev={"schema": {"id": "int", "f": "float"}})
    _land(tmp_path, "ev", f"{DAY}/1.jsonl", {"id": 1, "f": 0.5})
    ingest_source(rt, rt.source("ev"))
    rt = _runtime(tmp_path, ev={"schema": {"id": "long", "f": "double"}})
    _land(tmp_path, "ev", f"{DAY}/2.jsonl", {"id": 2**40, "f": 0.1})
    ingest_source(rt, rt.source("ev"))
    schema = rt.tables.load("lake.ev").schema().as_arrow()
    assert (schema.field("id").type, schema.field("f").type) == (pa.int64(), pa.float64())
    assert _rows(rt, "ev", "id", "f", "_rescued_data") == [(1, 0.5, None), (2**40, 0.1, None)]


def test_declared_schema_incompatible_change_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rt = _runtime(tmp_path, ev={"schema": {"id": "long", "v": "string"}})
    _land(tmp_path, "ev", f"{DAY}/1.jsonl", {"id": 1, "v": "a"})
    ingest_source(rt, rt.source("ev"))
    version = rt.tables.current_version("lake.ev")

    rt = _runtime(tmp_path, ev={"schema": {"id": "int", "v": "long"}})  # narrowed, changed
    _land(tmp_path, "ev", f"{DAY}/2.jsonl", {"id": 2, "v": "7"})
    with pytest.raises(Exception) as err:  # its class is checked below
        ingest_source(rt, rt.source("ev"))
    assert type(err.value).__name__ == "DeclaredSchemaRefused"
    message = str(err.value)
    assert "id: int64 -> int32" in message and "v: large_string -> int64" in message
    assert "lake.ev" in message
    # nothing was committed: the table is as before, the new batch is still pending
    assert rt.tables.current_version("lake.ev") == version
    assert _rows(rt, "ev", "id", "v") == [(1, "a")]
    assert [c.batch_id for c in rt.ledger(rt.source("ev")).pending()] == [1]
    # the command says so in one line, exit code 2
    assert cli_main(["--config", str(tmp_path / "lockgate.yaml"), "ingest"]) == 10
    assert "declared schema in lockgate.yaml changed" in capsys.readouterr().err


# -- item 5: out-of-range timestamps ---------------------------------------------------------


def test_out_of_range_timestamp_is_rescued_not_wrapped(tmp_path: Path) -> None:
    """Parquet seconds / nanoseconds become microseconds: a value beyond timestamp[us] (or
    finer than a microsecond) is rescued, never wrapped or truncated into another value."""
    rt = _runtime(tmp_path, pq={"format": "parquet"})
    table = pa.table(
        {
            "id": [1, 2, 3],
            "ts": pa.array([10**15, 86_400, None], pa.timestamp("s")),
            "ns": pa.array([1_000, 1_500, 2_000], pa.timestamp("ns")),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    LocalStore(tmp_path / "landing" / "pq").put(f"{DAY}/1.parquet", buf.getvalue())
    report = ingest_source(rt, rt.source("pq"))
    assert report.rows == 3 and report.quarantined == 0
    rows = _rows(rt, "pq", "id", "ts", "ns", "_rescued_data")
    assert [(r[0], r[1].isoformat() if r[1] else None) for r in rows] == [
        (1, None),
        (2, "1970-01-02T00:00:00"),
        (3, None),
    ]
    assert [r[2].isoformat() if r[2] else None for r in rows] == [
        "1970-01-01T00:00:00.000001",
        None,  # 1500 ns is not a whole microsecond: rescued, not truncated
        "1970-01-01T00:00:00.000002",
    ]
    rescued = [json.loads(r[3]) if r[3] else None for r in rows]
    assert rescued == [
        {"ts": "1000000000000000000 ms since 1970-01-01T00:00:00"},  # Parquet keeps ms
        {"ns": "1970-01-01T00:00:00.000001500"},
        None,
    ]
    assert verify_source(rt, rt.source("pq")).ok


# -- item 11d: vacuum ----------------------------------------------------------------------------


def _orphan(tmp_path: Path, table_dir: str) -> Path:
    """An unreferenced, old file under a table's data/ (a dead run's staged file)."""
    orphan = tmp_path / "wh" / "lake" / table_dir / "data" / "orphan.parquet"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"not referenced")
    os.utime(orphan, (1_000_000_000, 1_000_000_000))
    return orphan


def test_vacuum_refuses_window_shorter_than_max_runtime(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rt = _runtime(tmp_path, dagster={"max_runtime_seconds": 3 * 3600}, ev={})
    _land(tmp_path, "ev", f"{DAY}/1.jsonl", {"id": 1})
    ingest_source(rt, rt.source("ev"))
    orphan = _orphan(tmp_path, "ev")
    config = str(tmp_path / "lockgate.yaml")

    # 3.5 h is longer than the default runtime, but not than this config's 3 h plus margin
    assert cli_main(["--config", config, "vacuum", "--older-than", "210m"]) == 2
    err = capsys.readouterr().err
    assert "max_runtime_seconds = 10800" in err and "nothing was deleted" in err
    assert orphan.exists()
    from lockgate.resources.maintenance import VacuumRefused, min_vacuum_window

    with pytest.raises(VacuumRefused):
        vacuum(
            rt.tables.catalog,
            "lake.ev",
            older_than=timedelta(hours=1),
            min_window=min_vacuum_window(3 * 3600),
        )
    assert orphan.exists()

    assert cli_main(["--config", config, "vacuum", "--older-than", "5h", "--no-progress"]) == 0
    assert not orphan.exists()
    assert _rows(rt, "ev", "id") == [(1,)]


def test_vacuum_cleans_quarantine_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rt = _runtime(tmp_path, ev={})
    store = LocalStore(tmp_path / "landing" / "ev")
    store.put(f"{DAY}/1.jsonl", b'{"id": 1}\nnot json\n')
    report = ingest_source(rt, rt.source("ev"))
    assert (report.rows, report.quarantined) == (1, 1)
    orphans = [_orphan(tmp_path, "ev"), _orphan(tmp_path, "ev__quarantine")]

    config = str(tmp_path / "lockgate.yaml")
    assert cli_main(["--config", config, "vacuum", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "lake.ev__quarantine: scanned" in out
    assert not any(o.exists() for o in orphans)
    check = verify_source(rt, rt.source("ev"))
    assert check.ok and (check.rows, check.quarantined) == (1, 1)


# -- item 11a: a claimed key the store refuses ---------------------------------------------------


@pytest.mark.s3
def test_rebuild_refuses_malformed_key(tmp_path: Path, moto_server: str) -> None:
    from lockgate.pipelines.rebuild import RebuildRefused, rebuild

    bucket = create_bucket(moto_server)
    config = s3_config(tmp_path / "lockgate.yaml", moto_server, bucket, ["events"])
    rt = Runtime.from_config(config)
    source = rt.source("events")
    lander = Lander(landing_store(config, "events"))
    lander.land(f"{DAY}/good.jsonl", 3)
    # S3 takes a key with an empty segment; Lockgate's stores refuse to address it
    bad = f"{DAY}//bad.jsonl"
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.put_object(Bucket=bucket, Key=f"landing/events/{bad}", Body=b'{"id": 99}\n')
    report = ingest_source(rt, source)
    assert report.rows == 3 and report.quarantined == 1  # the bad key: quarantined whole
    claimed = {o.key for c in rt.ledger(source).claims_for_partition(DAY) for o in c.objects}
    assert bad in claimed
    version = rt.tables.current_version(source.table)

    with pytest.raises(RebuildRefused) as err:
        rebuild(rt, source, [date.fromisoformat(DAY)])
    assert repr(bad) in str(err.value) and "nothing was changed" in str(err.value)
    assert rt.tables.current_version(source.table) == version
    assert table_ids(rt, "events") == lander.landed
    assert verify_source(rt, source).ok


# -- item 11b: partition.start moved past pending claims -----------------------------------------


def _tick(config: Any, instance: dg.DagsterInstance, source: str) -> tuple[Any, list[str]]:
    """One evaluation of the source's sensor (as the daemon does it) and its log lines."""
    defs = build_definitions(config)
    repo = defs.get_repository_def()
    ctx = dg.build_sensor_context(instance=instance, resources=defs.resources, repository_def=repo)
    lines: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname} {record.getMessage()}")

    handler = Handler(logging.INFO)
    ctx.log.addHandler(handler)
    try:
        result = repo.get_sensor_def(f"{source}_sensor").evaluate_tick(ctx)
    finally:
        ctx.log.removeHandler(handler)
    return result, lines


def test_partition_start_moved_past_pending_claims_does_not_fail_ticks(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, ev={})
    _land(tmp_path, "ev", "2026-03-01/1.jsonl", {"id": 1})
    _land(tmp_path, "ev", "2026-03-05/2.jsonl", {"id": 2})
    with dg.instance_for_test() as instance:
        result, _ = _tick(rt.config, instance, "ev")  # claims both days, requests both
        assert sorted(r.partition_key for r in result.run_requests) == [
            "2026-03-01",
            "2026-03-05",
        ]
        # the operator moves the start past the first pending batch before it ran
        start = {"pattern": r"(\d{4}-\d{2}-\d{2})", "start": "2026-03-03"}
        rt = _runtime(tmp_path, ev={"partition": start})
        for _ in range(2):  # every tick works, requests what can run, reports the rest
            result, lines = _tick(rt.config, instance, "ev")
            assert [r.partition_key for r in result.run_requests] == ["2026-03-05"]
            held = [line for line in lines if "not requested" in line]
            assert len(held) == 1 and "batch 0" in held[0]
            assert "2026-03-01 is before partition.start 2026-03-03" in held[0]
    # the held batch is not lost: `lockgate ingest` runs it (no Dagster partition needed)
    ingest_source(rt, rt.source("ev"))
    assert sorted(r[0] for r in _rows(rt, "ev", "id")) == [1, 2]
    assert not rt.ledger(rt.source("ev")).pending()
    assert verify_source(rt, rt.source("ev")).ok


# -- item 11c: pending claims under another fingerprint -------------------------------------------


def test_pending_claim_under_changed_fingerprint_not_run_silently(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, ev={})
    _land(tmp_path, "ev", f"{DAY}/1.jsonl", {"id": 1, "v": "a"}, {"id": 2, "v": "b"})
    source = rt.source("ev")
    claimed = discover(rt.landing(source), rt.ledger(source), rule_for_source(source))
    assert len(claimed.claims) == 1  # claimed; its run has not happened yet

    # the operator switches the source to CSV and resets the ledger's fingerprint
    rt = _runtime(tmp_path, ev={"format": "csv"})
    rt.ledger(rt.source("ev"), reset=True)
    with pytest.raises(Exception) as err:  # its class is checked below
        ingest_source(rt, rt.source("ev"))
    assert type(err.value).__name__ == "ClaimFingerprintChanged"
    assert "batch 0" in str(err.value) and "format: 'jsonl' -> 'csv'" in str(err.value)
    assert table_ids(rt, "ev") == Counter()  # nothing was read as CSV
    assert [c.batch_id for c in rt.ledger(rt.source("ev")).pending()] == [0]
    with dg.instance_for_test() as instance:  # nor requested by the sensor, every tick
        result, lines = _tick(rt.config, instance, "ev")
        assert not result.run_requests
        assert any("format 'jsonl' -> 'csv'" in line for line in lines)

    # back to the declaration it was claimed under: it runs, as JSON lines
    rt = _runtime(tmp_path, ev={})
    rt.ledger(rt.source("ev"), reset=True)
    ingest_source(rt, rt.source("ev"))
    assert _rows(rt, "ev", "id", "v", "_rescued_data") == [(1, "a", None), (2, "b", None)]
    assert verify_source(rt, rt.source("ev")).ok
