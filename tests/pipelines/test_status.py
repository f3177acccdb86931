"""``lockgate status``: per source the last commit, rows per day, unclaimed objects by reason,
what the Dagster instance knows (or why it is unknown), and one source's failure never hides
the others."""

import json
from pathlib import Path
from unittest.mock import patch

import dagster as dg
import pytest
import yaml

from lockgate.pipelines.cli import main
from lockgate.pipelines.ingest import ingest_source
from lockgate.resources.config import load_config
from lockgate.resources.errors import ExitCode
from lockgate.resources.runtime import Runtime
from lockgate.sensors.discovery import discover, rule_for_source
from lockgate.sensors.runs import HEARTBEAT_TAG, HUNG_SILENCE_S, MAX_RUNTIME_TAG, hang_reason
from tests.platform_helpers import dagster_instance, run_lockgate, source_spec, write_config


def _write(root: Path, landing: str, rows: int = 2) -> None:
    path = root / landing
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i, "v": "x"}) + "\n" for i in range(rows)))


def test_status_reports_every_view_and_why_one_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first status runs the console script (a real process); the others run the same
    ``main`` in this process."""
    land = tmp_path / "landing"
    sources = {
        "events": source_spec("events", str(land / "events")),
        "orders": source_spec("orders", str(land / "orders")),
    }
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        ledger=str(tmp_path / "ledger"),
        sources=sources,
    )
    _write(land, "events/2026-03-01/a.jsonl", 3)
    _write(land, "events/2026-03-02/b.jsonl", 2)
    _write(land, "orders/2026-03-01/o.jsonl", 1)
    rt = Runtime.from_config(load_config(str(path)))
    for name in ("events", "orders"):
        ingest_source(rt, rt.source(name))
    # left unclaimed, each for its reason; and one claimed batch left pending
    _write(land, "events/2025-12-31/early.jsonl")
    _write(land, "events/2099-01-01/late.jsonl")
    _write(land, "events/2026-02-30/bad.jsonl")
    _write(land, "events/2026-03-01/a.jsonl", 4)  # re-written: new etag
    _write(land, "events/2026-03-03/c.jsonl")
    discover(rt.landing(rt.source("events")), rt.ledger(rt.source("events")),
             rule_for_source(rt.source("events")))  # fmt: skip
    _write(land, "events/2026-03-04/d.jsonl")  # claimable by the next tick

    st = run_lockgate(path, "status", "--json", env={"DAGSTER_HOME": ""})
    assert st.returncode == 0, st.stderr
    events, orders = json.loads(st.stdout)
    assert events["error"] is None and events["pending_batches"] == [2]
    assert events["last_commit"]["batch_id"] == 1 and events["last_commit"]["rows"] == 2
    assert 0 <= events["last_commit"]["age_s"] < 3600
    assert events["rows_per_day"] == {"2026-03-01": 3, "2026-03-02": 2}
    assert events["unclaimed"] == {
        "before_start": 1,
        "future": 1,
        "invalid_day": 1,
        "rewritten": 1,
        "claimable": 1,
    }
    assert events["dagster"]["unknown_reason"].startswith("no DAGSTER_HOME")
    assert events["dagster"]["runs"] is None and events["dagster"]["last_tick"] is None
    assert events["stuck_batches"] is None
    assert events["stuck_batches_unknown_reason"].startswith("no DAGSTER_HOME")
    assert orders["stuck_batches"] == {} and orders["stuck_batches_unknown_reason"] is None
    assert orders["unclaimed"] == {"claimable": 0}

    monkeypatch.setenv("DAGSTER_HOME", "")
    _, text, _ = _cli(capsys, "--config", str(path), "status")
    assert "stuck batches: unknown (no DAGSTER_HOME" in text
    assert "unclaimed: 1 claimable; never claimed as they are: 1 before_start" in text
    assert "rows per day: 2026-03-01 3, 2026-03-02 2" in text

    home, _ = dagster_instance(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    code, out, err = _cli(capsys, "--config", str(path), "status", "--json", "--no-landing")
    assert code == 0, err
    events = json.loads(out)[0]
    assert events["unclaimed"] is None
    assert events["dagster"] == {
        "unknown_reason": None,
        "last_tick": None,
        "runs": {"queued": 0, "running": 0, "hung": []},
    }
    assert events["stuck_batches"] == {}  # pending batch 2 has no failed run

    # one source's failure never hides the other: orders' declaration changes under its ledger
    doc = yaml.safe_load(path.read_text())
    doc["sources"]["orders"]["format"] = "csv"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("DAGSTER_HOME", "")
    code, out, err = _cli(capsys, "--config", str(path), "status", "--json", "--no-landing")
    assert code == ExitCode.FINGERPRINT_MISMATCH, err
    events, orders = json.loads(out)
    assert events["error"] is None and events["pending_batches"] == [2]
    assert (
        orders["error"]
        and "format" in orders["error"]
        and set(orders)
        == {
            "source",
            "table",
            "error",
            "exit_code",
        }
    )


def test_hang_reason_silence_and_limit() -> None:
    started = dg.DagsterRunStatus.STARTED
    tags = {MAX_RUNTIME_TAG: "240", HEARTBEAT_TAG: "1000"}
    assert hang_reason(started, tags, 990.0, 1000.0 + HUNG_SILENCE_S - 1) is None
    silent = hang_reason(started, tags, 990.0, 1000.0 + HUNG_SILENCE_S + 1)
    assert silent is not None and "no heartbeat for 31s" in silent
    over = hang_reason(started, {**tags, HEARTBEAT_TAG: "1245"}, 1000.0, 1246.0)
    assert over is not None and "past its limit of 240s" in over
    assert hang_reason(dg.DagsterRunStatus.QUEUED, tags, None, 5000.0) is None
    # no heartbeat yet: silent since the run started
    assert hang_reason(started, {MAX_RUNTIME_TAG: "240"}, 1000.0, 1010.0) is None
    assert hang_reason(started, {MAX_RUNTIME_TAG: "240"}, 1000.0, 1040.0) is not None


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``lockgate *args`` in this process (the command's code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_and_retry_know_a_named_components_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``--component team_a``, status finds the running and stuck runs of
    ``team_a__events`` and retry prints the run key the sensor then requests; without it,
    status does not report that source idle (it names the component instead)."""
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.test_utils import create_run_for_test

    from lockgate.pipelines.definitions import build_definitions
    from lockgate.sensors.runs import MAX_RETRIES_TAG, RUN_KEY_TAG

    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        ledger=str(tmp_path / "ledger"),
        sources={"events": source_spec("events", str(tmp_path / "landing"))},
    )
    _write(tmp_path, "landing/2026-03-01/a.jsonl")
    _write(tmp_path, "landing/2026-03-02/b.jsonl")
    home, _ = dagster_instance(tmp_path)
    repo = build_definitions(load_config(str(path)), "team_a").get_repository_def()
    sensor = repo.get_sensor_def("team_a__events_sensor")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    cfg = ("--config", str(path))
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        warnings: list[str] = []

        def tick() -> list[dg.RunRequest]:
            ctx = dg.build_sensor_context(
                instance=instance, resources=repo.get_top_level_resources(), repository_def=repo
            )
            with patch.object(ctx.log, "warning", side_effect=warnings.append):
                return list(sensor.evaluate_tick(ctx).run_requests or [])

        running, failed = tick()  # claims batches 0 and 1
        assert [running.run_key, failed.run_key] == ["team_a__events:0", "team_a__events:1"]
        create_run_for_test(
            instance,
            status=dg.DagsterRunStatus.STARTED,
            tags={**running.tags, RUN_KEY_TAG: running.run_key},
        )
        stuck = create_run_for_test(
            instance,
            status=dg.DagsterRunStatus.FAILURE,
            tags={**failed.tags, RUN_KEY_TAG: failed.run_key, MAX_RETRIES_TAG: "0"},
        )
        code, out, err = _cli(
            capsys, *cfg, "status", "--json", "--no-landing", "--component", "team_a"
        )
        assert code == 0, err
        (events,) = json.loads(out)
        assert events["dagster"]["unknown_reason"] is None
        assert events["dagster"]["runs"] == {"queued": 0, "running": 1, "hung": []}
        assert events["stuck_batches"] == {"1": stuck.run_id}
        _, text, _ = _cli(capsys, *cfg, "status", "--no-landing", "--component", "team_a")
        assert "runs: 0 queued, 1 running, 0 hung" in text
        assert "lockgate retry --source events --batch 1 --component team_a" in text

        # without --component: not "0 runs, nothing stuck" but unknown, naming the component
        _, plain, _ = _cli(capsys, *cfg, "status", "--json", "--no-landing")
        (events,) = json.loads(plain)
        reason = events["dagster"]["unknown_reason"]
        assert reason is not None and "(team_a)" in reason and "--component" in reason
        assert events["dagster"]["runs"] is None and events["stuck_batches"] is None

        code, out, err = _cli(capsys, *cfg, "retry", "--source", "events", "--batch", "1",
                              "--component", "team_a")  # fmt: skip
        assert code == 0, err
        assert "as run key team_a__events:1:retry1 " in out
        assert [r.run_key for r in tick()] == ["team_a__events:1:retry1"]  # what retry said
        # the sensor's stuck warning names the component too
        assert any("--batch 1 --component team_a`" in w for w in warnings), warnings

    code, _, err = _cli(capsys, *cfg, "retry", "--source", "events", "--batch", "1",
                        "--component", "a__b")  # fmt: skip
    assert code == ExitCode.USAGE and "invalid Lockgate component name" in err
