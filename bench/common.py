"""What the benchmark scripts share: the machine description, running a child process with
its wall time, output-line timestamps and peak RSS, medians, Markdown tables, and appending a
section to BENCHMARKS.md (command, machine, load average, date), replacing the earlier
section of the same benchmark.

Conventions (same as ``bench/commit_latency.py``): every script prints its table and writes
it to BENCHMARKS.md (``BENCHMARKS`` below) unless ``--no-append``.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Overridable so that a run against an exported commit (``run_all --code-ref``) still
#: writes to the work tree's BENCHMARKS.md and reuses its generated data.
BENCHMARKS = Path(os.environ.get("LOCKGATE_BENCH_OUT", ROOT / "BENCHMARKS.md"))
DATA_DIR = Path(os.environ.get("LOCKGATE_BENCH_DATA", ROOT / "bench" / ".data"))
VENV_BIN = Path(sys.executable).parent


def lockgate_exe() -> str:
    """The real ``lockgate`` console script of the project venv (else the one on PATH)."""
    exe = VENV_BIN / "lockgate"
    return str(exe) if exe.exists() else "lockgate"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def memory_gib() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kb = int(f.readline().split()[1])
        return f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        return "?"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine() -> str:
    return (
        f"{platform.machine()}, nproc={os.cpu_count()}, memory={memory_gib()}, "
        f"CPU={cpu_model()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


@dataclass
class Measured:
    """One child process: wall time from spawn to exit, peak RSS of the child (and of its
    waited-for descendants, from ``wait4``), stdout lines with the monotonic time they were
    read, stderr text."""

    argv: list[str]
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    stderr: str = ""
    cpu_s: float = 0.0  # user + system CPU of the child and its waited-for descendants

    @property
    def stdout(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def line_time(self, prefix: str) -> float | None:
        """Seconds from spawn until the first stdout line starting with ``prefix``."""
        for t, line in self.lines:
            if line.startswith(prefix):
                return t - self.started
        return None

    def check(self) -> Measured:
        if self.returncode != 0:
            tail = "\n".join(self.stderr.splitlines()[-30:])
            raise RuntimeError(f"{shlex.join(self.argv)} exited {self.returncode}:\n{tail}")
        return self


def run_measured(
    argv: Sequence[str],
    env: Mapping[str, str | None] | None = None,
    cwd: str | Path | None = None,
    timeout_s: float = 3600.0,
) -> Measured:
    """Run ``argv`` to completion; see ``Measured``. ``env`` adds to this process's
    environment (a None value removes the variable). The child is killed after
    ``timeout_s``."""
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    with tempfile.TemporaryFile(mode="w+b") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=err,
            env=full_env,
            cwd=str(cwd) if cwd else None,
        )
        lines: list[tuple[float, str]] = []

        def reader() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip("\n")))

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        ended = time.monotonic()
        proc.returncode = os.waitstatus_to_exitcode(status)
        t.join(timeout=10)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    # ru_maxrss is in KiB on Linux.
    return Measured(
        list(argv),
        proc.returncode,
        ended - started,
        usage.ru_maxrss * 1024,
        started,
        lines,
        stderr,
        usage.ru_utime + usage.ru_stime,
    )


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line(module: str, argv: Sequence[str] | None) -> str:
    args = list(argv) if argv is not None else sys.argv[1:]
    return f"python -m {module} {shlex.join(args)}".strip()


def code_version() -> str:
    """Which Lockgate code the children ran: the git commit of the tree ``pipelines`` is
    imported from (an export made with ``git archive`` carries a ``.bench-code-version``
    file), plus the files modified but not committed there."""
    import lockgate.pipelines

    root = Path(lockgate.pipelines.__file__).resolve().parent.parent
    marker = root / ".bench-code-version"
    if marker.exists():
        return f"{marker.read_text().strip()} (clean export at {root})"
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--",
                "pipelines",
                "resources",
                "sensors",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return f"unknown ({root})"
    changed = [line[3:] for line in dirty if line.strip()]
    extra = f" + uncommitted changes in {', '.join(changed)}" if changed else ""
    return f"git {head}{extra} ({root})"


#: The title of the ingest summary (``bench.summary``): always the last section of BENCHMARKS.md.
SUMMARY_TITLE = "Ingest summary (issue 13)"
PREAMBLE = (
    "# Benchmarks\n\nThe latest figures of each benchmark, with command, machine, date and code; "
    "earlier runs are in git history (`git log -p BENCHMARKS.md`). Scripts under `bench/` "
    "write here (`make bench`, `make bench-spark`): a new run replaces its benchmark's section. "
    "The ingest summary of `make bench` is the last section.\n"
)
_HEADING = re.compile(r"^## (?P<title>.+?)(?: \((?P<when>\d{4}-\d{2}-\d{2}[^)]*)\))?\s*$")


def section_title(heading: str) -> str | None:
    """The title of a ``## title (YYYY-MM-DD ...)`` heading line without its date suffix (None
    when ``heading`` is not a level-2 heading)."""
    m = _HEADING.match(heading.rstrip("\n"))
    return m.group("title").strip() if m else None


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``text`` as (preamble, [(title, section text)]): a section runs from its ``## `` heading
    to the next one outside a fenced block (its ``###`` subsections included)."""
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        title = None if fenced else section_title(line)
        if title is not None:
            sections.append((title, [line]))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return "".join(preamble), [(t, "".join(lines)) for t, lines in sections]


def replace_section(text: str, title: str, section: str) -> str:
    """``text`` with every section titled ``title`` removed and ``section`` put in the place of
    the first of them; a new title goes before the summary section (``SUMMARY_TITLE``), and
    the summary itself always goes last."""
    preamble, sections = split_sections(text)
    body = section.strip("\n") + "\n"
    out: list[str] = []
    placed = False
    for t, s in sections:
        if t == title:
            if not placed and title != SUMMARY_TITLE:
                out.append(body)
                placed = True
            continue
        if t == SUMMARY_TITLE and not placed and title != SUMMARY_TITLE:
            out.append(body)
            placed = True
        out.append(s.strip("\n") + "\n")
    if not placed:
        out.append(body)
    head = preamble.strip("\n") + "\n" if preamble.strip() else PREAMBLE
    return "\n".join([head, *out])


def latest_only(text: str) -> str:
    """``text`` keeping only the last section of each title (in the place of the last one;
    the summary section, ``SUMMARY_TITLE``, moved to the end)."""
    preamble, sections = split_sections(text)
    last = {t: i for i, (t, _) in enumerate(sections)}
    order = sorted(range(len(sections)), key=lambda i: sections[i][0] == SUMMARY_TITLE)
    kept = [sections[i][1].strip("\n") + "\n" for i in order if last[sections[i][0]] == i]
    head = preamble.strip("\n") + "\n" if preamble.strip() else PREAMBLE
    return "\n".join([head, *kept])


def append_section(
    title: str,
    command: str,
    body: str,
    notes: Sequence[str] = (),
    load_before: str | None = None,
) -> None:
    """Write ``## title (date)`` with the command, machine, code, load average and ``body``
    into BENCHMARKS.md, replacing the section of the same title (``replace_section``): the
    file holds the latest figures of each benchmark, git holds the history."""
    now = datetime.now(UTC)
    load = f"Load average (1/5/15 min) at the end of the run: {load_average()}  "
    if load_before is not None:
        load = f"Load average (1/5/15 min) before the run: {load_before}; after: {load_average()}  "
    text = [
        f"## {title} ({now:%Y-%m-%d %H:%M} UTC)\n",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Code: {code_version()}  ",
        load,
    ]
    text += [f"{n}  " for n in notes]
    text[-1] = text[-1].rstrip()
    text += ["", body, ""]
    current = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else PREAMBLE
    BENCHMARKS.write_text(replace_section(current, title, "\n".join(text)), encoding="utf-8")


@dataclass
class SummaryRow:
    """One line of the ingest summary (``bench.summary``): ``ok`` is None when the check was
    skipped (``note`` says why); a ``context`` line has no goal (it explains the others)."""

    check: str
    data: str
    lockgate: str
    reference: str
    measured: str
    goal: str
    ok: bool | None
    rss: str = "-"
    note: str = ""
    context: bool = False

    def cells(self) -> list[str]:
        if self.context:
            result = "context (no goal)"
        elif self.ok is None:
            result = f"skipped ({self.note})" if self.note else "skipped"
        else:
            result = "ok" if self.ok else "**MISSED**"
            if self.note:
                result += f" ({self.note})"
        return [
            self.check,
            self.data,
            self.lockgate,
            self.reference,
            self.measured,
            self.goal,
            result,
            self.rss,
        ]


def report_rows(
    rows: Sequence[SummaryRow],
    title: str,
    module: str,
    argv: Sequence[str] | None,
    note: str,
    load_before: str,
    append: bool,
) -> int:
    """Print ``rows`` as a summary-style table and, with ``append``, write it as the section
    ``title`` of BENCHMARKS.md; 0 when every check is ok, else 1."""
    out = markdown_table(
        ["check", "data", "Lockgate", "reference", "measured", "goal", "result", "peak RSS MiB"],
        [r.cells() for r in rows],
    )
    print(out)
    if append:
        append_section(title, command_line(module, argv), out, [note], load_before)
    return 0 if all(r.ok for r in rows) else 1


def fmt_s(x: float) -> str:
    return f"{x:.2f}"


def fmt_mb(x: float) -> str:
    return f"{x / 1e6:.1f}"


def write_config(
    folder: Path,
    landing: Path | str,
    fmt: str = "jsonl",
    schema: Sequence[tuple[str, str]] | None = None,
    extra_source: Mapping[str, object] | None = None,
    extra_top: Mapping[str, object] | None = None,
    source: str = "bench",
    table: str = "bench.events",
) -> Path:
    """A ``lockgate.yaml`` in ``folder`` with a fresh warehouse (``folder/wh``; ledger
    ``wh/_ledger``) and one source over ``landing`` (pattern ``(\\d{4}-\\d{2}-\\d{2})``)."""
    import yaml

    from bench.generate import PARTITION_PATTERN, PARTITION_START

    spec: dict[str, object] = {
        "landing": str(landing),
        "format": fmt,
        "table": table,
        "partition": {"pattern": PARTITION_PATTERN, "start": PARTITION_START},
        "min_age": 0,  # generated files are written whole before ingesting
    }
    if schema is not None:
        spec["schema"] = dict(schema)
    spec.update(extra_source or {})
    doc: dict[str, object] = {"warehouse": str(folder / "wh"), "sources": {source: spec}}
    doc.update(extra_top or {})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lockgate.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


_BATCH_LINE = re.compile(
    r"batch (\d+) \[[^\]]*\] (\d+) objects, (\d+) rows, (\d+) quarantined, ([\d.]+)s"
)


@dataclass
class IngestRun:
    """A ``lockgate ingest`` child: wall time, peak RSS, and what its batch lines report."""

    measured: Measured
    batches: int
    rows: int
    quarantined: int
    batch_seconds: float  # sum of the per-batch durations (stage + commit + record)


def lockgate_ingest(
    config: Path, timeout_s: float = 3600.0, env: Mapping[str, str] | None = None
) -> IngestRun:
    """Run the real ``lockgate --config <config> ingest`` console script until idle (``env``:
    extra environment variables of the child)."""
    m = run_measured(
        [lockgate_exe(), "--config", str(config), "ingest"], env=env, timeout_s=timeout_s
    )
    m.check()
    batches = rows = quarantined = 0
    seconds = 0.0
    for match in _BATCH_LINE.finditer(m.stderr):
        batches += 1
        rows += int(match.group(3))
        quarantined += int(match.group(4))
        seconds += float(match.group(5))
    return IngestRun(m, batches, rows, quarantined, seconds)
