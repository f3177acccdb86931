"""Lockgate vs Spark Structured Streaming: ``python -m bench.spark_vs_lockgate
--spark-python bench/.spark-venv/bin/python [--scale 1] [--rounds 3] [--datasets d1 d2 d3]``
(``make bench-spark`` creates that venv with pyspark 4.x first; it never touches the
project's dependencies).

Both sides in one invocation, alternating (order flips every round), same files, same
declared schema (``bench.generate.DECLARED`` / ``SPARK_DDL``):

* **lockgate**: the real ``lockgate ingest`` console script, fresh local warehouse + ledger.
* **spark**: ``bench/spark_job.py`` -- local[2], JSON file source -> Parquet file sink (zstd)
  with a checkpoint, ``trigger(availableNow=True)``.

Wall time: spawn to the end of the first (cold) query, JVM start-up included (Spark) / spawn
to exit (lockgate). Steady state: rows per second of processing only -- Spark: the same query
re-run on a fresh sink and checkpoint in the warm JVM (sum of ``triggerExecution``), in the
first ``--warm-rounds`` rounds; lockgate: rows over the batch durations it logs. Goal:
lockgate wall <= 1/5 of Spark's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

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
from bench.generate import DECLARED, SPARK_DDL, Datasets, ensure

GOAL = 5.0
SPARK_JOB = ROOT / "bench" / "spark_job.py"
DEFAULT_SPARK_PYTHON = Path(
    os.environ.get("LOCKGATE_BENCH_SPARK_PYTHON", ROOT / "bench" / ".spark-venv" / "bin" / "python")
)


@dataclass
class Result:
    dataset: str
    objects: int
    bytes: int
    rows: int
    lg_wall: list[float] = field(default_factory=list)
    lg_inner: list[float] = field(default_factory=list)
    sp_wall: list[float] = field(default_factory=list)
    sp_session: list[float] = field(default_factory=list)
    sp_query: list[float] = field(default_factory=list)
    sp_warm_trigger: list[float] = field(default_factory=list)
    lg_cpu: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return median(self.sp_wall) / median(self.lg_wall)


def _parse(prefix: str, text: str) -> dict[str, object]:
    for line in text.splitlines():
        if line.startswith(prefix):
            return dict(json.loads(line[len(prefix) :]))
    raise RuntimeError(f"no {prefix.strip()} line in the Spark job's output:\n{text}")


def run_spark(
    spark_python: str, folder: Path, work: Path, warm: bool, verify: bool
) -> tuple[float, float, dict[str, object], dict[str, object] | None]:
    argv = [
        spark_python,
        str(SPARK_JOB),
        "--input",
        str(folder),
        "--schema",
        SPARK_DDL,
        "--output",
        str(work / "out"),
        "--checkpoint",
        str(work / "checkpoint"),
    ]
    if warm:
        argv.append("--warm")
    if verify:
        argv.append("--verify")
    env = {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": spark_python}
    m = run_measured(argv, env=env, cwd=work).check()
    cold_at = m.line_time("COLD_END")
    session_at = m.line_time("SESSION_READY")
    assert cold_at is not None and session_at is not None
    cold = _parse("COLD_DONE ", m.stdout)
    warm_out = _parse("WARM_DONE ", m.stdout) if warm else None
    return cold_at, session_at, cold, warm_out


def compare(ds: Datasets, name: str, rounds: int, spark_python: str, warm_rounds: int) -> Result:
    folder = ds.path(name)
    res = Result(name.upper(), len(ds.files(name)), ds.bytes(name), ds.rows(name))
    for r in range(rounds):
        order = ("lockgate", "spark") if r % 2 == 0 else ("spark", "lockgate")
        for side in order:
            with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as d:
                work = Path(d)
                if side == "lockgate":
                    run = lockgate_ingest(write_config(work / "lg", folder, "jsonl", DECLARED))
                    if run.rows != res.rows or run.quarantined:
                        raise RuntimeError(
                            f"lockgate on {name}: {run.rows} rows, {res.rows} expected"
                        )
                    res.lg_wall.append(run.measured.wall_s)
                    res.lg_inner.append(run.batch_seconds)
                    res.lg_cpu.append(run.measured.cpu_s)
                    msg = f"wall {run.measured.wall_s:.2f}s, in-process {run.batch_seconds:.2f}s"
                else:
                    warm = r < warm_rounds
                    wall, session, cold, warm_out = run_spark(
                        spark_python, folder, work, warm, verify=r == 0
                    )
                    if int(str(cold["rows"])) != res.rows:
                        raise RuntimeError(
                            f"spark on {name}: {cold['rows']} rows, {res.rows} expected"
                        )
                    if "output_rows" in cold and int(str(cold["output_rows"])) != res.rows:
                        raise RuntimeError(f"spark sink on {name}: {cold['output_rows']} rows")
                    res.sp_wall.append(wall)
                    res.sp_session.append(session)
                    res.sp_query.append(float(str(cold["query_s"])))
                    if warm_out is not None:
                        res.sp_warm_trigger.append(int(str(warm_out["trigger_ms"])) / 1000)
                    msg = f"wall {wall:.2f}s (session {session:.2f}s), cold {cold}, warm {warm_out}"
                print(f"  {name} round {r + 1} {side}: {msg}", file=sys.stderr, flush=True)
    return res


def table(results: list[Result]) -> str:
    rows = []
    for c in results:
        lg_rate = c.rows / median(c.lg_inner) if c.lg_inner else float("nan")
        sp_rate = c.rows / median(c.sp_warm_trigger) if c.sp_warm_trigger else float("nan")
        rows.append(
            [
                c.dataset,
                c.objects,
                f"{c.bytes / 1e6:.0f}",
                c.rows,
                f"{fmt_s(median(c.lg_wall))} (CPU {median(c.lg_cpu):.1f})",
                fmt_s(median(c.sp_wall)),
                f"{fmt_s(median(c.sp_session))} / {fmt_s(median(c.sp_query))}",
                f"**{c.ratio:.2f}x** ({'ok' if c.ratio >= GOAL else 'MISSED'})",
                f"{lg_rate:,.0f}",
                f"{sp_rate:,.0f}",
            ]
        )
    return markdown_table(
        [
            "data",
            "objects",
            "MB",
            "rows",
            "lockgate wall (s)",
            "spark wall (s)",
            "spark JVM+session / cold query (s)",
            f"spark wall / lockgate wall (goal >= {GOAL:g}x)",
            "lockgate steady rows/s",
            "spark warm steady rows/s",
        ],
        rows,
    )


def spark_version(spark_python: str) -> str:
    m = run_measured([spark_python, "-c", "import pyspark; print(pyspark.__version__)"])
    return m.stdout.strip() if m.returncode == 0 else "?"


def java_version() -> str:
    m = run_measured(["java", "-version"])
    return m.stderr.splitlines()[0].strip() if m.stderr else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spark-python", default=str(DEFAULT_SPARK_PYTHON))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm-rounds", type=int, default=1)
    parser.add_argument("--datasets", nargs="*", default=["d1", "d2", "d3"])
    parser.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not os.path.exists(args.spark_python):
        parser.error(
            f"{args.spark_python} not found: run `make bench-spark` (creates bench/.spark-venv)"
        )
    args.spark_python = os.path.abspath(args.spark_python)  # Spark runs in a work folder
    names = [n.lower() for n in args.datasets]
    ds = ensure(args.scale, tuple(names))
    results = [compare(ds, n, args.rounds, args.spark_python, args.warm_rounds) for n in names]
    out = table(results)
    print(out)
    if not args.no_append:
        notes = [
            f"Spark: pyspark {spark_version(args.spark_python)}, {java_version()}, local[2], "
            "driver memory 4g, JSON file source (schema given) -> Parquet sink (zstd) + "
            "checkpoint, trigger availableNow. Lockgate: `lockgate ingest`, local warehouse.",
            f"Rounds: {args.rounds} per side, alternating; medians. Scale {args.scale:g}. "
            f"Spark steady state from the warm re-run in the first {args.warm_rounds} round(s).",
        ]
        append_section(
            "Lockgate vs Spark Structured Streaming (issue 8.2)",
            command_line("bench.spark_vs_lockgate", argv),
            out,
            notes,
        )
    return 0 if all(c.ratio >= GOAL for c in results) else 1


if __name__ == "__main__":
    sys.exit(main())
