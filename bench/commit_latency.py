"""Commit latency stays flat: N sequential batch commits of R rows to one table.

``python -m bench.commit_latency [--commits 1000] [--rows 1000] [--backend local|s3|both]``

Measures ``TableStore.commit_batch`` alone (staging is timed separately), with the default
maintenance (run automatically every ``maintenance_every`` commits). The S3 run starts its
own moto server on 127.0.0.1 at a free port and stops it. Criterion: p50 of commits
[N-10, N) / p50 of commits [10, 20) <= 1.3. Prints a table and appends it to
BENCHMARKS.md with the command, the machine and the date.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import socket
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import date

import pyarrow as pa

from bench.common import append_section
from lockgate.resources.catalog import make_catalog
from lockgate.resources.store import S3Options
from lockgate.resources.tables import TableSettings, TableStore

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("payload", pa.string()),
        ("_batch_id", pa.int64()),
        ("_day", pa.date32()),
    ]
)
RATIO_LIMIT = 1.3


@dataclass
class Result:
    backend: str
    commits: int
    rows: int
    latencies: list[float]
    cpu: list[float]
    stage: list[float]
    versions: int

    def window(self, lo: int, hi: int, xs: list[float] | None = None) -> float:
        return statistics.median((self.latencies if xs is None else xs)[lo:hi]) * 1000

    @property
    def cpu_ratio(self) -> float:
        n = self.commits
        return self.window(max(0, n - 10), n, self.cpu) / self.window(10, 20, self.cpu)

    @property
    def early(self) -> float:
        return self.window(10, 20)

    @property
    def late(self) -> float:
        return self.window(max(0, self.commits - 10), self.commits)

    @property
    def ratio(self) -> float:
        return self.late / self.early

    def p(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def batch(b: int, rows: int) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array(range(b * rows, (b + 1) * rows), pa.int64()),
            pa.array([f"row-{i:08d}" for i in range(rows)]),
            pa.array([b] * rows, pa.int64()),
            pa.array([date(2024, 1, 1 + b % 28)] * rows, pa.date32()),
        ],
        schema=SCHEMA,
    )


def run(
    backend: str,
    warehouse: str,
    opts: S3Options | None,
    commits: int,
    rows: int,
    max_seconds: float | None = None,
) -> Result:
    """Commit ``commits`` batches (fewer if ``max_seconds`` runs out: the result then has
    the number actually made)."""
    deadline = time.monotonic() + max_seconds if max_seconds else None
    ts = TableStore(make_catalog(warehouse, opts), TableSettings())
    ts.ensure_table("bench.events", SCHEMA)
    lat: list[float] = []
    cpu: list[float] = []
    stage: list[float] = []
    for b in range(commits):
        if deadline is not None and time.monotonic() > deadline:
            print(f"  {backend}: stopped by --max-seconds after {b} commits", file=sys.stderr)
            break
        t0 = time.perf_counter()
        staged = ts.stage("bench.events", [batch(b, rows)])
        t1 = time.perf_counter()
        c1 = time.process_time()
        r = ts.commit_batch("bench.events", "bench", b, staged, {"rows": str(rows)})
        t2 = time.perf_counter()
        cpu.append(time.process_time() - c1)
        assert not r.duplicate
        stage.append(t1 - t0)
        lat.append(t2 - t1)
        if (b + 1) % 100 == 0:
            print(
                f"  {backend}: {b + 1}/{commits} commits, last p50 "
                f"{statistics.median(lat[-100:]) * 1000:.1f} ms",
                file=sys.stderr,
                flush=True,
            )
    return Result(backend, len(lat), rows, lat, cpu, stage, ts.current_version("bench.events"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_s3(commits: int, rows: int, max_seconds: float | None) -> Result:
    import boto3
    from moto.server import ThreadedMotoServer

    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(k, v)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        opts = S3Options(endpoint_url=endpoint, region="us-east-1")
        return run("s3 (moto)", f"s3://{bucket}/wh", opts, commits, rows, max_seconds)
    finally:
        server.stop()


def machine() -> str:
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.machine()}, nproc={os.cpu_count()}, memory={mem}, {platform.system()}"


def table(results: list[Result]) -> str:
    lines = [
        "| backend | commits | rows/commit | p50 commits 10-20 (ms) | p50 last 10 (ms) "
        "| ratio | CPU-time ratio | p95 (ms) | max (ms) | p50 stage (ms) | final version |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ok = "ok" if r.ratio <= RATIO_LIMIT else "FAIL"
        lines.append(
            f"| {r.backend} | {r.commits} | {r.rows} | {r.early:.1f} | {r.late:.1f} "
            f"| {r.ratio:.2f} ({ok}) | {r.cpu_ratio:.2f} | {r.p(0.95):.1f} "
            f"| {max(r.latencies) * 1000:.1f} "
            f"| {statistics.median(r.stage) * 1000:.1f} | {r.versions} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--backend", choices=["local", "s3", "both"], default="both")
    parser.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument(
        "--max-seconds", type=float, help="per backend: stop early (reported) after this long"
    )
    args = parser.parse_args(argv)
    if args.commits < 30:
        parser.error("--commits must be >= 30 (windows 10-20 and the last 10)")
    results: list[Result] = []
    if args.backend in ("local", "both"):
        with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as d:
            results.append(run("local", d, None, args.commits, args.rows, args.max_seconds))
    if args.backend in ("s3", "both"):
        results.append(run_s3(args.commits, args.rows, args.max_seconds))
    results = [r for r in results if r.commits >= 30]
    out = table(results)
    print(out)
    if not args.no_append:
        cmd = "python -m bench.commit_latency " + shlex.join(
            argv if argv is not None else sys.argv[1:]
        )
        append_section(
            "Commit latency",
            cmd.strip(),
            out,
            [
                f"Criterion: p50(last 10) / p50(commits 10-20) <= {RATIO_LIMIT}; default "
                "maintenance settings. CPU-time ratio: the same windows in process CPU time "
                "(insensitive to other load on the machine)."
            ],
        )
    return 0 if all(r.ratio <= RATIO_LIMIT for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
