"""One torture trial: a fresh source environment, landing data added over a few rounds while
``lockgate`` processes are killed at crash points or at random moments (alone, concurrently,
racing a backfill or a vacuum), then a clean ``lockgate ingest --full-listing``, ``lockgate
verify`` and the independent readers of ``tests.torture.checks``.

Determinism: everything a trial decides (its kind, data, keys, crash targets, kill delays as
a fraction of a run) comes from ``random.Random(f"{seed}:{trial}")``; process timing is the
only thing a replay does not repeat.

The expected outcome, tracked while writing the landing data:

* every record of the version of an object that must be ingested appears exactly once in
  the table (good records) or in the quarantine (bad records), and nothing else does;
* hidden / temporary names are never ingested;
* an object re-written under the same key after its batch committed is ignored
  (``allow_overwrites: false``): the first version stays, once. An object re-written before
  any claim is ingested in its final version. (Re-writing a claimed but uncommitted object is
  what ``world`` trials do, with their own per-key accounting: ``tests.torture.world``.)

Kinds (``--kinds``; by default the cycle ``KINDS``): ``crash``, ``concurrent``, ``backfill``,
``vacuum``, ``deep`` (see RELIABILITY.md), and the kinds of issue 12: ``world``
(``tests.torture.world``), ``config`` (``Trial._edit_config``: between rounds a field the data
already carries is declared, and ``max_files_per_batch`` / ``max_bytes_per_batch`` change;
every value of such a field must be in its column or in ``_rescued_data``) and ``shared``
(``tests.torture.shared``: configs with two sources on one table must be refused); and of
issue 16: ``compact`` (``lockgate compact`` racing four ingests and a backfill on the same
days, then ``lockgate maintain``, each crash-killed like any run).

Local landing files written whole get an mtime an hour old (as from ``cp -p``), so a
``min_age`` never holds them back; only ``world`` trials write fresh mtimes.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from lockgate.resources.crashpoints import ENV, POINTS
from lockgate.resources.store import ObjectStore, S3Options
from lockgate.resources.stores import open_store
from tests.torture.checks import Readers
from tests.torture.launch import ExecLauncher, ForkLauncher, Proc
from tests.torture.proxy import TortureProxy

DAYS = [date(2024, 5, d).isoformat() for d in range(1, 6)]
RUN_TIMEOUT = 900.0
SOURCES = ("ev", "cs")

BACKFILL_POINTS = (
    "backfill.after_stage",
    "backfill.after_commit",
    "ledger.rebuild_record.before_put",
    "ledger.rebuild_record.after_put",
)
VACUUM_POINTS = ("vacuum.before_delete", "vacuum.mid_delete")
DEEP_POINTS = (
    "ledger.compact.before_put",
    "ledger.compact.after_segment",
    "ledger.compact.after_put",
    "maintenance.after_expire",
    "maintenance.before_delete_metadata",
)
#: compaction (``lockgate compact`` racing ingests and a backfill) and scheduled maintenance
#: (``lockgate maintain``): the ``compact`` kind
COMPACT_POINTS = ("compact.after_stage", "compact.after_commit")
MAINTAIN_POINTS = ("maintenance.after_state",)
QUARANTINE_POINTS = ("stage.after_quarantine", "commit.quarantine_committed")
FIRST_RUN_POINTS = ("ledger.fingerprint.before_put", "ledger.fingerprint.after_put")
# Reached only by notification-mode discovery (SQS), which these trials do not run; they are
# covered by tests/sensors/test_notifications.py (crash between receive, claim and delete).
NOTIFICATION_POINTS = tuple(sorted(p for p in POINTS if p.startswith("notifications.")))
HARNESS_POINTS = tuple(sorted(set(POINTS) - set(NOTIFICATION_POINTS)))
INGEST_POINTS = tuple(
    sorted(
        set(HARNESS_POINTS)
        - set(BACKFILL_POINTS)
        - set(VACUUM_POINTS)
        - set(DEEP_POINTS)
        - set(COMPACT_POINTS)
        - set(MAINTAIN_POINTS)
    )
)
FREQUENT = (
    "store.put_if_absent.before",
    "store.put_if_absent.after",
    "stage.after_read",
    "stage.after_write_file",
    "commit.before_metadata_put",
    "commit.after_metadata_put",
    "commit.after_version_hint",
    "ledger.claim.before_put",
    "ledger.claim.after_put",
    "ledger.commit_record.before_put",
    "ledger.commit_record.after_put",
    "discovery.after_list",
)
# trial kinds, cycled by trial number (deep needs the local template; on S3 it runs "crash")
KINDS = (
    "crash",
    "deep",
    "backfill",
    "crash",
    "vacuum",
    "concurrent",
    "deep",
    "crash",
    "backfill",
    "vacuum",
)
#: the kinds of issue 12 (``--kinds``): see ``tests.torture.world``, ``Trial._edit_config``
#: and ``tests.torture.shared``
NEW_KINDS = ("world", "config", "shared")
ALL_KINDS = ("crash", "deep", "backfill", "vacuum", "concurrent", *NEW_KINDS, "compact", "notify")
#: kinds that need the S3 backend (moto): ``notify`` (``tests.torture.notify``)
S3_KINDS = ("notify",)
EDITS = ("fields", "limits")
#: per source: a field the config trials' data carries from the start, undeclared at first
EXTRA_FIELDS = {"ev": ("tag", "string"), "cs": ("w", "long")}
TEMPLATE_BATCHES = 98
FAULT_MIX = {  # shares of the fault rate
    "slowdown": 0.2,
    "internal_error": 0.2,
    "drop_request": 0.15,
    "drop_response": 0.2,
    "reset_before_body": 0.15,
    "latency": 0.1,
}
MOTO_CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@functools.cache
def supports_min_age() -> bool:
    """Whether this build's config takes a source's ``min_age`` (issue 12 item 1): probed
    by parsing a minimal config with it. False only means the harness does not write it."""
    from lockgate.resources.config import parse_config

    pattern = "dt=(\\d{4}-\\d{2}-\\d{2})"
    doc = {
        "warehouse": "/nonexistent/wh",
        "sources": {
            "probe": {
                "landing": "/nonexistent/landing",
                "format": "jsonl",
                "table": "tt.probe",
                "partition": {"pattern": pattern, "start": date(2024, 1, 1)},
                "min_age": 0,
            }
        },
    }
    try:
        parse_config(doc, "/nonexistent/lockgate.yaml")
    except Exception:
        return False
    return True


def trial_kind(
    trial: int,
    backend: str,
    force_point: str | None = None,
    kinds: tuple[str, ...] = (),
) -> str:
    """The kind of a trial: cycled by number (through ``kinds`` if given, else ``KINDS``), or
    the kind that reaches ``force_point``."""
    if force_point is not None:
        if force_point not in POINTS:
            raise ValueError(f"unknown crash point {force_point!r}")
        if force_point in NOTIFICATION_POINTS or (
            "notify" in kinds and force_point.startswith("clean.")
        ):
            return "notify"
        if force_point in BACKFILL_POINTS:
            return "backfill"
        if force_point in VACUUM_POINTS:
            return "vacuum"
        if force_point in DEEP_POINTS:
            return "deep"
        if force_point in COMPACT_POINTS or force_point in MAINTAIN_POINTS:
            return "compact"
        return "crash"
    cycle = kinds or KINDS
    kind = cycle[trial % len(cycle)]
    return "crash" if kind == "deep" and backend != "local" else kind


# ---- bookkeeping -----------------------------------------------------------------------


@dataclass
class RunRecord:
    command: str
    target: str | None
    nth: int
    rc: int | None
    killed_by_us: bool
    duration: float
    launcher: str
    log_tail: str = ""

    @property
    def hit(self) -> bool:
        """The crash point fired: the process died of SIGKILL that we did not send."""
        return self.target is not None and self.rc == -9 and not self.killed_by_us


@dataclass
class TrialResult:
    trial: int
    seed: int
    backend: str
    kind: str
    launcher: str
    runs: list[RunRecord] = field(default_factory=list)
    expected_rows: int = 0
    expected_quarantined: int = 0
    lost: int = 0
    duplicates: int = 0
    unexpected: int = 0
    lineage_dups: int = 0
    engines_disagree: int = 0
    stale_hints: int = 0
    verify_rc: int | None = None
    final_rc: int | None = None
    faults: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    duration: float = 0.0
    data: Counter[str] = field(default_factory=Counter)  # objects written, by kind
    # invariant violations of the new kinds (world / config / shared), by invariant
    violation_kinds: Counter[str] = field(default_factory=Counter)

    @property
    def violations(self) -> int:
        return sum(self.violation_kinds.values())

    def violate(self, invariant: str, detail: str) -> None:
        self.violation_kinds[invariant] += 1
        if self.violation_kinds[invariant] <= 8:
            self.errors.append(f"[{invariant}] {detail}")

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicates == 0
            and self.unexpected == 0
            and self.lineage_dups == 0
            and self.engines_disagree == 0
            and self.verify_rc == 0
            and self.final_rc == 0
            and self.violations == 0
        )

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrialResult:
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        res = cls(**fields)
        res.faults = Counter(d.get("faults", {}))
        res.data = Counter(d.get("data", {}))
        res.violation_kinds = Counter(d.get("violation_kinds", {}))
        res.runs = [
            RunRecord(**{k: v for k, v in r.items() if k in RunRecord.__dataclass_fields__})
            for r in d.get("runs", [])
        ]
        return res

    def to_json(self) -> dict[str, Any]:
        skip = ("runs", "faults", "data", "violation_kinds")
        d = {k: v for k, v in self.__dict__.items() if k not in skip}
        d["faults"] = dict(self.faults)
        d["data"] = dict(self.data)
        d["violation_kinds"] = dict(self.violation_kinds)
        d["violations"] = self.violations
        d["runs"] = [dict(r.__dict__, hit=r.hit) for r in self.runs]
        d["ok"] = self.ok
        return d


@dataclass
class Version:
    """One state of a key: ``file`` (whole), ``partial`` (a copy in progress), ``deleted``,
    ``link_in`` / ``link_out`` (a symlink to a file inside / outside the landing root)."""

    etag: str
    good: list[str]
    bad: list[str]
    state: str = "file"
    at: float = 0.0  # when it was written (time.time()); world copies only


@dataclass
class SourceData:
    """What the harness wrote for one source, and which version of each key must count."""

    name: str
    ext: str
    versions: dict[str, list[Version]] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)  # key -> index into versions

    def expected_good(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for key, i in self.expected.items():
            c.update(self.versions[key][i].good)
        return c

    def expected_bad(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for key, i in self.expected.items():
            c.update(self.versions[key][i].bad)
        return c


# ---- the worker context (one per harness thread) ---------------------------------------


class Coverage:
    """Hits per crash point across workers (thread-safe enough: Counter updates under GIL
    are not atomic, so callers hold ``lock``)."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.targeted: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()

    def record(self, run: RunRecord) -> None:
        if run.target is None:
            return
        with self.lock:
            self.targeted[run.target] += 1
            if run.hit:
                self.hits[run.target] += 1


@dataclass
class WorkerCtx:
    worker: int
    root: Path
    backend: str
    fault_rate: float
    launcher: ForkLauncher | ExecLauncher
    exec_launcher: ExecLauncher
    readers: Readers
    coverage: Coverage
    moto: str | None = None
    proxy: TortureProxy | None = None
    est: dict[str, float] = field(default_factory=lambda: {"fork": 4.0, "exec": 15.0})
    template: dict[str, SourceData] | None = None
    rounds: int = 0  # 0: 2-3 per trial (S3: 2)
    kinds: tuple[str, ...] = ()  # () : the default cycle (KINDS)
    mutations: tuple[str, ...] = ()  # world trials; (): all of tests.torture.world.MUTATIONS
    edits: tuple[str, ...] = EDITS  # config trials

    def set_faults(self, on: bool, seed: int) -> None:
        if self.proxy is None:
            return
        self.proxy.clear()
        if on and self.fault_rate > 0:
            base = {k: v * self.fault_rate for k, v in FAULT_MIX.items()}
            extra = {k: base.pop(k) for k in ("reset_before_body", "latency")}
            self.proxy.set_rates(base, seed=seed)
            self.proxy.set_extra_rates(extra)


# ---- environment ------------------------------------------------------------------------


class TrialEnv:
    """Landing, warehouse and config of one trial; ``run`` starts ``lockgate`` in it."""

    def __init__(self, ctx: WorkerCtx, name: str, max_files: dict[str, int]) -> None:
        self.ctx = ctx
        self.work = ctx.root / "work"
        self.logs = ctx.root / "logs" / name
        self.logs.mkdir(parents=True, exist_ok=True)
        self.nlog = 0
        self.claimed_any = False
        self.s3: S3Options | None = None
        if ctx.backend == "s3":
            import boto3

            assert ctx.moto and ctx.proxy
            self.bucket = f"tt-{ctx.worker}-{name.replace('_', '-')}".lower()[:60]
            boto3.client("s3", endpoint_url=ctx.moto, region_name="us-east-1").create_bucket(
                Bucket=self.bucket
            )
            base = f"s3://{self.bucket}"
            self.s3 = S3Options(endpoint_url=ctx.moto, region="us-east-1")  # direct, no faults
        else:
            self.bucket = ""
            base = str(self.work)
        self.warehouse = f"{base}/wh"
        self.ledger_url = f"{self.warehouse}/_ledger"
        self.landing_url = {s: f"{base}/landing/{s}" for s in SOURCES}
        self.work.mkdir(parents=True, exist_ok=True)
        self.config = self.work / "lockgate.yaml"
        self.notify: Any = None  # notify trials: tests.torture.notify.NotifyQueues
        self.write_config(max_files)
        self.stores: dict[str, ObjectStore] = {
            s: open_store(self.landing_url[s], self.s3) for s in SOURCES
        }
        self.ledger = open_store(self.ledger_url, self.s3)

    def write_config(
        self,
        max_files: dict[str, int],
        max_bytes: dict[str, int] | None = None,
        declared: dict[str, dict[str, str]] | None = None,
        extra_sources: str = "",
        min_age: float | None = None,
    ) -> None:
        """Write ``lockgate.yaml``: sources ``ev`` (JSONL) and ``cs`` (CSV), with optional
        ``max_bytes_per_batch``, fields declared beyond the base schemas and ``min_age``
        (written only if this build's config takes it), then the text of ``extra_sources``
        (more source entries, indented under ``sources:``)."""
        max_bytes = max_bytes or {}
        declared = declared or {}

        def schema(src: str, base: str) -> str:
            more = "".join(f", {k}: {t}" for k, t in declared.get(src, {}).items())
            return f"{{{base}{more}}}"

        def limits(src: str) -> str:
            out = f"    max_files_per_batch: {max_files[src]}\n"
            if self.notify is not None:
                out += self.notify.discovery_yaml(src)
            if src in max_bytes:
                out += f"    max_bytes_per_batch: {max_bytes[src]}\n"
            if min_age is not None and supports_min_age():
                out += f"    min_age: {min_age:g}\n"
            return out

        s3 = ""
        if self.ctx.backend == "s3":
            assert self.ctx.proxy is not None
            s3 = f"s3:\n  endpoint_url: {self.ctx.proxy.url}\n  region: us-east-1\n"
        part = "partition: {pattern: 'dt=(\\d{4}-\\d{2}-\\d{2})', start: 2024-01-01}"
        # cs archives its committed objects (clean_source; world.CLEANED): the clean.* points, and
        # backfills / verify --deep reading the archive
        archive = self.landing_url["cs"].rsplit("/landing/", 1)[0] + "/archive/cs"
        clean_cs = f"    clean_source: {{mode: archive, archive_to: {archive}}}\n"
        text = (
            f"warehouse: {self.warehouse}\n{s3}sources:\n"
            f"  ev:\n    landing: {self.landing_url['ev']}\n    format: jsonl\n"
            f"    table: tt.ev\n    {part}\n"
            f"    schema: {schema('ev', 'id: string, v: long, note: string')}\n"
            f"{limits('ev')}"
            f"  cs:\n    landing: {self.landing_url['cs']}\n    format: csv\n"
            f"    table: tt.cs\n    {part}\n    schema: {schema('cs', 'id: string, v: long')}\n"
            f"{limits('cs')}{clean_cs}{extra_sources}"
        )
        self.config.write_text(text)

    def child_env(self, target: str | None, nth: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKGATE_", "PYTEST"))}
        env.update(MOTO_CREDS)
        env["LOCKGATE_CONFIG"] = str(self.config)
        env["LOCKGATE_RETRY_BASE_DELAY"] = "0.05"
        env["LOCKGATE_RETRY_MAX_DELAY"] = "0.5"
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        if target is not None:
            env[ENV] = f"{target}:{nth}"
        return env

    def start(
        self, argv: list[str], target: str | None = None, nth: int = 1, exec_: bool = False
    ) -> Proc:
        self.nlog += 1
        log = self.logs / f"run{self.nlog:02d}-{argv[0]}-{target or 'none'}.log"
        launcher = self.ctx.exec_launcher if exec_ else self.ctx.launcher
        return launcher.start(
            ["--config", str(self.config), *argv],
            self.child_env(target, nth),
            str(self.work),
            str(log),
        )

    def table_location(self, table: str) -> str:
        return f"{self.warehouse}/tt/{table}"

    def cleanup(self) -> None:
        if self.notify is not None:
            self.notify.cleanup()
        if self.ctx.backend == "s3":
            import boto3

            s3 = boto3.client("s3", endpoint_url=self.ctx.moto, region_name="us-east-1")
            while True:
                page = s3.list_objects_v2(Bucket=self.bucket)
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if not keys:
                    break
                s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
            s3.delete_bucket(Bucket=self.bucket)


# ---- landing data -----------------------------------------------------------------------


class Writer:
    """Writes landing objects and remembers every version (the expected outcome)."""

    def __init__(self, env: TrialEnv, rng: random.Random, trial: int, data: dict[str, SourceData]):
        self.stats: Counter[str] = Counter()
        self.bad_rate = 0.25
        # config trials: records carry EXTRA_FIELDS values (id -> (field, value))
        self.extras = False
        self.extra_values: dict[str, tuple[str, str]] = {}
        self.env = env
        self.rng = rng
        self.trial = trial
        self.data = data
        self.n = sum(len(v) for d in data.values() for v in d.versions.values())

    def ids(self, kind: str, count: int) -> list[str]:
        """``count`` new unique ids (``kind``: ``i`` good, ``b`` bad, ``o`` outside)."""
        out = []
        for _ in range(count):
            self.n += 1
            out.append(f"{kind}{self.trial}-{self.n}-{self.rng.randrange(10**6)}")
        return out

    _ids = ids

    def records(self, src: SourceData) -> tuple[list[str], list[str]]:
        """The ids of a new object's good and bad records."""
        good = self.ids("i", self.rng.randint(1, 4))
        bad = self.ids("b", 1) if self.rng.random() < self.bad_rate else []
        return good, bad

    def _extra(self, src: SourceData, ident: str) -> str | None:
        if not self.extras or (src.ext != "csv" and self.rng.random() < 0.3):
            return None
        field_name, _t = EXTRA_FIELDS[src.name]
        self.n += 1
        value = (
            str(10**9 + self.n * 1000 + self.rng.randrange(1000))
            if src.ext == "csv"
            else f"tag{self.n}z{self.rng.randrange(10**6)}"
        )
        self.extra_values[ident] = (field_name, value)
        return value

    def lines(self, src: SourceData, good: list[str], bad: list[str]) -> bytes:
        """The records as lines (no CSV header), in random order."""
        rows: list[tuple[str, bool]] = [(i, True) for i in good] + [(i, False) for i in bad]
        self.rng.shuffle(rows)
        # bad records are malformed (a CSV row with extra fields, a truncated JSON object):
        # they must go to the quarantine. (A value that merely does not fit its column is
        # kept in the row's ``_rescued_data``, so it would be a row, not a bad record.)
        out: list[str] = []
        for i, ok in rows:
            extra = self._extra(src, i) if ok else None
            if src.ext == "csv":
                if self.extras:
                    out.append(f"{i},{len(i)},{extra}" if ok else f"{i},7,1,extra,more")
                else:
                    out.append(f"{i},{len(i)}" if ok else f"{i},7,extra,more")
            elif ok:
                rec: dict[str, object] = {
                    "id": i,
                    "v": len(i),
                    "note": "x" * self.rng.randrange(20),
                }
                if extra is not None:
                    rec[EXTRA_FIELDS[src.name][0]] = extra
                out.append(json.dumps(rec))
            else:
                out.append(json.dumps({"id": i, "v": 7})[:-4])
        return ("".join(line + "\n" for line in out)).encode()

    def body(self, src: SourceData, good: list[str], bad: list[str]) -> bytes:
        """A whole object: the CSV header (if any) and ``lines``."""
        header = b""
        if src.ext == "csv":
            header = b"id,v,w\n" if self.extras else b"id,v\n"
        return header + self.lines(src, good, bad)

    _body = body

    def put(self, src: SourceData, key: str, fresh: bool = False) -> Version:
        """Write a new version of ``key``. Local files get an mtime an hour old (as from a
        copy tool that keeps mtimes: ``min_age`` never holds them back) unless ``fresh``."""
        good, bad = self.records(src)
        store = self.env.stores[src.name]
        if self.env.ctx.backend == "local":
            from tests.torture.world import local_put

            local_put(Path(self.env.landing_url[src.name]) / key, self.body(src, good, bad), fresh)
        else:
            store.put(key, self.body(src, good, bad))
        v = Version(store.head(key).etag, good, bad)
        src.versions.setdefault(key, []).append(v)
        return v

    def add_new(self, src: SourceData, late: bool) -> None:
        keys = list(src.versions)
        high = max(keys) if keys else None
        for _ in range(20):
            day = self.rng.choice(DAYS)
            if late and high is not None:
                day = self.rng.choice([d for d in DAYS if f"dt={d}" <= high[:13]] or DAYS)
            prefix = "p0" if late else "p1"
            key = f"dt={day}/{prefix}-{self.rng.randrange(10**5):05d}.{src.ext}"
            if key not in src.versions:
                break
        self.put(src, key)
        src.expected[key] = 0
        self.stats["late" if late and high is not None and key < high else "new"] += 1

    def add_hidden(self, src: SourceData) -> None:
        day = self.rng.choice(DAYS)
        n = self.rng.randrange(10**5)
        key = self.rng.choice(
            [f"dt={day}/_tmp-{n}.{src.ext}", f"dt={day}/.p1-{n}.{src.ext}", f"dt={day}/p1-{n}.tmp"]
        )
        store = self.env.stores[src.name]
        good = self._ids("i", 1)
        if self.env.ctx.backend == "local":  # never expected
            from tests.torture.world import local_put

            local_put(Path(self.env.landing_url[src.name]) / key, self.body(src, good, []), False)
        else:
            store.put(key, self.body(src, good, []))
        self.stats["hidden"] += 1

    def claims(self, src: SourceData) -> tuple[dict[tuple[str, str], int], set[int]]:
        """``(key, etag) -> batch`` of every claim, and the batch ids with a commit record."""
        led = self.env.ledger
        claimed: dict[tuple[str, str], int] = {}
        for info in led.list(f"{src.name}/offsets/"):
            claim = json.loads(led.get(info.key))
            for o in claim["objects"]:
                claimed[(o["key"], o["etag"])] = int(claim["batch_id"])
        committed = {
            int(i.key.rsplit("/", 1)[1].split(".")[0])
            for i in led.list(f"{src.name}/commits/")
            if i.key.endswith(".json")
        }
        return claimed, committed

    def commit_records(self, src: SourceData) -> dict[int, dict[str, Any]]:
        """The source's commit records (JSON), by batch id, each superseded by the latest
        rebuild record that re-read its batch (what ``Ledger.account`` answers)."""
        led = self.env.ledger
        out: dict[int, dict[str, Any]] = {}
        for info in led.list(f"{src.name}/commits/"):
            if info.key.endswith(".json"):
                rec = json.loads(led.get(info.key))
                out[int(rec["batch_id"])] = rec
        rebuilds = [i.key for i in led.list(f"{src.name}/rebuilds/") if i.key.endswith(".json")]
        for key in sorted(rebuilds):  # zero-padded table versions: ascending
            for rec in json.loads(led.get(key))["batches"]:
                out[int(rec["batch_id"])] = rec
        return out

    def rewrite_one(self, src: SourceData) -> str | None:
        """Re-write a key whose expected version is committed (must be ignored) or was never
        claimed (its final version counts); None if no key qualifies."""
        claimed, committed = self.claims(src)
        claimed_keys = {k for k, _ in claimed}
        keys = sorted(src.versions)
        self.rng.shuffle(keys)
        for key in keys:
            cur = src.versions[key][src.expected[key]]
            batch = claimed.get((key, cur.etag))
            if batch is not None and batch in committed:
                self.put(src, key)
                self.stats["rewritten_after_commit"] += 1
                return "ignored"
            if key not in claimed_keys:
                self.put(src, key)
                src.expected[key] = len(src.versions[key]) - 1
                self.stats["rewritten_before_claim"] += 1
                return "replaced"
        return None


# ---- the trial --------------------------------------------------------------------------


def _tail(path: Path, n: int = 1200) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class Trial:
    def __init__(
        self,
        ctx: WorkerCtx,
        trial: int,
        seed: int,
        exec_: bool = False,
        force_point: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.trial = trial
        self.seed = seed
        self.rng = random.Random(f"{seed}:{trial}")
        self.force = force_point
        kind = trial_kind(trial, ctx.backend, force_point, ctx.kinds)
        self.kind = kind
        self.bad_rate = 1.0 if force_point in QUARANTINE_POINTS else 0.25
        self.exec = exec_
        launcher = "exec" if exec_ else ctx.launcher.name
        self.result = TrialResult(trial, seed, ctx.backend, kind, launcher)
        self.first_run = True
        # the config as written (``TrialEnv.write_config`` arguments; config trials edit it)
        self.cfg: dict[str, Any] = {}

    # -- running processes -----------------------------------------------------------------

    def _forced(self, command: str) -> bool:
        """Whether the forced point (``--cover``) is pending and ``command`` can reach it."""
        p = self.force
        if p is None:
            return False
        if p in BACKFILL_POINTS:
            return command == "backfill"
        if p in VACUUM_POINTS:
            return command == "vacuum"
        if p in COMPACT_POINTS:
            return command == "compact"
        if p in MAINTAIN_POINTS:
            return command == "maintain"
        return command == "ingest"

    def _pick_target(self, command: str) -> tuple[str | None, int]:
        rng = self.rng
        if self._forced(command):
            point, self.force = self.force, None
            assert point is not None
            return point, 1
        if command == "backfill":
            pool: tuple[str, ...] = BACKFILL_POINTS if rng.random() < 0.7 else INGEST_POINTS
        elif command == "vacuum":
            pool = VACUUM_POINTS
        elif command == "compact":
            pool = COMPACT_POINTS
        elif command == "maintain":
            pool = (*MAINTAIN_POINTS, "maintenance.after_expire")
        elif self.kind == "notify":
            from tests.torture.notify import pick_point

            return pick_point(rng)
        elif self.kind == "deep" and rng.random() < 0.8:
            pool = DEEP_POINTS
        elif self.first_run and rng.random() < 0.2:
            pool = FIRST_RUN_POINTS
        else:
            pool = tuple(p for p in INGEST_POINTS if p not in FIRST_RUN_POINTS)
        point = rng.choice(pool)
        nth = rng.randint(1, 4) if point in FREQUENT else 1
        return point, nth

    def _finish(
        self,
        env: TrialEnv,
        proc: Proc,
        command: str,
        target: str | None,
        nth: int,
        log: Path | None = None,
    ) -> RunRecord:
        rc = proc.wait(RUN_TIMEOUT)
        if rc is None:
            proc.kill()
            rc = proc.wait(60)
            self.result.errors.append(f"{command} hung > {RUN_TIMEOUT}s (target {target})")
        rec = RunRecord(command, target, nth, rc, proc.killed_by_us, proc.duration, proc.launcher)
        if rc not in (0, -9):
            logs = sorted(env.logs.glob(f"run{env.nlog:02d}-*")) if log is None else [log]
            rec.log_tail = _tail(logs[-1]) if logs else ""
        if rc == 0 and target is None:
            est = self.ctx.est
            est[proc.launcher] = 0.7 * est[proc.launcher] + 0.3 * proc.duration
        self.result.runs.append(rec)
        self.ctx.coverage.record(rec)
        return rec

    def _chaos_run(self, env: TrialEnv, argv: list[str], mode: str | None = None) -> Proc:
        """Start one run killed by a crash point, by an external SIGKILL, or not at all."""
        rng = self.rng
        if self._forced(argv[0]) or (mode is None and self.kind == "deep"):
            mode = "crash"  # (deep: the template is one step before compaction/maintenance)
        mode = mode or rng.choices(["crash", "kill", "clean"], [0.7, 0.25, 0.05])[0]
        target, nth = self._pick_target(argv[0]) if mode == "crash" else (None, 1)
        proc = env.start(argv, target, nth, exec_=self.exec)
        proc.torture = (argv[0], target, nth, mode)  # type: ignore[attr-defined]
        if mode == "kill":
            proc.kill_at = time.monotonic() + rng.random() * self.ctx.est[proc.launcher]  # type: ignore[attr-defined]
        self.first_run = False
        return proc

    def _wait_all(self, env: TrialEnv, procs: list[Proc]) -> None:
        while any(p.running() for p in procs):
            now = time.monotonic()
            for p in procs:
                at = getattr(p, "kill_at", None)
                if at is not None and now >= at:
                    p.kill()
                    p.kill_at = None  # type: ignore[attr-defined]
                if now - p.started > RUN_TIMEOUT:
                    p.kill()
            time.sleep(0.02)
        for p in procs:
            command, target, nth, _mode = p.torture  # type: ignore[attr-defined]
            self._finish(env, p, command, target, nth)

    # -- plan ------------------------------------------------------------------------------

    def _chaos(self, env: TrialEnv) -> None:
        rng = self.rng
        ingest = ["ingest"]
        if self.kind == "concurrent":
            procs = [self._chaos_run(env, ingest) for _ in range(rng.randint(2, 3))]
            self._wait_all(env, procs)
        elif self.kind == "backfill":
            if not env.claimed_any:  # a backfill of days without claims does nothing
                self._wait_all(env, [self._chaos_run(env, ingest, mode="clean")])
            first, last = sorted(rng.sample(DAYS, 2))
            if self.force in BACKFILL_POINTS:
                first, last = DAYS[0], DAYS[-1]
            bf = ["backfill", "--source", "ev", "--from", first, "--to", last]
            procs = [self._chaos_run(env, bf), self._chaos_run(env, ingest)]
            self._wait_all(env, procs)
        elif self.kind == "vacuum":
            # orphans first (a run killed after staging), then a vacuum killed mid-way
            if self.force in VACUUM_POINTS:
                proc = env.start(["ingest"], "stage.after_write_file", 1, exec_=self.exec)
                proc.torture = ("ingest", "stage.after_write_file", 1, "crash")  # type: ignore[attr-defined]
                self._wait_all(env, [proc])
            else:
                self._wait_all(env, [self._chaos_run(env, ingest)])
            vac = ["vacuum", "--older-than", "0s", "--no-run-alive", "--no-progress"]
            self._wait_all(env, [self._chaos_run(env, vac, mode="crash")])
        elif self.kind == "compact":
            # compaction racing four ingests and a backfill on the same days (issue 16), then
            # the scheduled maintenance; both crash-killed like any run. The first round is
            # ingested first: 6+ objects of ev over 5 days in batches of one object leave some
            # day with 2+ small files, so the first compaction has work (a forced point hits).
            if not env.claimed_any:
                self._wait_all(env, [self._chaos_run(env, ingest, mode="clean")])
            compact = ["compact", "--source", "ev", "--min-files", "2"]
            procs = [self._chaos_run(env, compact), *(self._chaos_run(env, ingest) for _ in "abcd")]
            first, last = sorted(rng.sample(DAYS, 2))
            bf = ["backfill", "--source", "ev", "--from", first, "--to", last]
            procs.append(self._chaos_run(env, bf))
            self._wait_all(env, procs)
            maintain = ["maintain", "--no-orphans"]
            self._wait_all(env, [self._chaos_run(env, maintain)])
        elif self.kind == "notify":
            # runs drain the scrambled queues: one or two in a row (a killed run's messages
            # come back after the visibility timeout), or two racing on the same queues
            if rng.random() < 0.3:
                self.result.data["racing_ingest_rounds"] += 1
                self._wait_all(env, [self._chaos_run(env, ingest) for _ in "ab"])
            else:
                for _ in range(rng.randint(1, 2)):
                    self._wait_all(env, [self._chaos_run(env, ingest)])
                    time.sleep(rng.random() * 2.5)
        else:
            for _ in range(rng.randint(1, 2)):
                self._wait_all(env, [self._chaos_run(env, ingest)])
        env.claimed_any = True  # not exactly (runs may die before claiming), good enough

    def _chaos_world(
        self, env: TrialEnv, writer: Writer, data: dict[str, SourceData], mutator: Any
    ) -> None:
        """Ingests (killed as in ``crash`` trials) while the mutator changes objects; then one
        new object per source and a run killed right after its first claim (so that a pending
        claim exists), and mutations of the pending claims' objects."""
        rng = self.rng
        for _ in range(rng.randint(1, 2)):
            procs = [self._chaos_run(env, ["ingest"])]
            mutator.start()
            try:
                self._wait_all(env, procs)
            finally:
                mutator.stop()
        for src in data.values():
            writer.add_new(src, late=False)
        point = "ledger.claim.after_put"
        proc = env.start(["ingest"], point, 1, exec_=self.exec)
        proc.torture = ("ingest", point, 1, "crash")  # type: ignore[attr-defined]
        self._wait_all(env, [proc])
        mutator.between_rounds(random.Random(f"{self.seed}:{self.trial}:between:{rng.random()}"))
        env.claimed_any = True

    def _edit_config(self, env: TrialEnv) -> None:
        """Between rounds: declare a field the data already carries (``fields``) and/or
        change ``max_files_per_batch`` / ``max_bytes_per_batch`` (``limits``); the first
        step does both (of those enabled)."""
        rng = self.rng
        edits = list(self.ctx.edits) or list(EDITS)
        first = not self.result.data.get("config_edits")
        self.result.data["config_edits"] += 1
        # the first edit step applies every enabled edit, later ones a random subset
        chosen = edits if first else rng.sample(edits, rng.randint(1, len(edits)))
        for edit in chosen:
            if edit == "fields":
                todo = [s for s in SOURCES if s not in self.cfg["declared"]]
                if todo:
                    src = rng.choice(todo)
                    fname, ftype = EXTRA_FIELDS[src]
                    self.cfg["declared"][src] = {fname: ftype}
                    self.result.data[f"declared_{src}_{fname}"] += 1
            elif edit == "limits":
                for src in SOURCES:
                    self.cfg["max_files"][src] = rng.randint(1, 4)
                    size = rng.choice([None, 300, 2048, 64 * 1024 * 1024])
                    if size is None:
                        self.cfg["max_bytes"].pop(src, None)
                    else:
                        self.cfg["max_bytes"][src] = size
                self.result.data["limits_changed"] += 1
            else:
                raise ValueError(f"unknown config edit {edit!r} (known: {', '.join(EDITS)})")
        env.write_config(**self.cfg)

    def _add_data(self, writer: Writer, data: dict[str, SourceData], round_no: int) -> None:
        rng = self.rng
        small = self.ctx.backend == "s3"  # each S3 request costs ~0.1 s on a loaded host
        for src in data.values():
            if self.kind == "deep" and src.name == "ev":
                n = rng.randint(2, 4)
            elif self.kind == "compact" and src.name == "ev":
                n = rng.randint(6, 8)
            else:
                n = rng.randint(1, 2) if small else rng.randint(1, 3)
            for _ in range(n):
                writer.add_new(src, late=round_no > 0 and rng.random() < 0.3)
            if rng.random() < 0.15:
                writer.add_hidden(src)
            if (
                round_no > 0
                and self.kind not in ("backfill", "world", "compact")
                and rng.random() < 0.4
            ):
                writer.rewrite_one(src)

    def run(self) -> TrialResult:
        started = time.monotonic()
        ctx = self.ctx
        res = self.result
        faults_before = Counter(ctx.proxy.faults) if ctx.proxy else Counter()
        ctx.set_faults(True, seed=hash((self.seed, self.trial)) & 0xFFFFFFFF)
        if self.kind == "deep":
            data = self._restore_template()
            max_files = {"ev": 1, "cs": 1}
        else:
            shutil.rmtree(ctx.root / "work", ignore_errors=True)
            data = {"ev": SourceData("ev", "jsonl"), "cs": SourceData("cs", "csv")}
            max_files = {s: self.rng.randint(1, 3) for s in SOURCES}
            if self.kind == "compact":
                max_files["ev"] = 1  # one small file per object: days to compact
        # min_age: 0 (objects are put whole, with old mtimes anyway), world: WORLD_MIN_AGE_S
        from tests.torture.world import WORLD_MIN_AGE_S

        min_age = WORLD_MIN_AGE_S if self.kind == "world" else 0.0
        self.cfg = {"max_files": max_files, "max_bytes": {}, "declared": {}, "min_age": min_age}
        env = TrialEnv(ctx, f"t{self.trial}", max_files)
        if self.kind == "notify":
            from tests.torture.notify import NotifyQueues

            env.notify = NotifyQueues(env, random.Random(f"{self.seed}:{self.trial}:q"), SOURCES)
        env.write_config(**self.cfg)
        mutator = None
        try:
            writer = Writer(env, self.rng, self.trial, data)
            writer.bad_rate = self.bad_rate
            writer.extras = self.kind == "config"
            rounds = 2 if ctx.backend == "s3" else self.rng.randint(2, 3)
            rounds = ctx.rounds or rounds
            if self.kind == "world":
                from tests.torture.world import MUTATIONS, Mutator

                wrng = random.Random(f"{self.seed}:{self.trial}:world")
                mutator = Mutator(env, writer, data, wrng, ctx.mutations or MUTATIONS)
            for round_no in range(rounds):
                self._add_data(writer, data, round_no)
                if env.notify is not None:
                    env.notify.scramble()
                if mutator is not None:
                    self._chaos_world(env, writer, data, mutator)
                else:
                    self._chaos(env)
                if self.kind == "config" and round_no < rounds - 1:
                    self._edit_config(env)
                if self.kind == "shared" and round_no == 0:
                    from tests.torture.shared import shared_round

                    shared_round(self, env, writer, data)
            if mutator is not None:
                if mutator.errors:
                    raise RuntimeError(mutator.errors[0])
                res.data.update(mutator.stats)
                if ctx.backend == "local":
                    from tests.torture.world import wait_settled

                    roots = [Path(env.landing_url[s]) for s in SOURCES]
                    res.data["settle_ms"] += int(1000 * wait_settled(roots, min_age + 1.0))
            self._final(env)
            res.data.update(writer.stats)
            self._check(env, data, writer)
        except Exception as e:  # a harness failure is a failed trial, with its reason
            import traceback

            res.errors.append(f"harness: {type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}")
            res.verify_rc = res.verify_rc if res.verify_rc is not None else -1
        finally:
            if mutator is not None:
                mutator.stop()
            if ctx.proxy:
                res.faults = Counter(ctx.proxy.faults) - faults_before
            res.duration = time.monotonic() - started
            if res.ok:
                shutil.rmtree(env.logs, ignore_errors=True)
            else:
                keep = ctx.root / "failed" / f"t{self.trial}"
                if ctx.backend == "local" and (ctx.root / "work").exists():
                    shutil.copytree(ctx.root / "work", keep / "work", symlinks=True)
                if env.logs.exists():
                    shutil.copytree(env.logs, keep / "logs", dirs_exist_ok=True)
                (keep / "result.json").parent.mkdir(parents=True, exist_ok=True)
                (keep / "result.json").write_text(json.dumps(res.to_json(), indent=1))
                versions = {
                    n: {k: [v.__dict__ for v in vs] for k, vs in d.versions.items()}
                    for n, d in data.items()
                }
                (keep / "versions.json").write_text(json.dumps(versions, indent=1))
            env.cleanup()
        return res

    def _final(self, env: TrialEnv) -> None:
        res = self.result
        if env.notify is not None:
            env.notify.wait_visible()
        # notify: a second backstop claims the current version of a key whose stale event
        # claimed an older one (tests.torture.notify)
        for _pass in range(2 if env.notify is not None else 1):
            for attempt in range(4):
                if attempt >= 2:
                    self.ctx.set_faults(False, 0)
                proc = env.start(["ingest", "--full-listing"], exec_=self.exec)
                rec = self._finish(env, proc, "final-ingest", None, 1)
                res.final_rc = rec.rc
                if rec.rc == 0:
                    break
                res.errors.append(f"final ingest rc={rec.rc}: {rec.log_tail[-600:]}")
        self.ctx.set_faults(False, 0)
        if env.notify is not None:
            self._final_queues(env)
        proc = env.start(["verify"], exec_=self.exec)
        rec = self._finish(env, proc, "verify", None, 1)
        res.verify_rc = rec.rc
        if rec.rc != 0:
            res.errors.append(f"verify rc={rec.rc}: {_tail(sorted(env.logs.glob('*verify*'))[-1])}")

    def _final_queues(self, env: TrialEnv) -> None:
        """Notify trials: no message left in a queue (a message whose objects are settled is
        deleted; one left over is received again by a plain ingest first, at most twice) and
        the dead-letter queues hold the poison bodies sent (each one the scrambles did not
        drop) and nothing else."""
        q = env.notify
        res = self.result
        for _ in range(2):
            if not any(q.left(s) for s in SOURCES):
                break
            q.wait_visible()
            self._finish(env, env.start(["ingest"], exec_=self.exec), "queue-ingest", None, 1)
        from tests.torture.notify import found_by

        for s in SOURCES:
            if n := q.left(s):
                res.violate("queue-left", f"{s}: {n} messages left in the queue after the end")
            dead = q.dead_letters(s)
            must = q.poison[s] - q.poison_dropped[s]  # (a dropped one may be there too)
            if not must <= set(dead) <= q.poison[s]:
                res.violate(
                    "dead-letter",
                    f"{s}: dead-letter queue holds {sorted(dead)[:5]}, poison sent "
                    f"{sorted(q.poison[s])[:5]}",
                )
            for path, n in found_by(env, s).items():
                res.data[f"found_by_{path}"] += n
        res.data.update(q.stats)

    def _check(self, env: TrialEnv, data: dict[str, SourceData], writer: Writer) -> None:
        res = self.result
        readers = self.ctx.readers
        for name, src in data.items():
            if self.kind == "world":
                want, bad = self._check_world(env, src, writer)
            else:
                want, bad = src.expected_good(), src.expected_bad()
            if self.kind == "config":
                self._check_values(env, name, want, writer)
            res.expected_rows += sum(want.values())
            tc = readers.check_table(env.table_location(name))
            for label, got in (("duckdb", tc.duck_ids), ("pyiceberg", tc.ice_ids)):
                lost = want - got
                extra = got - want
                dups = sum(c for i, c in extra.items() if i in want)
                unexpected = sum(c for i, c in extra.items() if i not in want)
                if lost or extra:
                    res.errors.append(
                        f"{name} ({label}, v{tc.version}): lost {sum(lost.values())} "
                        f"{list(lost)[:5]}, duplicated {dups}, unexpected {unexpected} "
                        f"{[i for i in extra if i not in want][:5]}"
                    )
                res.lost = max(res.lost, sum(lost.values()))
                res.duplicates = max(res.duplicates, dups)
                res.unexpected = max(res.unexpected, unexpected)
            if tc.duck_ids != tc.ice_ids:
                res.engines_disagree += 1
            res.lineage_dups += max(tc.duck_lineage_dups, tc.ice_lineage_dups)
            if not tc.hint_ok:
                res.stale_hints += 1
            res.expected_quarantined += sum(bad.values())
            try:
                q = readers.quarantined_ids(env.table_location(f"{name}__quarantine")) or Counter()
            except Exception as e:  # e.g. another source wrote rows into it (shared trials)
                res.violate("quarantine-table", f"{name}__quarantine unreadable: {e!r:.300}")
                q = Counter()
            if q != bad:
                lost_q, extra_q = bad - q, q - bad
                res.lost += sum(lost_q.values())
                res.duplicates += sum(extra_q.values())
                res.errors.append(
                    f"{name} quarantine: lost {sum(lost_q.values())}, extra {sum(extra_q.values())}"
                )

    def _check_world(
        self, env: TrialEnv, src: SourceData, writer: Writer
    ) -> tuple[Counter[str], Counter[str]]:
        """The per-key accounting of ``tests.torture.world``; returns the expected good and
        bad ids (for the engines' multiset comparison)."""
        from tests.torture.world import WORLD_MIN_AGE_S, check_world

        readers = self.ctx.readers
        rows = readers.scan(
            env.table_location(src.name), ("id", "_source_key", "_source_etag", "_batch_id")
        )
        if rows is None:
            import pyarrow as pa

            rows = pa.table(
                {c: pa.array([], pa.string()) for c in ("id", "_source_key", "_source_etag")}
                | {"_batch_id": pa.array([], pa.int64())}
            )
        try:
            quarantine = readers.scan(
                env.table_location(f"{src.name}__quarantine"),
                ("_source_key", "_source_etag", "_source_row", "raw", "reason"),
            )
        except Exception as e:
            self.result.violate("quarantine-table", f"{src.name}__quarantine: {e!r:.300}")
            quarantine = None
        claimed, _committed = writer.claims(src)
        # (a build without ``min_age`` claims copies in progress: that is the bug it fixes)
        commits = writer.commit_records(src)
        wc = check_world(src, rows, quarantine, claimed, commits, WORLD_MIN_AGE_S)
        for invariant, detail in wc.violations:
            self.result.violate(invariant, detail)
        return wc.want_good, wc.want_bad

    def _check_values(self, env: TrialEnv, name: str, want: Counter[str], writer: Writer) -> None:
        """Config trials: every value of a field the data carries (declared or not) is in
        its column or in the row's ``_rescued_data``, never dropped."""
        table = self.ctx.readers.scan(env.table_location(name))
        if table is None:
            return
        fname = EXTRA_FIELDS[name][0]
        n = table.num_rows
        col = table.column(fname).to_pylist() if fname in table.column_names else [None] * n
        resc = (
            table.column("_rescued_data").to_pylist()
            if "_rescued_data" in table.column_names
            else [None] * n
        )
        found: dict[str, list[tuple[object, object]]] = {}
        for ident, c, r in zip(table.column("id").to_pylist(), col, resc, strict=True):
            found.setdefault(str(ident), []).append((c, r))
        declared = self.cfg["declared"].get(name, {})
        for ident in sorted(want):
            if ident not in writer.extra_values:
                continue
            _f, value = writer.extra_values[ident]
            for c, r in found.get(ident, []):  # (a lost id is reported by the id check)
                if (c is not None and str(c) == value) or (isinstance(r, str) and value in r):
                    continue
                self.result.violate(
                    "dropped-value",
                    f"{name}: {fname}={value!r} of id {ident} dropped (column {fname}: {c!r}, "
                    f"_rescued_data: {str(r)[:120]!r}; declared now: {declared or 'no'})",
                )

    # -- the deep template (local): a source with ~100 batches, near compaction/maintenance -

    def _restore_template(self) -> dict[str, SourceData]:
        ctx = self.ctx
        tpl = ctx.root / "template"
        if ctx.template is None or not tpl.exists():
            ctx.template = build_template(ctx)
        shutil.rmtree(ctx.root / "work", ignore_errors=True)
        # hard links keep inode and mtime, so local etags (inode-mtime-size) are unchanged;
        # Lockgate never writes a file in place (temp file + link/rename), so the template
        # is never modified through a link
        subprocess.run(["cp", "-al", str(tpl), str(ctx.root / "work")], check=True)
        return copy.deepcopy(ctx.template)


def build_template(ctx: WorkerCtx) -> dict[str, SourceData]:
    """A clean state of TEMPLATE_BATCHES committed single-object batches of ``ev`` (and a
    few of ``cs``), built once per worker at ``<root>/work`` and moved to ``<root>/template``
    (Iceberg metadata holds absolute paths: trials restore it at ``<root>/work``)."""
    shutil.rmtree(ctx.root / "work", ignore_errors=True)
    shutil.rmtree(ctx.root / "template", ignore_errors=True)
    env = TrialEnv(ctx, "template", {"ev": 1, "cs": 1})
    data = {"ev": SourceData("ev", "jsonl"), "cs": SourceData("cs", "csv")}
    writer = Writer(env, random.Random("template"), 0, data)
    for _ in range(TEMPLATE_BATCHES):
        writer.add_new(data["ev"], late=False)
    for _ in range(3):
        writer.add_new(data["cs"], late=False)
    proc = env.start(["ingest"])
    rc = proc.wait(RUN_TIMEOUT * 2)
    if rc != 0:
        raise RuntimeError(f"template ingest failed rc={rc}: {_tail(next(env.logs.glob('*')))}")
    shutil.move(str(ctx.root / "work"), str(ctx.root / "template"))
    shutil.rmtree(env.logs, ignore_errors=True)
    return data
