"""Fuzz of the object readers (issue 12): seeded cases over JSONL, CSV and Parquet mixing good
records with hostile ones (deep nesting, huge values, invalid UTF-8, NUL bytes, compression
and dictionary bombs, truncated and corrupt files). The reader runs in child processes
(``tests.reader_child``) so that a crash is seen as an exit status. For every case:

* no crash (the child exits 0; a crash names the case, which replays from its seed);
* peak RSS of the child under ``RSS_BUDGET_MB``;
* ``records = rows + quarantined``, the records counted independently of the reader: non-blank
  lines for JSONL, ``csv`` module rows for CSV, the footer's row count for Parquet; for an
  object that becomes unreadable part-way (truncated compressed stream, bomb guard) the
  records completed before that point plus one whole-object entry.

A campaign: ``python -m tests.pipelines.test_reader_fuzz --cases 5000 [--seed N]
[--minutes M]`` prints cases, crashes, accounting failures and the peak RSS.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import io
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from lockgate.pipelines.formats import RATIO_GRACE_BYTES
from lockgate.resources.config import DEFAULT_MAX_COMPRESSION_RATIO as MAX_RATIO
from tests.reader_child import run_reader

#: Small limits, so that hostile inputs are cheap to make and hit every guard.
OPTS: dict[str, int] = {
    "max_record_bytes": 64 * 1024,
    "max_decompressed_bytes": 8 * 1024 * 1024,
    "block_bytes": 256 * 1024,
    "parquet_batch_rows": 4096,
}
RSS_BUDGET_MB = 400.0
csv.field_size_limit(sys.maxsize)  # huge fields are part of the corpus
CASES_PER_CHILD = 40
VERBOSE = False
SCHEMA = [("id", "int64"), ("name", "string")]


@dataclass
class Case:
    """One generated object; ``expected`` records (None: only bounded, see ``check``)."""

    seed: int
    key: str
    format: str
    data: bytes
    expected: int | None
    at_most: int  # rows + quarantined never exceeds this
    unreadable: bool | None  # a whole-object entry is expected (None: may or may not)
    schema: bool
    if_readable: int | None = None  # the exact count when no whole-object entry came


# -- generators ---------------------------------------------------------------------------------


def _text(rng: random.Random) -> str:
    alphabet = "abcxyz é日本\t\\\"'{}[],:;\u2028\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))


def _good_json(rng: random.Random, i: int) -> bytes:
    rec: dict[str, Any] = {"id": i, "name": _text(rng)}
    if rng.random() < 0.3:
        rec["tags"] = [_text(rng) for _ in range(rng.randint(0, 4))]
    if rng.random() < 0.2:
        rec["nest"] = {"a": {"b": [rng.random(), None, True]}}
    if rng.random() < 0.1:
        rec["id"] = _text(rng)  # a type conflict: rescued, not quarantined
    return json.dumps(rec, ensure_ascii=rng.random() < 0.5).encode()


def _deep(rng: random.Random) -> bytes:
    depth = rng.choice([65, 100, 1000, 20_000, 100_000])
    if rng.random() < 0.5:
        return b'{"a": ' * depth + b"1" + b"}" * depth
    return b'{"id": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"


def _hostile_json(rng: random.Random) -> bytes:
    kind = rng.randrange(12)
    limit = OPTS["max_record_bytes"]
    if kind == 0:
        return _deep(rng)
    if kind == 1:
        return b'{"id": 1, "name": "' + b"x" * rng.randint(limit // 2, 3 * limit) + b'"}'
    if kind == 2:
        return b'{"id": 2, "name": "' + bytes([rng.randrange(0x80, 0x100)]) + b'\xfe"}'
    if kind == 3:
        return b'{"id": 3, "name": "a\x00b"}' if rng.random() < 0.5 else b'{"id": 3, "n\\u0000": 1}'
    if kind == 4:
        return rng.choice([b"null", b"[1, 2]", b"42", b'"s"', b"true", b"  null", b"{}"])
    if kind == 5:
        return rng.choice([b'{"id": 1,', b'{"a": 1}}', b'{"a" 1}', b"{", b"}", b'{"a": tru}'])
    if kind == 6:
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
        return raw.replace(b"\n", b" ")
    if kind == 7:
        return b'{"id": 1, "id": 2, "id": "three"}'
    if kind == 8:
        return json.dumps({"id": 8, "s": "[" * 300 + "{" * 300 + '"\\'}).encode()
    if kind == 9:
        return b'{"id": 1' + b"9" * rng.randint(20, 5000) + b"}"
    if kind == 10:
        return b'{"id": 10, "v": 1e999, "w": NaN, "x": -Infinity}'
    return b'{"id": 11}\r'


def _compress(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    choice = rng.choice([None, None, "gzip", "zstd", "bz2"])
    if choice == "gzip":
        return gzip.compress(data, compresslevel=1), ".gz"
    if choice == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(data), ".zst"
    if choice == "bz2":
        return bz2.compress(data, compresslevel=1), ".bz2"
    return data, ""


def _nonblank_lines(plain: bytes) -> int:
    if plain.startswith(b"\xef\xbb\xbf"):
        plain = plain[3:]
    return sum(1 for line in plain.split(b"\n") if line.strip())


def _complete_lines(plain: bytes, limit: int) -> int:
    """Non-blank lines complete (newline-terminated) within the first ``limit`` bytes."""
    head = plain[:limit]
    return _nonblank_lines(head[: head.rfind(b"\n") + 1])


def _text_case(rng: random.Random, seed: int, fmt: str) -> Case:
    n = rng.randint(0, 300)
    hostile = rng.random() * 0.5
    lines: list[bytes] = [b"id,name,v"] if fmt == "csv" else []
    for i in range(n):
        if rng.random() < 0.05:
            lines.append(rng.choice([b"", b"  ", b"\t"]) if fmt == "jsonl" else b"")
        if fmt == "jsonl":
            lines.append(_hostile_json(rng) if rng.random() < hostile else _good_json(rng, i))
        else:
            lines.append(_hostile_csv(rng) if rng.random() < hostile else _good_csv(rng, i))
    plain = b"\n".join(lines) + (b"\n" if rng.random() < 0.8 else b"")
    if rng.random() < 0.05:
        plain = b"\xef\xbb\xbf" + plain
    kind = rng.random()
    if kind < 0.07:  # a bomb: far more content than max_decompressed_bytes, all good lines
        plain = b'{"id": 1}\n' * (OPTS["max_decompressed_bytes"] // 10 + 50_000)
        if fmt == "csv":
            plain = b"id\n" + b"1\n" * (OPTS["max_decompressed_bytes"] // 2 + 100_000)
        data, suffix = gzip.compress(plain, compresslevel=1), ".gz"
        # the guard (size, or ratio once 4 MiB are out) stops it part-way: the records
        # completed before that point stand, one whole-object entry covers the rest
        limit = OPTS["max_decompressed_bytes"]
        complete = _complete_lines(plain, limit) - (1 if fmt == "csv" else 0)
        key = f"{seed}.{fmt}{suffix}"
        return Case(seed, key, fmt, data, None, complete + 1, True, False)
    data, suffix = _compress(rng, plain)
    key = f"{seed}.{fmt}{suffix}"
    schema = rng.random() < 0.3
    expected = _count_records(plain, fmt)
    if suffix and len(plain) > RATIO_GRACE_BYTES and len(plain) > MAX_RATIO * len(data) // 2:
        # highly compressible hostile lines can trip the ratio guard: the rest is unreadable
        return Case(seed, key, fmt, data, None, expected + 1, None, schema, expected)
    if kind < 0.17 and len(data) > 2:  # truncated
        cut = rng.randint(1, len(data) - 1)
        data = data[:cut]
        if not suffix:
            expected = _count_records(data, fmt)
            return Case(seed, key, fmt, data, expected, expected, False, schema)
        return Case(seed, key, fmt, data, None, expected + 1, None, schema)
    return Case(seed, key, fmt, data, expected, expected, False, schema)


def _good_csv(rng: random.Random, i: int) -> bytes:
    name = _text(rng).replace('"', "").replace("\\", "")
    if rng.random() < 0.2:
        return f'{i},"{name}, with\nnewline ""quoted""",{rng.random()}'.encode()
    return f"{i},{name.replace(',', ' ')},{rng.random()}".encode()


def _hostile_csv(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return b"1,two"  # too few fields
    if kind == 1:
        return b"1,a,b,c,d"  # too many
    if kind == 2:
        return b"2,\xff\xfe,3"
    if kind == 3:
        return b"3,a\x00b,4"
    if kind == 4:
        return (
            b"4,"
            + b"y" * rng.randint(OPTS["max_record_bytes"] // 2, 3 * OPTS["max_record_bytes"])
            + b",5"
        )
    return b'5,"' + b"q" * rng.randint(0, 100) + b'",6'


def _count_records(plain: bytes, fmt: str) -> int:
    if fmt == "jsonl":
        return _nonblank_lines(plain)
    if not plain:
        return 0
    if plain.startswith(b"\xef\xbb\xbf"):
        plain = plain[3:]
    text = plain.decode("utf-8", "surrogateescape")
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    return max(0, len(rows) - 1)  # the header is not a record


def _parquet_case(rng: random.Random, seed: int) -> Case:
    key = f"{seed}.parquet"
    kind = rng.random()
    if kind < 0.15:  # dictionary bomb: every row references one huge value
        rows = rng.randint(1, 2000)
        size = rng.choice([OPTS["max_record_bytes"] + 1, 1 << 20])
        values = pa.DictionaryArray.from_arrays(
            pa.array([0] * rows, pa.int32()), pa.array(["x" * size])
        )
        table = pa.table({"id": pa.array(range(rows), pa.int64()), "name": values})
        nested = rng.random() < 0.5
        if nested:
            offsets = pa.array(range(rows + 1), pa.int32())
            table = table.append_column("tags", pa.ListArray.from_arrays(offsets, values))
    else:
        rows = rng.randint(0, 3000)
        names = [
            None if rng.random() < 0.1 else _text(rng) + ("\x00" if rng.random() < 0.05 else "")
            for _ in range(rows)
        ]
        table = pa.table(
            {
                "id": pa.array(range(rows), pa.int64()),
                "name": pa.array(names, pa.string()),
                "tags": pa.array([[_text(rng)] * rng.randint(0, 3) for _ in range(rows)]),
                "s": pa.array([{"a": rng.random(), "b": "x"} for _ in range(rows)]),
            }
        )
        if rng.random() < 0.1:
            wide = "w" * rng.randint(OPTS["max_record_bytes"] // 2, 2 * OPTS["max_record_bytes"])
            table = table.append_column("wide", pa.array([wide] * rows, pa.string()))
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        compression=rng.choice(["zstd", "snappy", "none", "gzip"]),
        row_group_size=rng.choice([100, 1000, 100_000]),
        store_schema=rng.random() < 0.5,
    )
    data = buf.getvalue()
    schema = rng.random() < 0.3
    damage = rng.random()
    if damage < 0.1 and len(data) > 8:
        data = data[: rng.randint(1, len(data) - 1)]  # truncated: footer gone
        return Case(seed, key, "parquet", data, None, rows + 1, None, schema)
    if damage < 0.2 and len(data) > 64:
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(4, len(data) - 8)
            flipped[pos] = rng.randrange(256)
        return Case(seed, key, "parquet", bytes(flipped), None, rows + 1, None, schema)
    return Case(seed, key, "parquet", data, rows, rows, False, schema)


def make_case(seed: int) -> Case:
    rng = random.Random(seed)
    fmt = rng.choice(["jsonl", "jsonl", "csv", "parquet"])
    if fmt == "parquet":
        return _parquet_case(rng, seed)
    return _text_case(rng, seed, fmt)


# -- running ------------------------------------------------------------------------------------


@dataclass
class Campaign:
    cases: int = 0
    crashes: int = 0
    failures: int = 0
    peak_rss_mb: float = 0.0
    problems: list[str] | None = None

    def report(self) -> str:
        return (
            f"cases {self.cases}, crashes {self.crashes}, accounting failures {self.failures}, "
            f"peak RSS {self.peak_rss_mb:.0f} MB (budget {RSS_BUDGET_MB:.0f} MB)"
        )


def check(case: Case, obj: dict[str, Any]) -> str | None:
    """Why ``obj`` (one object's outcome in the child) breaks the contract, else None."""
    records = obj["rows"] + obj["quarantined"]
    if not obj["indices_ok"]:
        return f"seed {case.seed}: record indices are not 0..n-1 once each"
    if case.expected is not None and records != case.expected:
        return f"seed {case.seed}: {records} records read, {case.expected} expected ({obj})"
    if records > case.at_most:
        return f"seed {case.seed}: {records} records read, at most {case.at_most} ({obj})"
    if case.if_readable is not None and not obj["unreadable"] and records != case.if_readable:
        return f"seed {case.seed}: {records} records read, {case.if_readable} expected ({obj})"
    if case.unreadable is not None and obj["unreadable"] != case.unreadable:
        return f"seed {case.seed}: unreadable={obj['unreadable']}, expected {case.unreadable}"
    return None


def run_cases(seeds: list[int], root: Path, campaign: Campaign) -> None:
    """Run the cases of ``seeds`` (grouped per child process and per schema option)."""
    campaign.problems = campaign.problems if campaign.problems is not None else []
    cases = []
    for s in seeds:  # made one at a time, kept on disk only
        c = make_case(s)
        (root / c.key).write_bytes(c.data)
        c.data = b""
        cases.append(c)
    groups: dict[tuple[str, bool], list[Case]] = {}
    for c in cases:
        groups.setdefault((c.format, c.schema), []).append(c)
    for (fmt, schema), todo in groups.items():
        while todo:
            part = todo[:CASES_PER_CHILD]
            result = run_reader(
                root,
                fmt,
                [c.key for c in part],
                schema=SCHEMA if schema else None,
                opts=OPTS,
                timeout=900,
            )
            done = result.objects
            for c, obj in zip(part, done, strict=False):
                if VERBOSE and obj.get("rss_mb", 0) > 300:
                    print(f"seed {c.seed} ({c.key}): RSS now {obj['rss_mb']:.0f} MB")
                campaign.cases += 1
                problem = check(c, obj)
                if problem:
                    campaign.failures += 1
                    campaign.problems.append(problem)
            campaign.peak_rss_mb = max(campaign.peak_rss_mb, result.peak_rss_mb)
            if result.returncode != 0:
                crashed = part[len(done)] if len(done) < len(part) else part[-1]
                campaign.cases += 1
                campaign.crashes += 1
                campaign.problems.append(
                    f"seed {crashed.seed} ({crashed.key}): child exited {result.returncode}: "
                    f"{result.stderr[-500:]}"
                )
                done = [*done, {}]
            elif result.peak_rss_mb > RSS_BUDGET_MB:
                campaign.problems.append(
                    f"seeds {[c.seed for c in part]}: peak RSS {result.peak_rss_mb:.0f} MB"
                )
            todo = todo[len(done) :]
    for c in cases:
        (root / c.key).unlink()


def _assert_clean(campaign: Campaign) -> None:
    assert campaign.problems == [], "\n".join(campaign.problems or [])
    assert campaign.crashes == 0
    assert 0 < campaign.peak_rss_mb <= RSS_BUDGET_MB


def test_reader_fuzz(tmp_path: Path) -> None:
    campaign = Campaign()
    run_cases(list(range(40)), tmp_path, campaign)
    assert campaign.cases == 40
    _assert_clean(campaign)


@pytest.mark.slow
def test_reader_fuzz_heavy(tmp_path: Path) -> None:
    campaign = Campaign()
    run_cases(list(range(1000, 1600)), tmp_path, campaign)
    assert campaign.cases == 600
    _assert_clean(campaign)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="a reader fuzz campaign")
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--seed", type=int, default=100_000, help="first seed")
    p.add_argument("--minutes", type=float, default=0, help="stop after this long (0: never)")
    p.add_argument("--chunk", type=int, default=200)
    p.add_argument("--verbose", action="store_true", help="name the cases that grow the RSS")
    args = p.parse_args(argv)
    global VERBOSE
    VERBOSE = args.verbose
    campaign = Campaign(problems=[])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lockgate-fuzz-") as tmp:
        seed = args.seed
        end = args.seed + args.cases
        while seed < end:
            if args.minutes and time.monotonic() - started > args.minutes * 60:
                break
            chunk = list(range(seed, min(end, seed + args.chunk)))
            run_cases(chunk, Path(tmp), campaign)
            seed = chunk[-1] + 1
            print(f"[{time.monotonic() - started:.0f}s] {campaign.report()}", flush=True)
    for problem in (campaign.problems or [])[:50]:
        print(problem)
    print(
        f"{campaign.report()} in {time.monotonic() - started:.0f} s (seeds {args.seed}..{seed - 1})"
    )
    return 1 if campaign.crashes or campaign.failures else 0


if __name__ == "__main__":
    sys.exit(main())
