"""Parallel batch runs per table (``dagster.table_concurrency``): throughput and commit races.

``python -m bench.table_concurrency [--runs 1 2 4] [--batches 24] [--objects-per-batch 4]
[--rows 2000] [--append]``

For each N: a fresh local landing, warehouse and ledger; ``batches`` batches of one source
(one table) are claimed by discovery, then N worker processes (what N concurrent Dagster runs
of the table are) take batch ids from one queue and execute them (``execute_batch``: read,
stage, commit, record). Their commits race through the create-only put of the next metadata
version and retry. Workers start (imports done) before the clock does. Reports wall time,
rows/s, batches/s, commit attempts per batch and lost races (attempts beyond the first), and
checks exactly once (``verify``: every row once, every batch committed). ``--append`` adds the
table to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import append_section, command_line, markdown_table, write_config

SOURCE = "bench"


@dataclass
class Outcome:
    runs: int
    batches: int
    rows: int
    wall_s: float
    attempts: list[int]
    batch_s: list[float]
    exactly_once: bool

    @property
    def lost_races(self) -> int:
        return sum(a - 1 for a in self.attempts if a > 0)


def land(landing: Path, batches: int, per_batch: int, rows: int) -> int:
    """``batches * per_batch`` JSONL objects of ``rows`` records over 4 days; total records."""
    n = 0
    for b in range(batches * per_batch):
        day = f"2024-03-0{1 + b % 4}"
        folder = landing / day
        folder.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"id": n + i, "v": f"r{n + i}"}) for i in range(rows)]
        (folder / f"o{b:05d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        n += rows
    return n


def _worker(config: str, queue: Any, ready: Any, go: Any, out: Any) -> None:
    from lockgate.pipelines.batch import execute_batch
    from lockgate.resources.config import load_config
    from lockgate.resources.runtime import Runtime

    rt = Runtime.from_config(load_config(config))
    source = rt.source(SOURCE)
    ledger = rt.ledger(source)
    ready.release()
    go.wait()
    while True:
        batch_id = queue.get()
        if batch_id is None:
            return
        started = time.monotonic()
        outcome = execute_batch(rt, source, ledger, ledger.get_claim(batch_id))
        out.put((batch_id, outcome.commit_attempts, time.monotonic() - started))


def run_once(folder: Path, runs: int, batches: int, per_batch: int, rows: int) -> Outcome:
    from lockgate.pipelines.verify import verify_source
    from lockgate.resources.config import load_config
    from lockgate.resources.runtime import Runtime
    from lockgate.sensors.discovery import discover, rule_for_source

    landing = folder / "landing"
    total = land(landing, batches, per_batch, rows)
    config = write_config(
        folder,
        landing,
        schema=[("id", "long"), ("v", "string")],
        extra_source={"max_files_per_batch": per_batch},
        source=SOURCE,
    )
    rt = Runtime.from_config(load_config(str(config)))
    source = rt.source(SOURCE)
    ledger = rt.ledger(source)
    rule = rule_for_source(source, max_claims_per_tick=batches * 2)
    claimed = discover(rt.landing(source), ledger, rule, full_listing=True).claims
    assert len(claimed) == batches, (len(claimed), batches)

    ctx = multiprocessing.get_context("spawn")
    queue, out = ctx.Queue(), ctx.Queue()
    ready, go = ctx.Semaphore(0), ctx.Event()
    for c in claimed:
        queue.put(c.batch_id)
    for _ in range(runs):
        queue.put(None)
    workers = [
        ctx.Process(target=_worker, args=(str(config), queue, ready, go, out)) for _ in range(runs)
    ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.acquire()
    started = time.monotonic()
    go.set()
    results = [out.get(timeout=3600) for _ in claimed]
    wall = time.monotonic() - started
    for w in workers:
        w.join(timeout=60)
    report = verify_source(rt, source)
    ok = report.ok and report.rows == total and not ledger.pending()
    return Outcome(
        runs=runs,
        batches=batches,
        rows=total,
        wall_s=wall,
        attempts=[a for _, a, _ in results],
        batch_s=[s for _, _, s in results],
        exactly_once=ok,
    )


def table(outcomes: list[Outcome]) -> str:
    base = outcomes[0].wall_s if outcomes else 0.0
    rows = [
        [
            o.runs,
            o.batches,
            f"{o.rows:,}",
            f"{o.wall_s:.1f}",
            f"{o.rows / o.wall_s:,.0f}",
            f"{o.batches / o.wall_s * 60:.1f}",
            f"{base / o.wall_s:.2f}x",
            f"{statistics.median(o.batch_s):.2f}",
            f"{statistics.mean(o.attempts):.2f}",
            max(o.attempts),
            o.lost_races,
            "yes" if o.exactly_once else "NO",
        ]
        for o in outcomes
    ]
    header = [
        "runs per table",
        "batches",
        "rows",
        "wall s",
        "rows/s",
        "batches/min",
        "speed-up",
        "batch p50 s",
        "commit attempts/batch",
        "max attempts",
        "lost races",
        "exactly once",
    ]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.table_concurrency")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--objects-per-batch", type=int, default=4)
    parser.add_argument("--rows", type=int, default=2000, help="records per object")
    parser.add_argument("--append", action="store_true", help="append to BENCHMARKS.md")
    args = parser.parse_args(argv)
    outcomes = []
    for n in args.runs:
        with tempfile.TemporaryDirectory(prefix="lockgate-tc-") as tmp:
            o = run_once(Path(tmp), n, args.batches, args.objects_per_batch, args.rows)
        print(
            f"{n} runs: {o.wall_s:.1f}s, {o.rows / o.wall_s:,.0f} rows/s, "
            f"{o.lost_races} lost races, exactly once: {o.exactly_once}",
            flush=True,
        )
        outcomes.append(o)
    body = table(outcomes)
    print(body)
    if args.append:
        append_section(
            "Parallel batch runs per table (dagster.table_concurrency)",
            command_line("bench.table_concurrency", argv),
            body,
            notes=[
                "N worker processes = N concurrent runs of one table; local warehouse; "
                "commits race through the create-only metadata put and retry."
            ],
        )
    return 0 if all(o.exactly_once for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
