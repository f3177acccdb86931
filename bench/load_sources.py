"""Many sources at once on Dagster's production stack: ``sources`` S3 sources (moto over HTTP)
x ``objects`` JSONL objects each, landed in one burst, ingested by the real ``dagster-daemon``
on PostgreSQL storage with the ``QueuedRunCoordinator`` (``--runs`` concurrent runs) and a
code server of its own.

``python -m bench.load_sources [--sources 50] [--objects 200] [--records 5] [--days 2]
[--max-files 100] [--runs 4] [--interval 10] [--timeout 5400] [--append]``

Every process it starts listens on 127.0.0.1 only and is stopped at the end: the moto server
(a child process, stopped by its PID), PostgreSQL (``lockgate.pipelines.local_postgres``, in a
temp folder, stopped by the PID in its ``postmaster.pid``), the code server and the daemon (each
in its own process group, SIGINT then SIGTERM then SIGKILL to the group).

Reports, and exits 1 unless every table holds each landed record exactly once (``verify`` ok
and the table's ``id`` multiset equal to the landed one, per table):

* sensor tick p50/p95 per source (Dagster's own tick records: start to end, gRPC included), and
  their spread over the sources;
* landing -> commit p50/p95 per object (its S3 ``LastModified`` -> its batch's commit record);
* runs, runs per minute (successful batch runs between the first start and the last end), the
  largest number of runs running at one instant, run p50 (start -> end);
* wall time from the first put to the last commit, and the CPU seconds of this process's
  children (moto, code server, daemon, and the run workers they reaped).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.common import ROOT, VENV_BIN, append_section, command_line, load_average, markdown_table
from bench.discovery import MOTO_ENV, MotoServer, moto_server

URL_ENV = "LOCKGATE_BENCH_DAGSTER_PG_URL"
DAY0 = 1  # landing days are 2026-07-01, 2026-07-02, ...
POLL_S = 15.0
START_S = 300.0


@dataclass
class LoadResult:
    sources: int
    objects: int
    records: int
    runs_limit: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    tick_p50: dict[str, float] = field(default_factory=dict)  # per source
    tick_p95: dict[str, float] = field(default_factory=dict)
    ticks: int = 0
    latencies: list[float] = field(default_factory=list)  # landing -> commit, per object
    runs: int = 0
    failed_runs: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)  # first line, per failed run
    run_s: list[float] = field(default_factory=list)
    runs_window_s: float = 0.0
    overlap: int = 0
    exactly_once: dict[str, bool] = field(default_factory=dict)
    load: str = ""
    last_commit: float = 0.0  # epoch seconds of the last commit record
    committed_objects: int = 0  # (report on a running test: objects committed so far)

    @property
    def runs_per_min(self) -> float:
        return self.runs / self.runs_window_s * 60 if self.runs_window_s else 0.0


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``xs``; nan when empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def source_names(n: int) -> list[str]:
    return [f"s{i:03d}" for i in range(n)]


def write_lockgate_yaml(
    folder: Path, endpoint: str, bucket: str, names: list[str], args: argparse.Namespace
) -> Path:
    sources = {
        n: {
            "landing": f"s3://{bucket}/landing/{n}",
            "format": "jsonl",
            "table": f"lake.{n}",
            "partition": {"pattern": r"(\d{4}-\d{2}-\d{2})", "start": "2026-01-01"},
            "schema": {"id": "long", "v": "string"},
            "max_files_per_batch": args.max_files,
            "min_age": 0,  # objects are put whole
        }
        for n in names
    }
    doc = {
        "warehouse": f"s3://{bucket}/warehouse",
        "ledger": f"s3://{bucket}/ledger",
        "s3": {"endpoint_url": endpoint, "region": "us-east-1"},
        "dagster": {"sensor_interval_seconds": args.interval, "table_concurrency": 1},
        "sources": sources,
    }
    path = folder / "lockgate.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def write_instance(folder: Path, runs: int, code_port: int) -> tuple[Path, Path]:
    """``(home, workspace)``: Lockgate's instance config on PostgreSQL (URL from ``URL_ENV``)
    with ``runs`` concurrent runs, sensors evaluated on 8 threads, and a workspace naming the
    code server on ``127.0.0.1:code_port``."""
    from lockgate.pipelines.dagster_yaml import dagster_instance_config

    home = folder / "dagster_home"
    home.mkdir(parents=True)
    doc = dagster_instance_config(
        home, max_concurrent_runs=runs, max_retries=5, postgres_url_env=URL_ENV
    )
    doc["sensors"] = {"use_threads": True, "num_workers": 8}
    (home / "dagster.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    workspace = folder / "workspace.yaml"
    server = {"host": "127.0.0.1", "port": code_port, "location_name": "lockgate"}
    workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": server}]}))
    return home, workspace


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, SIGTERM, then SIGKILL to ``proc``'s process group (it leads its own session)."""
    for sig, grace in ((signal.SIGINT, 20.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its run workers share the group
        return


@contextlib.contextmanager
def group_process(argv: list[str], env: Mapping[str, str], log: Path) -> Iterator[Any]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=str(ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        _stop_group(proc)


def _tail(log: Path, n: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_code_server(port: int, proc: Any, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"code server exited:\n{_tail(log)}")
        check = subprocess.run(
            [
                *(str(VENV_BIN / "dagster"), "api", "grpc-health-check"),
                *("--port", str(port), "--host", "127.0.0.1"),
            ],
            capture_output=True,
            check=False,
            timeout=120,
        )
        if check.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"code server not up:\n{_tail(log)}")
        time.sleep(2)


def land_all(
    endpoint: str, bucket: str, names: list[str], args: argparse.Namespace
) -> tuple[dict[str, Counter[int]], dict[tuple[str, str], float]]:
    """Put every object (8 threads); the landed ids per source and each object's landing time
    (``(source, key relative to its landing)`` -> epoch seconds after its put returned)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    jobs = []
    next_id = 0
    for n in names:
        for j in range(args.objects):
            day = f"2026-07-{DAY0 + j % args.days:02d}"
            ids = list(range(next_id, next_id + args.records))
            next_id += args.records
            body = "".join(json.dumps({"id": i, "v": f"r{i}"}) + "\n" for i in ids).encode()
            jobs.append((n, f"{day}/o{j:05d}.jsonl", ids, body))

    def put(job: tuple[str, str, list[int], bytes]) -> tuple[str, str, list[int], float]:
        n, rel, ids, body = job
        client.put_object(Bucket=bucket, Key=f"landing/{n}/{rel}", Body=body)
        return n, rel, ids, time.time()

    landed: dict[str, Counter[int]] = {n: Counter() for n in names}
    times: dict[tuple[str, str], float] = {}
    with ThreadPoolExecutor(8) as pool:
        for n, rel, ids, t in pool.map(put, jobs):
            landed[n].update(ids)
            times[(n, rel)] = t
    return landed, times


def all_done(rt: Any, names: list[str], objects: int, done: set[str]) -> bool:
    """Whether every source has claimed all its objects and has no pending batch (sources found
    done are added to ``done`` and not read again)."""
    for n in names:
        if n in done:
            continue
        led = rt.ledger(rt.source(n))
        claimed = sum(len(led.get_claim(b).objects) for b in range(led.next_batch_id()))
        if claimed == objects and not led.pending():
            done.add(n)
    return done >= set(names)


def tick_stats(instance: Any, sources: list[str], result: LoadResult) -> None:
    """Sensor tick durations per source from Dagster's tick records."""
    from dagster._core.definitions.run_request import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        name = state.instigator_name
        if not name.endswith("_sensor") or name.removesuffix("_sensor") not in sources:
            continue
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        secs = [
            t.end_timestamp - t.timestamp
            for t in ticks
            if t.end_timestamp is not None and t.end_timestamp >= t.timestamp
        ]
        if secs:
            src = name.removesuffix("_sensor")
            result.tick_p50[src] = statistics.median(secs)
            result.tick_p95[src] = pct(secs, 0.95)
            result.ticks += len(secs)


def run_stats(instance: Any, result: LoadResult) -> None:
    import dagster as dg

    records = instance.get_run_records()
    ok = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
    failed = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
    result.failed_runs = len(failed)
    for r in failed:  # why: the first step or run failure's message, first line
        events = instance.all_logs(r.dagster_run.run_id)
        why = next(
            (
                (e.dagster_event.event_specific_data.error.message or "").splitlines()[0]
                for e in events
                if e.dagster_event is not None
                and e.dagster_event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE")
                and getattr(e.dagster_event.event_specific_data, "error", None) is not None
            ),
            "no error recorded",
        )
        result.failure_reasons[why[:200]] += 1
    timed = [r for r in ok if r.start_time is not None and r.end_time is not None]
    result.runs = len(ok)
    result.run_s = [r.end_time - r.start_time for r in timed]
    if timed:
        result.runs_window_s = max(r.end_time for r in timed) - min(r.start_time for r in timed)
    edges = sorted([(r.start_time, 1) for r in timed] + [(r.end_time, -1) for r in timed])
    cur = 0
    for _, step in edges:
        cur += step
        result.overlap = max(result.overlap, cur)


def commit_latencies(rt: Any, names: list[str], result: LoadResult) -> None:
    """Landing -> commit per object: its S3 ``LastModified`` (as claimed) -> its batch's commit
    record; and the last commit's time."""
    for n in names:
        led = rt.ledger(rt.source(n))
        for b in range(led.next_batch_id()):
            rec = led.commit_record(b)
            if rec is None:
                continue
            done = rec.committed_at.timestamp()
            for o in led.get_claim(b).objects:
                result.latencies.append(done - o.last_modified.timestamp())
            result.last_commit = max(result.last_commit, done)


def check_exactly_once(
    rt: Any, names: list[str], landed: dict[str, Counter[int]]
) -> dict[str, bool]:
    from pyiceberg.exceptions import NoSuchTableError

    from lockgate.pipelines.verify import verify_source

    out = {}
    for n in names:
        src = rt.source(n)
        try:
            table = rt.tables.load(src.table)
        except NoSuchTableError:
            out[n] = False
            continue
        ids = Counter(table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())
        report = verify_source(rt, src)
        out[n] = report.ok and ids == landed[n]
    return out


def run_load(args: argparse.Namespace) -> LoadResult:
    import boto3
    import dagster as dg

    from lockgate.pipelines import local_postgres

    names = source_names(args.sources)
    result = LoadResult(args.sources, args.objects, args.records, args.runs)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    folder = Path(tempfile.mkdtemp(prefix="lockgate-load-"))
    folder.chmod(0o755)  # as root the server runs as `postgres`: it must reach its folder
    try:
        with moto_server() as moto:
            server = local_postgres.start(folder / "pg", _free_port())
            try:
                _run_stack(args, names, result, folder, moto, server.url, boto3, dg)
            finally:
                local_postgres.stop(server.data)
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        result.cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _run_stack(
    args: argparse.Namespace,
    names: list[str],
    result: LoadResult,
    folder: Path,
    moto: MotoServer,
    pg_url: str,
    boto3: Any,
    dg: Any,
) -> None:
    from lockgate.resources.config import load_config
    from lockgate.resources.runtime import Runtime

    bucket = f"load-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    config = write_lockgate_yaml(folder, moto.endpoint, bucket, names, args)
    code_port = _free_port()
    home, workspace = write_instance(folder, args.runs, code_port)
    env = {
        **os.environ,
        **MOTO_ENV,
        "AWS_ENDPOINT_URL": moto.endpoint,
        "DAGSTER_HOME": str(home),
        "LOCKGATE_CONFIG": str(config),
        URL_ENV: pg_url,
        "DAGSTER_GRPC_TIMEOUT_SECONDS": "300",
    }
    env.pop("LOCKGATE_CRASH_AT", None)
    os.environ.update({k: env[k] for k in (*MOTO_ENV, "AWS_ENDPOINT_URL")})
    rt = Runtime.from_config(load_config(str(config)))
    code_log, daemon_log = folder / "code_server.log", folder / "daemon.log"
    grpc = [str(VENV_BIN / "dagster"), "api", "grpc", "--module-name"]
    grpc += ["lockgate.pipelines.definitions", "--host", "127.0.0.1", "--port", str(code_port)]
    with group_process(grpc, env, code_log) as code:
        wait_code_server(code_port, code, code_log)
        daemon = [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(workspace)]
        with group_process(daemon, env, daemon_log) as proc:
            print(f"daemon started; landing {len(names) * args.objects} objects", file=sys.stderr)
            started = time.time()
            landed, times = land_all(moto.endpoint, bucket, names, args)
            print(f"landed in {time.time() - started:.0f}s", file=sys.stderr, flush=True)
            deadline = time.monotonic() + args.timeout
            done: set[str] = set()
            while not all_done(rt, names, args.objects, done):
                if proc.poll() is not None:
                    raise RuntimeError(f"dagster-daemon exited:\n{_tail(daemon_log)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{len(done)}/{len(names)} sources done in time\n{_tail(daemon_log)}"
                    )
                print(
                    f"  {len(done)}/{len(names)} sources done, load {load_average()}",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(POLL_S)
        result.load = load_average()
    del times
    collect(rt, names, landed, home, pg_url, result)
    result.wall_s = result.last_commit - started


def collect(
    rt: Any,
    names: list[str],
    landed: dict[str, Counter[int]],
    home: Path,
    pg_url: str,
    result: LoadResult,
    checked: list[str] | None = None,
) -> None:
    """Fill ``result`` from the ledgers, the tables and the Dagster instance; exactly once is
    checked for ``checked`` (default: every source)."""
    import dagster as dg

    commit_latencies(rt, names, result)
    result.exactly_once = check_exactly_once(rt, names if checked is None else checked, landed)
    os.environ[URL_ENV] = pg_url
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        tick_stats(instance, names, result)
        run_stats(instance, result)
    finally:
        instance.dispose()


def expected_ids(names: list[str], objects: int, records: int) -> dict[str, Counter[int]]:
    """The ids ``land_all`` gives each source (consecutive, in source then object order)."""
    per = objects * records
    return {n: Counter(range(i * per, (i + 1) * per)) for i, n in enumerate(names)}


def report_from(folder: Path, args: argparse.Namespace) -> LoadResult:
    """The figures of a load test still running in ``folder`` (its moto, PostgreSQL and
    daemon up): the sources done so far are checked for exactly once, the others count as
    not done (``exactly_once`` False). Wall time: the first landed object -> the last commit."""
    from lockgate.pipelines.local_postgres import LocalPostgres, _pid
    from lockgate.resources.config import load_config
    from lockgate.resources.runtime import Runtime

    cfg = load_config(str(folder / "lockgate.yaml"))
    os.environ.update({**MOTO_ENV, "AWS_ENDPOINT_URL": str(cfg.s3.endpoint_url)})
    rt = Runtime.from_config(cfg)
    names = sorted(cfg.sources)
    lines = (folder / "pg" / "postmaster.pid").read_text().splitlines()
    pg = LocalPostgres(folder / "pg", int(lines[3]), _pid(folder / "pg") or 0)
    result = LoadResult(len(names), args.objects, args.records, args.runs)
    done: set[str] = set()
    all_done(rt, names, args.objects, done)
    landed = expected_ids(names, args.objects, args.records)
    collect(rt, names, landed, folder / "dagster_home", pg.url, result, checked=sorted(done))
    firsts = [
        o.last_modified.timestamp()
        for n in names
        for b in range(rt.ledger(rt.source(n)).next_batch_id())
        for o in rt.ledger(rt.source(n)).get_claim(b).objects
    ]
    result.wall_s = result.last_commit - min(firsts) if firsts else 0.0
    result.committed_objects = len(result.latencies)
    result.exactly_once.update({n: False for n in names if n not in done})
    result.load = load_average()
    return result


def table(r: LoadResult) -> str:
    p50s = list(r.tick_p50.values())
    p95s = list(r.tick_p95.values())
    ok = sum(r.exactly_once.values())
    header = ["measure", "value"]
    rows: list[list[object]] = [
        ["sources x objects (records each)", f"{r.sources} x {r.objects} ({r.records})"],
        *(
            [["objects committed when reported (test still running)", r.committed_objects]]
            if r.committed_objects
            else []
        ),
        ["concurrent runs (QueuedRunCoordinator)", r.runs_limit],
        ["exactly once (verify ok + id multiset equal), tables", f"{ok}/{r.sources}"],
        ["batch runs succeeded / failed (retried)", f"{r.runs} / {r.failed_runs}"],
        *([[f"failed runs: {why}", n] for why, n in r.failure_reasons.most_common()]),
        ["runs running at one instant, max", r.overlap],
        ["runs per minute", f"{r.runs_per_min:.1f}"],
        ["run p50 / p95 s (start -> end)", f"{pct(r.run_s, 0.5):.1f} / {pct(r.run_s, 0.95):.1f}"],
        [
            "landing -> commit p50 / p95 s (per object)",
            f"{pct(r.latencies, 0.5):.0f} / {pct(r.latencies, 0.95):.0f}",
        ],
        ["sensor ticks recorded", r.ticks],
        [
            "sensor tick p50 s per source: median (min-max) of sources",
            f"{statistics.median(p50s):.2f} ({min(p50s):.2f}-{max(p50s):.2f})" if p50s else "-",
        ],
        [
            "sensor tick p95 s per source: median (min-max) of sources",
            f"{statistics.median(p95s):.2f} ({min(p95s):.2f}-{max(p95s):.2f})" if p95s else "-",
        ],
        ["wall s, first put -> last commit", f"{r.wall_s:.0f}"],
        ["CPU s (user+sys) of the bench's children", f"{r.cpu_s:.0f}" if r.cpu_s else "n/a"],
        ["load average (1/5/15) when the last batch committed", r.load],
    ]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load_sources")
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--objects", type=int, default=200, help="objects per source")
    parser.add_argument("--records", type=int, default=5, help="records per object")
    parser.add_argument("--days", type=int, default=2, help="days the objects spread over")
    parser.add_argument("--max-files", type=int, default=100, help="max_files_per_batch")
    parser.add_argument("--runs", type=int, default=4, help="max concurrent runs")
    parser.add_argument("--interval", type=int, default=10, help="sensor_interval_seconds")
    parser.add_argument("--timeout", type=float, default=5400.0, help="seconds to wait")
    parser.add_argument("--append", action="store_true", help="append to BENCHMARKS.md")
    parser.add_argument(
        "--report-from",
        type=Path,
        help="report on the load test running in this temp folder (lockgate-load-*) so far",
    )
    args = parser.parse_args(argv)
    result = report_from(args.report_from, args) if args.report_from else run_load(args)
    body = table(result)
    print(body)
    per_source = markdown_table(
        ["source", "tick p50 s", "tick p95 s", "exactly once"],
        [
            [
                n,
                f"{result.tick_p50.get(n, float('nan')):.2f}",
                f"{result.tick_p95.get(n, float('nan')):.2f}",
                "yes" if result.exactly_once.get(n) else "NO",
            ]
            for n in source_names(args.sources)
        ],
    )
    print(per_source, file=sys.stderr)
    if args.append:
        append_section(
            "Many sources on PostgreSQL + queued runs (load test, issue 17)",
            command_line("bench.load_sources", argv),
            body,
            notes=[
                "moto over HTTP (one process serves every S3 request), PostgreSQL, the real "
                "dagster-daemon and a code server; objects landed in one burst."
            ],
        )
    return 0 if result.exactly_once and all(result.exactly_once.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
