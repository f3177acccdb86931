"""The claim state a sensor tick reads does not grow with history.

``python -m bench.ledger_state [--small 10] [--large 10000] [--objects 10] [--lookback 1000]
[--repeat 5] [--backend local|s3|both] [--no-append]``

For each backend (a local folder; a moto S3 server this script starts on 127.0.0.1 at a free
port and stops) two ledgers are built, with ``--small`` and ``--large`` committed batches of
``--objects`` objects each (claims and commit records written by a thread pool; compact snapshots
every 100 batches, as the sensor leaves them). Then, ``--repeat`` times, what a tick reads is
timed on a freshly opened ledger: ``Ledger.open`` (fingerprint check), ``lookback_start``,
``claim_state`` of that window and ``pending()``. Criterion: median(large) / median(small)
<= 2. The full state (every claimed key, for a full listing; O(history) by nature) is shown
for reference. Prints a table and appends it to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import append_section, command_line, markdown_table, median
from lockgate.resources.ledger import (
    COMMITS,
    OFFSETS,
    Claim,
    ClaimedObject,
    CommitRecord,
    Ledger,
    _dumps,
)
from lockgate.resources.ledger import batch_name as name_of
from lockgate.resources.store import LocalStore, ObjectStore, S3Options
from lockgate.resources.stores import open_store

SOURCE = "bench"
FP = {"landing": "s3://landing/bench", "format": "jsonl", "table": "bench.events"}
RATIO_LIMIT = 2.0
DAY0 = datetime(2026, 1, 1, tzinfo=UTC)


def build(store: ObjectStore, batches: int, objects: int, workers: int = 32) -> float:
    """Write ``batches`` committed claims (consecutive ids) and compact every 100; seconds.

    Claims and commit records are written in parallel (straight to their create-only names,
    in the ledger's format); the ledger that compacts is then handed the claims it would have
    read back (``_apply``), so building 10,000 batches on moto costs 2 puts per batch."""
    t0 = time.perf_counter()
    Ledger.open(store, SOURCE, FP)
    sub = store.child(SOURCE)

    def write(b: int) -> Claim:
        day = f"2026-01-{1 + b * 28 // max(batches, 1):02d}"
        objs = tuple(
            ClaimedObject(f"{day}/obj-{b:08d}-{i:03d}.jsonl", uuid.uuid4().hex, 1000, DAY0)
            for i in range(objects)
        )
        claim = Claim(SOURCE, b, day, objs, datetime.now(UTC))
        sub.put_if_absent(OFFSETS + name_of(b), _dumps(claim.to_json()))
        rec = CommitRecord(b, b + 1, b + 1, objects * 10, 0, objects * 1000, objects)
        sub.put_if_absent(COMMITS + name_of(b), _dumps(rec.to_json(SOURCE)))
        return claim

    with ThreadPoolExecutor(max_workers=workers) as ex:
        claims = list(ex.map(write, range(batches)))
    led = Ledger.open(store, SOURCE, FP)
    led._ensure_manifest()
    for c in claims:
        led._apply(c)
    led._committed.update(range(batches))
    led.maybe_compact()  # segments of 100 batches each, one manifest
    return time.perf_counter() - t0


def tick_read(store: ObjectStore, lookback: int) -> tuple[float, int, int]:
    """One tick's state read on a fresh ledger: (seconds, keys in memory, pending)."""
    t0 = time.perf_counter()
    led = Ledger.open(store, SOURCE, FP)
    start = led.lookback_start(lookback)
    state = led.claim_state(start or "")
    pending = led.pending()
    return time.perf_counter() - t0, len(state), len(pending)


def full_read(store: ObjectStore) -> float:
    t0 = time.perf_counter()
    Ledger.open(store, SOURCE, FP).claim_state("")
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_backend(
    name: str, make: Callable[[str], ObjectStore], args: argparse.Namespace
) -> list[list[object]]:
    sizes = (args.small, args.large)
    stores = {n: make(f"{name}-{n}") for n in sizes}
    built = {n: build(stores[n], n, args.objects) for n in sizes}
    times: dict[int, list[float]] = {n: [] for n in sizes}
    seen: dict[int, tuple[int, int]] = {}
    for _ in range(args.repeat):  # interleaved, so both sizes see the same machine load
        for n in sizes:
            t, keys, pend = tick_read(stores[n], args.lookback)
            times[n].append(t)
            seen[n] = (keys, pend)
    rows: list[list[object]] = []
    for n in sizes:
        full = full_read(stores[n])
        rows.append(
            [
                name,
                n,
                n * args.objects,
                f"{built[n]:.1f}",
                f"{median(times[n]) * 1000:.1f}",
                f"{min(times[n]) * 1000:.1f}",
                seen[n][0],
                seen[n][1],
                f"{full * 1000:.0f}",
            ]
        )
        print(f"{name}: {n} batches built in {built[n]:.1f}s; tick reads {times[n]}", flush=True)
    ratio = median(times[args.large]) / median(times[args.small])
    rows[0].append("")
    rows[-1].append(f"**{ratio:.2f}** ({'ok' if ratio <= RATIO_LIMIT else 'FAIL'})")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=10)
    p.add_argument("--large", type=int, default=10_000)
    p.add_argument("--objects", type=int, default=10, help="objects per batch")
    p.add_argument("--lookback", type=int, default=1000, help="lookback_keys of the tick")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--backend", choices=("local", "s3", "both"), default="both")
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)

    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="lg-bench-ledger-") as tmp:
        if args.backend in ("local", "both"):
            rows += run_backend("local", lambda n: LocalStore(Path(tmp) / n), args)
        if args.backend in ("s3", "both"):
            rows += run_s3(args)

    header = [
        "backend",
        "committed batches",
        "claimed objects",
        "build s",
        "tick read ms (median)",
        "min ms",
        "keys loaded",
        "pending",
        "full state ms",
        "ratio large/small",
    ]
    table = markdown_table(header, rows)
    print(table)
    ok = all("FAIL" not in str(r[-1]) for r in rows)
    if not args.no_append:
        append_section(
            "Ledger: claim state read per tick, 10 vs 10,000 committed batches",
            command_line("bench.ledger_state", argv),
            table,
            notes=[
                f"Tick read = Ledger.open + lookback_start({args.lookback}) + claim_state(window) "
                f"+ pending(), on a fresh ledger, median of {args.repeat}; compact snapshots "
                "every 100 batches. Criterion ratio <= 2. `full state` (every claimed key, for a "
                "full listing) is O(history) by design and shown for reference.",
                "S3 = moto ThreadedMotoServer on 127.0.0.1 in a child process of the benchmark.",
            ],
        )
    return 0 if ok else 1


def _serve_moto(port: int, stop: Any) -> None:
    """Child process: a ThreadedMotoServer on 127.0.0.1:``port`` until ``stop`` is set."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        stop.wait()
    finally:
        server.stop()


def run_s3(args: argparse.Namespace) -> list[list[object]]:
    """The S3 rows, against a moto server in a child process (its own GIL: the server does not
    compete with the client threads for one interpreter)."""
    import boto3

    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(k, v)
    port = free_port()
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=_serve_moto, args=(port, stop), daemon=True)
    proc.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        bucket = f"lg-bench-{uuid.uuid4().hex[:8]}"
        for _ in range(300):  # wait for the server to listen
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto server did not start")
        opts = S3Options(endpoint_url=endpoint, region="us-east-1")
        return run_backend("s3 (moto)", lambda n: open_store(f"s3://{bucket}/{n}", opts), args)
    finally:
        stop.set()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
