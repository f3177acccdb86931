"""``make bench``: every Lockgate benchmark of issue 8 in turn (``python -m bench.run_all
[--scale 1] [--only ingest memory discovery dagster spark] [--no-append]``).

Spark runs only when its venv exists (``make bench-spark`` creates it and runs it alone).
Each benchmark prints its table and appends it to BENCHMARKS.md; the exit code is non-zero
when any goal was missed (every benchmark still runs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench import dagster_latency, discovery, ingest_vs_pyarrow, memory, spark_vs_lockgate
from bench.generate import ensure

ALL = ("ingest", "memory", "discovery", "dagster", "spark")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", nargs="*", default=list(ALL), choices=ALL)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
