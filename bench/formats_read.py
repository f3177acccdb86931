"""Reader throughput: ``lockgate.pipelines.formats.read_object`` on generated objects
(JSON lines plain
and gzip, with and without a declared schema; CSV; JSON lines with 1% malformed lines, which
takes the per-record fallback), each read in a fresh child process that reports wall time,
rows and peak RSS.

    python -m bench.formats_read [--mb 100] [--no-append]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine() -> str:
    """nproc, memory, CPU model, Python (self-contained: no shared bench helpers needed)."""
    mem = cpu = "?"
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?"
            )
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{platform.machine()}, nproc={os.cpu_count()}, memory={mem}, CPU={cpu}, "
        f"Python {platform.python_version()}"
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def append_section(title: str, command: str, body: str, notes: Sequence[str]) -> None:
    """Write the section through ``bench.common.append_section`` (replaces the earlier one)."""
    from bench.common import append_section as write_section

    write_section(title, command, body, notes)


CHILD = r"""
import json, resource, sys, time
import pyarrow as pa
from lockgate.pipelines.formats import FormatOptions, ObjectCounts, read_object
from lockgate.resources.store import LocalStore
root, key, fmt, declared = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
schema = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us")), ("name", pa.string()),
                    ("score", pa.float64())]) if declared else None
store = LocalStore(root)
etag = store.head(key).etag
t0 = time.perf_counter()
counts = ObjectCounts()
for chunk in read_object(store, key, etag, FormatOptions(fmt), schema):
    counts.add(chunk)
dt = time.perf_counter() - t0
print(json.dumps({"s": dt, "rows": counts.rows, "quarantined": counts.quarantined,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def generate(root: Path, mb: int) -> dict[str, int]:
    """Write the objects; return their uncompressed sizes."""
    target = mb * 1000 * 1000
    line = (
        '{"id":%d,"ts":"2026-01-01T10:00:%02dZ","name":"user-%d","score":%d.5,'
        '"tags":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}\n'
    )
    sizes: dict[str, int] = {}
    with (
        open(root / "plain.jsonl", "wb") as plain,
        gzip.open(root / "gz.jsonl.gz", "wb", compresslevel=1) as gz,
        open(root / "bad.jsonl", "wb") as bad,
        open(root / "data.csv", "wb") as csv,
    ):
        csv.write(b"id,ts,name,score,tags\n")
        n = size = 0
        while size < target:
            block = "".join(line % (i, i % 60, i, i) for i in range(n, n + 10000)).encode()
            plain.write(block)
            gz.write(block)
            lines = block.split(b"\n")
            for j in range(0, len(lines) - 1, 100):
                lines[j] = lines[j][:-5]  # 1% malformed
            bad.write(b"\n".join(lines))
            csv.write(
                "".join(
                    f"{i},2026-01-01T10:00:{i % 60:02d},user-{i},{i}.5,aaaaaaaaaaaaaaaa\n"
                    for i in range(n, n + 10000)
                ).encode()
            )
            size += len(block)
            n += 10000
    for name in ("plain.jsonl", "bad.jsonl", "data.csv"):
        sizes[name] = (root / name).stat().st_size
    sizes["gz.jsonl.gz"] = sizes["plain.jsonl"]
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=100, help="uncompressed MB per object")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args(argv)
    cases = [
        ("JSONL", "plain.jsonl", "jsonl", False),
        ("JSONL + declared schema", "plain.jsonl", "jsonl", True),
        ("JSONL.gz + declared schema", "gz.jsonl.gz", "jsonl", True),
        ("JSONL, 1% malformed lines", "bad.jsonl", "jsonl", True),
        ("CSV (inferred)", "data.csv", "csv", False),
        ("CSV + declared schema", "data.csv", "csv", True),
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-formats-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        sizes = generate(root, args.mb)
        print(f"generated in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for label, key, fmt, declared in cases:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(root), key, fmt, "1" if declared else "0"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            mb = sizes[key] / 1e6
            rows.append(
                [
                    label,
                    f"{mb:.0f}",
                    r["rows"],
                    r["quarantined"],
                    f"{r['s']:.2f}",
                    f"{mb / r['s']:.0f}",
                    f"{r['rows'] / r['s'] / 1e3:.0f}",
                    f"{r['rss_mb']:.0f}",
                ]
            )
            print(rows[-1], file=sys.stderr)
    header = [
        "case",
        "MB (uncompressed)",
        "rows",
        "quarantined",
        "s",
        "MB/s",
        "k rows/s",
        "peak RSS MB",
    ]
    table = markdown_table(header, rows)
    print(table)
    if not args.no_append:
        append_section(
            "Object readers (lockgate.pipelines.formats)",
            "python -m bench.formats_read "
            + shlex.join(argv if argv is not None else sys.argv[1:]),
            table,
            ["One child process per case (single object, default 4 MiB blocks)."],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
