"""Cleaning the landing (``clean_source``): after a batch's commit record exists, its objects are
archived (copied under ``archive_to`` at the same key, then deleted) or deleted.

Layout, beside the ledger's logs on the source's ledger sub-store::

    <source>/archived/<batch:020d>.json   archive record: every copy made, before any delete
    <source>/cleaned/<batch:020d>.json    cleaned marker: the batch is clean (outcome per object)
    <source>/clean_hint.json              where the next scan starts (a hint, overwritten)

Contract:

* ``clean_batch`` runs only for a batch whose commit record exists (it is given the record). It
  never touches an object whose current etag differs from the claimed one: a copy is made of
  the claimed version only (``ObjectStore.copy_version``) and a delete applies only to it
  (``ObjectStore.delete_version``: conditional on S3, check-then-unlink on a local folder).
  Objects the batch recorded as not read are left alone (their key's current version is
  another object).
* Archive is two-phase. Phase 1 copies every object still present as claimed, then writes the
  archive record (create-only) naming each copy's etag; no object is deleted before it exists.
  Phase 2 deletes the claimed versions, then writes the cleaned marker (create-only). A crash
  anywhere is finished by the next call: before the archive record, phase 1 runs again (copies
  are idempotent: same key, same bytes); after it, phase 2 runs again (deletes are idempotent).
  Concurrent cleaners of one batch converge on the first archive record written. An archive
  name that holds another version (the key was claimed again) is never overwritten: that copy
  goes under ``_versions/<hash of the claimed etag>/`` (``ArchiveRecord.renamed``).
* The archive record is the truth for rebuilds: ``landing_for_rebuild`` opens an archived
  object at its recorded copy (etag checked), so a copy that changed is never read as the
  claimed version. With ``delete``, the cleaned marker names the objects deleted, and a rebuild
  of their day refuses.
* The hint (``through`` and the ``waiting`` ids below it) only says where a scan may start:
  every batch below ``through`` not in ``waiting`` has a cleaned marker. Markers never
  disappear, so a stale hint costs a rescan, never a skipped batch.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

from lockgate.resources.crashpoints import crash_point
from lockgate.resources.ledger import (
    Claim,
    ClaimedObject,
    CommitRecord,
    Ledger,
    LedgerCorrupt,
    _dumps,
    _loads,
    batch_name,
)
from lockgate.resources.ledger_records import utcnow
from lockgate.resources.store import (
    AlreadyExists,
    NotFound,
    ObjectChanged,
    ObjectInfo,
    ObjectStore,
    validate_key,
)

T = TypeVar("T")
R = TypeVar("R")

ARCHIVED_LOG = "archived/"
CLEANED_LOG = "cleaned/"
HINT = "clean_hint.json"

#: Outcomes per object in a cleaned marker.
ARCHIVED = "archived"  # its claimed version is under archive_to (and not in the landing)
DELETED = "deleted"  # deleted from the landing (mode delete)
ABSENT = "absent"  # not in the landing when cleaned (deleted by an earlier attempt, or by others)
CHANGED = "changed"  # another version is under its key: left alone
NOT_READ = "not_read"  # its batch recorded it as not read: left alone
UNSAFE_KEY = "unsafe_key"  # a key the stores refuse: never touched
OUTCOMES = (ARCHIVED, DELETED, ABSENT, CHANGED, NOT_READ, UNSAFE_KEY)
#: Outcomes that leave nothing of the claimed version in the landing.
CLEANED_OUTCOMES = (ARCHIVED, DELETED, ABSENT)


@dataclass(frozen=True)
class ArchiveRecord:
    """Phase 1 of archiving a batch: ``copies`` maps each copied key to its copy's etag under
    ``archive_to`` (same key); ``left`` maps the keys not copied to their outcome. ``renamed``
    maps a key whose archive name already held another version (a key claimed again, e.g.
    with ``allow_overwrites``) to the sub-prefix its copy went under instead
    (``_versions/<hash of the claimed etag>/``), so no archived version is ever replaced."""

    batch_id: int
    archive_to: str
    copies: Mapping[str, str]
    left: Mapping[str, str]
    renamed: Mapping[str, str] = field(default_factory=dict)

    def store(self, archive: ObjectStore, key: str) -> ObjectStore:
        """The store (``archive`` = the store of ``archive_to``) holding the copy of ``key``."""
        return archive.child(self.renamed[key]) if key in self.renamed else archive

    def to_json(self, source: str) -> dict[str, object]:
        return {
            "format": 1,
            "source": source,
            "batch_id": self.batch_id,
            "archive_to": self.archive_to,
            "copies": dict(self.copies),
            "left": dict(self.left),
            "renamed": dict(self.renamed),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], what: str) -> ArchiveRecord:
        copies, left, where = d.get("copies"), d.get("left"), d.get("archive_to")
        if not isinstance(copies, dict) or not isinstance(left, dict) or not isinstance(where, str):
            raise LedgerCorrupt(f"{what}: malformed archive record")
        renamed = d.get("renamed") or {}
        if not isinstance(renamed, dict):
            raise LedgerCorrupt(f"{what}: malformed archive record")
        return cls(int(d["batch_id"]), where, dict(copies), dict(left), dict(renamed))


@dataclass(frozen=True)
class CleanedRecord:
    """A clean batch: ``outcomes`` maps every object key of the batch to its outcome."""

    batch_id: int
    mode: str
    outcomes: Mapping[str, str]
    archive_to: str | None = None
    cleaned_at: datetime = field(default_factory=utcnow)

    @property
    def cleaned(self) -> int:
        """Objects of the batch no longer in the landing."""
        return sum(o in CLEANED_OUTCOMES for o in self.outcomes.values())

    def to_json(self, source: str) -> dict[str, object]:
        return {
            "format": 1,
            "source": source,
            "batch_id": self.batch_id,
            "mode": self.mode,
            "archive_to": self.archive_to,
            "outcomes": dict(self.outcomes),
            "cleaned_at": self.cleaned_at.isoformat(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], what: str) -> CleanedRecord:
        outcomes = d.get("outcomes")
        if not isinstance(outcomes, dict) or any(v not in OUTCOMES for v in outcomes.values()):
            raise LedgerCorrupt(f"{what}: malformed cleaned marker")
        return cls(
            batch_id=int(d["batch_id"]),
            mode=str(d.get("mode")),
            outcomes=dict(outcomes),
            archive_to=d.get("archive_to"),
            cleaned_at=datetime.fromisoformat(str(d["cleaned_at"])),
        )


@dataclass(frozen=True)
class CleanHint:
    """Every batch ``< through`` not in ``waiting`` has a cleaned marker; ``cleaned``/``left``
    count their objects (no longer in the landing / left in it)."""

    through: int = 0
    waiting: tuple[int, ...] = ()
    cleaned: int = 0
    left: int = 0


class CleanLog:
    """The cleaning records of one source, on its ledger sub-store (``Ledger.store``)."""

    def __init__(self, ledger: Ledger):
        self.source = ledger.source
        self.store = ledger.store

    def _get(self, name: str) -> dict[str, Any] | None:
        try:
            return _loads(self.store.get(name), f"{self.source}/{name}")
        except NotFound:
            return None

    def _add(self, name: str, body: bytes) -> None:
        """Create-only; "already there" is fine (the caller reads the stored record)."""
        with contextlib.suppress(AlreadyExists):
            self.store.put_if_absent(name, body)

    def archive_record(self, batch_id: int) -> ArchiveRecord | None:
        name = ARCHIVED_LOG + batch_name(batch_id)
        d = self._get(name)
        return None if d is None else ArchiveRecord.from_json(d, f"{self.source}/{name}")

    def add_archive_record(self, rec: ArchiveRecord) -> ArchiveRecord:
        """Create-only put; returns the stored record (this one, or the first one written)."""
        self._add(ARCHIVED_LOG + batch_name(rec.batch_id), _dumps(rec.to_json(self.source)))
        stored = self.archive_record(rec.batch_id)
        assert stored is not None
        return stored

    def cleaned(self, batch_id: int) -> CleanedRecord | None:
        name = CLEANED_LOG + batch_name(batch_id)
        d = self._get(name)
        return None if d is None else CleanedRecord.from_json(d, f"{self.source}/{name}")

    def add_cleaned(self, rec: CleanedRecord) -> CleanedRecord:
        self._add(CLEANED_LOG + batch_name(rec.batch_id), _dumps(rec.to_json(self.source)))
        stored = self.cleaned(rec.batch_id)
        assert stored is not None
        return stored

    def hint(self) -> CleanHint:
        d = self._get(HINT)
        if d is None:
            return CleanHint()
        try:
            return CleanHint(
                int(d["through"]),
                tuple(int(b) for b in d.get("waiting", ())),
                int(d.get("cleaned", 0)),
                int(d.get("left", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return CleanHint()  # only a hint: rescan from the start

    def put_hint(self, hint: CleanHint) -> None:
        """Overwrites (a hint is never a create-only target; see the module contract)."""
        self.store.put(
            HINT,
            _dumps(
                {
                    "format": 1,
                    "through": hint.through,
                    "waiting": list(hint.waiting),
                    "cleaned": hint.cleaned,
                    "left": hint.left,
                }
            ),
        )


#: Objects of one batch copied / deleted at a time (I/O bound store requests).
CLEAN_WORKERS = 8


def _each(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(i) for i in items]``, up to ``CLEAN_WORKERS`` at a time."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(CLEAN_WORKERS, len(items))) as pool:
        return list(pool.map(fn, items))


def _unsafe(key: str) -> bool:
    try:
        validate_key(key)
    except ValueError:
        return True
    return False


def clean_batch(
    log: CleanLog,
    landing: ObjectStore,
    open_archive: Callable[[str], ObjectStore],
    mode: str,
    archive_to: str | None,
    claim: Claim,
    commit: CommitRecord,
) -> CleanedRecord:
    """Clean one committed batch (``commit`` is its commit record: the proof it exists) and
    return its cleaned marker; idempotent, crash-safe (see the module contract). A batch with
    an archive record is finished as archived whatever ``mode`` is now."""
    if commit.batch_id != claim.batch_id:
        raise ValueError(f"commit record of batch {commit.batch_id} given for {claim.batch_id}")
    done = log.cleaned(claim.batch_id)
    if done is not None:
        return done
    unread = set(commit.unread or ())
    arec = log.archive_record(claim.batch_id)
    if arec is None and mode == "archive":
        if archive_to is None:
            raise ValueError("clean_source archive needs archive_to")
        arec = _archive_copies(log, landing, open_archive(archive_to), archive_to, claim, unread)
    outcomes: dict[str, str] = {}
    if arec is not None:
        outcomes.update(arec.left)
        etags = {o.key: o.etag for o in claim.objects}

        def delete_copied(key: str) -> None:
            # gone, or re-written after the copy (the new version is not ours): nothing to do
            with contextlib.suppress(NotFound, ObjectChanged):
                landing.delete_version(key, etags[key])
            crash_point("clean.after_delete")

        _each(delete_copied, sorted(arec.copies))
        outcomes.update(dict.fromkeys(arec.copies, ARCHIVED))
    elif mode == "delete":

        def delete(o: ClaimedObject) -> str:
            if o.key in unread:
                return NOT_READ
            if _unsafe(o.key):
                return UNSAFE_KEY
            try:
                outcome = DELETED if landing.delete_version(o.key, o.etag) else ABSENT
            except ObjectChanged:  # another version (or a link) under the key: left alone
                return CHANGED
            crash_point("clean.after_delete")
            return outcome

        keys = [o.key for o in claim.objects]
        outcomes.update(zip(keys, _each(delete, claim.objects), strict=True))
    else:
        raise ValueError(f"clean_batch with clean_source {mode!r}")
    rec = CleanedRecord(
        claim.batch_id,
        "archive" if arec is not None else mode,
        outcomes,
        arec.archive_to if arec is not None else None,
    )
    stored = log.add_cleaned(rec)
    crash_point("clean.after_marker")
    return stored


VERSIONS = "_versions"


def version_prefix(etag: str) -> str:
    """The archive sub-prefix of a claimed version whose key's archive name is taken."""
    return f"{VERSIONS}/{hashlib.sha256(etag.encode()).hexdigest()[:20]}"


def _free_for(archive: ObjectStore, key: str, etag: str) -> bool:
    """Whether ``key`` may hold the copy of version ``etag``: nothing is there, or a copy
    with that etag (an earlier attempt's; local links and single-part S3 copies keep it)."""
    try:
        return archive.head(key).etag == etag
    except NotFound:
        return True
    except ObjectChanged:  # not a regular file (a link): never written through
        return False


def _archive_copies(
    log: CleanLog,
    landing: ObjectStore,
    archive: ObjectStore,
    archive_to: str,
    claim: Claim,
    unread: set[str],
) -> ArchiveRecord:
    """Phase 1: copy every object present as claimed, then write the archive record."""

    def copy(o: ClaimedObject) -> tuple[str | None, str | None, str | None]:
        """(the copy's etag, its sub-prefix or None, None), or (None, None, the outcome of an
        object not copied)."""
        if o.key in unread:
            return None, None, NOT_READ
        if _unsafe(o.key):
            return None, None, UNSAFE_KEY
        prefix = None if _free_for(archive, o.key, o.etag) else version_prefix(o.etag)
        target = archive if prefix is None else archive.child(prefix)
        try:
            etag = landing.copy_version(o.key, o.etag, target, o.key).etag
        except NotFound:
            return None, None, ABSENT
        except ObjectChanged:  # another version (or a link) under the key: left alone
            return None, None, CHANGED
        crash_point("clean.after_copy")
        return etag, prefix, None

    copies: dict[str, str] = {}
    left: dict[str, str] = {}
    renamed: dict[str, str] = {}
    done = _each(copy, claim.objects)
    for o, (etag, prefix, outcome) in zip(claim.objects, done, strict=True):
        if etag is not None:
            copies[o.key] = etag
            if prefix is not None:
                renamed[o.key] = prefix
        else:
            assert outcome is not None
            left[o.key] = outcome
    rec = log.add_archive_record(ArchiveRecord(claim.batch_id, archive_to, copies, left, renamed))
    crash_point("clean.after_archive_record")
    return rec


# -- reading cleaned batches (rebuild) ---------------------------------------------------------


class RebuildLanding(ObjectStore):
    """The landing as a rebuild reads it: an object its batch archived is read from its copy
    (pinned to the copy's recorded etag, and reported under its claimed etag), every other
    object from the landing. ``(key, claimed etag)`` selects the copy. An object missing from
    the landing (or found there in another version) is looked up once more with ``late``: a
    tick may archive its batch while the rebuild runs."""

    def __init__(
        self,
        landing: ObjectStore,
        copies: Mapping[tuple[str, str], tuple[ObjectStore, str]],
        late: Callable[[str, str], tuple[ObjectStore, str] | None] = lambda _k, _e: None,
        claimed: Mapping[str, str] | None = None,
    ):
        self.landing = landing
        self.url = landing.url
        self.copies = dict(copies)
        self._late = late
        #: key -> claimed etag of the objects not archived when the rebuild started
        self._claimed = dict(claimed or {})

    def _copy(self, key: str, etag: str) -> tuple[ObjectStore, str] | None:
        if (key, etag) not in self.copies:
            found = self._late(key, etag)
            if found is None:
                return None
            self.copies[(key, etag)] = found
        return self.copies[(key, etag)]

    def _head_copy(self, key: str, etag: str, store: ObjectStore, copy: str) -> ObjectInfo:
        info = store.head(key)
        if info.etag != copy:
            raise ObjectChanged(f"{store.uri(key)}: the archived copy changed (etag {info.etag})")
        return ObjectInfo(key, info.size, etag, info.last_modified)

    def list(self, prefix: str = "", start_after: str | None = None) -> Any:
        return self.landing.list(prefix, start_after)

    def head_version(self, key: str, etag: str) -> ObjectInfo:
        """The info of claimed version ``etag`` of ``key``: its copy's if it was archived
        (reported under ``etag``), else the landing's."""
        found = self.copies.get((key, etag))
        if found is not None:
            return self._head_copy(key, etag, *found)
        return self.head(key)

    def head(self, key: str) -> ObjectInfo:
        for (k, archived_etag), (store, copy) in self.copies.items():
            if k == key:
                return self._head_copy(key, archived_etag, store, copy)
        claimed = self._claimed.get(key)
        try:
            info = self.landing.head(key)
        except (NotFound, ObjectChanged):
            found = self._copy(key, claimed) if claimed is not None else None
            if claimed is None or found is None:
                raise
            return self._head_copy(key, claimed, *found)
        if claimed is not None and info.etag != claimed:
            found = self._copy(key, claimed)
            if found is not None:
                return self._head_copy(key, claimed, *found)
        return info

    def open(self, key: str, etag: str | None = None, size: int | None = None) -> BinaryIO:
        if etag is None:
            return self.landing.open(key, etag=etag, size=size)
        found = self.copies.get((key, etag))
        if found is None:
            try:
                return self.landing.open(key, etag=etag, size=size)
            except (NotFound, ObjectChanged):
                found = self._copy(key, etag)
                if found is None:
                    raise
        store, copy = found
        return store.open(key, etag=copy, size=size)

    def put(self, key: str, data: bytes) -> None:
        raise PermissionError("a rebuild never writes to the landing")

    def put_if_absent(self, key: str, data: bytes) -> None:
        raise PermissionError("a rebuild never writes to the landing")

    def delete(self, key: str) -> None:
        raise PermissionError("a rebuild never writes to the landing")

    def uri(self, key: str = "") -> str:
        return self.landing.uri(key)

    def child(self, prefix: str) -> ObjectStore:
        raise NotImplementedError("a rebuild landing has no children")


def head_version(store: ObjectStore, key: str, etag: str) -> ObjectInfo:
    """``store.head(key)``; for a rebuild's landing, the info of claimed version ``etag`` (a key
    can have several versions archived)."""
    if isinstance(store, RebuildLanding):
        return store.head_version(key, etag)
    return store.head(key)


@dataclass(frozen=True)
class RebuildSources:
    """Where a rebuild reads the claims of some days: ``landing`` (archive-aware), and the
    objects deleted by ``clean_source: delete`` (batch id -> keys), which cannot be read."""

    landing: ObjectStore
    deleted: Mapping[int, tuple[str, ...]]


def landing_for_rebuild(
    ledger: Ledger,
    landing: ObjectStore,
    open_archive: Callable[[str], ObjectStore],
    claims: Sequence[Claim],
) -> RebuildSources:
    """The archive-aware landing of ``claims`` (one archive record read per batch, one cleaned
    marker read per batch without one; a batch archived meanwhile is read again on demand)."""
    log = CleanLog(ledger)
    stores: dict[str, ObjectStore] = {}
    copies: dict[tuple[str, str], tuple[ObjectStore, str]] = {}
    deleted: dict[int, tuple[str, ...]] = {}
    unarchived: dict[tuple[str, str], int] = {}

    def store_of(url: str) -> ObjectStore:
        if url not in stores:
            stores[url] = open_archive(url)
        return stores[url]

    for claim in claims:
        arec = log.archive_record(claim.batch_id)
        if arec is not None:
            etags = {o.key: o.etag for o in claim.objects}
            for key, copy in arec.copies.items():
                copies[(key, etags[key])] = (arec.store(store_of(arec.archive_to), key), copy)
            continue
        unarchived.update(((o.key, o.etag), claim.batch_id) for o in claim.objects)
        marker = log.cleaned(claim.batch_id)
        if marker is not None and marker.mode == "delete":
            gone = tuple(k for k, o in marker.outcomes.items() if o in (DELETED, ABSENT))
            if gone:
                deleted[claim.batch_id] = gone

    def late(key: str, etag: str) -> tuple[ObjectStore, str] | None:
        batch = unarchived.get((key, etag))
        arec = log.archive_record(batch) if batch is not None else None
        if arec is None or key not in arec.copies:
            return None
        return arec.store(store_of(arec.archive_to), key), arec.copies[key]

    claimed = {key: etag for (key, etag) in unarchived}
    return RebuildSources(RebuildLanding(landing, copies, late, claimed), deleted)


# -- counts (status) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanCounts:
    """Objects of committed batches: ``cleaned`` (no longer in the landing), ``left`` in it by
    the cleaning (another version under the key, not read, unsafe key), and ``pending`` (their
    batch is committed but not cleaned yet)."""

    mode: str
    cleaned: int = 0
    left: int = 0
    pending: int = 0


def clean_counts(ledger: Ledger, mode: str) -> CleanCounts:
    """The counts from the hint plus the batches after it (O(batches since the last tick's
    cleaning), not the history). With ``mode`` off: the hint's counts (as of the last
    cleaning; all zero if the source was never cleaned), nothing pending."""
    log = CleanLog(ledger)
    hint = log.hint()
    cleaned, left, pending = hint.cleaned, hint.left, 0
    if mode == "off":  # nothing is cleaned any more: the counts as of the last cleaning
        return CleanCounts(mode, cleaned, left)
    for b in [*hint.waiting, *range(hint.through, ledger.next_batch_id())]:
        marker = log.cleaned(b)
        if marker is not None:
            cleaned += marker.cleaned
            left += len(marker.outcomes) - marker.cleaned
        elif ledger.commit_record(b) is not None:
            pending += len(ledger.get_claim(b).objects)
    return CleanCounts(mode, cleaned, left, pending)
