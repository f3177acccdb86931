"""``clean_source`` on a local landing and on S3 (moto over HTTP): after ingest the landing holds
no committed object, the archive holds each exactly once, the table is exactly once; a rebuild
reads the archive and is idempotent; ``delete`` makes a rebuild refuse; an object rewritten
after its claim is never cleaned; a crash between copy and delete is finished by the next tick."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from lockgate.pipelines.commands.status import source_status
from lockgate.pipelines.ingest import ingest_source
from lockgate.pipelines.rebuild import RebuildRefused, rebuild
from lockgate.pipelines.verify import verify_source
from lockgate.pipelines.verify_deep import verify_deep
from lockgate.resources.cleaning import CleanLog, clean_counts
from lockgate.resources.config import load_config
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import LocalStore, ObjectStore
from lockgate.sensors.cleaning import clean_committed
from tests.conftest import create_bucket
from tests.platform_helpers import REPO, Lander, source_spec, table_ids, write_config

SOURCE = "ev"
DAY = "2026-01-05"


def _keys(store: ObjectStore) -> list[str]:
    return sorted(o.key for o in store.list())


def _runtime(
    tmp_path: Path,
    landing: str,
    clean: Any,
    endpoint: str | None = None,
    warehouse: str | None = None,
) -> Runtime:
    spec = source_spec(SOURCE, landing, clean_source=clean)
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=warehouse or str(tmp_path / "wh"),
        sources={SOURCE: spec},
        endpoint=endpoint,
    )
    return Runtime.from_config(load_config(str(path)))


def _setup(
    tmp_path: Path, kind: str, mode: str, request: pytest.FixtureRequest
) -> tuple[Runtime, Lander, ObjectStore, ObjectStore | None]:
    """A runtime with ``clean_source`` ``mode``, its lander, landing and archive stores."""
    if kind == "local":
        landing_url, archive_url, endpoint = (
            str(tmp_path / "landing"),
            str(tmp_path / "archive"),
            None,
        )
    else:
        endpoint = request.getfixturevalue("moto_server")
        bucket = create_bucket(endpoint)
        landing_url, archive_url = f"s3://{bucket}/landing", f"s3://{bucket}/archive"
    clean: Any = {"mode": mode, "archive_to": archive_url} if mode == "archive" else mode
    rt = _runtime(tmp_path, landing_url, clean, endpoint)
    landing = rt.landing(rt.source(SOURCE))
    archive = rt.open_landing(archive_url) if mode == "archive" else None
    return rt, Lander(landing), landing, archive


def _land(land: Lander) -> list[str]:
    keys = [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl", f"{DAY}/c.jsonl", "2026-01-06/d.jsonl"]
    for i, k in enumerate(keys):
        land.land(k, i + 1)
    return keys


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_archive_empties_the_landing_and_a_rebuild_reads_the_archive(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    rt, land, landing, archive = _setup(tmp_path, kind, "archive", request)
    assert archive is not None
    keys = _land(land)
    source = rt.source(SOURCE)
    ingest_source(rt, source)
    assert _keys(landing) == []
    assert _keys(archive) == sorted(keys)  # each exactly once, under its own key
    assert table_ids(rt, SOURCE) == land.landed
    counts = clean_counts(rt.ledger(source), source.clean_source)
    assert (counts.cleaned, counts.left, counts.pending) == (4, 0, 0)
    status = source_status(rt, source)["clean"]
    assert status == {"mode": "archive", "cleaned": 4, "left": 0, "pending": 0}
    deep = verify_deep(rt, source)  # re-reads every object, from the archive
    assert (deep.ok, deep.checked, deep.records, deep.unavailable) == (True, 4, 10, [])
    for _ in range(2):  # idempotent: the same rows, read from the archive
        out = rebuild(rt, source, [date.fromisoformat(DAY)])
        assert out.rows == 6 and out.objects == 3
        assert table_ids(rt, SOURCE) == land.landed
        assert verify_source(rt, source).ok
    assert _keys(landing) == []


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_delete_empties_the_landing_and_a_rebuild_refuses(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    rt, land, landing, _ = _setup(tmp_path, kind, "delete", request)
    _land(land)
    source = rt.source(SOURCE)
    ingest_source(rt, source)
    assert _keys(landing) == []
    assert table_ids(rt, SOURCE) == land.landed
    version = rt.tables.current_version(source.table)
    with pytest.raises(RebuildRefused, match=rf"{DAY}.*clean_source: delete"):
        rebuild(rt, source, [date.fromisoformat(DAY)])
    assert rt.tables.current_version(source.table) == version
    assert verify_source(rt, source).ok


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_an_object_rewritten_after_its_claim_is_not_cleaned(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    from lockgate.pipelines.batch import execute_batch

    rt, land, landing, archive = _setup(tmp_path, kind, "archive", request)
    assert archive is not None
    source = rt.source(SOURCE)
    land.land(f"{DAY}/a.jsonl", 2)
    land.land(f"{DAY}/b.jsonl", 2)
    ledger = rt.ledger(source)
    claim = ledger.claim(DAY, [landing.head(f"{DAY}/a.jsonl"), landing.head(f"{DAY}/b.jsonl")])
    execute_batch(rt, source, ledger, claim)
    newer = b'{"id": 999, "v": "newer"}\n'
    landing.put(f"{DAY}/a.jsonl", newer)  # a new version under a claimed key
    out = clean_committed(source, ledger, landing, rt.open_landing)
    assert (out.batches, out.cleaned, out.left) == (1, 1, 1)
    assert landing.get(f"{DAY}/a.jsonl") == newer  # never touched
    assert _keys(landing) == [f"{DAY}/a.jsonl"]
    assert _keys(archive) == [f"{DAY}/b.jsonl"]
    marker = CleanLog(ledger).cleaned(claim.batch_id)
    assert marker is not None and dict(marker.outcomes) == {
        f"{DAY}/a.jsonl": "changed",
        f"{DAY}/b.jsonl": "archived",
    }
    assert clean_committed(source, ledger, landing, rt.open_landing).batches == 0


_CLEAN_IN_CHILD = """
import sys
from lockgate.resources.runtime import Runtime
from lockgate.sensors.cleaning import clean_committed
rt = Runtime.from_config(sys.argv[1])
source = rt.source("ev")
clean_committed(source, rt.ledger(source), rt.landing(source), rt.open_landing)
print("finished")
"""


@pytest.mark.parametrize(
    "point", ["clean.after_copy", "clean.after_archive_record", "clean.after_delete:2"]
)
def test_a_crash_mid_clean_is_finished_by_the_next_tick(tmp_path: Path, point: str) -> None:
    from lockgate.pipelines.batch import execute_batch

    rt = _runtime(tmp_path, str(tmp_path / "landing"), "off")
    landing = LocalStore(tmp_path / "landing")
    land = Lander(landing)
    keys = [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl", f"{DAY}/c.jsonl"]
    for k in keys:
        land.land(k, 2)
    source = rt.source(SOURCE)
    ledger = rt.ledger(source)
    execute_batch(rt, source, ledger, ledger.claim(DAY, [landing.head(k) for k in keys]))
    archive = tmp_path / "archive"
    config = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={
            SOURCE: source_spec(
                SOURCE,
                str(tmp_path / "landing"),
                clean_source={"mode": "archive", "archive_to": str(archive)},
            )
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_CRASH")}
    child = subprocess.run(
        [sys.executable, "-c", _CLEAN_IN_CHILD, str(config)],
        env={**env, "LOCKGATE_CRASH_AT": point},
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    log = CleanLog(rt.ledger(source))
    assert log.cleaned(0) is None  # the crash left the batch unfinished
    if point != "clean.after_delete:2":  # no object is deleted before the archive record
        assert _keys(landing) == sorted(keys)
    rt2 = Runtime.from_config(str(config))
    source2 = rt2.source(SOURCE)
    out = clean_committed(source2, rt2.ledger(source2), rt2.landing(source2), rt2.open_landing)
    assert out.batches == 1 and out.cleaned == 3
    assert _keys(landing) == []
    assert _keys(LocalStore(archive)) == sorted(keys)
    assert Counter(table_ids(rt2, SOURCE)) == land.landed
    assert rebuild(rt2, source2, [date.fromisoformat(DAY)]).rows == 6
    assert table_ids(rt2, SOURCE) == land.landed


def test_status_counts_objects_pending_clean(tmp_path: Path) -> None:
    from lockgate.pipelines.batch import execute_batch

    rt = _runtime(tmp_path, str(tmp_path / "landing"), "delete")
    landing = LocalStore(tmp_path / "landing")
    Lander(landing).land(f"{DAY}/a.jsonl", 2)
    source = rt.source(SOURCE)
    ledger = rt.ledger(source)
    execute_batch(rt, source, ledger, ledger.claim(DAY, [landing.head(f"{DAY}/a.jsonl")]))
    assert source_status(rt, source)["clean"] == {
        "mode": "delete",
        "cleaned": 0,
        "left": 0,
        "pending": 1,
    }
    clean_committed(source, ledger, landing, rt.open_landing)
    assert source_status(rt, source)["clean"]["cleaned"] == 1
    assert _keys(landing) == []


def test_a_batch_archived_while_a_rebuild_reads_is_read_from_the_archive(tmp_path: Path) -> None:
    from lockgate.pipelines.batch import execute_batch
    from lockgate.resources.cleaning import landing_for_rebuild

    archive = tmp_path / "archive"
    rt = _runtime(
        tmp_path, str(tmp_path / "landing"), {"mode": "archive", "archive_to": str(archive)}
    )
    landing = LocalStore(tmp_path / "landing")
    Lander(landing).land(f"{DAY}/a.jsonl", 2)
    source = rt.source(SOURCE)
    ledger = rt.ledger(source)
    claim = ledger.claim(DAY, [landing.head(f"{DAY}/a.jsonl")])
    execute_batch(rt, source, ledger, claim)
    obj = claim.objects[0]
    view = landing_for_rebuild(ledger, landing, rt.open_landing, [claim]).landing
    body = landing.get(obj.key)
    clean_committed(source, ledger, landing, rt.open_landing)  # meanwhile, a tick archives it
    assert _keys(landing) == []
    assert view.head(obj.key).etag == obj.etag
    with view.open(obj.key, etag=obj.etag, size=obj.size) as f:
        assert f.read() == body


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_key_claimed_again_keeps_both_archived_versions(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    from lockgate.pipelines.batch import execute_batch
    from lockgate.resources.cleaning import version_prefix

    rt, land, landing, archive = _setup(tmp_path, kind, "archive", request)
    assert archive is not None
    source = rt.source(SOURCE)
    key = f"{DAY}/a.jsonl"
    etags = []
    for _ in range(2):  # the same key, two versions, each claimed and committed
        land.land(key, 2)
        ledger = rt.ledger(source)
        info = landing.head(key)
        etags.append(info.etag)
        execute_batch(rt, source, ledger, ledger.claim(DAY, [info]))
        clean_committed(source, ledger, landing, rt.open_landing)
        assert _keys(landing) == []
    assert _keys(archive) == sorted([key, f"{version_prefix(etags[1])}/{key}"])
    assert table_ids(rt, SOURCE) == land.landed
    for _ in range(2):  # both versions read back from the archive, rows unchanged
        assert rebuild(rt, source, [date.fromisoformat(DAY)]).rows == 4
        assert table_ids(rt, SOURCE) == land.landed


def test_a_crash_mid_clean_on_s3_is_finished_by_the_next_tick(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from lockgate.pipelines.batch import execute_batch

    rt, land, landing, archive = _setup(tmp_path, "s3", "archive", request)
    assert archive is not None
    keys = [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl"]
    for k in keys:
        land.land(k, 2)
    source = rt.source(SOURCE)
    ledger = rt.ledger(source)
    execute_batch(rt, source, ledger, ledger.claim(DAY, [landing.head(k) for k in keys]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_CRASH")}
    child = subprocess.run(
        [sys.executable, "-c", _CLEAN_IN_CHILD, str(tmp_path / "lockgate.yaml")],
        env={**env, "LOCKGATE_CRASH_AT": "clean.after_archive_record"},
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert _keys(landing) == keys and _keys(archive) == keys  # copied, nothing deleted yet
    assert CleanLog(ledger).cleaned(0) is None
    out = clean_committed(source, rt.ledger(source), landing, rt.open_landing)
    assert (out.batches, out.cleaned) == (1, 2)
    assert _keys(landing) == [] and _keys(archive) == keys
    assert rebuild(rt, source, [date.fromisoformat(DAY)]).rows == 4
    assert table_ids(rt, SOURCE) == land.landed


def test_cleaning_after_a_move_cleans_the_objects_claimed_in_the_earlier_landing(
    tmp_path: Path,
) -> None:
    from lockgate.pipelines.cli import main as lockgate_main

    rt = _runtime(tmp_path, str(tmp_path / "old"), "off")
    old_store = LocalStore(tmp_path / "old")
    old = Lander(old_store)
    old.land(f"{DAY}/a.jsonl", 2)
    old.land(f"{DAY}/b.jsonl", 3)
    ingest_source(rt, rt.source(SOURCE))  # committed, not cleaned (clean_source off)
    # the source moves to a new landing and starts archiving (a config edit, then a reset)
    new_store = LocalStore(tmp_path / "new")
    new = Lander(new_store, start=old.next_id)
    new.land(f"{DAY}/a.jsonl", 4)  # the same relative key, another object: a re-write
    c_ids = new.land(f"{DAY}/c.jsonl", 1)
    archive = tmp_path / "archive"
    rt = _runtime(tmp_path, str(tmp_path / "new"), {"mode": "archive", "archive_to": str(archive)})
    config = str(tmp_path / "lockgate.yaml")
    assert lockgate_main(["--config", config, "ledger", "reset", "--source", SOURCE, "--yes"]) == 0
    rt = Runtime.from_config(load_config(config))
    source = rt.source(SOURCE)
    ingest_source(rt, source)
    # the earlier landing's committed objects are archived from there; the new landing keeps
    # only its re-written a.jsonl (a claimed key with another etag: never ingested or cleaned)
    assert _keys(old_store) == []
    assert _keys(new_store) == [f"{DAY}/a.jsonl"]
    assert new_store.get(f"{DAY}/a.jsonl").count(b"\n") == 4
    assert _keys(LocalStore(archive)) == [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl", f"{DAY}/c.jsonl"]
    assert LocalStore(archive).get(f"{DAY}/a.jsonl").count(b"\n") == 2  # the old a, once
    assert Counter(table_ids(rt, SOURCE)) == old.landed + Counter(c_ids)
    assert source_status(rt, source)["clean"] == {
        "mode": "archive",
        "cleaned": 3,
        "left": 0,
        "pending": 0,
    }
    # a rebuild of the day reads the archived copies: the same rows, idempotent
    for _ in range(2):
        assert rebuild(rt, source, [date.fromisoformat(DAY)]).rows == 2 + 3 + 1
        assert Counter(table_ids(rt, SOURCE)) == old.landed + Counter(c_ids)


def test_doctor_checks_that_the_archive_is_writable(
    moto_server: str,
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    from lockgate.pipelines.commands import doctor
    from lockgate.resources.store import S3Options
    from lockgate.resources.stores import open_store

    def source(name: str, clean: str) -> str:
        return (
            f"  {name}:\n    landing: s3://{bucket}/landing/{name}\n    format: jsonl\n"
            f"    table: raw.{name}\n    partition:\n      start: 2024-01-01\n"
            f"    clean_source: {clean}\n"
        )

    config = tmp_path / "lockgate.yaml"
    config.write_text(
        f"warehouse: s3://{bucket}/warehouse\n"
        f"s3:\n  endpoint_url: {moto_server}\n  region: us-east-1\n"
        "sources:\n"
        + source("good", f"{{mode: archive, archive_to: s3://{bucket}/archive/good}}")
        + source("bad", "{mode: archive, archive_to: s3://no-such-bucket-lockgate/archive}")
        + source("gone", "delete")
    )
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("LOCKGATE_CONFIG", raising=False)
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    doctor.add_arguments(parser)
    code = doctor.run(parser.parse_args(["--config", str(config)]))
    out = capsys.readouterr().out
    assert code == 1, out  # the missing bucket
    good = out.split("archive of source good", 1)[1].split("archive of source bad", 1)[0]
    assert "PASS  archive writable" in good and "INFO  clean_source archive" in good
    bad = out.split("archive of source bad", 1)[1]
    assert "FAIL  archive writable" in bad.split("clean_source of source gone", 1)[0]
    assert "INFO  clean_source delete" in out.split("clean_source of source gone", 1)[1]
    archive = open_store(f"s3://{bucket}/archive/good", S3Options(endpoint_url=moto_server))
    assert [o.key for o in archive.list()] == []  # the probe object is gone
