"""Input made to hurt (issue 12, items 6-10): each test is named after its item and reproduces
it; readers run in a child process where the failure was a crash."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lockgate.pipelines.assets import asset_key
from lockgate.pipelines.formats import FormatOptions, VersionNotRead, read_object
from lockgate.resources.config import load_config
from lockgate.resources.ledger import Ledger
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import SKIPPED_LINK, LocalStore, NotRegularFile
from lockgate.sensors.discovery import (
    SKIPPED_NOT_UTF8,
    DiscoveryRule,
    discover,
    rule_for_source,
)
from lockgate.sensors.factory import evaluate_tick
from tests.platform_helpers import write_config
from tests.reader_child import run_reader

TODAY = date(2026, 3, 10)
REPO = Path(__file__).resolve().parents[2]

DEPTH = 100_000


def test_deep_nesting_is_quarantined_not_crash(tmp_path: Path) -> None:
    deep_object = b'{"a": ' * DEPTH + b"1" + b"}" * DEPTH
    deep_array = b'{"id": 9, "name": ' + b"[" * DEPTH + b"]" * DEPTH + b"}"
    brackets_in_text = json.dumps({"id": 3, "name": "[" * 500 + "{" * 500}).encode()
    lines = [
        deep_object,  # first in the object: pyarrow's reader crashed on it (SIGSEGV)
        b'{"id": 1, "name": "a"}',
        deep_array,
        brackets_in_text,  # brackets inside strings are not nesting: a row
        b'{"id": 4, "nest": ' + b'{"b": ' * 64 + b"1" + b"}" * 64 + b"}",  # 65 deep
        b'{"id": 5, "nest": ' + b'{"b": ' * 62 + b"1" + b"}" * 62 + b"}",  # 63 deep: a row
    ]
    (tmp_path / "deep.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    for schema in (None, [("id", "int64"), ("name", "string")]):
        result = run_reader(tmp_path, "jsonl", ["deep.jsonl"], schema=schema, timeout=120)
        assert result.returncode == 0, result.stderr
        (obj,) = result.objects
        assert obj["rows"] == 3
        assert obj["quarantined"] == 3
        assert obj["indices_ok"]
        assert not obj["unreadable"]
        assert all("deeper than max_nesting_depth (64)" in r for r in obj["reasons"])


def _ledger(root: Path) -> Ledger:
    spec = {"landing": "x", "format": "jsonl", "table": "db.t"}
    return Ledger.open(LocalStore(root / "ledger"), "src", spec)


def test_non_utf8_name_does_not_block_discovery(tmp_path: Path) -> None:
    day = tmp_path / "landing" / "2026-03-01"
    day.mkdir(parents=True)
    for name in [b"a.jsonl", b"b\xff\xfe.jsonl", b"c.jsonl", b"d\xe9.jsonl"]:
        with open(os.fsencode(day) + b"/" + name, "wb") as f:
            f.write(b'{"id": 1}\n')
    ledger = _ledger(tmp_path)
    landing = LocalStore(tmp_path / "landing")
    result = discover(landing, ledger, DiscoveryRule(), full_listing=True, today=TODAY)
    assert [o.key for c in result.claims for o in c.objects] == [
        "2026-03-01/a.jsonl",
        "2026-03-01/c.jsonl",
    ]
    assert result.skipped_unsafe == {SKIPPED_NOT_UTF8: 2}
    assert all(e.isascii() for e in result.skipped_examples)
    assert len(result.skipped_examples) == 2
    # the next tick is not blocked either, and claims nothing twice
    again = discover(landing, ledger, DiscoveryRule(), full_listing=True, today=TODAY)
    assert again.claims == []
    assert again.skipped_unsafe == {SKIPPED_NOT_UTF8: 2}
    assert again.skipped_claimed == 2


def test_symlink_outside_landing_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.jsonl"
    secret.parent.mkdir()
    secret.write_bytes(b'{"id": 666, "name": "secret"}\n')
    day = tmp_path / "landing" / "2026-03-01"
    day.mkdir(parents=True)
    (day / "good.jsonl").write_bytes(b'{"id": 1}\n')
    (day / "link.jsonl").symlink_to(secret)
    (day / "linked_dir").symlink_to(secret.parent, target_is_directory=True)
    landing = LocalStore(tmp_path / "landing")
    result = discover(landing, _ledger(tmp_path), DiscoveryRule(), full_listing=True, today=TODAY)
    assert [o.key for c in result.claims for o in c.objects] == ["2026-03-01/good.jsonl"]
    assert result.skipped_unsafe == {SKIPPED_LINK: 2}
    # reading refuses it, whatever path reaches it: quarantined whole, none of its lines copied
    for key in ("2026-03-01/link.jsonl", "2026-03-01/linked_dir/secret.jsonl"):
        with pytest.raises(NotRegularFile):
            landing.open(key)
        with pytest.raises(NotRegularFile):
            landing.head(key)
        # a claimed file replaced by a link is a version not read: no row, nothing of its
        # target copied anywhere (the batch records it as changed before read)
        with pytest.raises(VersionNotRead, match="symbolic link") as err:
            list(read_object(landing, key, "any-etag", FormatOptions("jsonl"), None))
        assert "secret" not in str(err.value).replace("secret.jsonl", "")


_STAGE_CHILD = """
import json, resource, sys
from pathlib import Path
from lockgate.pipelines.ingest import ingest_source
from lockgate.pipelines.verify import verify_source
from lockgate.resources.config import load_config
from lockgate.resources.runtime import Runtime, quarantine_table
from tests.platform_helpers import write_config

root = Path(sys.argv[1])
spec = {
    "landing": str(root / "landing"),
    "format": "jsonl",
    "table": "lake.bad",
    "partition": {"pattern": r"(\\d{4}-\\d{2}-\\d{2})", "start": "2026-01-01"},
    "min_age": 0,
}
path = write_config(root / "lockgate.yaml", warehouse=str(root / "wh"), sources={"bad": spec})
rt = Runtime.from_config(load_config(str(path)))
source = rt.source("bad")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
report = ingest_source(rt, source)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
q = rt.tables.load(quarantine_table(source)).scan(selected_fields=("_source_row",)).to_arrow()
rows = rt.tables.load("lake.bad").scan(selected_fields=("_source_row",)).to_arrow()
print(json.dumps({
    "rows": report.rows, "quarantined": report.quarantined, "q_table": q.num_rows,
    "q_files": len(rt.tables.load(quarantine_table(source)).inspect.files()),
    "rows_table": sorted(rows.column("_source_row").to_pylist()),
    "verify": verify_source(rt, source).ok, "before_mb": before, "peak_mb": peak,
}))
"""

BAD_LINES = 1_000_000  # a 2 MB file: one two-byte bad line after another


def test_quarantine_streams_with_bounded_memory(tmp_path: Path) -> None:
    day = tmp_path / "landing" / "2026-03-01"
    day.mkdir(parents=True)
    (day / "bad.jsonl").write_bytes(b'{"id": 1}\n' + b"x\n" * BAD_LINES + b'{"id": 2}\n')
    proc = subprocess.run(
        [sys.executable, "-c", _STAGE_CHILD, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rows"] == 2
    assert out["rows_table"] == [0, BAD_LINES + 1]
    assert out["quarantined"] == out["q_table"] == BAD_LINES
    assert out["verify"]
    # before the fix the quarantine entries were held until commit: ~700 MB for this file
    assert out["peak_mb"] - out["before_mb"] < 250, out


def parquet_bomb(rows: int, value_bytes: int) -> bytes:
    """A tiny Parquet file whose ``name`` column decodes to ``rows * value_bytes`` bytes: one
    dictionary value, referenced by every row (run-length encoded indices)."""
    values = pa.DictionaryArray.from_arrays(
        pa.array([0] * rows, pa.int32()), pa.array(["x" * value_bytes])
    )
    table = pa.table({"id": pa.array(range(rows), pa.int64()), "name": values})
    buf = io.BytesIO()
    # no stored Arrow schema: a reader is not told to keep the column dictionary-encoded
    pq.write_table(table, buf, compression="zstd", store_schema=False)
    return buf.getvalue()


def test_parquet_bomb_is_bounded(tmp_path: Path) -> None:
    bomb = parquet_bomb(1024, 1 << 20)  # ~1 GiB decoded
    assert len(bomb) < 4096
    (tmp_path / "bomb.parquet").write_bytes(bomb)
    (tmp_path / "fits.parquet").write_bytes(parquet_bomb(192, 1 << 20))  # 192 MiB decoded
    limit = 512 * 1024
    small = run_reader(tmp_path, "parquet", ["bomb.parquet"], max_record_bytes=limit)
    assert small.returncode == 0, small.stderr
    (obj,) = small.objects
    assert (obj["rows"], obj["quarantined"], obj["unreadable"]) == (0, 1024, False)
    assert obj["indices_ok"]
    assert all(
        r.startswith("Parquet row of 1048588 bytes (decoded) exceeds max_record_bytes (524288)")
        for r in obj["reasons"]
    )
    # rows within max_record_bytes are decoded a few at a time, not all at once
    fits = run_reader(tmp_path, "parquet", ["fits.parquet"])
    assert fits.returncode == 0, fits.stderr
    (obj,) = fits.objects
    assert (obj["rows"], obj["quarantined"]) == (192, 0)
    assert obj["indices_ok"]
    for result in (small, fits):
        assert 0 < result.peak_rss_mb < 400, result.peak_rss_mb


def test_unclaimable_objects_are_reported_once_per_tick(tmp_path: Path) -> None:
    day = tmp_path / "landing" / "2026-03-01"
    day.mkdir(parents=True)
    (day / "good.jsonl").write_bytes(b'{"id": 1}\n')
    with open(os.fsencode(day) + b"/bad\xff.jsonl", "wb") as f:
        f.write(b'{"id": 2}\n')
    (day / "link.jsonl").symlink_to(day / "good.jsonl")
    spec = {
        "landing": str(tmp_path / "landing"),
        "format": "jsonl",
        "table": "lake.t",
        "partition": {"pattern": r"(\d{4}-\d{2}-\d{2})", "start": "2026-01-01"},
        "min_age": 0,
    }
    path = write_config(
        tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources={"s": spec}
    )
    rt = Runtime.from_config(load_config(str(path)))
    source = rt.source("s")
    lines: list[str] = []
    with dg.instance_for_test() as instance:
        for _ in range(2):
            lines.clear()
            ctx = dg.build_sensor_context(instance=instance)
            result = evaluate_tick(
                ctx, rt, source, rule_for_source(source), asset_key(source), 5, log=lines.append
            )
            assert [rr.run_key for rr in result.run_requests] == ["s:0"]  # not blocked
            warnings = [line for line in lines if "can never be claimed" in line]
            assert warnings == [
                f"2 objects under {tmp_path / 'landing'} can never be claimed, skipped: "
                f"1 {SKIPPED_NOT_UTF8}, 1 {SKIPPED_LINK} (e.g. '2026-03-01/bad\\udcff.jsonl')"
            ]
