"""The ``lockgate`` CLI as an operator runs it: the installed console script in its own
process, against a local config and an S3 (moto over HTTP) config.

Shown: ``ingest`` then ``verify`` pass and the table holds every landed record once;
``status`` / ``verify`` ``--json`` parse; ``backfill`` twice over the same days leaves the
same rows (data and lineage, ``_ingested_at`` aside); ``verify`` exits 1 with a report when
a batch was committed twice behind Lockgate's back; config errors exit 3 naming the key and
the file; ``retry`` of an unknown batch exits 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lockgate.pipelines.cli import main as lockgate_main
from lockgate.pipelines.ingest import ingest_source
from lockgate.resources.config import load_config
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import LocalStore
from tests.conftest import create_bucket
from tests.platform_helpers import (
    Lander,
    landing_store,
    run_lockgate,
    s3_config,
    s3_env,
    source_spec,
    table_ids,
    verify,
    write_config,
)

DAYS = ("2026-02-10", "2026-02-11")


def _local_config(tmp_path: Path) -> tuple[Path, Lander]:
    path = write_config(
        tmp_path / "conf" / "lockgate.yaml",
        warehouse="../warehouse",  # relative paths resolve from the config's folder
        sources={"events": source_spec("events", "../landing/events")},
    )
    lander = Lander(LocalStore(tmp_path / "landing" / "events"))
    for day in DAYS:
        for i in range(3):
            lander.land(f"{day}/part-{i}.jsonl", n=4)
    return path, lander


def _rows(rt: Runtime, source: str) -> list[dict[str, Any]]:
    """Data and lineage columns of every row (``_ingested_at`` aside), in lineage order."""
    table = rt.tables.load(rt.source(source).table).scan().to_arrow()
    cols = [c for c in table.column_names if c != "_ingested_at"]
    key = [("_source_key", "ascending"), ("_source_row", "ascending")]
    rows: list[dict[str, Any]] = table.select(cols).sort_by(key).to_pylist()
    return rows


def _json(out: str) -> Any:
    return json.loads(out)


def test_local_ingest_verify_status_then_backfill_twice_keeps_the_rows(tmp_path: Path) -> None:
    path, lander = _local_config(tmp_path)

    ing = run_lockgate(path, "ingest", "--json")
    assert ing.returncode == 0, ing.stderr
    (summary,) = _json(ing.stdout)
    assert summary["source"] == "events"
    assert summary["rows"] == 24 and summary["quarantined"] == 0
    assert summary["batches"] == 4  # 3 objects a day, 2 per batch

    ver = run_lockgate(path, "verify", "--json")
    assert ver.returncode == 0, ver.stdout + ver.stderr
    (report,) = _json(ver.stdout)
    assert report["ok"] is True and report["violations"] == []
    assert report["rows"] == 24 and report["committed_batches"] == 4
    assert report["checked_batches"] == 4

    st = run_lockgate(path, "status", "--json", env={"DAGSTER_HOME": ""})
    assert st.returncode == 0, st.stderr
    (status,) = _json(st.stdout)
    assert status["claimed_batches"] == status["committed_batches"] == 4
    assert status["pending_batches"] == [] and status["oldest_pending_age_s"] is None
    assert status["high_water_key"] == f"{DAYS[1]}/part-2.jsonl"

    rt = Runtime.from_config(str(path))
    assert table_ids(rt, "events") == lander.landed
    before = _rows(rt, "events")
    assert len(before) == 24
    assert {"id", "v", "_source_key", "_source_etag", "_source_row", "_batch_id"} <= set(before[0])
    version = rt.tables.current_version("lake.events")

    for attempt in (1, 2):
        bf = run_lockgate(
            path, "backfill", "--source", "events", "--from", DAYS[0], "--to", DAYS[1], "--json"
        )
        assert bf.returncode == 0, bf.stderr
        out = _json(bf.stdout)
        assert out["rows"] == 24 and out["batches"] == 4, attempt
        assert _rows(rt, "events") == before, attempt
        assert verify(rt, "events").ok
    assert rt.tables.current_version("lake.events") == version + 2  # one overwrite each

    again = run_lockgate(path, "ingest")  # idle: nothing new, nothing committed twice
    assert again.returncode == 0, again.stderr
    assert "idle after 0 batches, 0 rows" in again.stdout
    assert table_ids(rt, "events") == lander.landed


@pytest.mark.s3
def test_s3_ingest_then_verify_through_the_console_script(tmp_path: Path, moto_server: str) -> None:
    bucket = create_bucket(moto_server)
    cfg = s3_config(tmp_path / "lockgate.yaml", moto_server, bucket, ["events"])
    lander = Lander(landing_store(cfg, "events"))
    for day in DAYS:
        lander.land(f"{day}/a.jsonl", n=5)
    lander.land(f"{DAYS[0]}/b.jsonl", n=5)

    ing = run_lockgate(cfg.path, "ingest", env=s3_env(moto_server))
    assert ing.returncode == 0, ing.stderr
    assert "events: idle after 2 batches, 15 rows, 0 quarantined" in ing.stdout

    lander.land(f"{DAYS[1]}/c.jsonl", n=5)  # a second wave
    ing2 = run_lockgate(cfg.path, "ingest", env=s3_env(moto_server))
    assert ing2.returncode == 0, ing2.stderr
    assert "idle after 1 batches, 5 rows" in ing2.stdout

    ver = run_lockgate(cfg.path, "verify", env=s3_env(moto_server))
    assert ver.returncode == 0, ver.stdout + ver.stderr
    assert "events -> lake.events: OK: 20 rows, 0 quarantined, 3 batches committed" in ver.stdout

    rt = Runtime.from_config(cfg)
    assert table_ids(rt, "events") == lander.landed


def test_verify_exits_1_with_a_report_when_a_batch_is_committed_twice(tmp_path: Path) -> None:
    """Someone re-commits batch 0's rows through the table store under another marker id: the
    table now has duplicated lineage and a marked batch nobody claimed."""
    path, _lander = _local_config(tmp_path)
    rt = Runtime.from_config(str(path))
    source = rt.source("events")
    ingest_source(rt, source)
    assert verify(rt, "events").ok

    table = rt.tables.load(source.table)
    rows = table.scan(row_filter="_batch_id == 0").to_arrow()
    assert rows.num_rows > 0
    staged = rt.tables.stage(source.table, rows.cast(table.schema().as_arrow()).to_batches())
    rt.tables.commit_batch(source.table, "events", 77, staged)

    ver = run_lockgate(path, "verify")
    assert ver.returncode == 1, ver.stdout + ver.stderr
    assert "events -> lake.events: FAILED" in ver.stdout
    assert f"{rows.num_rows} duplicated lineage keys" in ver.stdout
    assert "batch 77 has rows or a marker but no claim" in ver.stdout

    as_json = run_lockgate(path, "verify", "--json")
    assert as_json.returncode == 1
    (report,) = _json(as_json.stdout)
    assert report["ok"] is False and len(report["violations"]) >= 2


def test_config_errors_exit_3_naming_the_key_and_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        tmp_path / "bad.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={"events": source_spec("events", str(tmp_path / "landing"), format="xml")},
    )
    bad = run_lockgate(path, "status")
    assert bad.returncode == 3
    assert "sources.events.format" in bad.stderr and str(path) in bad.stderr
    assert "Traceback" not in bad.stderr

    missing = tmp_path / "nowhere" / "lockgate.yaml"
    assert lockgate_main(["--config", str(missing), "verify"]) == 3
    err = capsys.readouterr().err
    assert str(missing) in err and "config file not found" in err

    other = write_config(
        tmp_path / "unknown.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={"events": source_spec("events", str(tmp_path / "landing"), max_files=3)},
    )
    assert lockgate_main(["--config", str(other), "ingest"]) == 3
    err = capsys.readouterr().err
    assert "sources.events.max_files" in err and "unknown key" in err and str(other) in err


def test_retry_of_an_unknown_batch_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _lander = _local_config(tmp_path)
    rt = Runtime.from_config(load_config(str(path)))
    ingest_source(rt, rt.source("events"))
    code = lockgate_main(["--config", str(path), "retry", "--source", "events", "--batch", "42"])
    assert code == 2
    err = capsys.readouterr().err
    assert "lockgate: error: " in err and "no batch 42" in err
    # a committed batch: nothing to retry, exit 0
    code = lockgate_main(["--config", str(path), "retry", "--source", "events", "--batch", "0"])
    assert code == 0
    assert "already committed" in capsys.readouterr().out
    assert lockgate_main(["--config", str(path), "retry", "--source", "nope", "--batch", "0"]) == 3
    assert "unknown source 'nope'" in capsys.readouterr().err


def test_bad_records_are_quarantined_never_dropped(tmp_path: Path) -> None:
    """A malformed line and a value that does not fit its declared type: each one is a
    quarantine entry (or, for the value, kept in a rescued-data column); no value vanishes."""
    path, lander = _local_config(tmp_path)
    bad_key = f"{DAYS[0]}/part-9.jsonl"
    good, ids = lander.body(2)
    (tmp_path / "landing" / "events" / bad_key).write_bytes(
        good + b'not json\n{"id": "x-not-a-long", "v": "kept?"}\n'
    )
    lander.landed.update(ids)

    ing = run_lockgate(path, "ingest", "--json")
    assert ing.returncode == 0, ing.stderr
    (summary,) = _json(ing.stdout)
    rt = Runtime.from_config(str(path))
    report = verify(rt, "events")
    assert report.ok, report.violations
    table = rt.tables.load("lake.events").scan().to_arrow()
    ids_in_table = [i for i in table.column("id").to_pylist() if i is not None]
    assert sorted(ids_in_table) == sorted(lander.landed.elements())
    quarantine = rt.tables.load("lake.events__quarantine").scan().to_arrow().to_pylist()
    raw = " ".join(q["raw"] for q in quarantine)
    assert "not json" in raw
    rescued = [r for r in table.to_pylist() if "x-not-a-long" in str(r.get("_rescued_data") or "")]
    assert "x-not-a-long" in raw or rescued, "the value that did not fit the schema vanished"
    assert summary["quarantined"] + summary["rows"] == sum(lander.landed.values()) + 2
