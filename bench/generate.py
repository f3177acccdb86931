"""Deterministic benchmark data (seeded): ``python -m bench.generate [--scale 1.0]``.

At ``--scale 1`` (rows and object counts scale linearly, each at least 1):

* D1: one JSON-lines object of 1,000,000 rows (~225 MB), 10 columns: ``id`` (long), ``ts``
  (ISO-8601 timestamp with ``Z``), ``user``, ``event``, ``amount`` (double), ``qty`` (int),
  ``ok`` (boolean), ``note`` (text), ``tags`` (list of strings), ``device`` (struct).
* D2: the same rows as 100 objects (~2.25 MB each).
* D3: 10,000 objects of ~1 KB (5 rows each).
* D4: D1 as CSV, without the nested columns ``tags`` and ``device``.
* D1X2: D1 twice in one object (memory benchmark: input size doubled).
* D0: D1's first row as one object, at every scale: what a process costs whatever it reads
  (start-up, table creation, commit, exit).

Each data set is a folder (a local landing root) under ``bench/.data/s<scale>/``; keys are
flat, ``events-2024-03-01-<n>.<ext>``, so the partition pattern ``(\\d{4}-\\d{2}-\\d{2})``
gives the day. A data set is reused when its ``.done`` file exists (written last).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import DATA_DIR

SEED = 20261127
ROWS = 1_000_000
D2_OBJECTS = 100
D3_OBJECTS = 10_000
D3_ROWS_PER_OBJECT = 5
DAY = "2024-03-01"
PARTITION_PATTERN = r"(\d{4}-\d{2}-\d{2})"
PARTITION_START = "2024-01-01"

#: The declared (flat) schema, as lockgate.yaml type names. Lockgate's declared schemas hold
#: scalar types only, so ``tags`` and ``device`` are parsed and ignored by every reader.
DECLARED: tuple[tuple[str, str], ...] = (
    ("id", "long"),
    ("ts", "timestamptz"),
    ("user", "string"),
    ("event", "string"),
    ("amount", "double"),
    ("qty", "int"),
    ("ok", "boolean"),
    ("note", "string"),
)
#: The same schema as Spark DDL.
SPARK_DDL = (
    "id BIGINT, ts TIMESTAMP, user STRING, event STRING, amount DOUBLE, qty INT, "
    "ok BOOLEAN, note STRING"
)
CSV_COLUMNS = [name for name, _ in DECLARED]

_EVENTS = ["view", "click", "purchase", "signup", "logout", "search", "share", "refund"]
_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]
_OS = ["android", "ios", "linux", "windows", "macos"]
_TAGS = ["new", "promo", "mobile", "web", "beta", "vip", "eu", "us", "trial", "gift"]


@dataclass(frozen=True)
class Datasets:
    """Folders of the data sets of one scale (each a landing root)."""

    root: Path
    scale: float

    def path(self, name: str) -> Path:
        return self.root / name.lower()

    def files(self, name: str) -> list[Path]:
        return sorted(p for p in self.path(name).iterdir() if not p.name.startswith("."))

    def bytes(self, name: str) -> int:
        return sum(p.stat().st_size for p in self.files(name))

    def rows(self, name: str) -> int:
        return int(json.loads((self.path(name) / ".done").read_text())["rows"])


def _rows(n: int, seed: int) -> Iterator[dict[str, object]]:
    rng = random.Random(seed)
    base_s = 1709251200  # 2024-03-01T00:00:00Z
    for i in range(n):
        t = base_s + (i * 86399) // max(n, 1)
        micros = rng.randrange(1_000_000)
        hh, rem = divmod(t - base_s, 3600)
        mm, ss = divmod(rem, 60)
        yield {
            "id": i,
            "ts": f"{DAY}T{hh:02d}:{mm:02d}:{ss:02d}.{micros:06d}Z",
            "user": f"user_{rng.randrange(10_000_000):08d}",
            "event": rng.choice(_EVENTS),
            "amount": round(rng.uniform(0, 10_000), 2),
            "qty": rng.randrange(1, 100),
            "ok": rng.random() < 0.9,
            "note": " ".join(rng.choices(_WORDS, k=rng.randrange(2, 10))),
            "tags": rng.sample(_TAGS, rng.randrange(0, 4)),
            "device": {
                "os": rng.choice(_OS),
                "version": f"{rng.randrange(8, 18)}.{rng.randrange(10)}",
            },
        }


def _json_lines(n: int, seed: int) -> Iterator[bytes]:
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for row in _rows(n, seed):
        yield (dumps(row) + "\n").encode()


def _csv_lines(n: int, seed: int) -> Iterator[bytes]:
    yield (",".join(CSV_COLUMNS) + "\n").encode()
    for r in _rows(n, seed):
        ok = "true" if r["ok"] else "false"
        yield (
            f"{r['id']},{r['ts']},{r['user']},{r['event']},{r['amount']},{r['qty']},{ok},"
            f"{r['note']}\n"
        ).encode()


def _key(i: int, ext: str) -> str:
    return f"events-{DAY}-{i:05d}.{ext}"


def _write_parts(folder: Path, lines: Iterator[bytes], parts: int, per_part: int, ext: str) -> None:
    for p in range(parts):
        with open(folder / _key(p, ext), "wb") as f:
            for _ in range(per_part):
                f.write(next(lines))


def _build(folder: Path, rows: int, make: str, scale_rows: int) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if make == "d0":
        _write_parts(tmp, _json_lines(1, SEED), 1, 1, "jsonl")
    elif make == "d1":
        _write_parts(tmp, _json_lines(rows, SEED), 1, rows, "jsonl")
    elif make == "d1x2":
        with open(tmp / _key(0, "jsonl"), "wb") as f:
            for _ in range(2):
                for line in _json_lines(scale_rows, SEED):
                    f.write(line)
    elif make == "d2":
        parts = min(D2_OBJECTS, rows)
        _write_parts(tmp, _json_lines(rows, SEED), parts, rows // parts, "jsonl")
    elif make == "d3":
        parts = rows // D3_ROWS_PER_OBJECT
        _write_parts(tmp, _json_lines(rows, SEED + 3), parts, D3_ROWS_PER_OBJECT, "jsonl")
    elif make == "d4":
        with open(tmp / _key(0, "csv"), "wb") as f:
            for line in _csv_lines(rows, SEED):
                f.write(line)
    else:
        raise ValueError(make)
    (tmp / ".done").write_text(json.dumps({"rows": rows, "seed": SEED}))
    os.rename(tmp, folder)


def ensure(scale: float = 1.0, which: tuple[str, ...] = ("d1", "d2", "d3", "d4")) -> Datasets:
    """The data sets of ``scale``, generated if missing (deterministic; reused if present)."""
    if scale <= 0:
        raise ValueError("scale must be > 0")
    root = DATA_DIR / f"s{scale:g}"
    rows = max(D2_OBJECTS, int(ROWS * scale))
    rows -= rows % D2_OBJECTS
    d3_rows = max(10, int(D3_OBJECTS * scale)) * D3_ROWS_PER_OBJECT
    plan = {"d0": 1, "d1": rows, "d2": rows, "d3": d3_rows, "d4": rows, "d1x2": 2 * rows}
    for name in which:
        folder = root / name
        if (folder / ".done").exists():
            continue
        root.mkdir(parents=True, exist_ok=True)
        # One builder at a time (test workers share bench/.data): the others wait, then reuse.
        with open(root / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (folder / ".done").exists():
                continue
            print(f"generating {folder} ...", file=sys.stderr, flush=True)
            _build(folder, plan[name], name, rows)
    return Datasets(root, scale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", nargs="*", default=["d1", "d2", "d3", "d4"])
    args = parser.parse_args(argv)
    ds = ensure(args.scale, tuple(n.lower() for n in args.only))
    for name in args.only:
        files = ds.files(name)
        print(f"{name}: {len(files)} objects, {ds.bytes(name) / 1e6:.1f} MB, {ds.rows(name)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
