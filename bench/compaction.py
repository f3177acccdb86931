"""What compaction buys readers: ``python -m bench.compaction [--batches 2000] [--days 10]
[--rows 50] [--rounds 5] [--no-append]``.

A local table is built from ``--batches`` one-object batches (each committed by
``TableStore.commit_batch`` as the batch runs do: one small data file per batch, spread over
``--days`` days; automatic maintenance on, as configured by default). Then, before and after
``compact_table`` (default policy: 128 MiB target, 8 small files at least), it measures the
data files per day and, with DuckDB's iceberg extension on the table's current metadata,
``count(*)`` and a one-day filtered aggregate (median of ``--rounds`` runs each, in one
DuckDB connection per query so no cache is shared, as a user's one-off query runs: wall and
this process's CPU seconds; and the one-day query in one warm connection), the manifests and
snapshots a reader decodes. The row count must be equal before and
after. Prints a Markdown table; appends it to BENCHMARKS.md unless ``--no-append``.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
from pyiceberg.manifest import ManifestFile

from bench.common import append_section, command_line, fmt_s, markdown_table, median
from lockgate.resources.catalog import ObjectStoreCatalog
from lockgate.resources.compaction import compact_table, files_per_day
from lockgate.resources.tables import TableStore

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("ts", pa.timestamp("us")),
        ("value", pa.float64()),
        ("name", pa.string()),
        ("_source_key", pa.string()),
        ("_source_etag", pa.string()),
        ("_source_row", pa.int64()),
        ("_batch_id", pa.int64()),
        ("_ingested_at", pa.timestamp("us", tz="UTC")),
        ("_day", pa.date32()),
    ]
)
FIRST_DAY = date(2026, 1, 1)


def batch_rows(b: int, n: int, day: date) -> pa.RecordBatch:
    base = b * n
    start = int(time.mktime(day.timetuple())) * 1_000_000
    return pa.record_batch(
        [
            pa.array(range(base, base + n), pa.int64()),
            pa.array([start + (base + i) * 1_000 for i in range(n)], pa.timestamp("us")),
            pa.array([(base + i) * 0.25 for i in range(n)], pa.float64()),
            pa.array([f"name-{(base + i) % 97}" for i in range(n)]),
            pa.array([f"landing/dt={day}/obj-{b:06d}.jsonl"] * n),
            pa.array([f"etag{b}"] * n),
            pa.array(range(n), pa.int64()),
            pa.array([b] * n, pa.int64()),
            pa.array([0] * n, pa.timestamp("us", tz="UTC")),
            pa.array([day] * n, pa.date32()),
        ],
        schema=SCHEMA,
    )


def build(ts: TableStore, batches: int, days: int, rows: int) -> None:
    ts.ensure_table("bench.events", SCHEMA)
    for b in range(batches):
        day = FIRST_DAY + timedelta(days=b % days)
        staged = ts.stage("bench.events", [batch_rows(b, rows, day)])
        ts.commit_batch("bench.events", "bench", b, staged)


def duck_connection() -> object:
    from tests.resources.test_interop_duckdb import duck

    return duck()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(sql: str, rounds: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds (this process: DuckDB's threads included) of ``sql``, each
    run in a fresh connection with the extensions loaded (a user's one-off query)."""
    times, cpus = [], []
    result: object = None
    for _ in range(rounds):
        con = duck_connection()
        t0, c0 = time.perf_counter(), _cpu()
        result = con.execute(sql).fetchall()  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
        con.close()  # type: ignore[attr-defined]
    return median(times), median(cpus), result


def timed_warm(sql: str, rounds: int) -> float:
    """Median wall seconds of ``sql`` in one connection after one unmeasured run (a dashboard
    or notebook that keeps its connection)."""
    con = duck_connection()
    con.execute(sql).fetchall()  # type: ignore[attr-defined]
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        con.execute(sql).fetchall()  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t0)
    con.close()  # type: ignore[attr-defined]
    return median(times)


def _entries(m: ManifestFile) -> int:
    return (m.added_files_count or 0) + (m.existing_files_count or 0) + (m.deleted_files_count or 0)


def measure(ts: TableStore, rounds: int, day: date) -> dict[str, object]:
    table = ts.load("bench.events")
    per_day = [len(f) for f in files_per_day(table).values()]
    snap = table.current_snapshot()
    manifests = snap.manifests(table.io) if snap else []
    loc = table.metadata_location
    count_s, _count_cpu, count = timed(f"SELECT count(*) FROM iceberg_scan('{loc}')", rounds)
    one_day = f"SELECT count(*), sum(value) FROM iceberg_scan('{loc}') WHERE _day = DATE '{day}'"
    day_s, day_cpu, day_result = timed(one_day, rounds)
    return {
        "files": sum(per_day),
        "max_per_day": max(per_day),
        "manifests": len(manifests),
        "manifest_entries": sum(
            (m.added_files_count or 0)
            + (m.existing_files_count or 0)
            + (m.deleted_files_count or 0)
            for m in manifests
        ),
        "snapshots": len(table.metadata.snapshots),
        "count": count[0][0],  # type: ignore[index]
        "count_s": count_s,
        "day_s": day_s,
        "day_cpu": day_cpu,
        "day_warm_s": timed_warm(one_day, rounds),
        "day_result": day_result,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--rows", type=int, default=50, help="rows per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-append", action="store_true", help="print, do not append")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.days < 1 or args.rounds < 1:
        parser.error("--batches, --days and --rounds must be at least 1")
    day = FIRST_DAY + timedelta(days=args.days // 2)
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-compaction-") as tmp:
        ts = TableStore(ObjectStoreCatalog(warehouse=str(Path(tmp) / "wh")))
        t0 = time.perf_counter()
        build(ts, args.batches, args.days, args.rows)
        build_s = time.perf_counter() - t0
        before = measure(ts, args.rounds, day)
        t0 = time.perf_counter()
        done = compact_table(ts, "bench.events")
        compact_s = time.perf_counter() - t0
        after = measure(ts, args.rounds, day)
    if before["count"] != after["count"] or before["day_result"] != after["day_result"]:
        raise RuntimeError(f"rows changed: {before} -> {after}")
    header = [
        "table",
        "data files",
        "most files in a day",
        "manifests (entries)",
        "snapshots",
        "count(*) s",
        "one-day query s (CPU s)",
        "one-day query, warm connection s",
    ]
    rows = [
        [
            label,
            m["files"],
            m["max_per_day"],
            f"{m['manifests']} ({m['manifest_entries']})",
            m["snapshots"],
            fmt_s(float(m["count_s"])),  # type: ignore[arg-type]
            f"{fmt_s(float(m['day_s']))} ({fmt_s(float(m['day_cpu']))})",  # type: ignore[arg-type]
            fmt_s(float(m["day_warm_s"])),  # type: ignore[arg-type]
        ]
        for label, m in (("before compaction", before), ("after compaction", after))
    ]
    speedup = float(before["day_s"]) / max(float(after["day_s"]), 1e-9)  # type: ignore[arg-type]
    warm = float(before["day_warm_s"]) / max(float(after["day_warm_s"]), 1e-9)  # type: ignore[arg-type]
    body = markdown_table(header, rows)
    notes = [
        f"{args.batches} one-object batches of {args.rows} rows over {args.days} days "
        f"({before['count']} rows); built in {build_s:.1f} s; compaction of "
        f"{sum(1 for r in done if not r.skipped)} days in {compact_s:.1f} s "
        f"(one replace commit per day); medians of {args.rounds} DuckDB runs; one-day query "
        f"{speedup:.1f}x faster after compaction in a fresh connection, {warm:.1f}x in a warm "
        "one",
    ]
    print(body)
    print(notes[0])
    if not args.no_append:
        append_section(
            "Compaction: files per day and DuckDB query time before/after",
            command_line("bench.compaction", argv),
            body,
            notes,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
