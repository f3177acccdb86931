"""``make bench``: the ingest summary of issue 13, and on request the other benchmarks
(``python -m bench.run_all [--scale 1] [--quick] [--rounds 3] [--no-spark] [--skip scale s3]
[--only summary memory discovery dagster ...] [--no-append]``).

By default only ``summary`` runs (``bench.summary``: Lockgate vs raw pyarrow on D1, D2, D4 and
the small-objects set D3, vs Spark on D1, D2, D3 with the steady state on D1/D2, peak RSS, the
10x D1 cost-per-byte check and 10,000 small objects on moto): it prints ONE summary table and
writes it as the last section of BENCHMARKS.md. Spark runs when ``bench/.spark-venv`` exists
(``make bench-spark`` creates it); else its rows say "Spark skipped". ``--quick`` = ``--scale
0.05 --rounds 1`` (a smoke run; its figures are not the goal's). Whatever ``--only`` lists, the
summary runs last, so its section stays the last one.

``--code-ref REF`` measures a commit instead of the work tree as it is: ``git archive REF``
is exported under ``bench/.data/code-<sha>/`` and the run re-executes from there (same venv,
same data, same BENCHMARKS.md), so helpers' uncommitted edits are not measured. The export's
``lockgate`` package (``_pkg/lockgate``: the folders as the install maps them, its bytecode
and generated-code cache built as ``make`` builds them) comes first on ``PYTHONPATH``, ahead
of the venv's editable install of the work tree (``export_code``).

Each benchmark prints its table and writes its section of BENCHMARKS.md (replacing the
earlier one); the exit code is non-zero when any goal was missed (every benchmark still runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import (
    dagster_latency,
    discovery,
    ingest_vs_pyarrow,
    memory,
    s3_small,
    scale,
    spark_vs_lockgate,
    summary,
)
from bench.common import BENCHMARKS, DATA_DIR, ROOT

ALL = ("ingest", "memory", "discovery", "dagster", "spark", "scale", "s3", "summary")
QUICK_SCALE = 0.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help=f"--scale {QUICK_SCALE:g} --rounds 1")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per side (default 3)")
    parser.add_argument("--spark-rounds-small", type=int, default=None)
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], choices=summary.SKIPS)
    parser.add_argument("--only", nargs="*", default=["summary"], choices=ALL)
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--code-ref", help="measure this commit (exported), not the work tree")
    args = parser.parse_args(argv)
    if args.code_ref:
        _reexec_at(args.code_ref, sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.scale = QUICK_SCALE
        args.rounds = 1 if args.rounds is None else args.rounds
    common = ["--no-append"] if args.no_append else []
    scale_arg = ["--scale", f"{args.scale:g}"]
    rounds = ["--rounds", str(args.rounds)] if args.rounds is not None else []
    summary_args = [*scale_arg, *rounds, *common]
    if args.spark_rounds_small is not None:
        summary_args += ["--spark-rounds-small", str(args.spark_rounds_small)]
    if args.no_spark:
        summary_args.append("--no-spark")
    if args.skip:
        summary_args += ["--skip", *args.skip]
    steps: dict[str, Callable[[], int]] = {
        "ingest": lambda: ingest_vs_pyarrow.main([*scale_arg, *rounds, *common]),
        "memory": lambda: memory.main([*scale_arg, *common]),
        "discovery": lambda: discovery.main(common),
        "dagster": lambda: dagster_latency.main(common),
        "spark": lambda: spark_vs_lockgate.main([*scale_arg, *rounds, *common]),
        "scale": lambda: scale.main([*scale_arg, *common]),
        "s3": lambda: s3_small.main([*scale_arg, *common]),
        "summary": lambda: summary.main(summary_args),
    }
    order = [n for n in ALL if n in args.only]  # the summary last: its section stays last
    failed = []
    for name in order:
        if name == "spark" and not spark_vs_lockgate.DEFAULT_SPARK_PYTHON.exists():
            print("spark: skipped (run `make bench-spark` to create bench/.spark-venv)")
            continue
        print(f"== {name}", flush=True)
        if steps[name]() != 0:
            failed.append(name)
    if failed:
        print(f"goals missed: {', '.join(failed)} (see BENCHMARKS.md)")
    return 1 if failed else 0


#: Where an exported commit's ``lockgate`` package is assembled (``export_code``).
PACKAGE_DIR = "_pkg"


def export_code(ref: str) -> Path:
    """Commit ``ref`` exported under ``DATA_DIR`` (once per commit) with its ``lockgate``
    package assembled at ``<export>/_pkg/lockgate`` (as pyproject's ``package-dir`` maps the
    folders), byte-compiled and with its generated-code cache; returns the export. With
    ``<export>/_pkg`` first on ``PYTHONPATH`` that package is imported, not the work tree."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    export = DATA_DIR / f"code-{sha}"
    if (export / ".bench-code-version").exists() and (export / PACKAGE_DIR / "lockgate").is_dir():
        return export
    shutil.rmtree(export, ignore_errors=True)
    export.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(export)], input=archive, check=True)
    package = export / PACKAGE_DIR / "lockgate"
    shutil.copytree(export / "pipelines" / "_root", package)
    for folder in ("resources", "sensors", "pipelines"):
        shutil.copytree(export / folder, package / folder, ignore=shutil.ignore_patterns("_root"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    if (package / "pipelines" / "codecache.py").exists():
        env = {**os.environ, "PYTHONPATH": str(export / PACKAGE_DIR)}
        subprocess.run(
            [sys.executable, "-m", "lockgate.pipelines.codecache"],
            env=env,
            cwd=export,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    (export / ".bench-code-version").write_text(f"git {sha}\n")
    return export


def _reexec_at(ref: str, argv: list[str]) -> None:
    export = export_code(ref)
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
        "PYTHONPATH": os.pathsep.join((str(export / PACKAGE_DIR), str(export))),
        "LOCKGATE_BENCH_OUT": str(BENCHMARKS),
        "LOCKGATE_BENCH_DATA": str(DATA_DIR),
        "LOCKGATE_BENCH_SPARK_PYTHON": str(spark_vs_lockgate.DEFAULT_SPARK_PYTHON),
    }
    os.chdir(export)
    os.execve(sys.executable, [sys.executable, "-m", "bench.run_all", *rest], env)


if __name__ == "__main__":
    sys.exit(main())
