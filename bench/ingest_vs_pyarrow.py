"""Core ingest vs the physical limit: ``python -m bench.ingest_vs_pyarrow [--scale 1]
[--rounds 3] [--datasets d1 d2 d4] [--profile]``.

Both sides in one invocation, alternating (the order flips every round), each in a fresh
child process reading the same local files:

* **lockgate**: the real ``lockgate --config <cfg> ingest`` console script, a fresh local
  warehouse and ledger per round, a declared schema (``bench.generate.DECLARED``).
* **raw pyarrow**: ``pyarrow.json.read_json`` (or ``pyarrow.csv.read_csv``) with the explicit
  schema + ``pyarrow.parquet`` writer (zstd), one Parquet file, nothing else.

Reported: medians of wall time (spawn to exit, start-up included) and of in-process time
(lockgate: the batch durations it logs; raw: read+write), throughput in MB/s of input, and the
ratio lockgate/raw throughput (goal >= 0.75). ``--profile`` also runs lockgate once under
cProfile on the first data set and prints where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from bench.common import (
    ROOT,
    append_section,
    command_line,
    fmt_s,
    lockgate_ingest,
    markdown_table,
    median,
    run_measured,
    write_config,
)
from bench.generate import DECLARED, Datasets, ensure

GOAL = 0.75
#: The goal on the small-objects set (D3).
GOAL_SMALL = 0.5
FORMATS = {"d0": "jsonl", "d1": "jsonl", "d2": "jsonl", "d3": "jsonl", "d4": "csv"}
PROFILE_DIR = ROOT / "bench" / ".profiles"


@dataclass
class Side:
    wall: list[float] = field(default_factory=list)
    inner: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


@dataclass
class Comparison:
    dataset: str
    objects: int
    bytes: int
    rows: int
    lockgate: Side = field(default_factory=Side)
    raw: Side = field(default_factory=Side)

    def ratio(self, inner: bool = False) -> float:
        lg = median(self.lockgate.inner if inner else self.lockgate.wall)
        rw = median(self.raw.inner if inner else self.raw.wall)
        return rw / lg if lg > 0 else float("nan")


#: The variable that chooses Arrow's allocator; the raw side runs without it.
POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
#: ``DECLARED``'s types as Arrow types, written out: the raw side imports nothing of Lockgate
#: (importing its config module costs ~0.3 s of start-up, which would be charged to raw
#: pyarrow). ``tests/e2e/test_bench_smoke.py`` pins them to Lockgate's ``parse_schema_type``.
RAW_TYPES: dict[str, pa.DataType] = {
    "long": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
}


def arrow_schema(full: bool = False) -> pa.Schema:
    fields = [pa.field(n, RAW_TYPES[t]) for n, t in DECLARED]
    if full:  # the nested columns too (what an inferred lockgate source stores)
        fields += [
            pa.field("tags", pa.list_(pa.string())),
            pa.field("device", pa.struct([("os", pa.string()), ("version", pa.string())])),
        ]
    return pa.schema(fields)


def raw_ingest(
    folder: Path, fmt: str, out: Path, full: bool = False, concat: bool = False
) -> tuple[int, float]:
    """Read every object of ``folder`` with the explicit schema (one ``read_json`` /
    ``read_csv`` per object) and write one zstd Parquet file; returns (rows, seconds).
    ``concat`` (the small-objects set): the tables are concatenated and written at once."""
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    schema = arrow_schema(full and fmt != "csv")
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    t0 = time.perf_counter()
    rows = 0
    writer = pq.ParquetWriter(out, schema, compression="zstd")
    tables: list[pa.Table] = []
    try:
        for f in files:
            if fmt == "csv":
                table = pa_csv.read_csv(
                    f,
                    convert_options=pa_csv.ConvertOptions(column_types=schema),
                )
            else:
                table = pa_json.read_json(
                    f,
                    parse_options=pa_json.ParseOptions(
                        explicit_schema=schema,
                        unexpected_field_behavior="ignore",
                    ),
                )
            if concat:
                tables.append(table)
            else:
                writer.write_table(table)
            rows += table.num_rows
        if concat:
            writer.write_table(pa.concat_tables(tables))
    finally:
        writer.close()
    return rows, time.perf_counter() - t0


def _run_raw(
    folder: Path, fmt: str, work: Path, mode: str, concat: bool = False
) -> tuple[float, float, int, int, float]:
    out = work / "raw.parquet"
    m = run_measured(
        [
            sys.executable,
            "-m",
            "bench.ingest_vs_pyarrow",
            "raw",
            str(folder),
            fmt,
            str(out),
            mode,
            *(["concat"] if concat else []),
        ],
        env={POOL_VARIABLE: None},  # pyarrow's own default (``import lockgate`` sets jemalloc)
        cwd=ROOT,
    ).check()
    match = re.search(r"RAW rows=(\d+) seconds=([\d.]+) pool=(\w+)", m.stdout)
    assert match, m.stdout
    return m.wall_s, float(match.group(2)), int(match.group(1)), m.peak_rss_bytes, m.cpu_s


def _run_lockgate(
    folder: Path, fmt: str, work: Path, mode: str
) -> tuple[float, float, int, int, float]:
    cfg = write_config(work / "lg", folder, fmt, DECLARED if mode == "declared" else None)
    run = lockgate_ingest(cfg)
    if run.quarantined:
        raise RuntimeError(f"lockgate quarantined {run.quarantined} records of {folder}")
    m = run.measured
    return m.wall_s, run.batch_seconds, run.rows, m.peak_rss_bytes, m.cpu_s


def compare(ds: Datasets, name: str, rounds: int, mode: str = "declared") -> Comparison:
    folder = ds.path(name)
    fmt = FORMATS[name]
    label = name.upper() if mode == "declared" else f"{name.upper()} inferred"
    c = Comparison(label, len(ds.files(name)), ds.bytes(name), ds.rows(name))
    for r in range(rounds):
        order = ("lockgate", "raw") if r % 2 == 0 else ("raw", "lockgate")
        for side in order:
            with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as d:
                work = Path(d)
                if side == "raw":
                    wall, inner, rows, rss, cpu = _run_raw(folder, fmt, work, mode)
                    target = c.raw
                else:
                    wall, inner, rows, rss, cpu = _run_lockgate(folder, fmt, work, mode)
                    target = c.lockgate
                if rows != c.rows:
                    raise RuntimeError(f"{side} on {name}: {rows} rows, expected {c.rows}")
                target.wall.append(wall)
                target.inner.append(inner)
                target.peak_rss.append(rss)
                target.cpu.append(cpu)
                print(
                    f"  {name} round {r + 1} {side}: wall {wall:.2f}s, in-process {inner:.2f}s, "
                    f"CPU {cpu:.2f}s",
                    file=sys.stderr,
                    flush=True,
                )
    return c


def table(results: list[Comparison]) -> str:
    rows = []
    for c in results:
        mb = c.bytes / 1e6
        lg_w, rw_w = median(c.lockgate.wall), median(c.raw.wall)
        lg_i, rw_i = median(c.lockgate.inner), median(c.raw.inner)
        ratio = c.ratio()
        goal = GOAL_SMALL if c.dataset.startswith("D3") else GOAL
        rows.append(
            [
                c.dataset,
                c.objects,
                f"{mb:.0f}",
                c.rows,
                fmt_s(lg_w),
                fmt_s(rw_w),
                f"{mb / lg_w:.1f}",
                f"{mb / rw_w:.1f}",
                f"**{ratio:.2f}** ({'ok' if ratio >= goal else 'MISSED'})",
                f"{fmt_s(lg_i)} / {fmt_s(rw_i)} = {c.ratio(inner=True):.2f}",
                f"{median(c.lockgate.cpu):.1f} / {median(c.raw.cpu):.1f}",
                f"{max(c.lockgate.peak_rss) / 2**20:.0f} / {max(c.raw.peak_rss) / 2**20:.0f}",
            ]
        )
    return markdown_table(
        [
            "data",
            "objects",
            "MB",
            "rows",
            "lockgate wall (s)",
            "raw wall (s)",
            "lockgate MB/s",
            "raw MB/s",
            f"throughput ratio (goal >= {GOAL}; D3 >= {GOAL_SMALL})",
            "in-process s: lockgate / raw = ratio",
            "CPU s (user+sys) lockgate / raw",
            "peak RSS MiB lockgate / raw",
        ],
        rows,
    )


def profile(ds: Datasets, name: str, top: int = 30) -> str:
    """cProfile of one ``lockgate ingest`` of ``name`` (in this process, via the CLI entry
    point); returns the top functions by cumulative and by own time."""
    from lockgate.pipelines.cli import main as cli_main

    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as d:
        cfg = write_config(Path(d) / "lg", ds.path(name), FORMATS[name], DECLARED)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        rc = cli_main(["--config", str(cfg), "ingest"])
        prof.disable()
        total = time.perf_counter() - t0
    if rc:
        raise RuntimeError(f"lockgate ingest exited {rc} under the profiler")
    out_file = PROFILE_DIR / f"ingest-{name}.prof"
    prof.dump_stats(out_file)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return f"profile of lockgate ingest {name} ({total:.2f}s under cProfile; {out_file})\n" + (
        buf.getvalue()
    )


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list and args_list[0] == "raw":
        folder, fmt, out, mode = args_list[1:5]
        concat = args_list[5:6] == ["concat"]
        rows, seconds = raw_ingest(
            Path(folder), fmt, Path(out), full=mode == "inferred", concat=concat
        )
        pool = pa.default_memory_pool().backend_name
        print(f"RAW rows={rows} seconds={seconds:.4f} pool={pool}", flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--datasets", nargs="*", default=["d1", "d2", "d4"])
    parser.add_argument(
        "--schema",
        choices=["declared", "inferred", "both"],
        default="declared",
        help="lockgate source with the declared 8 columns (undeclared tags/device are rescued "
        "into _rescued_data), or inferred (all 10 columns; raw side then reads them too)",
    )
    parser.add_argument("--profile", action="store_true", help="also cProfile lockgate once")
    parser.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args(args_list)
    names = [n.lower() for n in args.datasets]
    ds = ensure(args.scale, tuple(names))
    modes = ["declared", "inferred"] if args.schema == "both" else [args.schema]
    results = [compare(ds, n, args.rounds, m) for m in modes for n in names]
    out = table(results)
    print(out)
    notes = [
        f"Rounds: {args.rounds} per side, alternating order; medians. Scale {args.scale:g}.",
        "Wall = spawn to exit of a fresh process (lockgate: console script, config load, "
        "fresh warehouse + ledger, discovery, claim, read, stage, commit, commit record; raw: "
        "interpreter + pyarrow import, read_json/read_csv with the explicit schema, one zstd "
        "Parquet file). Declared rows: lockgate's source declares the 8 scalar columns "
        "(declared schemas are scalar-only), so the undeclared `tags`/`device` of every JSON "
        "record go to `_rescued_data`; raw reads the 8 columns and drops the rest. "
        "'inferred' rows: no declared schema, lockgate stores all 10 columns; raw reads all "
        "10 with the explicit schema.",
    ]
    prof_text = ""
    if args.profile:
        prof_text = profile(ds, names[0])
        print(prof_text)
    if not args.no_append:
        body = out
        if prof_text:
            body += (
                "\n\n<details><summary>cProfile</summary>\n\n```\n"
                + _trim(prof_text)
                + "\n```\n</details>"
            )
        append_section(
            "Core ingest vs raw pyarrow (issue 8.1)",
            command_line("bench.ingest_vs_pyarrow", argv),
            body,
            notes,
        )
    return 0 if all(c.ratio() >= GOAL for c in results) else 1


def _trim(text: str, limit: int = 12000) -> str:
    return text if len(text) <= limit else text[:limit] + "\n..."


if __name__ == "__main__":
    shutil.disk_usage(ROOT)  # fail early if the work tree is gone
    sys.exit(main())
