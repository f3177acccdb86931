"""Through Dagster: landing-to-committed latency, and many small objects batched vs one run
per object. ``python -m bench.dagster_latency [--objects 20] [--per-object-n 100]``

Runs a real ``dagster-daemon`` (temp ``DAGSTER_HOME``, sqlite, default run launcher: one
process per run) over a temp ``lockgate.yaml`` (local landing, warehouse and ledger), the
sensor at its default interval (``dagster.sensor_interval_seconds``, 30 s). The daemon is
started with its own process group and stopped by its id at the end (SIGTERM, then SIGKILL of
that group).

1. **Latency.** A warm-up object is landed and committed first (first tick, table creation).
   Then ``--objects`` objects land one at a time, ``--gap`` seconds apart (atomic rename).
   The latency of an object is the modification time of its batch's commit record (written
   right after the Iceberg commit) minus the time its rename returned. p50, p90, max.
2. **D3 through sensor-launched runs.** The first ``--batched-n`` objects of D3 (default all
   10,000) land at once into a warm deployment with ``max_files_per_batch: 1000``; then the
   first ``--per-object-n`` (default 40) with ``max_files_per_batch: 1`` (one run per
   object: 10,000 runs would take hours on 2 cores, so a subset, extrapolated linearly).
   Time from landing to the last commit record, runs (= batches) and objects per minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    ROOT,
    VENV_BIN,
    append_section,
    command_line,
    markdown_table,
    median,
    write_config,
)
from bench.generate import DAY, DECLARED, ensure

SOURCE = "bench"
SMALL_RECORD = (
    '{"id":%d,"ts":"2024-03-01T00:00:00Z","user":"u","event":"view","amount":1.5,"qty":1,'
    '"ok":true,"note":"latency probe"}\n'
)


class Deployment:
    """A dagster-daemon over one temp config; commit records are read from the local ledger."""

    def __init__(self, work: Path, landing: Path, max_files: int):
        self.work = work
        self.landing = landing
        landing.mkdir(parents=True, exist_ok=True)
        self.config = write_config(
            work, landing, "jsonl", DECLARED, extra_source={"max_files_per_batch": max_files}
        )
        self.ledger = work / "wh" / "_ledger" / SOURCE
        self.home = work / "dagster_home"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.workspace = work / "workspace.yaml"
        self.workspace.write_text(
            "load_from:\n  - python_module:\n      module_name: lockgate.pipelines.definitions\n"
            f"      working_directory: {ROOT}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(work / "daemon.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.seen: dict[int, float] = {}  # batch id -> commit record mtime

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            {
                "DAGSTER_HOME": str(self.home),
                "LOCKGATE_CONFIG": str(self.config),
                "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
            }
        )
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(self.workspace)],
            cwd=str(ROOT),
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pgid = self.proc.pid  # its own session: the group id is its pid
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)  # run workers it left behind
        self.log.close()

    def land(self, name: str, data: bytes) -> float:
        tmp = self.landing / f"{name}.tmp"
        tmp.write_bytes(data)
        os.rename(tmp, self.landing / name)
        return time.time()

    def commits(self) -> dict[str, float]:
        """key -> commit time (mtime of its batch's commit record), for every commit so far."""
        out: dict[str, float] = {}
        folder = self.ledger / "commits"
        if not folder.exists():
            return out
        for rec in folder.iterdir():
            if not rec.name.endswith(".json"):
                continue
            batch = int(rec.name.split(".")[0])
            if batch not in self.seen:
                self.seen[batch] = rec.stat().st_mtime
        for batch, t in self.seen.items():
            claim = json.loads((self.ledger / "offsets" / f"{batch:020d}.json").read_text())
            for o in claim["objects"]:
                out[o["key"]] = t
        return out

    def wait_for(self, keys: set[str], timeout_s: float) -> dict[str, float]:
        deadline = time.time() + timeout_s
        while True:
            done = self.commits()
            if keys <= done.keys():
                return done
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"dagster-daemon exited {self.proc.returncode}; see {self.log.name}"
                )
            if time.time() > deadline:
                missing = len(keys - done.keys())
                raise TimeoutError(
                    f"{missing} of {len(keys)} objects not committed after {timeout_s}s"
                )
            time.sleep(0.5)


PHASES = (
    ("run created -> launched (queue)", "created", "PIPELINE_STARTING"),
    ("launched -> run process started", "PIPELINE_STARTING", "PIPELINE_START"),
    ("run started -> step started", "PIPELINE_START", "STEP_START"),
    ("step (read, stage, commit, record)", "STEP_START", "STEP_SUCCESS"),
    ("step done -> run done", "STEP_SUCCESS", "PIPELINE_SUCCESS"),
)


def run_phases(home: Path, since: float) -> dict[str, list[float]]:
    """Seconds between run lifecycle events of the runs created after ``since``, from the
    instance's event log (read after the daemon stopped)."""
    import dagster as dg

    out: dict[str, list[float]] = {name: [] for name, _, _ in PHASES}
    with dg.DagsterInstance.from_config(str(home)) as inst:
        for rec in inst.get_run_records():
            created = rec.create_timestamp.timestamp()
            if created < since:
                continue
            times: dict[str, float] = {"created": created}
            for e in inst.all_logs(rec.dagster_run.run_id):
                if e.dagster_event is not None:
                    times.setdefault(e.dagster_event.event_type_value, e.timestamp)
            for name, a, b in PHASES:
                if a in times and b in times:
                    out[name].append(times[b] - times[a])
    return out


def _key(i: int) -> str:
    return f"events-{DAY}-lat{i:05d}.jsonl"


@dataclass
class Latency:
    values: list[float] = field(default_factory=list)

    def q(self, p: float) -> float:
        xs = sorted(self.values)
        return xs[min(len(xs) - 1, int(p * len(xs)))]


def latency(
    work: Path, objects: int, gap: float, timeout_s: float
) -> tuple[Latency, dict[str, list[float]]]:
    dep = Deployment(work / "latency", work / "latency" / "landing", 1000)
    dep.start()
    try:
        dep.land(_key(0), (SMALL_RECORD % 0).encode())
        dep.wait_for({_key(0)}, timeout_s)
        print("  warm-up object committed", file=sys.stderr, flush=True)
        since = time.time()
        landed: dict[str, float] = {}
        for i in range(1, objects + 1):
            landed[_key(i)] = dep.land(_key(i), (SMALL_RECORD % i).encode())
            time.sleep(gap)
        done = dep.wait_for(set(landed), timeout_s)
    finally:
        dep.stop()
    lat = Latency([done[k] - t for k, t in landed.items()])
    print(f"  latencies: {[round(x, 1) for x in lat.values]}", file=sys.stderr, flush=True)
    return lat, run_phases(dep.home, since)


@dataclass
class Throughput:
    label: str
    objects: int
    batches: int
    seconds: float

    @property
    def per_min(self) -> float:
        return self.objects / self.seconds * 60


def d3_through_runs(work: Path, n: int, max_files: int, label: str, timeout_s: float) -> Throughput:
    ds = ensure(1.0, ("d3",))
    files = ds.files("d3")[:n]
    dep = Deployment(work / f"d3-{max_files}", work / f"d3-{max_files}" / "landing", max_files)
    dep.start()
    try:
        dep.land(_key(0), (SMALL_RECORD % 0).encode())
        dep.wait_for({_key(0)}, timeout_s)
        before = len(dep.seen)
        staging = dep.landing.parent / "staging"
        staging.mkdir()
        for f in files:
            shutil.copyfile(f, staging / f.name)
        t0 = time.time()
        for f in files:
            os.rename(staging / f.name, dep.landing / f.name)
        done = dep.wait_for({f.name for f in files}, timeout_s)
        t1 = max(done[f.name] for f in files)
        batches = len(dep.seen) - before
    finally:
        dep.stop()
    res = Throughput(label, len(files), batches, t1 - t0)
    print(
        f"  {label}: {res.objects} objects in {res.batches} runs, {res.seconds:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--gap", type=float, default=7.0, help="seconds between landings")
    parser.add_argument("--batched-n", type=int, default=10_000)
    parser.add_argument("--per-object-n", type=int, default=40)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-d3", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args(argv)
    # SIGTERM (e.g. `timeout`) unwinds through the finally blocks that stop the daemons.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from lockgate.resources.config import DagsterSettings

    interval = DagsterSettings().sensor_interval_seconds
    max_runs = DagsterSettings().max_runs_per_tick
    sections = []
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-dagster-") as d:
        work = Path(d)
        if not args.skip_latency:
            lat, phases = latency(work, args.objects, args.gap, args.timeout)
            sections.append(
                markdown_table(
                    ["objects", "gap (s)", "sensor interval (s)", "p50 (s)", "p90 (s)", "max (s)"],
                    [
                        [
                            len(lat.values),
                            f"{args.gap:g}",
                            interval,
                            f"{median(lat.values):.1f}",
                            f"{lat.q(0.9):.1f}",
                            f"{max(lat.values):.1f}",
                        ]
                    ],
                )
            )
            sections.append(
                markdown_table(
                    ["run phase (runs of the latency test)", "runs", "p50 (s)", "max (s)"],
                    [
                        [name, len(v), f"{median(v):.1f}", f"{max(v):.1f}"]
                        for name, v in phases.items()
                        if v
                    ],
                )
            )
        if not args.skip_d3:
            rows = [
                d3_through_runs(
                    work,
                    args.batched_n,
                    1000,
                    "D3 batched (max_files_per_batch 1000)",
                    args.timeout,
                ),
                d3_through_runs(
                    work,
                    args.per_object_n,
                    1,
                    "D3 one run per object (max_files_per_batch 1)",
                    args.timeout,
                ),
            ]
            full = 10_000
            sections.append(
                markdown_table(
                    [
                        "mode",
                        "objects",
                        "runs",
                        "land -> last commit (s)",
                        "objects/min",
                        "10,000 objects at that rate (min)",
                    ],
                    [
                        [
                            r.label,
                            r.objects,
                            r.batches,
                            f"{r.seconds:.1f}",
                            f"{r.per_min:,.1f}",
                            f"{full / r.per_min:,.0f}",
                        ]
                        for r in rows
                    ],
                )
            )
    out = "\n\n".join(sections)
    print(out)
    if not args.no_append:
        append_section(
            "Through Dagster: landing-to-commit latency, batched vs one run per object (issue 8.5)",
            command_line("bench.dagster_latency", argv),
            out,
            [
                "dagster-daemon (temp DAGSTER_HOME, sqlite, default run launcher: one process "
                f"per run), sensor at its default interval ({interval} s), local landing + "
                "warehouse + ledger. Latency = commit-record mtime - landing time.",
                "One run per object is bounded by the sensor too: at most max_runs_per_tick "
                f"({max_runs}) run requests per tick every {interval} s, i.e. at least "
                f"{10_000 / max_runs * interval / 60:.0f} min for 10,000 objects on any machine; "
                "the per-object row measures a small subset, so its extrapolation is optimistic.",
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
