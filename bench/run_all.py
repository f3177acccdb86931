"""``make bench``: every Lockgate benchmark of issue 8 in turn (``python -m bench.run_all
[--scale 1] [--only ingest memory discovery dagster spark] [--no-append]``).

``--code-ref REF`` measures a commit instead of the work tree as it is: ``git archive REF``
is exported under ``bench/.data/code-<sha>/`` and the run re-executes from there (same venv,
same data, same BENCHMARKS.md), so helpers' uncommitted edits are not measured.

Spark runs only when its venv exists (``make bench-spark`` creates it and runs it alone).
Each benchmark prints its table and appends it to BENCHMARKS.md; the exit code is non-zero
when any goal was missed (every benchmark still runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

from bench import dagster_latency, discovery, ingest_vs_pyarrow, memory, spark_vs_lockgate
from bench.common import BENCHMARKS, DATA_DIR, ROOT
from bench.generate import ensure

ALL = ("ingest", "memory", "discovery", "dagster", "spark")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", nargs="*", default=list(ALL), choices=ALL)
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--code-ref", help="measure this commit (exported), not the work tree")
    args = parser.parse_args(argv)
    if args.code_ref:
        _reexec_at(args.code_ref, sys.argv[1:] if argv is None else argv)
    common = ["--no-append"] if args.no_append else []
    scale = ["--scale", f"{args.scale:g}"]
    ensure(args.scale)
    steps: dict[str, Callable[[], int]] = {
        "ingest": lambda: ingest_vs_pyarrow.main([*scale, *common]),
        "memory": lambda: memory.main([*scale, *common]),
        "discovery": lambda: discovery.main(common),
        "dagster": lambda: dagster_latency.main(common),
        "spark": lambda: spark_vs_lockgate.main([*scale, *common]),
    }
    failed = []
    for name in args.only:
        if name == "spark" and not spark_vs_lockgate.DEFAULT_SPARK_PYTHON.exists():
            print("spark: skipped (run `make bench-spark` to create bench/.spark-venv)")
            continue
        print(f"== {name}", flush=True)
        if steps[name]() != 0:
            failed.append(name)
    if failed:
        print(f"goals missed: {', '.join(failed)} (see BENCHMARKS.md)")
    return 1 if failed else 0


def _reexec_at(ref: str, argv: list[str]) -> None:
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    export = DATA_DIR / f"code-{sha}"
    if not (export / ".bench-code-version").exists():
        shutil.rmtree(export, ignore_errors=True)
        export.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(export)], input=archive, check=True)
        (export / ".bench-code-version").write_text(f"git {sha}\n")
    rest = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--code-ref":
            skip = True
        elif not a.startswith("--code-ref="):
            rest.append(a)
    env = {
        **os.environ,
        "PYTHONPATH": str(export),
        "LOCKGATE_BENCH_OUT": str(BENCHMARKS),
        "LOCKGATE_BENCH_DATA": str(DATA_DIR),
        "LOCKGATE_BENCH_SPARK_PYTHON": str(spark_vs_lockgate.DEFAULT_SPARK_PYTHON),
    }
    os.chdir(export)
    os.execve(sys.executable, [sys.executable, "-m", "bench.run_all", *rest], env)


if __name__ == "__main__":
    sys.exit(main())
