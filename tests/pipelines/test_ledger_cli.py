"""``lockgate ledger show|reset`` and the config-derived discovery rule."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from lockgate.pipelines.cli import main
from lockgate.resources.ledger import CommitRecord, FingerprintMismatch, Ledger
from lockgate.resources.store import LocalStore, ObjectInfo, ObjectStore
from lockgate.sensors.discovery import partition_of, rule_for_source
from tests.ledger_testkit import obj

FP = {"landing": "/x", "format": "csv", "table": "raw.t"}


def test_cli_wiring() -> None:
    from lockgate.pipelines.cli import COMMANDS

    assert COMMANDS["ledger"][0] == "lockgate.pipelines.commands.ledger"


def seed(store: ObjectStore, fp: dict[str, str] = FP) -> None:
    led = Ledger.open(store, "src", fp, compact_interval=3)
    for i in range(7):
        led.claim("2026-01-01", [obj(f"k{i}")])
        if i != 2:
            led.record_commit(CommitRecord(i, 10 + i, 2, 3, 1, 4, 1))
        led.maybe_compact()


def test_show_summary_and_batch(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], store: ObjectStore
) -> None:
    seed(store)
    url = store.url
    if url.startswith("s3://"):
        url = f"{url} --s3-endpoint {request.getfixturevalue('moto_server')}"

    def run(argv: list[str]) -> int:
        return main([a for arg in argv for a in (arg.split() if arg == url else [arg])])

    assert run(["ledger", "show", "--source", "src", "--ledger", url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["claims"] == 7 and out["committed"] == 6 and out["pending"] == [2]
    assert out["high_water_key"] == "k6" and out["last_compaction"] == 5
    assert run(["ledger", "show", "--source", "src", "--ledger", url]) == 0
    text = capsys.readouterr().out
    assert "pending:         1 (2)" in text and "up to batch 5" in text
    assert run(["ledger", "show", "--source", "src", "--ledger", url, "--batch", "4"]) == 0
    text = capsys.readouterr().out
    assert "k4" in text and "snapshot 14" in text
    assert run(["ledger", "show", "--source", "src", "--ledger", url, "--batch", "2"]) == 0
    assert "commit: none (pending)" in capsys.readouterr().out
    assert run(["ledger", "show", "--source", "src", "--ledger", url, "--batch", "9"]) == 2
    assert "lockgate: error: source 'src' has no batch 9" in capsys.readouterr().err
    assert run(["ledger", "show", "--source", "other", "--ledger", url]) == 2
    assert "lockgate: error: no ledger" in capsys.readouterr().err


def write_config(tmp_path: Path, fmt: str) -> Path:
    cfg = tmp_path / "lockgate.yaml"
    landing = tmp_path / "landing"
    landing.mkdir(exist_ok=True)
    cfg.write_text(
        f"""
warehouse: {tmp_path / "wh"}
ledger: {tmp_path / "ledger"}
sources:
  src:
    landing: {landing}
    format: {fmt}
    table: raw.t
    partition:
      pattern: 'dt=(\\d{{4}}-\\d{{2}}-\\d{{2}})/'
      start: 2026-01-01
"""
    )
    return cfg


def test_show_and_reset_from_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = pytest.importorskip("lockgate.resources.config")
    cfg = write_config(tmp_path, "csv")
    src = config.load_config(str(cfg)).source("src")
    seed(LocalStore(tmp_path / "ledger"), src.fingerprint())
    assert main(["--config", str(cfg), "ledger", "show", "--source", "src", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["claims"] == 7
    cfg2 = write_config(tmp_path, "jsonl")
    new_fp = config.load_config(str(cfg2)).source("src").fingerprint()
    with pytest.raises(FingerprintMismatch):
        Ledger.open(LocalStore(tmp_path / "ledger"), "src", new_fp)
    assert main(["--config", str(cfg2), "ledger", "reset", "--source", "src"]) == 2
    assert "--yes" in capsys.readouterr().err
    assert main(["--config", str(cfg2), "ledger", "reset", "--source", "src", "--yes"]) == 0
    led = Ledger.open(LocalStore(tmp_path / "ledger"), "src", new_fp)
    assert led.fingerprint.version == 1 and led.is_claimed("k0", "e1")
    assert main(["--config", str(cfg2), "ledger", "reset", "--source", "src", "--yes"]) == 0
    assert "unchanged" in capsys.readouterr().out


def test_rule_for_source_uses_the_configured_partition(tmp_path: Path) -> None:
    config = pytest.importorskip("lockgate.resources.config")
    src = config.load_config(str(write_config(tmp_path, "csv"))).source("src")
    rule = rule_for_source(src, lookback_keys=7)
    assert rule.partition_start == date(2026, 1, 1) and rule.lookback_keys == 7
    lm = datetime(2026, 2, 3, tzinfo=UTC)
    assert partition_of(ObjectInfo("dt=2026-01-09/a.csv", 1, "e", lm), rule) == "2026-01-09"
    assert partition_of(ObjectInfo("a.csv", 1, "e", lm), rule) == "2026-02-03"
