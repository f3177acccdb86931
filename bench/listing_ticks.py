"""Sensor tick time is bounded whatever the bucket size: incremental ticks and the ticks of a
full-listing pass spread over ticks (``dagster.max_keys_listed_per_tick``), on S3 (moto) or a
local landing folder.

``python -m bench.listing_ticks [--backend s3|local] [--existing 10000 100000] [--new 1000]
[--rounds 3] [--bound 20000] [--seconds 5] [--no-unbounded] [--append]``

``--seconds``: ``dagster.max_listing_seconds_per_tick`` (each listing of a tick stops at the
first page boundary after it; 0: keys only). ``--no-unbounded`` skips the reference listing.

Local: ``existing`` files in folders of 1,000 under a temp folder (deleted at the end), claimed
from their listing in claims of 1,000.

For each size: a fresh bucket on a moto server (child process, 127.0.0.1, free port, stopped
at the end) holds ``existing`` objects, all claimed (``bench.discovery``'s set-up). Then
``rounds`` incremental ticks, each after ``new`` objects land; then one whole full-listing pass,
tick after tick from its continuation, as the sensor drives it; then, for reference, one
unbounded full listing (what a tick did before). Each tick is a fresh ``Ledger.open`` +
``discover``. Goal: tick p95 <= 20 s in both kinds. Checks that every landed key is claimed
exactly once at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from bench.common import append_section, command_line, markdown_table
from bench.discovery import BODY, FINGERPRINT, SOURCE, MotoServer, claim_all, moto_server
from lockgate.resources.ledger import Ledger
from lockgate.resources.store import LocalStore, ObjectInfo, ObjectStore, S3Options
from lockgate.resources.stores import open_store
from lockgate.sensors.discovery import DiscoveryResult, DiscoveryRule, discover

GOAL_P95_S = 20.0
TODAY = date(2024, 3, 2)


@dataclass
class Sized:
    backend: str
    existing: int
    bound: int
    incremental: list[float] = field(default_factory=list)
    pass_ticks: list[float] = field(default_factory=list)
    pass_listed: list[int] = field(default_factory=list)
    seconds: int = 0
    unbounded_s: float | None = None
    unbounded_listed: int = 0
    exactly_once: bool = False
    cut_by_time: int = 0  # pass ticks stopped by the time bound
    cpu_s: float = 0.0  # this process's CPU over all timed ticks (moto runs in a child)


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)] if xs else float("nan")


def _tick(
    landing: ObjectStore,
    ledger_store: ObjectStore,
    rule: DiscoveryRule,
    full: bool,
    full_from: str | None = None,
) -> tuple[float, DiscoveryResult]:
    t0 = time.perf_counter()
    ledger = Ledger.open(ledger_store, SOURCE, FINGERPRINT)
    res = discover(landing, ledger, rule, full_listing=full, today=TODAY, full_from=full_from)
    return time.perf_counter() - t0, res


def _timed_tick(
    out: Sized,
    landing: ObjectStore,
    ledger_store: ObjectStore,
    rule: DiscoveryRule,
    full: bool,
    full_from: str | None = None,
) -> tuple[float, DiscoveryResult]:
    c0 = time.process_time()
    s, res = _tick(landing, ledger_store, rule, full, full_from)
    out.cpu_s += time.process_time() - c0
    return s, res


def _rule(bound: int, seconds: int) -> DiscoveryRule:
    return DiscoveryRule(
        max_listing_s=seconds,
        partition_regex=r"(\d{4}-\d{2}-\d{2})",
        partition_start=date(2024, 1, 1),
        max_files_per_batch=1000,
        max_claims_per_tick=1000,
        max_keys_listed_per_tick=bound,
    )


def local_key(i: int) -> str:
    return f"events/2024-03-01/g{i // 1000:05d}/obj-{i:09d}.json"


def _land_local(root: Path, ids: range) -> None:
    for i in ids:
        path = root / local_key(i)
        if i % 1000 == 0 or i == ids.start:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(BODY)


def run_local(
    existing: int, new: int, rounds: int, bound: int, seconds: int, unbounded: bool
) -> Sized:
    with tempfile.TemporaryDirectory(prefix="lockgate-lt-") as tmp:
        root = Path(tmp)
        landing = LocalStore(root / "landing")
        ledger_store = LocalStore(root / "ledger")
        _land_local(root / "landing", range(existing))
        ledger = Ledger.open(ledger_store, SOURCE, FINGERPRINT)
        page: list[ObjectInfo] = []
        for info in landing.list():
            page.append(info)
            if len(page) == 1000:
                ledger.claim("2024-03-01", page)
                page = []
        if page:
            ledger.claim("2024-03-01", page)
        ledger.maybe_compact()
        print(f"  {existing} local keys landed and claimed", file=sys.stderr, flush=True)
        out = Sized("local", existing, bound, seconds=seconds)
        nxt = existing
        rule = _rule(bound, seconds)
        for _ in range(rounds):
            _land_local(root / "landing", range(nxt, nxt + new))
            nxt += new
            s, _res = _timed_tick(out, landing, ledger_store, rule, full=False)
            out.incremental.append(s)
            print(f"  incremental tick: {s:.2f}s", file=sys.stderr, flush=True)
        _measure_pass(out, landing, ledger_store, rule, nxt, unbounded)
        return out


def _measure_pass(
    out: Sized,
    landing: ObjectStore,
    ledger_store: ObjectStore,
    rule: DiscoveryRule,
    total: int,
    unbounded: bool = True,
) -> None:
    full_from = None
    while True:
        s, res = _timed_tick(out, landing, ledger_store, rule, full=True, full_from=full_from)
        out.pass_ticks.append(s)
        out.pass_listed.append(res.listed)
        out.cut_by_time += res.cut_by_time
        print(
            f"  pass tick {len(out.pass_ticks)}: {s:.2f}s, {res.listed} keys"
            + (" (cut by time)" if res.cut_by_time else ""),
            file=sys.stderr,
            flush=True,
        )
        full_from = res.full_next
        if full_from is None:
            break
    if unbounded:
        whole = DiscoveryRule(
            **{**rule.__dict__, "max_keys_listed_per_tick": 0, "max_listing_s": 0.0}
        )
        out.unbounded_s, res = _tick(landing, ledger_store, whole, full=True)
        out.unbounded_listed = res.listed
    state = Ledger.open(ledger_store, SOURCE, FINGERPRINT).claim_state("")
    out.exactly_once = len(state) == total


def run_size(
    server: MotoServer,
    existing: int,
    new: int,
    rounds: int,
    bound: int,
    seconds: int,
    unbounded: bool,
) -> Sized:
    import boto3

    opts = S3Options(endpoint_url=server.endpoint, region="us-east-1")
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    client.create_bucket(Bucket=f"{bucket}-ledger")
    landing = open_store(f"s3://{bucket}/landing", opts)
    ledger_store = open_store(f"s3://{bucket}-ledger/ledger", opts)
    server.put(bucket, "landing", range(existing))
    claim_all(ledger_store, existing)
    print(f"  {existing} keys landed and claimed", file=sys.stderr, flush=True)
    rule = _rule(bound, seconds)
    out = Sized("s3 (moto)", existing, bound, seconds=seconds)
    nxt = existing
    for _ in range(rounds):
        server.put(bucket, "landing", range(nxt, nxt + new))
        nxt += new
        s, _res = _timed_tick(out, landing, ledger_store, rule, full=False)
        out.incremental.append(s)
        print(f"  incremental tick: {s:.2f}s", file=sys.stderr, flush=True)
    _measure_pass(out, landing, ledger_store, rule, nxt, unbounded)
    return out


def table(results: list[Sized]) -> str:
    rows = [
        [
            r.backend,
            f"{r.existing:,}",
            f"{r.bound:,} keys / {r.seconds} s" if r.seconds else f"{r.bound:,} keys",
            f"{statistics.median(r.incremental):.2f}",
            f"{p95(r.incremental):.2f}",
            len(r.pass_ticks),
            f"{statistics.median(r.pass_ticks):.2f}",
            f"{p95(r.pass_ticks):.2f}",
            f"{max(r.pass_listed):,}",
            r.cut_by_time,
            f"{r.cpu_s:.1f}",
            f"{r.unbounded_s:.2f} ({r.unbounded_listed:,} keys)"
            if r.unbounded_s is not None
            else "not run",
            "ok" if max(p95(r.incremental), p95(r.pass_ticks)) <= GOAL_P95_S else "MISSED",
            "yes" if r.exactly_once else "NO",
        ]
        for r in results
    ]
    header = [
        "landing",
        "claimed keys",
        "bound per listing",
        "incremental tick p50 s",
        "p95 s",
        "full-pass ticks",
        "pass tick p50 s",
        "p95 s",
        "max keys listed in one tick",
        "pass ticks cut by time",
        "tick CPU s (all ticks, this process)",
        "unbounded full listing, one tick (s)",
        "goal p95 <= 20 s",
        "every key claimed once",
    ]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.listing_ticks")
    parser.add_argument("--backend", choices=("s3", "local"), default="s3")
    parser.add_argument("--existing", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--new", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bound", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=5, help="time bound per listing; 0: none")
    parser.add_argument(
        "--no-unbounded", action="store_true", help="skip the unbounded reference listing"
    )
    parser.add_argument("--append", action="store_true", help="append to BENCHMARKS.md")
    args = parser.parse_args(argv)
    results = []
    if args.backend == "local":
        for n in args.existing:
            results.append(
                run_local(n, args.new, args.rounds, args.bound, args.seconds, not args.no_unbounded)
            )
    else:
        with moto_server() as server:
            for n in args.existing:
                results.append(
                    run_size(
                        server,
                        n,
                        args.new,
                        args.rounds,
                        args.bound,
                        args.seconds,
                        not args.no_unbounded,
                    )
                )
    body = table(results)
    print(body)
    if args.append:
        append_section(
            "Sensor tick time, bounded listings (issue 17)",
            command_line("bench.listing_ticks", argv),
            body,
            notes=[
                "Each tick: fresh Ledger.open + discover; on moto over HTTP (moto's LIST scans "
                "the whole bucket per page, so its pages cost O(bucket)) or a local folder."
            ],
        )
    return 0 if all(r.exactly_once for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
