"""``world`` trials: the landing changes under Lockgate between claim and read.

While ``lockgate ingest`` processes run (a ``Mutator`` thread) and between rounds (on the
keys of pending claims: claimed, no commit record yet -- every world trial starts with a run
killed at ``ledger.claim.after_put`` so that one exists), objects are

* **rewritten** (same key, new content; local: a new file renamed over the key);
* **appended to** (local: in place, same inode; S3: re-put with the old bytes plus more);
* **deleted**;
* **copied in** (local, new keys): written in 2-4 chunks cut anywhere (also mid-line),
  0.05-0.4 s apart; every intermediate state is a *partial* version; at the end the copy
  tool either keeps the fresh mtime or sets an old one (``cp -p``);
* **replaced by a symlink** (local): to a file outside the landing root (its records carry
  ``o`` ids) or to one inside it (a hidden ``_tmp-`` file, or another live key, which is then
  never mutated again).

Every state a key goes through is recorded in order as a ``Version`` (etag as the store
reports it, records, state). Landing files written whole get an mtime an hour old (as from a
copy tool that keeps mtimes), so ``min_age`` never holds them back; writes in progress and
the mutations above keep fresh mtimes. World trials configure ``min_age: 5`` (``WORLD_MIN_AGE_S``;
other kinds ``min_age: 0``), if the build's config takes the key, and before the final
ingest wait until every landing file is older than that plus 1 s.

Expected outcome ("a version counts as ingested only if it was read"), per key ``K`` of a
source, where *read(K)* is the set of versions of ``K`` whose records appear in the table
(rows, matched by ``_source_key`` / ``_source_etag``) or in the quarantine (per-record
entries):

* **phantom**: every row's and every quarantine entry's ``(key, etag)`` is a version the
  harness wrote at that key, and a row's ``id`` is a record of that very version (a row
  labelled with one version but holding another's bytes -- e.g. an append read past the
  claimed size -- is reported with its key and both versions);
* **link-out**: no record of a file outside the landing root is ingested or quarantined;
* **partial**: no version that was a copy in progress is claimed or in *read(K)* (unless
  the copy stalled in that state for ``min_age`` or longer: then it may be);
* **one-version**: *read(K)* has at most one version (``allow_overwrites: false``: a version
  that was read makes later ones re-writes);
* **complete**: for the version in *read(K)*, every good record is exactly one row and every
  bad record exactly one quarantine entry (``records = rows + quarantined``);
* **final-lost**: if *read(K)* is empty and the key's final state is a whole regular file,
  that final version is lost (the replacement of a version that changed before its read must
  be claimed and ingested as a new object). A final state that is deleted, a link out of the
  root, or a link inside it (following it or not is Lockgate's choice) expects nothing;
* **ledger**: every row's ``(key, etag)`` is claimed, in the batch named by its ``_batch_id``,
  and that batch has a commit record; every claim has a commit record; a claimed version that
  is not in *read(K)* is listed in its commit record's ``unread`` map (``changed_before_read``
  / ``gone_before_read``), and a version listed there has no rows;
* **unreadable**: the harness never writes an unreadable object, so a whole-object quarantine
  entry (``_source_row`` null) of a version is a violation unless its reason says it changed
  or vanished before its read (or names a symlink).

The expected multiset of ids, compared with what DuckDB and pyiceberg read, is the sum over
keys of the records of the version in *read(K)* (its first version if several), or of the
final version where it was lost. Which version of a key gets read depends on process timing
(not replayed); the rules above hold for every interleaving.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lockgate.resources.store import TMP_PREFIX
from tests.torture.checks import ID_RE

if TYPE_CHECKING:
    from tests.torture.trial import SourceData, TrialEnv, Version, Writer

MUTATIONS = ("rewrite", "append", "delete", "copy", "symlink")
WEIGHTS = {"rewrite": 3.0, "append": 2.0, "delete": 1.0, "copy": 1.5, "symlink": 1.5}
LOCAL_ONLY = ("copy", "symlink")
BACKDATE_S = 3600.0
#: ``min_age`` of world trials' sources (written if the config takes it; other kinds: 0)
WORLD_MIN_AGE_S = 5.0
#: Sources whose committed objects Lockgate archives (``clean_source`` in the trial config,
#: ``trial.py``): a link to one of their objects may dangle at any moment, so links in the
#: landing point at files Lockgate never claims (``_tmp-tgt-*``) instead.
CLEANED = frozenset({"cs"})
UNREAD_REASON = re.compile(r"(changed|gone)[ _-]before[ _-]read|symlink|\blink\b", re.I)


def local_etag(path: str | os.PathLike[str]) -> str:
    """The local store's etag of ``path`` (following links, as its listing does)."""
    st = os.stat(path)
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def backdate(path: Path) -> None:
    """Give ``path`` an mtime an hour old (a copy tool that keeps the source's mtime)."""
    t = time.time_ns() - int(BACKDATE_S * 1e9)
    os.utime(path, ns=(t, t), follow_symlinks=False)


def local_put(path: Path, data: bytes, fresh: bool) -> None:
    """Publish ``data`` at ``path`` in one rename, its mtime an hour old unless ``fresh`` (the
    temporary name starts with the store's ``TMP_PREFIX``: never listed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}harness-{uuid.uuid4().hex}"
    tmp.write_bytes(data)
    if not fresh:
        backdate(tmp)
    os.replace(tmp, path)


def wait_settled(roots: list[Path], settle: float) -> float:
    """Sleep until every file under ``roots`` (links: their targets) is ``settle`` s old;
    returns the time slept."""
    newest = 0.0
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                try:
                    newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
                except OSError:
                    continue
    wait = newest + settle - time.time()
    if wait > 0:
        time.sleep(wait)
    return max(wait, 0.0)


class Mutator:
    """Changes landing objects; records every state as a ``Version`` of its key."""

    def __init__(
        self,
        env: TrialEnv,
        writer: Writer,
        data: Mapping[str, SourceData],
        rng: random.Random,
        mutations: tuple[str, ...],
    ) -> None:
        from tests.torture.trial import Writer

        self.env = env
        self.writer = writer
        # the mutator's own record writer: its rng, not the trial's (whose sequence must not
        # depend on how many mutations fit into a run), and ids numbered from 10**6 on
        self.w = Writer(env, rng, writer.trial, {})
        self.w.n = 10**6
        self.w.bad_rate = writer.bad_rate
        self.w.extras = writer.extras
        self.data = data
        self.rng = rng
        local = env.ctx.backend == "local"
        self.mutations = tuple(m for m in mutations if local or m not in LOCAL_ONLY)
        self.lock = threading.RLock()
        self.pinned: set[tuple[str, str]] = set()  # (source, key): link targets, copies
        self.stats: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []
        self.outside = env.work / "outside"

    # -- helpers ---------------------------------------------------------------------------

    def _path(self, src: SourceData, key: str) -> Path:
        return Path(self.env.landing_url[src.name]) / key

    def _record(self, src: SourceData, key: str, v: Version) -> None:
        src.versions.setdefault(key, []).append(v)

    def _current(self, src: SourceData, key: str) -> Version | None:
        vs = src.versions.get(key)
        return vs[-1] if vs else None

    def pending_keys(self, src: SourceData) -> list[str]:
        """Keys of claims without a commit record (read from the ledger)."""
        claimed, committed = self.writer.claims(src)
        return sorted({k for (k, _e), b in claimed.items() if b not in committed})

    def _mutable(self, src: SourceData, keys: list[str]) -> list[str]:
        return [k for k in keys if (src.name, k) not in self.pinned and k in src.versions]

    # -- one mutation ----------------------------------------------------------------------

    def mutate(self, src: SourceData, key: str | None, what: str | None = None) -> str | None:
        """Apply one mutation to ``key`` (``copy``: to a new key); returns what was done."""
        from tests.torture.trial import Version

        rng = self.rng
        what = what or rng.choices(self.mutations, [WEIGHTS[m] for m in self.mutations])[0]
        with self.lock:
            if what == "copy" or key is None:
                if "copy" not in self.mutations:
                    return None
                self.copy_in(src)
                return "copy"
            cur = self._current(src, key)
            if cur is None or (src.name, key) in self.pinned:
                return None
            store = self.env.stores[src.name]
            if what == "rewrite" or (what == "append" and cur.state not in ("file", "partial")):
                self.w.put(src, key, fresh=rng.random() < 0.5)
                self.stats["rewrite"] += 1
                return "rewrite"
            if what == "append":
                good, bad = self.w.records(src)
                lines = self.w.lines(src, good, bad)
                if self.env.ctx.backend == "local":
                    with open(self._path(src, key), "ab") as f:
                        f.write(lines)
                    etag = store.head(key).etag
                else:
                    store.put(key, store.get(key) + lines)
                    etag = store.head(key).etag
                old_good, old_bad = (cur.good, cur.bad) if cur.state == "file" else ([], [])
                self._record(src, key, Version(etag, old_good + good, old_bad + bad, "file"))
                self.stats["append"] += 1
                return "append"
            if what == "delete":
                if cur.state == "deleted":
                    return None
                store.delete(key)
                self._record(src, key, Version("", [], [], "deleted"))
                self.stats["delete"] += 1
                return "delete"
            if what == "symlink":
                self.symlink(src, key)
                return "symlink"
        return None

    def copy_in(self, src: SourceData) -> None:
        """A new key written in chunks (a copy in progress), each state a partial version."""
        from tests.torture.trial import DAYS, Version

        rng = self.rng
        day = rng.choice(DAYS)
        key = f"dt={day}/cp-{rng.randrange(10**6):06d}.{src.ext}"
        if key in src.versions:
            return
        good, bad = self.w.records(src)
        body = self.w.body(src, good, bad)
        cuts = sorted(rng.sample(range(1, len(body)), min(rng.randint(1, 3), len(body) - 1)))
        path = self._path(src, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.pinned.add((src.name, key))
        start = 0
        with open(path, "wb") as f:
            self._record(src, key, Version(local_etag(path), [], [], "partial", time.time()))
            for cut in cuts:
                f.write(body[start:cut])
                f.flush()
                start = cut
                done = body[:cut].decode(errors="replace").rsplit("\n", 1)[0]
                ids = ID_RE.findall(done)
                self._record(src, key, Version(local_etag(path), ids, [], "partial", time.time()))
                time.sleep(rng.uniform(0.05, 0.4))
            f.write(body[start:])
        self._record(src, key, Version(local_etag(path), good, bad, "file", time.time()))
        if rng.random() < 0.5:  # the copy tool sets the source's mtime (cp -p): a new etag
            backdate(path)
            self._record(src, key, Version(local_etag(path), good, bad, "file"))
        self.pinned.discard((src.name, key))
        self.stats["copy"] += 1

    def symlink(self, src: SourceData, key: str) -> None:
        """Replace ``key`` by a link out of the landing root, or to a file inside it."""
        from tests.torture.trial import Version

        rng = self.rng
        path = self._path(src, key)
        root = Path(self.env.landing_url[src.name])
        if rng.random() < 0.5:
            self.outside.mkdir(parents=True, exist_ok=True)
            target = self.outside / f"o-{rng.randrange(10**6):06d}.{src.ext}"
            good = self.w.ids("o", rng.randint(1, 3))
            local_put(target, self.w.body(src, good, []), fresh=False)
            state, bad = "link_out", []
        else:
            live = [
                k
                for k, vs in src.versions.items()
                if k != key and vs[-1].state == "file" and (src.name, k) not in self.pinned
            ]
            if src.name in CLEANED:
                live = []
            if live and rng.random() < 0.5:
                tkey = rng.choice(sorted(live))
                self.pinned.add((src.name, tkey))
                tv = src.versions[tkey][-1]
                target, good, bad = root / tkey, list(tv.good), list(tv.bad)
            else:
                day = key.split("/", 1)[0]
                target = root / day / f"_tmp-tgt-{rng.randrange(10**6):06d}.{src.ext}"
                good, bad = self.w.records(src)
                local_put(target, self.w.body(src, good, bad), fresh=False)
            state = "link_in"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{TMP_PREFIX}harness-link-{uuid.uuid4().hex}"
        os.symlink(os.path.relpath(target, path.parent), tmp)
        os.replace(tmp, path)
        self._record(src, key, Version(local_etag(path), good, bad, state))
        self.stats[state] += 1

    # -- schedules -------------------------------------------------------------------------

    def between_rounds(self, rng: random.Random) -> None:
        """Mutate the objects of pending claims (the first always, the others with p 0.8),
        one random key per source with p 0.5, and (symlinks) add a new key that is a link.
        Decisions come from ``rng`` (not from the in-run stream, whose use depends on
        timing), so that a replay repeats them given the same pending claims."""
        in_run, self.rng = self.rng, rng
        try:
            self._between_rounds()
        finally:
            self.rng = in_run

    def _between_rounds(self) -> None:
        pool = [m for m in self.mutations if m != "copy"]
        for src in self.data.values():
            for n, key in enumerate(self._mutable(src, self.pending_keys(src))):
                if pool and (n == 0 or self.rng.random() < 0.8):
                    self.mutate(src, key, self.rng.choices(pool, [WEIGHTS[m] for m in pool])[0])
            keys = self._mutable(src, sorted(src.versions))
            if keys and self.rng.random() < 0.5:
                self.mutate(src, self.rng.choice(keys))
            if "symlink" in self.mutations and self.rng.random() < 0.5:
                from tests.torture.trial import DAYS

                key = f"dt={self.rng.choice(DAYS)}/ln-{self.rng.randrange(10**6):06d}.{src.ext}"
                if key not in src.versions:
                    self.symlink(src, key)

    def start(self) -> None:
        """Mutate while ``lockgate`` runs (until ``stop``), preferring pending claims."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="torture-mutator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _loop(self) -> None:
        rng = self.rng
        try:
            for _ in range(rng.randint(2, 5)):
                if self._stop.wait(rng.uniform(0.05, 0.8)):
                    return
                src = rng.choice(sorted(self.data.values(), key=lambda s: s.name))
                pending = self._mutable(src, self.pending_keys(src))
                pool = (
                    pending
                    if pending and rng.random() < 0.7
                    else self._mutable(src, sorted(src.versions))
                )
                self.mutate(src, rng.choice(pool) if pool else None)
        except Exception as e:  # the trial reports it as a harness failure
            import traceback

            self.errors.append(f"mutator: {type(e).__name__}: {e}\n{traceback.format_exc()[-800:]}")


# ---- the accounting -----------------------------------------------------------------------


@dataclass
class WorldCheck:
    """What the per-key accounting of one source found."""

    want_good: Counter[str] = field(default_factory=Counter)
    want_bad: Counter[str] = field(default_factory=Counter)
    violations: list[tuple[str, str]] = field(default_factory=list)  # (invariant, detail)
    lost: int = 0
    duplicates: int = 0
    unexpected: int = 0

    def add(self, invariant: str, detail: str) -> None:
        self.violations.append((invariant, detail))


def _find_version(versions: list[Version], etag: str, ids: list[str]) -> int | None:
    for i, v in enumerate(versions):
        if v.etag == etag and v.state != "deleted":
            return i
    # a link's etag may be computed differently (lstat): match a link version by content
    for i, v in enumerate(versions):
        if v.state.startswith("link") and ids and set(ids) <= set(v.good) | set(v.bad):
            return i
    return None


def check_world(
    src: SourceData,
    rows: pa.Table,
    quarantine: pa.Table | None,
    claimed: Mapping[tuple[str, str], int],
    commits: Mapping[int, Mapping[str, Any]],
    min_age: float = 0.0,
) -> WorldCheck:
    """The per-key accounting of the module docstring for one source.

    ``rows``: the table's ``id, _source_key, _source_etag, _batch_id``; ``quarantine``: the
    quarantine table's ``_source_key, _source_etag, _source_row, raw, reason`` (None: no
    table); ``claimed``: ``(key, etag) -> batch`` of every claim; ``commits``: commit records
    by batch id (their JSON); ``min_age``: the sources' ``min_age`` (0: none), a partial
    version that stayed unchanged that long may be claimed and read (the copy stalled)."""

    def too_young(versions: list[Version], i: int) -> bool:
        """Version ``i`` is a copy in progress that changed again within ``min_age``."""
        if versions[i].state != "partial" or min_age <= 0:
            return False
        nxt = versions[i + 1].at if i + 1 < len(versions) else float("inf")
        return nxt - versions[i].at < min_age

    out = WorldCheck()
    name = src.name
    # rows and per-record quarantine ids, by (key, etag)
    row_ids: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    row_batches: dict[tuple[str, str], set[int]] = defaultdict(set)
    cols = [rows.column(c).to_pylist() for c in ("id", "_source_key", "_source_etag", "_batch_id")]
    for ident, key, etag, batch in zip(*cols, strict=True):
        row_ids[(key, etag)][str(ident)] += 1
        row_batches[(key, etag)].add(int(batch))
    q_ids: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    q_seen: set[tuple[str, str]] = set()  # versions with a per-record quarantine entry
    whole: dict[tuple[str, str], list[str]] = defaultdict(list)
    if quarantine is not None:
        qcols = [
            quarantine.column(c).to_pylist()
            for c in ("_source_key", "_source_etag", "_source_row", "raw", "reason")
        ]
        for key, etag, row, raw, reason in zip(*qcols, strict=True):
            if row is None:
                whole[(key, etag)].append(str(reason))
            else:
                q_ids[(key, etag)].update(ID_RE.findall(raw or ""))
                q_seen.add((key, etag))

    read: dict[str, set[int]] = defaultdict(set)
    for key, etag in sorted(set(row_ids) | q_seen):
        ids = row_ids.get((key, etag), Counter()) + q_ids.get((key, etag), Counter())
        versions = src.versions.get(key, [])
        i = _find_version(versions, etag, list(ids))
        n = sum(ids.values())
        if i is None:
            out.add(
                "phantom",
                f"{name}: {n} records under {key}@{etag}, a version never written there: "
                f"{sorted(ids)[:4]}",
            )
            out.unexpected += n
            continue
        v = versions[i]
        if v.state == "link_out":
            out.add(
                "link-out",
                f"{name}: {key}@{etag} is a link out of the landing root; its records were "
                f"ingested: {sorted(ids)[:4]}",
            )
            out.unexpected += n
            continue
        if too_young(versions, i):
            out.add(
                "partial",
                f"{name}: {key}@{etag} was a copy in progress (version {i} of {len(versions)}); "
                f"it was read: {sorted(ids)[:4]}",
            )
        read[key].add(i)

    for key, etag in row_ids:
        if (key, etag) not in claimed:
            out.add("ledger", f"{name}: rows of {key}@{etag} but no claim of that version")
        elif row_batches[(key, etag)] != {claimed[(key, etag)]}:
            out.add(
                "ledger",
                f"{name}: rows of {key}@{etag} carry batch ids {sorted(row_batches[(key, etag)])}, "
                f"claimed in batch {claimed[(key, etag)]}",
            )

    for key, versions in sorted(src.versions.items()):
        got = sorted(read.get(key, set()))
        final = versions[-1]
        if not got:
            if final.state == "file":
                out.add(
                    "final-lost",
                    f"{name}: {key}: final version {final.etag} ({len(final.good)} rows) never "
                    f"ingested; {_history(key, versions, claimed, commits)}",
                )
                out.lost += len(final.good)
                out.want_good.update(final.good)
                out.want_bad.update(final.bad)
            continue
        if len(got) > 1:
            out.add(
                "one-version",
                f"{name}: {key}: versions {got} all ingested (only one may count); "
                f"{_history(key, versions, claimed, commits)}",
            )
            for j in got[1:]:
                out.duplicates += sum(row_ids.get((key, versions[j].etag), Counter()).values())
        v = versions[got[0]]
        out.want_good.update(v.good)
        out.want_bad.update(v.bad)
        if v.state == "partial":
            continue
        have = row_ids.get((key, v.etag), Counter())
        for label, want, have_ in (
            ("rows", Counter(v.good), have),
            ("quarantine", Counter(v.bad), q_ids.get((key, v.etag), Counter())),
        ):
            lost, extra = want - have_, have_ - want
            if lost:
                out.add(
                    "complete",
                    f"{name}: {key}@{v.etag} (version {got[0]}): {label} lost {sorted(lost)[:4]}; "
                    f"{_history(key, versions, claimed, commits)}",
                )
                out.lost += sum(lost.values())
            if extra:
                foreign = [x for x in extra if x not in want]
                inv = "phantom" if foreign else "complete"
                out.add(
                    inv,
                    f"{name}: {key}@{v.etag} (version {got[0]}): {label} extra {sorted(extra)[:4]}"
                    + (
                        " (records of another version under this etag)"
                        if foreign
                        else " (duplicated)"
                    ),
                )
                out.duplicates += sum(c for x, c in extra.items() if x in want)
                out.unexpected += sum(c for x, c in extra.items() if x not in want)

    for (key, etag), reasons in sorted(whole.items()):
        if not all(UNREAD_REASON.search(r) for r in reasons):
            out.add(
                "unreadable",
                f"{name}: {key}@{etag} quarantined whole as unreadable ({reasons[0][:160]}): a "
                "version that changed or vanished before its read must be recorded as "
                "changed/gone before read",
            )

    read_versions = set(row_ids) | q_seen  # every version something was read from
    for (key, etag), batch in sorted(claimed.items()):
        rec = commits.get(batch)
        if rec is None:
            out.add(
                "ledger",
                f"{name}: batch {batch} (claims {key}@{etag}) has no commit record after the "
                "final ingest",
            )
            continue
        i = _find_version(src.versions.get(key, []), etag, [])
        if i is not None and too_young(src.versions[key], i):
            out.add(
                "partial",
                f"{name}: {key}@{etag}, a copy in progress (version {i}), was claimed in batch "
                f"{batch} (min_age)",
            )
        unread = rec.get("unread") or {}
        was_read = (key, etag) in read_versions
        if was_read and key in unread:
            out.add(
                "ledger",
                f"{name}: batch {batch} records {key} as {unread[key]} but {key}@{etag} has rows",
            )
        elif not was_read and key not in unread:
            out.add(
                "ledger",
                f"{name}: {key}@{etag} claimed in committed batch {batch}: no rows or quarantine "
                "entries, and not recorded as changed/gone before read",
            )
    return out


def _history(
    key: str,
    versions: list[Version],
    claimed: Mapping[tuple[str, str], int],
    commits: Mapping[int, Mapping[str, Any]],
) -> str:
    """The key's versions with their claims and outcomes, for a failure message."""
    parts = []
    for i, v in enumerate(versions):
        b = claimed.get((key, v.etag)) if v.etag else None
        tag = ""
        if b is not None:
            rec = commits.get(b)
            outcome = (
                "uncommitted" if rec is None else (rec.get("unread") or {}).get(key, "committed")
            )
            tag = f" claimed b{b} {outcome}"
        parts.append(f"v{i} {v.state} {v.etag or '-'}{tag}")
    return "history: " + ", ".join(parts)
