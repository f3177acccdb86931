"""Every claimed byte is accounted for (issue 18).

Shown: behind an endpoint that misreports lengths (HEAD says 0 bytes, GET bodies cut short
with status 200; or a listing that misreports sizes) no batch commits short -- the ingest
fails loudly -- and once the endpoint is honest every record is in exactly once; ``verify``
fails on a commit record whose bytes do not match its claim; ``verify --deep`` re-reads the
landing and catches a deleted data file and a short read made by hand (rows gone, with the
commit record edited to agree, which plain ``verify`` cannot see).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import dagster as dg
import pytest

from lockgate.pipelines.assets import asset_key
from lockgate.pipelines.definitions import build_definitions
from lockgate.pipelines.formats import FormatOptions, ReadMeter, count_accounting, read_object
from lockgate.pipelines.ingest import ingest_source
from lockgate.pipelines.verify_deep import verify_deep
from lockgate.resources.config import load_config
from lockgate.resources.ledger import COMMITS, batch_name
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import LocalStore, ObjectStore, S3Options, SizeMismatch
from lockgate.resources.store_s3 import S3Store
from lockgate.resources.stores import open_store
from tests.conftest import create_bucket
from tests.platform_helpers import (
    Lander,
    lockgate_in_process,
    run_lockgate,
    s3_config,
    s3_env,
    source_spec,
    table_ids,
    verify,
    write_config,
)
from tests.s3_fault_proxy import FaultProxy, Lie

DAY = "2026-02-10"
FAST_RETRIES = {
    "LOCKGATE_RETRY_MAX_ATTEMPTS": "3",
    "LOCKGATE_RETRY_BASE_DELAY": "0.01",
    "LOCKGATE_RETRY_MAX_DELAY": "0.05",
}


Cli = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``lockgate --config PATH ...`` in this process (``lockgate_in_process``): these tests
    are about what the commands find, not about the console script (run once, below)."""
    return functools.partial(lockgate_in_process, capsys, monkeypatch)


def _s3_setup(tmp_path: Path, moto_server: str, proxy: FaultProxy) -> tuple[Path, Lander]:
    """A source whose landing, ledger and warehouse are reached through ``proxy``; three
    objects of 50 records landed directly on the moto server."""
    bucket = create_bucket(moto_server)
    cfg = s3_config(tmp_path / "lockgate.yaml", proxy.url, bucket, ["events"])
    direct = S3Options(endpoint_url=moto_server, region="us-east-1")
    lander = Lander(open_store(f"s3://{bucket}/landing/events", direct))
    for i in range(3):
        lander.land(f"{DAY}/part-{i}.jsonl", n=50)
    return cfg.path, lander


def _nothing_committed(path: Path) -> None:
    rt = Runtime.from_config(str(path))
    source = rt.source("events")
    ledger = rt.ledger(source)
    claims = ledger.pending()
    assert claims, "the batches were claimed"
    assert all(ledger.commit_record(c.batch_id) is None for c in claims)
    assert table_ids(rt, "events") == Counter()


@pytest.mark.s3
def test_lying_endpoint_never_commits_short(tmp_path: Path, moto_server: str, cli: Cli) -> None:
    with FaultProxy(moto_server) as proxy:
        path, lander = _s3_setup(tmp_path, moto_server, proxy)
        env = {**s3_env(proxy.url), **FAST_RETRIES}

        # HEAD says 0 bytes and every GET body is cut in half, status 200
        proxy.lie(Lie(key_prefix="landing/", head_length=0, get_fraction=0.5))
        lying = run_lockgate(path, "ingest", env=env)  # the console script, once
        assert lying.returncode != 0, lying.stdout
        assert "stream ended early" in lying.stderr
        assert proxy.lies["head"] > 0 and proxy.lies["get"] > 0
        proxy.honest()
        _nothing_committed(path)

        # HEAD alone lies: the read trusts the claim's size (from the listing), not HEAD
        proxy.lie(Lie(key_prefix="landing/", head_length=0))
        heads = proxy.lies["head"]
        half = cli(path, "ingest", env=env)
        assert half.returncode == 0, half.stderr
        assert proxy.lies["head"] > heads
        proxy.honest()

        lander.land(f"{DAY}/part-3.jsonl", n=50)
        honest = cli(path, "ingest", env=env)
        assert honest.returncode == 0, honest.stderr
        rt = Runtime.from_config(str(path))
        assert table_ids(rt, "events") == lander.landed  # every record exactly once
        assert sum(lander.landed.values()) == 200
        report = verify(rt, "events")
        assert report.ok, report.violations
        for b in range(report.committed_batches):
            rec = rt.ledger(rt.source("events")).commit_record(b)
            assert rec is not None and rec.bytes_read
        ver = cli(path, "verify", "--deep", env=env)
        assert ver.returncode == 0, ver.stdout + ver.stderr
        assert "deep OK: 4 of 4 objects re-read, 200 records" in ver.stdout


@pytest.mark.s3
def test_lying_listing_fails_loudly(tmp_path: Path, moto_server: str, cli: Cli) -> None:
    """A listing that says 0 bytes: the claim holds 0, the read finds more and the batch
    fails (it stays pending: its claim can never be read as it says)."""
    with FaultProxy(moto_server) as proxy:
        path, _lander = _s3_setup(tmp_path, moto_server, proxy)
        proxy.lie(Lie(key_prefix="landing/", head_length=None, list_size=0))
        out = cli(path, "ingest", env={**s3_env(proxy.url), **FAST_RETRIES})
        assert out.returncode != 0, out.stdout
        assert "the claim says 0" in out.stderr
        assert proxy.lies["list"] > 0
        # a transient read error: the staging was retried (LOCKGATE_RETRY_MAX_ATTEMPTS=3)
        assert proxy.requests_for("GET", f"landing/events/{DAY}/part-0.jsonl") == 3
        proxy.honest()
        _nothing_committed(path)


def _local(tmp_path: Path, objects: int = 3, records: int = 4) -> tuple[Path, Runtime, Lander]:
    path = write_config(
        tmp_path / "conf" / "lockgate.yaml",
        warehouse=str(tmp_path / "warehouse"),
        sources={"events": source_spec("events", str(tmp_path / "landing" / "events"))},
    )
    lander = Lander(LocalStore(tmp_path / "landing" / "events"))
    for i in range(objects):
        lander.land(f"{DAY}/part-{i}.jsonl", n=records)
    rt = Runtime.from_config(str(path))
    ingest_source(rt, rt.source("events"))
    assert table_ids(rt, "events") == lander.landed
    return path, rt, lander


def _edit_commit_record(rt: Runtime, batch_id: int, edit: Any) -> None:
    """Rewrite ``commits/<batch>.json`` in the ledger store by hand."""
    store = rt.ledger(rt.source("events")).store
    name = COMMITS + batch_name(batch_id)
    doc = json.loads(store.get(name))
    edit(doc)
    store.put(name, json.dumps(doc).encode())


def test_verify_fails_on_commit_record_bytes_mismatch(tmp_path: Path, cli: Cli) -> None:
    path, rt, _lander = _local(tmp_path)
    ledger = rt.ledger(rt.source("events"))
    claim = ledger.get_claim(0)
    rec = ledger.commit_record(0)
    assert rec is not None
    assert rec.bytes_read == {o.key: o.size for o in claim.objects}
    ok = cli(path, "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    victim = claim.objects[0]

    def shrink(doc: dict[str, Any]) -> None:
        doc["bytes_read"][victim.key] = victim.size - 7

    _edit_commit_record(rt, 0, shrink)
    bad = cli(path, "verify")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert (
        f"batch 0 object {victim.key!r}: consumed {victim.size - 7} bytes but the claim says "
        f"{victim.size}" in bad.stdout
    )

    def legacy(doc: dict[str, Any]) -> None:  # a record written before the field existed
        del doc["bytes_read"]

    _edit_commit_record(rt, 0, legacy)
    assert ledger.commit_record(0) is not None
    again = cli(path, "verify")
    assert again.returncode == 0, again.stdout + again.stderr


def test_verify_deep_catches_deleted_data_file(tmp_path: Path, cli: Cli) -> None:
    path, rt, _lander = _local(tmp_path)
    ok = cli(path, "verify", "--deep", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (report,) = json.loads(ok.stdout)
    assert report["ok"] and report["checked"] == 3 and report["records"] == 12

    table = rt.tables.load("lake.events")
    tasks = list(table.scan().plan_files())
    victim = tasks[0].file.file_path
    keys_in_victim = set(
        table.scan(row_filter=f"_batch_id == {_batch_of(rt, victim)}")
        .to_arrow()
        .column("_source_key")
        .to_pylist()
    )
    os.unlink(victim.removeprefix("file://"))

    bad = cli(path, "verify", "--deep", "--from", DAY, "--to", DAY)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"data file {victim} cannot be read" in bad.stdout
    for key in keys_in_victim:
        assert f"object {key!r}" in bad.stdout and "but 0 rows + 0 quarantined" in bad.stdout
    assert "verify --deep events: 3/3 objects" in bad.stderr


def _batch_of(rt: Runtime, data_file: str) -> int:
    """The batch whose rows a data file holds (each batch stages its own files)."""
    import pyarrow.parquet as pq

    ids = pq.read_table(data_file.removeprefix("file://"), columns=["_batch_id"])
    (batch_id,) = set(ids.column("_batch_id").to_pylist())
    return int(batch_id)


def test_verify_deep_catches_short_read(tmp_path: Path, cli: Cli) -> None:
    """What a short read leaves behind: fewer rows, and a commit record that agrees with
    them. Plain ``verify`` checks the table against that record and passes; ``--deep``
    recounts the object and names it."""
    path, rt, _lander = _local(tmp_path, records=6)
    claim = rt.ledger(rt.source("events")).get_claim(0)
    victim = claim.objects[0].key
    table = rt.tables.load("lake.events")
    table.delete(delete_filter=f"_source_key == '{victim}' and _source_row >= 2")
    assert table_ids(rt, "events").total() == 3 * 6 - 4

    def agree(doc: dict[str, Any]) -> None:
        doc["record_counts"][victim] -= 4
        doc["rows"] -= 4

    _edit_commit_record(rt, 0, agree)
    assert verify(rt, "events").ok  # the short read is invisible to the plain audit

    bad = cli(path, "verify", "--deep")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"batch 0 object {victim!r}" in bad.stdout
    assert "6 records in the object but 2 rows + 0 quarantined" in bad.stdout
    report = verify_deep(rt, rt.source("events"))
    assert not report.ok and len(report.violations) == 1
    assert report.checked == 3 and report.records == 18
    sampled = verify_deep(rt, rt.source("events"), sample=1)
    assert sampled.objects == 1 and sampled.checked == 1

    # the same audit as the on-demand Dagster asset check
    cfg = load_config(str(path))
    defs = build_definitions(cfg)
    check = dg.AssetCheckKey(asset_key(cfg.source("events")), "deep_verify")
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={check}
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, resources=defs.resources)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "deep_verify" and evaluation.passed is False
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert meta["days"] == "all" and meta["checked"] == 3
    assert f"batch 0 object {victim!r}" in str(meta["violations"])


def test_open_delivers_exactly_the_claimed_size(store: ObjectStore) -> None:
    """Both backends: given the claim's size, the stream yields exactly those bytes, and an
    object longer or shorter than its claim raises ``SizeMismatch`` instead of ending early."""
    data = b"0123456789" * 10
    store.put("k/a.jsonl", data)
    info = store.head("k/a.jsonl")
    with store.open("k/a.jsonl", etag=info.etag, size=len(data)) as f:
        assert f.read() == data
    wrong = [0, 99] if isinstance(store, S3Store) else [0, 99, 101]  # S3: a short body is a
    for size in wrong:  # retried connection error (see test_lying_endpoint_never_commits_short)
        with (
            pytest.raises(SizeMismatch, match="the claim says"),
            store.open("k/a.jsonl", etag=info.etag, size=size) as f,
        ):
            f.read()


class _TruncatingStore(LocalStore):
    """A store whose reads stop half-way without an error, whatever size it is given (a
    backend that does not check lengths itself)."""

    def open(self, key: str, etag: str | None = None, size: int | None = None) -> BinaryIO:
        with super().open(key, etag) as f:
            data = f.read()
        return io.BytesIO(data[: len(data) // 2])


def test_reader_counts_bytes_itself(tmp_path: Path) -> None:
    """The reader's own count catches a short stream the store did not flag; a whole
    object (compressed, counted as stored) is metered at exactly its size."""
    lander = Lander(LocalStore(tmp_path / "landing"))
    lander.land("a.jsonl", n=40)
    raw, _ids = lander.body(40)
    (tmp_path / "landing" / "b.jsonl.gz").write_bytes(gzip.compress(raw))
    fmt = FormatOptions("jsonl")

    honest = LocalStore(tmp_path / "landing")
    info = honest.head("b.jsonl.gz")
    meter = ReadMeter()
    chunks = list(read_object(honest, info.key, info.etag, fmt, None, info.size, meter))
    assert count_accounting(chunks).rows == 40
    assert meter.complete and meter.consumed == info.size

    short = _TruncatingStore(tmp_path / "landing")
    for key in ("a.jsonl", "b.jsonl.gz"):
        info = short.head(key)
        meter = ReadMeter()
        with pytest.raises(SizeMismatch, match=f"read {info.size // 2} bytes but the claim"):
            list(read_object(short, key, info.etag, fmt, None, info.size, meter))
        assert not meter.complete and meter.consumed == info.size // 2


def test_deep_counter_agrees_with_the_reader_on_awkward_objects(tmp_path: Path) -> None:
    """The independent counter and the reader define a record the same way: blank lines,
    a BOM, gzip, a malformed line (quarantined, still a record) for JSON lines; a header, a
    quoted field across lines, a blank line and a short row for CSV; Parquet rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "landing"
    for name in ("events", "rows", "cols"):
        (root / name / DAY).mkdir(parents=True)
    jsonl = b'\xef\xbb\xbf{"id": 1, "v": "a"}\n\n  \n{"id": 2, "v": "b"}\nnot json\n{"id": 3}'
    (root / "events" / DAY / "a.jsonl.gz").write_bytes(gzip.compress(jsonl))
    (root / "events" / DAY / "b.jsonl").write_bytes(b"\n\n")
    csv_text = b'id,v\r\n1,"two\nlines"\r\n\r\n2,x\r\n3\r\n4,"a ""quote"""\r\n'
    (root / "rows" / DAY / "a.csv").write_bytes(csv_text)
    pq.write_table(
        pa.table({"id": list(range(7)), "v": ["x"] * 7}), root / "cols" / DAY / "a.parquet"
    )
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "warehouse"),
        sources={
            "events": source_spec("events", str(root / "events")),
            "rows": source_spec("rows", str(root / "rows"), format="csv", table="lake.rows"),
            "cols": source_spec("cols", str(root / "cols"), format="parquet", table="lake.cols"),
        },
    )
    rt = Runtime.from_config(str(path))
    expected = {"events": 4, "rows": 4, "cols": 7}
    for name, records in expected.items():
        source = rt.source(name)
        report = ingest_source(rt, source)
        assert sum(b.rows + b.quarantined for b in report.batches) == records, name
        deep = verify_deep(rt, source)
        assert deep.ok, (name, deep.violations)
        assert deep.records == records and deep.not_recounted == 0, name
    assert rt.tables.load("lake.events__quarantine").scan().to_arrow().num_rows == 1
