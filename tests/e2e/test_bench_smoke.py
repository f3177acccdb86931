"""The fast slice of the benchmarks: every bench/ script runs end to end at toy size, so the
scripts do not rot. Nothing here is timed or compared against a goal; the assertions are on
what the scripts produce (tables with the expected rows, the data the generator writes)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from bench import discovery, generate, ingest_vs_pyarrow, memory, run_all, summary, verify_deep
from bench.common import ROOT, run_measured, write_config

TOY = 0.0005  # 500 rows per JSON data set, 10 objects in D3


def test_generate_is_deterministic_and_shaped() -> None:
    ds = generate.ensure(TOY, ("d1", "d2", "d3", "d4"))
    d1 = ds.files("d1")
    assert len(d1) == 1 and ds.rows("d1") == 500
    assert len(ds.files("d2")) == 100
    assert len(ds.files("d3")) == 10
    first = json.loads(d1[0].read_text().splitlines()[0])
    assert set(first) == {n for n, _ in generate.DECLARED} | {"tags", "device"}
    assert isinstance(first["tags"], list) and isinstance(first["device"], dict)
    lines = b"".join(p.read_bytes() for p in ds.files("d2")).splitlines()
    assert lines == d1[0].read_bytes().splitlines()  # D2 holds D1's rows
    header = ds.files("d4")[0].read_text().splitlines()[0]
    assert header.split(",") == generate.CSV_COLUMNS
    d0 = generate.ensure(TOY, ("d0",))
    assert d0.rows("d0") == 1  # D1's first row, whatever the scale
    assert d0.files("d0")[0].read_bytes() == d1[0].read_bytes().splitlines(keepends=True)[0]


def _measured(name: str, lockgate_s: float, raw_s: float) -> summary.Measured:
    c = ingest_vs_pyarrow.Comparison(name, 1, 1000, 1)
    for side, wall in ((c.lockgate, lockgate_s), (c.raw, raw_s)):
        side.wall.append(wall)
        side.cpu.append(wall)
        side.peak_rss.append(2**20)
    return summary.Measured(c, None)


def test_summary_splits_the_gap_into_fixed_cost_and_the_rest() -> None:
    fixed = _measured("D0", 1.30, 0.45)
    cells = summary.fixed_cost_row(fixed).cells()
    assert cells[4] == "+0.85 s" and cells[6] == "context (no goal)"
    note = summary.gap_note(fixed, [("d1", _measured("D1", 4.0, 2.7))])
    assert "D1 +1.30 s" in note and "(D0, one row; Lockgate minus raw) is +0.85 s" in note


def test_raw_pyarrow_side_reads_every_row(tmp_path: Path) -> None:
    ds = generate.ensure(TOY, ("d1", "d4"))
    for name, fmt in (("d1", "jsonl"), ("d4", "csv")):
        rows, _ = ingest_vs_pyarrow.raw_ingest(ds.path(name), fmt, tmp_path / f"{name}.parquet")
        assert rows == 500


def test_raw_side_types_are_lockgates_and_import_no_lockgate() -> None:
    """Raw pyarrow reads with the types Lockgate gives ``DECLARED``, and its process loads no
    Lockgate module (their import would count as raw pyarrow's start-up)."""
    from lockgate.resources.config import parse_schema_type

    assert {t: parse_schema_type(t) for _, t in generate.DECLARED} == {
        t: ingest_vs_pyarrow.RAW_TYPES[t] for _, t in generate.DECLARED
    }
    code = (
        "import sys; from bench import ingest_vs_pyarrow as b; b.arrow_schema(True); "
        "print(sorted(m for m in sys.modules if m.startswith('lockgate')))"
    )
    out = run_measured([sys.executable, "-c", code], cwd=ROOT).check()
    assert out.stdout.strip() == "[]"


def test_raw_side_runs_on_pyarrows_default_allocator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw child does not inherit the allocator ``import lockgate`` chose for the bench's
    own process (nor an operator's): it runs on pyarrow's default."""
    ds = generate.ensure(TOY, ("d1",))
    default = run_measured(
        [sys.executable, "-c", "import pyarrow; print(pyarrow.default_memory_pool().backend_name)"],
        env={ingest_vs_pyarrow.POOL_VARIABLE: None},
    ).check()
    monkeypatch.setenv(ingest_vs_pyarrow.POOL_VARIABLE, "system")
    calls: list[Mapping[str, str | None] | None] = []
    measured = ingest_vs_pyarrow.run_measured

    def spy(argv: list[str], env: Mapping[str, str | None] | None = None, **kw: object) -> object:
        calls.append(env)
        m = measured(argv, env=env, **kw)  # type: ignore[arg-type]
        assert f"pool={default.stdout.strip()}" in m.stdout, m.stdout
        return m

    monkeypatch.setattr(ingest_vs_pyarrow, "run_measured", spy)
    _, _, rows, _, _ = ingest_vs_pyarrow._run_raw(ds.path("d1"), "jsonl", tmp_path, "declared")
    assert rows == 500 and calls == [{ingest_vs_pyarrow.POOL_VARIABLE: None}]


def test_run_measured_reports_lines_and_rss() -> None:
    import sys

    m = run_measured([sys.executable, "-c", "print('READY'); x = bytearray(50_000_000)"])
    assert m.returncode == 0
    assert m.line_time("READY") is not None
    assert m.peak_rss_bytes >= 50_000_000


def test_ingest_vs_pyarrow_toy(capsys: pytest.CaptureFixture[str]) -> None:
    ingest_vs_pyarrow.main(
        ["--scale", str(TOY), "--rounds", "1", "--datasets", "d1", "d4", "--no-append"]
    )
    out = capsys.readouterr().out
    assert "| D1 | 1 |" in out and "| D4 | 1 |" in out


def test_memory_toy(capsys: pytest.CaptureFixture[str]) -> None:
    memory.main(["--scale", str(TOY), "--no-append"])
    out = capsys.readouterr().out
    assert "| D1X2 (one object, 2x D1) |" in out and "| 1000 |" in out


@pytest.mark.s3
def test_discovery_toy(capsys: pytest.CaptureFixture[str]) -> None:
    discovery.main(["--existing", "30", "120", "--new", "15", "--rounds", "1", "--no-append"])
    out = capsys.readouterr().out
    assert "| 30 | 15 | 1000 |" in out and "| 120 | 15 | 1000 |" in out


def test_lockgate_config_loads(tmp_path: Path) -> None:
    from lockgate.resources.config import load_config

    cfg = write_config(tmp_path, tmp_path / "landing", "jsonl", generate.DECLARED)
    source = load_config(str(cfg)).source("bench")
    assert source.schema == generate.DECLARED
    assert source.partition_day("events-2024-03-01-00000.jsonl", None).isoformat() == "2024-03-01"  # type: ignore[arg-type]


@pytest.mark.slow
def test_spark_job_toy(tmp_path: Path) -> None:
    from bench import spark_vs_lockgate

    if not spark_vs_lockgate.DEFAULT_SPARK_PYTHON.exists():
        pytest.skip("no Spark venv (make bench-spark)")
    ds = generate.ensure(TOY, ("d2",))
    _, _, cold, warm = spark_vs_lockgate.run_spark(
        str(spark_vs_lockgate.DEFAULT_SPARK_PYTHON), ds.path("d2"), tmp_path, False, True
    )
    assert cold["rows"] == 500 and cold["output_rows"] == 500 and warm is None


@pytest.mark.slow
def test_dagster_latency_toy(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import dagster_latency

    dagster_latency.main(["--objects", "2", "--gap", "1", "--skip-d3", "--no-append"])
    assert "| 2 | 1 | 30 |" in capsys.readouterr().out


def test_verify_deep_bench_rereads_all_of_d2(capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_deep.main(["--scale", str(TOY), "--rounds", "1", "--no-append"]) == 0
    out = capsys.readouterr().out
    assert "| D2 | 100 | 0.1 | 500 |" in out  # (the script raises unless all 500 rows recount)


def test_compaction_toy(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import compaction

    compaction.main(["--batches", "20", "--days", "2", "--rounds", "1", "--no-append"])
    out = capsys.readouterr().out
    assert "| before compaction | 20 | 10 |" in out
    assert "| after compaction | 2 | 1 |" in out


def test_code_ref_measures_the_exported_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_all --code-ref`` imports the commit's ``lockgate``, not the work tree's editable
    install, with its bytecode and generated-code cache built."""
    monkeypatch.setattr(run_all, "DATA_DIR", tmp_path)
    export = run_all.export_code("HEAD")
    assert export == run_all.export_code("HEAD")  # exported once
    package = export / run_all.PACKAGE_DIR / "lockgate"
    cache = package / "pipelines" / "__pycache__" / f"codecache.{sys.implementation.cache_tag}.bin"
    assert cache.stat().st_size > 0
    proc = subprocess.run(
        [sys.executable, "-c", "import lockgate.pipelines.cli as c; print(c.__file__)"],
        env={"PYTHONPATH": str(export / run_all.PACKAGE_DIR), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(proc.stdout.strip()) == package / "pipelines" / "cli.py"


def test_a_ratio_near_its_goal_is_printed_on_its_own_side() -> None:
    """Two decimals unless they would round a miss into the goal (or a pass out of it)."""
    assert summary.ratio_text(0.7212, 0.75) == "0.72x"
    assert summary.ratio_text(0.7461, 0.75) == "0.746x"
    assert summary.ratio_text(0.7500, 0.75) == "0.75x"
    cells = summary.raw_row(_measured("D1", 3.43, 2.56), 0.75, "throughput").cells()
    assert cells[4] == "0.746x" and cells[6].startswith("**MISSED**")
