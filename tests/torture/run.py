"""The torture harness: ``python -m tests.torture.run --trials N --seed S --backend local|s3
[--faults 0.05] [--workers 2] [--kinds world,config,shared] [--report RELIABILITY.md]``.

Runs trials (``tests.torture.trial``) on ``--workers`` threads, each with its own working
folder, fork server and (S3) fault proxy in front of one shared moto server process. Prints
one line per trial (with the command that replays it), appends every trial's result to
``<root>/results.jsonl``, and writes a summary section into the report (between
``<!-- torture:<backend> -->`` markers, or ``<!-- torture:<backend>:<kinds> -->`` with
``--kinds``; the rest of the file is kept). Exit code 0 only if
no trial lost or duplicated a row or failed a check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from tests.torture.checks import Readers
from tests.torture.launch import ExecLauncher, ForkLauncher
from tests.torture.proxy import TortureProxy
from tests.torture.trial import (
    ALL_KINDS,
    EDITS,
    HARNESS_POINTS,
    MOTO_CREDS,
    NOTIFICATION_POINTS,
    S3_KINDS,
    Coverage,
    Trial,
    TrialResult,
    WorkerCtx,
    trial_kind,
)
from tests.torture.world import MUTATIONS

FAULT_KINDS = (
    "slowdown",
    "internal_error",
    "drop_request",
    "reset_before_body",
    "drop_response",
    "truncate_body",
    "latency",
)


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    from tests.helpers_s3 import external_moto

    with external_moto() as url:
        yield url


def machine() -> str:
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024 // 1024
    return f"{platform.machine()}, {os.cpu_count()} CPUs (nproc), {mem} GiB RAM"


def _names(known: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated list of names out of ``known``."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown or text!r}; choose from {', '.join(known)}"
            )
        return names

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.torture.run", description=__doc__)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--first-trial", type=int, default=0, help="replay from this trial number")
    p.add_argument("--only", type=int, nargs="*", help="run only these trial numbers")
    p.add_argument("--backend", choices=("local", "s3"), default="local")
    p.add_argument("--faults", type=float, default=0.05, help="S3 fault rate (0..1)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--exec-every",
        type=int,
        default=10,
        help="every Nth trial starts the real .venv/bin/lockgate (0: never)",
    )
    p.add_argument("--launcher", choices=("fork", "exec"), default="fork")
    p.add_argument("--rounds", type=int, default=0, help="rounds per trial (0: 2-3)")
    p.add_argument(
        "--kinds",
        type=_names(ALL_KINDS),
        default=(),
        help="comma-separated trial kinds, cycled by trial number (default: the standard "
        f"cycle of crash/deep/backfill/vacuum/concurrent); known: {','.join(ALL_KINDS)}",
    )
    p.add_argument(
        "--mutations",
        type=_names(MUTATIONS),
        default=(),
        help=f"world trials: the mutations to apply (default: all; {','.join(MUTATIONS)}; "
        "copy and symlink are local only)",
    )
    p.add_argument(
        "--edits",
        type=_names(EDITS),
        default=EDITS,
        help=f"config trials: the edits between rounds (default: {','.join(EDITS)})",
    )
    p.add_argument(
        "--focus",
        type=int,
        default=0,
        help="force crash points hit fewer than N times (counting --include-results), "
        "one per trial, until each reaches N",
    )
    p.add_argument("--deep-workers", type=int, default=1, help="workers that run deep trials")
    p.add_argument(
        "--cover",
        action="store_true",
        help="the first trials each force one crash point (every point at least once)",
    )
    p.add_argument("--time-budget", type=float, default=0, help="stop starting trials after S s")
    p.add_argument("--root", default="", help="working folder (default: a temp folder)")
    p.add_argument("--report", default="", help="markdown file to write the summary into")
    p.add_argument("--keep", action="store_true", help="keep the working folder")
    p.add_argument(
        "--include-results",
        nargs="*",
        default=[],
        help="results.jsonl files of earlier runs (same seed) to count in the summary",
    )
    return p.parse_args(argv)


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        local_only = [k for k in args.kinds if k in S3_KINDS]
        if local_only and args.backend != "s3":
            raise SystemExit(f"--kinds {','.join(local_only)} needs --backend s3 (SQS on moto)")
        self.root = Path(args.root or f"/tmp/lockgate-torture-{os.getpid()}").resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.coverage = Coverage()
        self.results: list[TrialResult] = []
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.results_file = self.root / "results.jsonl"
        numbers = (
            args.only if args.only else range(args.first_trial, args.first_trial + args.trials)
        )
        self.queue = list(numbers)
        self.focus: list[str] = []
        self.included = 0
        for path in args.include_results:
            for line in Path(path).read_text().splitlines():
                if line.strip():
                    res = TrialResult.from_json(json.loads(line))
                    self.results.append(res)
                    for r in res.runs:
                        self.coverage.record(r)
                    self.included += 1
        if args.focus:
            need = {p: args.focus - self.coverage.hits.get(p, 0) for p in HARNESS_POINTS}
            while any(v > 0 for v in need.values()):
                for p in sorted(need, key=lambda q: -need[q]):
                    if need[p] > 0:
                        self.focus.append(p)
                        need[p] -= 1
        self.stopping = False  # SIGTERM/SIGINT: finish the running trials, start no more

    def force_point(self, n: int) -> str | None:
        """``--cover``: trial ``first + i`` forces the i-th crash point (sorted by name);
        ``--focus``: the i-th entry of the deficit list (points below N hits, round robin)."""
        i = n - self.args.first_trial
        points = list(HARNESS_POINTS) if self.args.cover else self.focus
        if self.args.cover and self.args.kinds == ("notify",):
            from tests.torture.notify import CLEAN_POINTS, NOTIFY_POINTS

            points = [*NOTIFY_POINTS, *CLEAN_POINTS]
        return points[i] if 0 <= i < len(points) else None

    def next_trial(self, w: int) -> int | None:
        """The next trial for worker ``w``; deep trials (they need the worker's template)
        all go to worker 0, which builds the template once."""
        with self.lock:
            budget = self.args.time_budget
            over = budget and time.monotonic() - self.started > budget
            if not self.queue or over or self.stopping:
                return None
            for i, n in enumerate(self.queue):
                kind = trial_kind(n, self.args.backend, self.force_point(n), self.args.kinds)
                deep = kind == "deep"
                if w < self.args.deep_workers or not deep or self.args.workers == 1:
                    return self.queue.pop(i)
            return None

    def worker(self, w: int, moto: str | None) -> None:
        args = self.args
        root = self.root / f"w{w}"
        root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **MOTO_CREDS}
        launcher: ForkLauncher | ExecLauncher = (
            ForkLauncher(env) if args.launcher == "fork" else ExecLauncher()
        )
        exec_launcher = ExecLauncher()
        proxy = None
        if moto:
            proxy = TortureProxy(moto, seed=args.seed * 1000 + w)
            proxy.start()
        readers = Readers(moto)
        ctx = WorkerCtx(
            worker=w,
            root=root,
            backend=args.backend,
            fault_rate=args.faults if moto else 0.0,
            launcher=launcher,
            exec_launcher=exec_launcher,
            readers=readers,
            coverage=self.coverage,
            moto=moto,
            proxy=proxy,
            rounds=args.rounds,
            kinds=args.kinds,
            mutations=args.mutations,
            edits=args.edits,
        )
        try:
            while (n := self.next_trial(w)) is not None:
                use_exec = args.exec_every > 0 and n % args.exec_every == args.exec_every - 1
                trial = Trial(ctx, n, args.seed, exec_=use_exec, force_point=self.force_point(n))
                res = trial.run()
                self.record(res)
        finally:
            launcher.close()
            exec_launcher.close()
            readers.close()
            if proxy:
                proxy.stop()

    def record(self, res: TrialResult) -> None:
        with self.lock:
            self.results.append(res)
            with open(self.results_file, "a") as f:
                f.write(json.dumps(res.to_json()) + "\n")
            hits = sum(1 for r in res.runs if r.hit)
            kills = sum(1 for r in res.runs if r.killed_by_us)
            faults = sum(res.faults.values())
            state = "ok" if res.ok else "FAILED"
            print(
                f"trial {res.trial:5d} seed {res.seed} {res.backend:5s} {res.kind:10s} "
                f"{res.launcher:4s} runs {len(res.runs):2d} hits {hits} kills {kills} "
                f"faults {faults:3d} rows {res.expected_rows:4d} lost {res.lost} "
                f"dups {res.duplicates} {res.duration:6.1f}s {state}"
                + ("" if res.ok else f"  replay: {self.replay(res.trial)}"),
                flush=True,
            )
            for e in res.errors if not res.ok else []:
                print("   ", e.replace("\n", "\n    ")[:2000], flush=True)

    def replay(self, trial: int) -> str:
        a = self.args
        return (
            f"python -m tests.torture.run --backend {a.backend} --seed {a.seed} --only {trial} "
            f"--faults {a.faults} --exec-every {a.exec_every}"
            + (f" --first-trial {a.first_trial}" if self.force_point(trial) else "")
            + (" --cover" if a.cover and self.force_point(trial) else "")
            + (f" --focus {a.focus}" if a.focus and self.force_point(trial) else "")
            + self.variant_args()
        )

    def variant_args(self) -> str:
        """The ``--kinds/--mutations/--edits/--rounds`` options of this run, as given."""
        a = self.args
        out = f" --kinds {','.join(a.kinds)}" if a.kinds else ""
        out += f" --mutations {','.join(a.mutations)}" if a.mutations else ""
        out += f" --edits {','.join(a.edits)}" if tuple(a.edits) != EDITS else ""
        return out + (f" --rounds {a.rounds}" if a.rounds else "")

    def run(self) -> int:
        args = self.args

        def stop(_sig: int, _frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        moto_cm = moto_process() if args.backend == "s3" else contextlib.nullcontext(None)
        with moto_cm as moto:
            threads = [
                threading.Thread(target=self.worker, args=(w, moto), name=f"torture-{w}")
                for w in range(max(1, args.workers))
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        summary = self.summary()
        print(summary)
        if args.report:
            write_section(Path(args.report), section_name(args), summary)
        if not args.keep:
            failed = self.root.glob("w*/failed")
            if not any(failed):
                shutil.rmtree(self.root, ignore_errors=True)
            else:
                print(f"failed trials kept under {self.root}/w*/failed", file=sys.stderr)
        bad = [r for r in self.results if not r.ok]
        return 1 if bad or not self.results else 0

    def summary(self) -> str:
        a = self.args
        res = sorted(self.results, key=lambda r: r.trial)
        wall = time.monotonic() - self.started
        runs = [r for t in res for r in t.runs]
        kinds = Counter(t.kind for t in res)
        launchers = Counter(t.launcher for t in res)
        faults: Counter[str] = Counter()
        for t in res:
            faults.update(t.faults)
        violations: Counter[str] = Counter()
        data: Counter[str] = Counter()
        for t in res:
            violations.update(t.violation_kinds)
            data.update(t.data)
        cov = self.coverage
        ok = sum(1 for t in res if t.ok)
        lines = [
            f"### Backend `{a.backend}`"
            + (f", S3 fault rate {a.faults:.0%}" if a.backend == "s3" else ""),
            "",
            f"Command: `python -m tests.torture.run --trials {a.trials} --seed {a.seed} "
            f"--backend {a.backend} --faults {a.faults} --workers {a.workers}"
            + (f" --time-budget {a.time_budget:g}" if a.time_budget else "")
            + self.variant_args()
            + "`  ",
            f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine()}, shared with "
            f"other jobs (load average at end: {os.getloadavg()[0]:.1f}); "
            f"wall time {wall / 60:.1f} min.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| trials run (of {a.trials} requested"
            + (f", {self.included} from earlier runs" if self.included else "")
            + f") | {len(res)} |",
            f"| trials passing every check | {ok} |",
            "| trials by kind | " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + " |",
            "| trials by launcher | "
            + ", ".join(f"{k} {v}" for k, v in sorted(launchers.items()))
            + " |",
            f"| `lockgate` processes started | {len(runs)} |",
            f"| processes killed at a crash point (hits) | {sum(1 for r in runs if r.hit)} |",
            f"| processes killed by external SIGKILL | {sum(1 for r in runs if r.killed_by_us)} |",
            "| concurrent-ingest / backfill-race trials | "
            f"{kinds.get('concurrent', 0)} / {kinds.get('backfill', 0)} |",
            "| objects written and changes made, by kind | "
            + ", ".join(f"{k} {v}" for k, v in sorted(data.items()) if k != "settle_ms")
            + " |",
            f"| rows expected (sum over trials) | {sum(t.expected_rows for t in res)} |",
            f"| quarantined records expected | {sum(t.expected_quarantined for t in res)} |",
            f"| **rows lost** | **{sum(t.lost for t in res)}** |",
            f"| **duplicated rows** | **{sum(t.duplicates for t in res)}** |",
            f"| rows of objects that must not count | {sum(t.unexpected for t in res)} |",
            f"| duplicated lineage keys | {sum(t.lineage_dups for t in res)} |",
            f"| DuckDB and pyiceberg disagree | {sum(t.engines_disagree for t in res)} |",
            f"| `lockgate verify` non-zero | {sum(1 for t in res if t.verify_rc != 0)} |",
            f"| stale `version-hint.text` at the end | {sum(t.stale_hints for t in res)} |",
            "| invariant violations of the world/config/shared checks | "
            + (", ".join(f"{k} {v}" for k, v in sorted(violations.items())) if violations else "0")
            + " |",
            "| runs exiting with an error (rc not 0/-9) | "
            f"{sum(1 for r in runs if r.rc not in (0, -9))} |",
        ]
        if a.backend == "s3":
            lines += [
                "",
                "Faults injected by the proxy, by kind: "
                + ", ".join(f"{k} {faults.get(k, 0)}" for k in FAULT_KINDS)
                + f" (total {sum(faults.values())}).",
            ]
        lines += ["", "| crash point | targeted | hit (SIGKILL at the point) |", "|---|---|---|"]
        extra = tuple(p for p in NOTIFICATION_POINTS if cov.targeted.get(p))
        shown = (*HARNESS_POINTS, *extra)
        if a.kinds == ("notify",):  # the points these trials target
            shown = tuple(sorted(p for p in shown if cov.targeted.get(p)))
        for p in shown:
            lines.append(f"| `{p}` | {cov.targeted.get(p, 0)} | {cov.hits.get(p, 0)} |")
        bad = [t for t in res if not t.ok]
        if bad:
            lines += ["", "Failed trials (replay with the command shown):", ""]
            for t in bad[:20]:
                first = (t.errors[0] if t.errors else "").splitlines()[0][:300] if t.errors else ""
                lines.append(f"- trial {t.trial} ({t.kind}): `{self.replay(t.trial)}` -- {first}")
        errs = Counter(
            (r.command, (r.log_tail.strip().splitlines() or ["?"])[-1][:160])
            for r in runs
            if r.rc not in (0, -9)
        )
        if errs:
            lines += ["", "Runs that exited with an error (command, last log line, count):", ""]
            for (cmd, last), n in errs.most_common(15):
                lines.append(f"- {cmd}: `{last}` x{n}")
        return "\n".join(lines) + "\n"


def section_name(args: argparse.Namespace) -> str:
    """The report section a run writes: the backend, plus the kinds when ``--kinds`` is given
    (so that runs of the new kinds do not replace the standard cycle's figures)."""
    return args.backend + (f":{','.join(args.kinds)}" if args.kinds else "")


def write_section(path: Path, backend: str, body: str) -> None:
    start, end = f"<!-- torture:{backend} -->", f"<!-- /torture:{backend} -->"
    text = path.read_text() if path.exists() else "# Reliability\n\n"
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    for k, v in MOTO_CREDS.items():  # the harness's own clients talk to moto too
        os.environ.setdefault(k, v)
    return Harness(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
