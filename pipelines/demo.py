"""The demo environment:
``python -m lockgate.pipelines.demo --home DAGSTER_HOME [--config lockgate.yaml]``.

* Writes ``DAGSTER_HOME/dagster.yaml`` (see ``lockgate.pipelines.dagster_yaml``).
* Seeds each source's landing prefix with deterministic demo objects if they are not there
  yet: JSON lines (some gzipped) for ``jsonl`` sources, CSV for ``csv`` sources, over a few
  days from the source's ``partition.start``; among them a malformed JSON line, a wrong-typed
  value, a ragged CSV row, a quoted CSV field holding a comma and a newline, an object whose
  key carries no day (partitioned by its last-modified day), and "late" objects: an older
  ``dt=`` key written last, whose key sorts before the newest (high-water) key.
* ``--more`` lands one more wave of new objects (a new day's object and a late one that sorts
  before the high-water key) to watch the sensor pick them up.

Idempotent: seeding writes only the objects that are missing, with identical bytes (gzip
without timestamps), so re-running never duplicates the seed. Each ``--more`` adds new keys.
Objects are written atomically through the object store, so a sensor never sees half an object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from lockgate.pipelines.dagster_yaml import write_dagster_yaml
from lockgate.resources.config import LockgateConfig, SourceConfig, load_config
from lockgate.resources.store import ObjectStore
from lockgate.resources.stores import open_store

SEED_DAYS = 4
EVENTS_PER_OBJECT = 40
ORDERS_PER_OBJECT = 25
KINDS = ("view", "click", "add_to_cart", "purchase", "refund")
CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark, inc.")

MORE_RE = re.compile(r"-more-(\d{4})")


@dataclass
class SeedReport:
    """What one seeding pass did for one source."""

    source: str
    written: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped_reason: str | None = None


def seed_days(source: SourceConfig, today: date) -> list[date]:
    """The seeded days: ``SEED_DAYS`` days from ``partition.start``, none after ``today``."""
    days = [source.partition_start + timedelta(days=i) for i in range(SEED_DAYS)]
    kept = [d for d in days if d <= today]
    return kept or [source.partition_start]


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _event_lines(seed: str, day: date, count: int, first_id: int) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        ts = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
            minutes=rng.randrange(24 * 60), seconds=rng.randrange(60)
        )
        record = {
            "event_id": first_id + i,
            "ts": ts.isoformat().replace("+00:00", "Z"),
            "user_id": rng.randrange(1, 60),
            "kind": rng.choice(KINDS),
            "amount": f"{rng.randrange(0, 50000) / 100:.2f}",
            "agent": rng.choice(("web", "ios", "android")),  # not declared: ignored
        }
        lines.append(json.dumps(record, separators=(",", ":")).encode())
    return lines


def _order_rows(seed: str, day: date, count: int, first_id: int) -> list[bytes]:
    rng = random.Random(seed)
    rows = [b"order_id,customer,amount,currency,ordered_at,note"]
    for i in range(count):
        at = datetime(day.year, day.month, day.day) + timedelta(minutes=rng.randrange(24 * 60))
        customer = rng.choice(CUSTOMERS)
        quoted = f'"{customer}"' if "," in customer else customer
        rows.append(
            f"{first_id + i},{quoted},{rng.randrange(100, 100000) / 100:.2f},"
            f"{rng.choice(('EUR', 'USD'))},{at.isoformat()},".encode()
        )
    return rows


def _day_id(day: date) -> int:
    return int(day.strftime("%Y%m%d")) * 1000


def jsonl_objects(source: SourceConfig, today: date) -> list[tuple[str, bytes]]:
    """The seed of a JSON-lines source, in write order."""
    days = seed_days(source, today)
    objects: list[tuple[str, bytes]] = []
    for n, day in enumerate(days[1:] or days, start=1):
        first = _event_lines(f"{source.name}:{day}:1", day, EVENTS_PER_OBJECT, _day_id(day))
        if n == 1:
            first[7] = b'{"event_id":' + str(_day_id(day) + 7).encode() + b',"ts":"2026-'
            first[12] = first[12].replace(b'"user_id":', b'"user_id":"abc","was":')
            first.insert(20, b"")  # a blank line is not a record
        objects.append((f"dt={day}/events-0001.jsonl", b"\n".join(first) + b"\n"))
        second = _event_lines(f"{source.name}:{day}:2", day, EVENTS_PER_OBJECT, _day_id(day) + 500)
        objects.append((f"dt={day}/events-0002.jsonl.gz", _gz(b"\n".join(second) + b"\n")))
    if len(days) > 1:
        # Late: the oldest day lands last, and its key sorts before the high-water key.
        late = _event_lines(f"{source.name}:{days[0]}:late", days[0], 10, _day_id(days[0]))
        objects.append((f"dt={days[0]}/events-0001.jsonl.gz", _gz(b"\n".join(late) + b"\n")))
    undated = _event_lines(f"{source.name}:undated", days[-1], 5, 1)
    objects.append(("adhoc/events-undated.jsonl", b"\n".join(undated) + b"\n"))
    return objects


def csv_objects(source: SourceConfig, today: date) -> list[tuple[str, bytes]]:
    """The seed of a CSV source, in write order."""
    days = seed_days(source, today)
    objects: list[tuple[str, bytes]] = []
    for n, day in enumerate(days[1:] or days, start=1):
        rows = _order_rows(f"{source.name}:{day}", day, ORDERS_PER_OBJECT, _day_id(day))
        if n == 1:
            rows[5] = rows[5] + b",surplus-field"  # ragged row
            rows[9] = rows[9] + b'"gift wrap, please\nleave at the door"'
        objects.append((f"orders-{day}.csv", b"\n".join(rows) + b"\n"))
    if len(days) > 1:
        late = _order_rows(f"{source.name}:{days[0]}:late", days[0], 8, _day_id(days[0]))
        objects.append((f"orders-{days[0]}-late.csv", b"\n".join(late) + b"\n"))
    manual = _order_rows(f"{source.name}:manual", days[-1], 3, 1)
    objects.append(("adhoc-orders-upload.csv", b"\n".join(manual) + b"\n"))
    return objects


def demo_objects(source: SourceConfig, today: date) -> list[tuple[str, bytes]] | None:
    """The seed objects of ``source`` (None: no demo data for its format)."""
    if source.format == "jsonl":
        return jsonl_objects(source, today)
    if source.format == "csv":
        return csv_objects(source, today)
    return None


def seed(cfg: LockgateConfig, today: date | None = None) -> list[SeedReport]:
    """Write the missing seed objects of every source; never rewrite an existing one."""
    today = today or datetime.now(UTC).date()
    reports = []
    for source in cfg.sources.values():
        report = SeedReport(source.name)
        objects = demo_objects(source, today)
        if objects is None:
            report.skipped_reason = f"no demo data for format {source.format}"
            reports.append(report)
            continue
        store = open_store(source.landing, cfg.s3)
        for key, data in objects:
            if store.exists(key):
                report.present.append(key)
            else:
                store.put(key, data)
                report.written.append(key)
        reports.append(report)
    return reports


def _next_wave(store: ObjectStore) -> int:
    waves = [int(m.group(1)) for info in store.list() if (m := MORE_RE.search(info.key))]
    return max(waves, default=0) + 1


def land_more(cfg: LockgateConfig, today: date | None = None) -> list[SeedReport]:
    """Land one new wave per source: an object under the newest day, and a late object whose
    key sorts before the high-water key."""
    today = today or datetime.now(UTC).date()
    reports = []
    for source in cfg.sources.values():
        report = SeedReport(source.name)
        if source.format not in ("jsonl", "csv"):
            report.skipped_reason = f"no demo data for format {source.format}"
            reports.append(report)
            continue
        store = open_store(source.landing, cfg.s3)
        wave = _next_wave(store)
        oldest = seed_days(source, today)[0]
        newest = max(today, oldest)
        base = 900_000_000 + wave * 1000
        if source.format == "jsonl":
            new = _event_lines(f"{source.name}:more:{wave}", newest, 20, base)
            late = _event_lines(f"{source.name}:more-late:{wave}", oldest, 5, base + 500)
            objects = [
                (f"dt={newest}/events-more-{wave:04d}.jsonl", b"\n".join(new) + b"\n"),
                (f"dt={oldest}/events-more-{wave:04d}-late.jsonl.gz", _gz(b"\n".join(late))),
            ]
        else:
            rows = _order_rows(f"{source.name}:more:{wave}", newest, 10, base)
            late_rows = _order_rows(f"{source.name}:more-late:{wave}", oldest, 4, base + 500)
            objects = [
                (f"orders-{newest}-more-{wave:04d}.csv", b"\n".join(rows) + b"\n"),
                (f"orders-{oldest}-more-{wave:04d}-late.csv", b"\n".join(late_rows) + b"\n"),
            ]
        for key, data in objects:
            store.put_if_absent(key, data)
            report.written.append(key)
        reports.append(report)
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lockgate.pipelines.demo",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--home", required=True, help="DAGSTER_HOME: where dagster.yaml goes")
    parser.add_argument(
        "--config", help="lockgate.yaml (default: $LOCKGATE_CONFIG, else ./lockgate.yaml)"
    )
    parser.add_argument("--more", action="store_true", help="land one more wave of new objects")
    parser.add_argument(
        "--postgres-url-env",
        metavar="VAR",
        help="a new dagster.yaml stores runs and events in PostgreSQL at the URL in $VAR",
    )
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    path, written = write_dagster_yaml(args.home, postgres_url_env=args.postgres_url_env)
    print(f"dagster instance config: {path}" + ("" if written else " (kept as it is)"))
    reports = land_more(cfg) if args.more else seed(cfg)
    for r in reports:
        if r.skipped_reason:
            print(f"{r.source}: skipped ({r.skipped_reason})")
        else:
            print(f"{r.source}: {len(r.written)} object(s) landed, {len(r.present)} already there")
            for key in r.written:
                print(f"  + {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
