"""``lockgate quarantine show``: the entries of a source's quarantine table, by day and batch,
with a limit and a truncated raw excerpt; a source with no bad record shows none."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lockgate.pipelines.cli import main
from lockgate.pipelines.ingest import ingest_source
from lockgate.resources.config import load_config
from lockgate.resources.runtime import Runtime
from tests.platform_helpers import run_lockgate, source_spec, write_config

LONG = "x" * 500


def _show(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> SimpleNamespace:
    """``lockgate quarantine show --source events *args`` in this process."""
    capsys.readouterr()
    code = main(["--config", str(path), "quarantine", "show", "--source", "events", *args])
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def test_quarantine_show_prints_entries_filtered_and_limited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In this process, but for the last (bad) call: the console script's usage error."""
    landing = tmp_path / "landing"
    (landing / "2026-03-01").mkdir(parents=True)
    (landing / "2026-03-02").mkdir(parents=True)
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        ledger=str(tmp_path / "ledger"),
        sources={"events": source_spec("events", str(landing))},
    )
    empty = _show(capsys, path, "--json")
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout)["total"] == 0 and json.loads(empty.stdout)["entries"] == []

    (landing / "2026-03-01" / "a.jsonl").write_text(
        '{"id": 1, "v": "ok"}\nnot json\nalso not json\n' + LONG + "\n"
    )
    (landing / "2026-03-02" / "b.jsonl").write_text('{"id": 2, "v": "ok"}\n{broken\n')
    rt = Runtime.from_config(load_config(str(path)))
    report = ingest_source(rt, rt.source("events"))
    assert report.quarantined == 4 and report.rows == 2

    every = _show(capsys, path, "--json")
    assert every.returncode == 0, every.stderr
    doc = json.loads(every.stdout)
    assert doc["table"] == "lake.events__quarantine" and doc["total"] == 4
    got = [(e["day"], e["key"], e["row"]) for e in doc["entries"]]
    assert got == [
        ("2026-03-01", "2026-03-01/a.jsonl", 1),
        ("2026-03-01", "2026-03-01/a.jsonl", 2),
        ("2026-03-01", "2026-03-01/a.jsonl", 3),
        ("2026-03-02", "2026-03-02/b.jsonl", 1),
    ]
    assert all(e["reason"] for e in doc["entries"])
    long = doc["entries"][2]
    assert long["raw"] == "x" * 200 and long["raw_truncated"] is True
    assert doc["entries"][0]["raw"] == "not json" and not doc["entries"][0]["raw_truncated"]

    day = _show(capsys, path, "--day", "2026-03-02")
    assert day.returncode == 0, day.stderr
    assert "events: 1 quarantine entries day 2026-03-02 in lake.events__quarantine" in day.stdout
    assert "'2026-03-02/b.jsonl' record 1:" in day.stdout and "a.jsonl" not in day.stdout

    limited = _show(capsys, path, "--limit", "1")
    assert "4 quarantine entries in lake.events__quarantine, showing 1" in limited.stdout
    assert limited.stdout.count("raw: ") == 1

    bad = run_lockgate(path, "quarantine", "show", "--source", "events", "--day", "2026-02-30")
    assert bad.returncode == 2 and "not a day" in bad.stderr
