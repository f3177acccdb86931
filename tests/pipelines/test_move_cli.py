"""The CLI side of moving or resetting a source (issue 19, item 1), on local stores: a pending
batch of the old landing is executed where it was claimed (never its key in the new landing),
``ledger reset`` claims what was left in the old landing, ``retry`` refuses a batch of another
format with what to do, and one broken source never hides the others in ``status``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lockgate.pipelines.batch import execute_batch
from lockgate.pipelines.cli import main as lockgate_main
from lockgate.pipelines.ingest import ingest_source
from lockgate.pipelines.verify import verify_source
from lockgate.resources.config import load_config
from lockgate.resources.errors import ExitCode
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import LocalStore
from lockgate.sensors.discovery import discover, rule_for_source
from lockgate.sensors.retries import retry_generation
from tests.platform_helpers import Lander, source_spec, table_ids, write_config

DAY = "2026-05-01"


def _write(tmp_path: Path, **landings: str) -> Path:
    specs: dict[str, Any] = {
        name: source_spec(name, str(tmp_path / landing)) for name, landing in landings.items()
    }
    return write_config(tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources=specs)


def _rt(path: Path) -> Runtime:
    return Runtime.from_config(load_config(str(path)))


def test_pending_batch_of_the_old_landing_is_read_there_after_the_move(tmp_path: Path) -> None:
    path = _write(tmp_path, ev="old")
    rt = _rt(path)
    old = Lander(LocalStore(tmp_path / "old"))
    old.land(f"{DAY}/a.jsonl", 2)
    source = rt.source("ev")
    claimed = discover(rt.landing(source), rt.ledger(source), rule_for_source(source))
    assert len(claimed.claims) == 1  # pending: its run has not happened yet
    old.land(f"{DAY}/b.jsonl", 3)  # lands late in the old prefix, never listed there

    new = Lander(LocalStore(tmp_path / "new"), start=old.next_id)
    new.land(f"{DAY}/a.jsonl", 4)  # another object under the same relative key
    c_ids = new.land(f"{DAY}/c.jsonl", 1)
    path = _write(tmp_path, ev="new")
    assert lockgate_main(["--config", str(path), "ledger", "reset", "--source", "ev", "--yes"]) == 0

    rt = _rt(path)
    source = rt.source("ev")
    ledger = rt.ledger(source)
    [batch0, batch1] = ledger.pending()  # a (claimed before) and b (claimed by the reset)
    assert (batch0.fingerprint_version, batch1.fingerprint_version) == (0, 0)
    assert lockgate_main(["--config", str(path), "retry", "--source", "ev", "--batch", "0"]) == 0
    out = execute_batch(rt, source, ledger, batch0)
    assert out.rows == 2 and not out.unread  # the old a.jsonl, not the new one
    ingest_source(rt, source)
    # the new landing's a.jsonl is a re-write of a claimed key (ignored); c is new
    assert table_ids(rt, "ev") == old.landed + Counter(c_ids)
    report = verify_source(rt, source)
    assert report.ok and report.rows == 2 + 3 + 1


def test_retry_refuses_a_batch_of_another_format_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, ev="land")
    rt = _rt(path)
    Lander(LocalStore(tmp_path / "land")).land(f"{DAY}/a.jsonl", 2)
    source = rt.source("ev")
    discover(rt.landing(source), rt.ledger(source), rule_for_source(source))
    spec = source_spec("ev", str(tmp_path / "land"), format="csv")
    write_config(path, warehouse=str(tmp_path / "wh"), sources={"ev": spec})
    assert lockgate_main(["--config", str(path), "ledger", "reset", "--source", "ev", "--yes"]) == 0
    capsys.readouterr()
    code = lockgate_main(["--config", str(path), "retry", "--source", "ev", "--batch", "0"])
    assert code == ExitCode.FINGERPRINT_MISMATCH
    err = capsys.readouterr().err
    assert "format: 'jsonl' -> 'csv'" in err and "lockgate ledger reset" in err
    assert retry_generation(rt.ledger_store.child("ev"), 0) == 0  # no doomed request written


def test_status_shows_every_source_when_one_is_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, ok="a", broken="b")
    rt = _rt(path)
    for name in ("ok", "broken"):
        rt.ledger(rt.source(name))  # fingerprint v0 of both
    _write(tmp_path, ok="a", broken="c")  # broken's landing edited, no reset
    capsys.readouterr()
    code = lockgate_main(["--config", str(path), "status", "--json"])
    rows = {r["source"]: r for r in json.loads(capsys.readouterr().out)}
    assert code == ExitCode.FINGERPRINT_MISMATCH
    assert rows["ok"]["error"] is None and rows["ok"]["claimed_batches"] == 0
    assert rows["broken"]["exit_code"] == ExitCode.FINGERPRINT_MISMATCH
    assert "lockgate ledger reset --source broken" in rows["broken"]["error"]
    assert lockgate_main(["--config", str(path), "status"]) == ExitCode.FINGERPRINT_MISMATCH
    text = capsys.readouterr().out
    assert "ok -> lake.ok" in text and "broken -> lake.broken: ERROR FingerprintMismatch" in text
