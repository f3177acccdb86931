"""Cost per byte stays flat: ``python -m bench.scale [--scale 1] [--rounds 1] [--no-append]``.

Ingest of 10x D1 -- ten objects, each D1's one object (hard links under other keys, or copies
where links fail), cut into batches of 2 objects (``max_files_per_batch: 2``: 5 batches) --
against D1 (one object, one batch; the same setting changes nothing there), both with the
real ``lockgate ingest`` console script, a fresh local warehouse + ledger and the declared
schema. Goals: wall(10x D1) <= 10.5 x wall(D1) and peak RSS unchanged (<= 1.1 x D1's).
Data under ``bench/.data/s<scale>/d1x10`` (never committed).

In ``bench.summary`` the D1 side is the D1 runs of the summary itself (same command).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    SummaryRow,
    load_average,
    lockgate_ingest,
    median,
    report_rows,
    write_config,
)
from bench.generate import DAY, DECLARED, Datasets, ensure

COPIES = 10
FILES_PER_BATCH = 2
GOAL_TIME = 10.5
GOAL_RSS = 1.1


@dataclass
class Side:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    batches: int = 0


@dataclass
class ScaleResult:
    bytes: int
    rows: int
    d1: Side
    x10: Side

    @property
    def time_ratio(self) -> float:
        return median(self.x10.wall) / median(self.d1.wall)

    @property
    def rss_ratio(self) -> float:
        return max(self.x10.peak_rss) / max(self.d1.peak_rss)


def ensure_x10(ds: Datasets) -> Path:
    """``d1x10`` of ``ds``: D1's object under ``COPIES`` keys (hard links), made if missing."""
    folder = ds.root / "d1x10"
    if (folder / ".done").exists():
        return folder
    (src,) = ds.files("d1")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i in range(COPIES):
        dst = tmp / f"events-{DAY}-{i:05d}.jsonl"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    (tmp / ".done").write_text(json.dumps({"rows": COPIES * ds.rows("d1"), "copies": COPIES}))
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)
    return folder


def _ingest(folder: Path, rows: int, side: Side, label: str) -> None:
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as d:
        cfg = write_config(
            Path(d) / "lg",
            folder,
            "jsonl",
            DECLARED,
            extra_source={"max_files_per_batch": FILES_PER_BATCH},
        )
        run = lockgate_ingest(cfg)
    if run.rows != rows or run.quarantined:
        raise RuntimeError(f"{label}: {run.rows} rows ({run.quarantined} quarantined), not {rows}")
    side.wall.append(run.measured.wall_s)
    side.cpu.append(run.measured.cpu_s)
    side.peak_rss.append(run.measured.peak_rss_bytes)
    side.batches = run.batches
    print(
        f"  {label}: wall {run.measured.wall_s:.2f}s, CPU {run.measured.cpu_s:.2f}s, "
        f"{run.batches} batches, peak RSS {run.measured.peak_rss_bytes / 2**20:.0f} MiB",
        file=sys.stderr,
        flush=True,
    )


def measure(
    ds: Datasets,
    d1_walls: list[float] | None = None,
    d1_rss: list[int] | None = None,
    d1_cpu: list[float] | None = None,
    rounds: int = 1,
) -> ScaleResult:
    """10x D1 ``rounds`` times; D1 from the given runs, else ``rounds`` runs here (alternating)."""
    x10 = ensure_x10(ds)
    rows = ds.rows("d1")
    d1 = Side(list(d1_walls or []), list(d1_cpu or []), list(d1_rss or []), 1)
    big = Side()
    for r in range(rounds):
        order = ("x10",) if d1_walls is not None else ("d1", "x10")[:: 1 if r % 2 == 0 else -1]
        for which in order:
            if which == "d1":
                _ingest(ds.path("d1"), rows, d1, f"D1 round {r + 1}")
            else:
                _ingest(x10, COPIES * rows, big, f"10x D1 round {r + 1}")
    return ScaleResult(COPIES * ds.bytes("d1"), COPIES * rows, d1, big)


def rows(res: ScaleResult) -> list[SummaryRow]:
    d1_w, x_w = median(res.d1.wall), median(res.x10.wall)
    d1_m, x_m = max(res.d1.peak_rss) / 2**20, max(res.x10.peak_rss) / 2**20
    data = f"10x D1 ({COPIES} objects, {res.x10.batches} batches, {res.bytes / 1e6:.0f} MB)"
    note = f"10x D1: {len(res.x10.wall)} round(s)"
    return [
        SummaryRow(
            "cost per byte: time",
            data,
            f"{x_w:.2f} s (CPU {median(res.x10.cpu):.1f} s)",
            f"D1 {d1_w:.2f} s (CPU {median(res.d1.cpu):.1f} s)",
            f"{res.time_ratio:.2f}x",
            f"<= {GOAL_TIME:g}x",
            res.time_ratio <= GOAL_TIME,
            note=note,
        ),
        SummaryRow(
            "cost per byte: peak RSS",
            data,
            f"{x_m:.0f} MiB",
            f"D1 {d1_m:.0f} MiB",
            f"{res.rss_ratio:.2f}x",
            f"<= {GOAL_RSS:g}x",
            res.rss_ratio <= GOAL_RSS,
            f"{x_m:.0f} / {d1_m:.0f}",
            note,
        ),
    ]


def skipped_rows(why: str) -> list[SummaryRow]:
    return [
        SummaryRow(
            "cost per byte: time", "10x D1", "-", "-", "-", f"<= {GOAL_TIME:g}x", None, note=why
        ),
        SummaryRow(
            "cost per byte: peak RSS", "10x D1", "-", "-", "-", f"<= {GOAL_RSS:g}x", None, note=why
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args(argv)
    before = load_average()
    ds = ensure(args.scale, ("d1",))
    res = measure(ds, rounds=args.rounds)
    found = rows(res)
    return report_rows(
        found,
        "Cost per byte: 10x D1 vs D1 (issue 13)",
        "bench.scale",
        argv,
        f"Scale {args.scale:g}, {args.rounds} round(s) each, alternating; medians.",
        before,
        append=not args.no_append,
    )


if __name__ == "__main__":
    sys.exit(main())
