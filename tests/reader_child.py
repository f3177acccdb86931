"""Run ``read_object`` over local objects in a child process, so that a crash (SIGSEGV, an
abort, the kernel's OOM killer) is observed as an exit status instead of killing pytest.

Usage: ``python -m tests.reader_child ROOT FORMAT [--schema JSON] [--limit-mb N] KEY...``
Prints one JSON line per key: ``{"key", "rows", "quarantined", "unreadable", "reasons",
"indices_ok", "rss_mb"}`` and a last line ``{"peak_rss_mb": ...}`` (``peak_rss_mb``).
``--limit-mb`` caps the address space (``RLIMIT_AS``): an unbounded allocation fails with
``MemoryError`` (exit status 3) instead of swapping the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _schema(text: str | None) -> Any:
    import pyarrow as pa

    if not text:
        return None
    types = {"int64": pa.int64(), "string": pa.string(), "float64": pa.float64()}
    return pa.schema([(name, types[t]) for name, t in json.loads(text)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("format")
    p.add_argument("keys", nargs="+")
    p.add_argument("--schema")
    p.add_argument("--limit-mb", type=int, default=0)
    p.add_argument("--max-record-bytes", type=int, default=0)
    p.add_argument("--opts", help="FormatOptions fields as JSON (e.g. max_decompressed_bytes)")
    args = p.parse_args(argv)
    if args.limit_mb:
        limit = args.limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import numpy as np

    from lockgate.pipelines.formats import FormatOptions, read_object
    from lockgate.resources.store import LocalStore

    store = LocalStore(args.root)
    opts: dict[str, Any] = json.loads(args.opts) if args.opts else {}
    if args.max_record_bytes:
        opts["max_record_bytes"] = args.max_record_bytes
    fmt = FormatOptions(args.format, **opts)
    schema = _schema(args.schema)
    try:
        for key in args.keys:
            out: dict[str, Any] = {"key": key, "rows": 0, "quarantined": 0, "unreadable": False}
            reasons: list[str] = []
            indices: list[Any] = []  # numpy arrays of record indices (rows and entries)
            for chunk in read_object(store, key, store.head(key).etag, fmt, schema):
                out["rows"] += chunk.batch.num_rows
                indices.append(chunk.batch.column("_source_row").to_numpy())
                for q in chunk.quarantined:
                    out["quarantined"] += 1
                    out["unreadable"] = out["unreadable"] or q.record_index is None
                    if len(reasons) < 20 or q.record_index is None:
                        reasons.append(q.reason[:200])
                known = [q.record_index for q in chunk.quarantined if q.record_index is not None]
                indices.append(np.asarray(known, dtype=np.int64))
            out["reasons"] = reasons
            out["indices_ok"] = _indices_ok(indices)
            out["rss_mb"] = peak_rss_mb()
            print(json.dumps(out), flush=True)
    except MemoryError:
        return 3
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}), flush=True)
    return 0


def peak_rss_mb() -> float:
    """Peak resident memory of this process image, in MiB: ``VmHWM`` (``ru_maxrss`` also
    counts the parent's memory at fork time, which a child inherits until it execs)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _indices_ok(indices: list[Any]) -> bool:
    """Record indices 0..n-1 each once (a whole-object entry, None, covers the rest)."""
    import numpy as np

    known = np.sort(np.concatenate([np.zeros(0, dtype=np.int64), *indices]))
    return bool((known == np.arange(len(known))).all())


@dataclass
class ChildResult:
    returncode: int
    objects: list[dict[str, Any]]
    peak_rss_mb: float
    stderr: str


def run_reader(
    root: Path,
    fmt: str,
    keys: list[str],
    schema: list[tuple[str, str]] | None = None,
    limit_mb: int = 0,
    max_record_bytes: int = 0,
    timeout: float = 300,
    opts: dict[str, int] | None = None,
) -> ChildResult:
    """Run ``main`` in a child interpreter over ``keys`` under ``root``."""
    cmd = [sys.executable, "-m", "tests.reader_child", str(root), fmt, *keys]
    if schema:
        cmd += ["--schema", json.dumps(schema)]
    if limit_mb:
        cmd += ["--limit-mb", str(limit_mb)]
    if max_record_bytes:
        cmd += ["--max-record-bytes", str(max_record_bytes)]
    if opts:
        cmd += ["--opts", json.dumps(opts)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    peak = next((x["peak_rss_mb"] for x in lines if "peak_rss_mb" in x), -1.0)
    objects = [x for x in lines if "key" in x]
    return ChildResult(proc.returncode, objects, float(peak), proc.stderr[-2000:])


if __name__ == "__main__":
    sys.exit(main())
