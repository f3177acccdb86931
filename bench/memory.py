"""Memory stays bounded: peak RSS of ``lockgate ingest`` does not grow with the input.
``python -m bench.memory [--scale 1] [--rounds 1]``

Runs the real ``lockgate ingest`` console script (fresh local warehouse + ledger, declared
schema, ``max_bytes_per_batch: 64MiB``) on: a tiny object (start-up baseline, D1 at 1/100),
D1 (one ~225 MB object) and D1X2 (D1 twice in one object, ~450 MB). Peak RSS is the child's
``ru_maxrss`` from ``wait4`` (the kernel's high-water mark, no sampling gaps). Criterion:
peak(D1X2) <= 1.2 x peak(D1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    append_section,
    command_line,
    fmt_s,
    lockgate_ingest,
    markdown_table,
    median,
    write_config,
)
from bench.generate import DECLARED, Datasets, ensure

GOAL = 1.2
MAX_BYTES = "64MiB"


@dataclass
class Row:
    label: str
    bytes: int
    rows: int
    rss: list[int] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    @property
    def peak_mib(self) -> float:
        return max(self.rss) / 2**20


def measure(ds: Datasets, name: str, label: str, rounds: int) -> Row:
    row = Row(label, ds.bytes(name), ds.rows(name))
    for r in range(rounds):
        with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as d:
            cfg = write_config(
                Path(d) / "lg",
                ds.path(name),
                "jsonl",
                DECLARED,
                extra_source={"max_bytes_per_batch": MAX_BYTES},
            )
            run = lockgate_ingest(cfg)
        if run.rows != row.rows:
            raise RuntimeError(f"{label}: {run.rows} rows, expected {row.rows}")
        row.rss.append(run.measured.peak_rss_bytes)
        row.wall.append(run.measured.wall_s)
        print(
            f"  {label} round {r + 1}: peak RSS {run.measured.peak_rss_bytes / 2**20:.0f} MiB, "
            f"wall {run.measured.wall_s:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    return row


def table(rows: list[Row]) -> str:
    d1 = next((r for r in rows if r.label.startswith("D1 ")), rows[0])
    out = []
    for r in rows:
        growth = r.peak_mib / d1.peak_mib
        verdict = ""
        if r.label.startswith("D1X2"):
            verdict = f" ({'ok' if growth <= GOAL else 'MISSED'})"
        out.append(
            [
                r.label,
                f"{r.bytes / 1e6:.0f}",
                r.rows,
                f"{r.peak_mib:.0f}",
                f"{growth:.2f}{verdict}",
                fmt_s(median(r.wall)),
            ]
        )
    return markdown_table(
        [
            "input",
            "MB",
            "rows",
            "peak RSS (MiB)",
            f"vs D1 (goal D1X2 <= {GOAL})",
            "wall (s)",
        ],
        out,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args(argv)
    tiny = ensure(args.scale / 100, ("d1",))
    ds = ensure(args.scale, ("d1", "d1x2"))
    rows = [
        measure(tiny, "d1", "baseline (D1 / 100)", args.rounds),
        measure(ds, "d1", "D1 (one object)", args.rounds),
        measure(ds, "d1x2", "D1X2 (one object, 2x D1)", args.rounds),
    ]
    out = table(rows)
    print(out)
    if not args.no_append:
        append_section(
            "Memory: peak RSS of lockgate ingest (issue 8.4)",
            command_line("bench.memory", argv),
            out,
            [
                f"`lockgate ingest`, declared schema, max_bytes_per_batch: {MAX_BYTES}; peak "
                f"RSS = ru_maxrss of the child (wait4). Scale {args.scale:g}, "
                f"{args.rounds} round(s), max over rounds.",
            ],
        )
    growth = rows[2].peak_mib / rows[1].peak_mib
    return 0 if growth <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
