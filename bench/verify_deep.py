"""The cost of the deep audit: ``python -m bench.verify_deep [--scale 1] [--rounds 3]
[--no-append]``.

D2 (``bench.generate``: 1,000,000 JSON-lines rows as 100 objects at scale 1) is ingested once
into a fresh local warehouse by the real ``lockgate ingest``; then each round runs, each in a
fresh child process, ``lockgate verify`` (the table audit: lineage columns against the
ledger) and ``lockgate verify --deep --json`` (every committed object re-read from the
landing and recounted, compared with the tables per object). Both must exit 0 (the deep
report must say every object was re-read). Reported: medians of wall time (spawn to exit)
and CPU seconds, and the deep audit's throughput in MB and rows of landing per second.
Appended to BENCHMARKS.md unless ``--no-append``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.common import (
    append_section,
    command_line,
    fmt_mb,
    fmt_s,
    lockgate_exe,
    lockgate_ingest,
    markdown_table,
    median,
    run_measured,
    write_config,
)
from bench.generate import DECLARED, ensure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-append", action="store_true", help="print, do not append")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    ds = ensure(args.scale, ("d2",))
    objects, size, rows = len(ds.files("d2")), ds.bytes("d2"), ds.rows("d2")
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-deep-") as tmp:
        config = write_config(Path(tmp), ds.path("d2"), "jsonl", DECLARED)
        ingest = lockgate_ingest(config)
        if ingest.rows != rows:
            raise RuntimeError(f"ingest committed {ingest.rows} rows of {rows}")
        plain_wall, plain_cpu, deep_wall, deep_cpu = [], [], [], []
        for _ in range(args.rounds):
            plain = run_measured([lockgate_exe(), "--config", str(config), "verify"]).check()
            plain_wall.append(plain.wall_s)
            plain_cpu.append(plain.cpu_s)
            deep = run_measured(
                [lockgate_exe(), "--config", str(config), "verify", "--deep", "--json"]
            ).check()
            (report,) = json.loads(deep.stdout)
            if not report["ok"] or report["checked"] != objects or report["records"] != rows:
                raise RuntimeError(f"verify --deep did not re-read all of D2: {report}")
            deep_wall.append(deep.wall_s)
            deep_cpu.append(deep.cpu_s)
    wall = median(deep_wall)
    body = markdown_table(
        [
            "data",
            "objects",
            "MB",
            "rows",
            "verify wall s (CPU s)",
            "verify --deep wall s (CPU s)",
            "deep MB/s",
            "deep rows/s",
        ],
        [
            [
                "D2",
                objects,
                fmt_mb(size),
                rows,
                f"{fmt_s(median(plain_wall))} ({fmt_s(median(plain_cpu))})",
                f"{fmt_s(wall)} ({fmt_s(median(deep_cpu))})",
                f"{size / 1e6 / wall:.1f}",
                f"{rows / wall:,.0f}",
            ]
        ],
    )
    notes = [
        f"Scale {args.scale:g}, {args.rounds} rounds (medians); wall times include process "
        "start-up; ingest once before (not timed here)."
    ]
    if args.no_append:
        print(body)
        for n in notes:
            print(n)
    else:
        append_section("verify --deep on D2", command_line("bench.verify_deep", argv), body, notes)
        print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
