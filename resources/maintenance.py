"""Table maintenance: keep the cost of a commit independent of the table's history.

What grows with every commit, and what bounds it:

* snapshots in the metadata JSON -> ``expire_snapshots`` keeps the last ``keep_snapshots``
  plus any younger than ``keep_newer_than``. Markers live in table properties, so expiry
  never erases them. Expiry deletes no file (readers of an old snapshot keep working).
* manifests in each manifest list -> tables are created with pyiceberg's merge-append
  (``commit.manifest-merge.enabled``), which merges small manifests while appending.
* the metadata log -> ``write.metadata.previous-versions-max``; old ``v<N>.metadata.json``
  -> ``ObjectStoreCatalog.retire_versions`` (tombstones, never deletes: freed names could be
  re-taken by a stale writer).
* files nobody references (expired snapshots' data/manifests, staged files of failed or
  duplicate runs) -> ``vacuum``: deletes files under ``data/`` (and manifest / manifest-list
  files under ``metadata/``) that no retained snapshot references and that are older than
  a safety window longer than any run (a run's staged files are unreferenced until it
  commits). pyiceberg never deletes them. Object-store catalog: listed and deleted through its
  store; other catalogs (SQL, REST, Glue): through the table's FileIO, where metadata JSON
  files that are neither current nor in the metadata log count as unreferenced too (those
  catalogs name versions uniquely, so a deleted name is never taken again).

State that survives processes: every maintenance records, in the table's own properties,
``lockgate.maintenance.at`` (UTC time) and ``lockgate.maintenance.sequence`` (the table's
last sequence number then); in the expiry's commit when it expires something, else in a
property-only commit. ``TableStore`` triggers maintenance from the table's own counters, never
from a per-process count: see ``maintenance_due``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io import FileIO
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadataUtil
from pyiceberg.table.update.snapshot import ExpireSnapshots

from lockgate.resources.catalog import ObjectStoreCatalog, is_tombstone, parse_metadata_version
from lockgate.resources.crashpoints import crash_point
from lockgate.resources.errors import ExitCode, TerminalError
from lockgate.resources.iceberg_private import MemoTransaction, commit_strict
from lockgate.resources.store import NotFound

log = logging.getLogger(__name__)

#: How much longer than the longest run (``dagster.max_runtime_seconds``) a vacuum's safety
#: window must be: run monitoring fails an overdue run only on its next pass, and the clocks
#: of workers and the store may disagree. A run still alive may yet commit its staged files.
VACUUM_MARGIN = timedelta(hours=1)


class VacuumRefused(TerminalError, ValueError):
    """The safety window is shorter than the longest run plus ``VACUUM_MARGIN``: the vacuum
    could delete staged files that a run still alive is about to commit."""

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE


def min_vacuum_window(max_runtime_seconds: int) -> timedelta:
    """The shortest safe vacuum window for runs lasting up to ``max_runtime_seconds``."""
    return timedelta(seconds=max_runtime_seconds) + VACUUM_MARGIN


@dataclass(frozen=True)
class MaintenancePolicy:
    """How much history to keep. A snapshot is expired when it is neither among the last
    ``keep_snapshots`` of ``main`` nor younger than ``keep_newer_than``; the current snapshot
    is never expired. ``keep_metadata_versions`` metadata files stay readable."""

    keep_snapshots: int = 10
    keep_newer_than: timedelta = timedelta(0)
    keep_metadata_versions: int = 20


@dataclass(frozen=True)
class MaintenanceReport:
    """What ``maintain`` did. ``orphans``: the orphan-file cleanup's report (None: not run)."""

    expired_snapshots: int
    retired_versions: int
    table_version: int
    orphans: VacuumReport | None = None

    def line(self, table: str) -> str:
        text = (
            f"{table}: expired {self.expired_snapshots} snapshots, retired "
            f"{self.retired_versions} metadata versions"
        )
        if self.orphans is not None:
            o = self.orphans
            text += f", deleted {len(o.deleted)} orphan files ({o.bytes_deleted} bytes)"
        return text


@dataclass
class VacuumReport:
    """What ``vacuum`` found and did. ``deleted`` lists locations (deleted, or that would be
    with ``dry_run``)."""

    table: str
    dry_run: bool
    scanned: int = 0
    referenced: int = 0
    too_young: int = 0
    deleted: list[str] = field(default_factory=list)
    bytes_deleted: int = 0


Progress = Callable[[int, int | None], None]

#: Table properties holding the maintenance state (never a secret, never a marker).
MAINTAINED_AT = "lockgate.maintenance.at"
MAINTAINED_SEQUENCE = "lockgate.maintenance.sequence"
#: Automatic maintenance also runs when the last one is this many intervals behind (the
#: committer whose turn it was died, or its maintenance failed).
OVERDUE_INTERVALS = 3


def sequence_of(table: Table) -> int:
    """The table's last sequence number (0 for a v1 table, which has none)."""
    return int(getattr(table.metadata, "last_sequence_number", 0))


def maintained_sequence(table: Table) -> int:
    """The table's last sequence number at its last recorded maintenance (0: never)."""
    try:
        return int(table.properties.get(MAINTAINED_SEQUENCE, "0"))
    except ValueError:
        return 0


def maintenance_due(table: Table, turn: int, every: int) -> bool:
    """Whether the committer that produced ``table`` runs maintenance: ``turn`` (its metadata
    version on the object-store catalog, else the table's last sequence number, so exactly one
    committer per interval whatever the processes) is a multiple of ``every``; or, when the
    recorded maintenance is ``OVERDUE_INTERVALS`` intervals behind, it is the middle of the
    interval (one more committer per interval, never a crowd under contention). ``every`` <= 0:
    never."""
    if every <= 0:
        return False
    if turn % every == 0:
        return True
    behind = sequence_of(table) - maintained_sequence(table)
    return behind >= OVERDUE_INTERVALS * every and turn % every == every // 2


def _state(table: Table) -> dict[str, str]:
    return {
        MAINTAINED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
        MAINTAINED_SEQUENCE: str(sequence_of(table)),
    }


def expire_snapshots(
    catalog: Catalog, identifier: str, policy: MaintenancePolicy, record_state: bool = False
) -> int:
    """Expire snapshots outside the policy; return how many. One commit (none if nothing
    to expire and not ``record_state``). Conflicts are retried a few times, then given up
    (maintenance is optional). ``record_state``: the same commit records the maintenance state
    (``MAINTAINED_AT``, ``MAINTAINED_SEQUENCE``) in the table's properties.

    "Last N" is by sequence number, not by clock; the age rule only ever keeps more."""
    if policy.keep_snapshots < 1:
        raise ValueError("keep_snapshots must be >= 1")
    for _ in range(5):
        table = catalog.load_table(identifier)
        snaps = sorted(table.metadata.snapshots, key=lambda s: s.sequence_number or 0)
        keep = {s.snapshot_id for s in snaps[-policy.keep_snapshots :]}
        keep |= {ref.snapshot_id for ref in table.metadata.refs.values()}
        cutoff_ms = int((datetime.now(UTC) - policy.keep_newer_than).timestamp() * 1000)
        expire = [
            s.snapshot_id
            for s in snaps
            if s.snapshot_id not in keep
            and (policy.keep_newer_than <= timedelta(0) or s.timestamp_ms < cutoff_ms)
        ]
        if not expire and not record_state:
            return 0
        txn = MemoTransaction(table)
        if expire:
            with ExpireSnapshots(txn) as exp:
                exp.by_ids(expire)
        if record_state:
            txn.set_properties(_state(table))
        try:
            commit_strict(txn)
        except CommitFailedException:
            continue
        crash_point("maintenance.after_expire" if expire else "maintenance.after_state")
        return len(expire)
    return 0


def maintain(
    catalog: Catalog,
    identifier: str,
    policy: MaintenancePolicy | None = None,
    orphans_older_than: timedelta | None = None,
    min_window: timedelta = timedelta(0),
    progress: Progress | None = None,
) -> MaintenanceReport:
    """Expire snapshots and record the maintenance state (one commit), retire metadata
    versions (object-store catalog), then, with ``orphans_older_than``, delete unreferenced
    files older than it (``vacuum``; ``VacuumRefused`` when shorter than ``min_window``,
    checked before anything is done)."""
    policy = policy or MaintenancePolicy()
    if orphans_older_than is not None and orphans_older_than < min_window:
        raise VacuumRefused(
            f"{identifier}: an orphan window of {orphans_older_than} is shorter than the "
            f"longest run plus a margin ({min_window})"
        )
    expired = expire_snapshots(catalog, identifier, policy, record_state=True)
    retired = 0
    if isinstance(catalog, ObjectStoreCatalog):
        retired = catalog.retire_versions(identifier, keep=policy.keep_metadata_versions)
        version = catalog.current_version(identifier)
    else:
        version = len(catalog.load_table(identifier).metadata.metadata_log) + 1
    orphans = None
    if orphans_older_than is not None:
        orphans = vacuum(
            catalog,
            identifier,
            older_than=orphans_older_than,
            progress=progress,
            min_window=min_window,
        )
    return MaintenanceReport(
        expired_snapshots=expired, retired_versions=retired, table_version=version, orphans=orphans
    )


def _norm(location: str) -> str:
    return location[len("file://") :] if location.startswith("file://") else location


def _read_metadata(catalog: Catalog, identifier: str, io: FileIO, location: str) -> bytes | None:
    """The bytes of a previous metadata file (None: gone or unreadable)."""
    if isinstance(catalog, ObjectStoreCatalog):
        try:
            version = parse_metadata_version(location)
            return catalog.store.get(catalog.metadata_key(identifier, version))
        except (ValueError, NotFound):
            return None
    try:
        with io.new_input(location).open() as f:
            return f.read()
    except OSError:
        return None


def _referenced(catalog: Catalog, identifier: str) -> set[str]:
    """Every file a readable metadata version references: manifest lists, manifests and
    live data files of each of their snapshots (the current version and the retained
    previous versions, so a reader that loaded a recent version keeps working), and those
    metadata files themselves."""
    table = catalog.load_table(identifier)
    io = table.io
    metadatas = [table.metadata]
    refs: set[str] = {_norm(table.metadata_location)}
    for log_entry in table.metadata.metadata_log:
        refs.add(_norm(log_entry.metadata_file))
        data = _read_metadata(catalog, identifier, io, log_entry.metadata_file)
        if data is None or is_tombstone(data):
            continue
        metadatas.append(TableMetadataUtil.parse_raw(data.decode("utf-8")))
    seen_lists: set[str] = set()
    seen_manifests: set[str] = set()
    for meta in metadatas:
        for snap in meta.snapshots:
            if snap.manifest_list in seen_lists:
                continue
            seen_lists.add(snap.manifest_list)
            refs.add(_norm(snap.manifest_list))
            for manifest in snap.manifests(io):
                if manifest.manifest_path in seen_manifests:
                    continue
                seen_manifests.add(manifest.manifest_path)
                refs.add(_norm(manifest.manifest_path))
                for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                    refs.add(_norm(entry.data_file.file_path))
    return refs


@dataclass(frozen=True)
class _File:
    """A candidate of the orphan cleanup: its location as the metadata spells it."""

    uri: str
    size: int
    modified: datetime
    key: str = ""  # the object-store catalog's store key


def _store_candidates(catalog: ObjectStoreCatalog, identifier: str) -> list[_File]:
    store = catalog.store
    prefix = catalog.table_prefix(identifier)
    infos = list(store.list(f"{prefix}/data/"))
    infos += [i for i in store.list(f"{prefix}/metadata/") if i.key.endswith(".avro")]
    return [_File(store.uri(i.key), i.size, i.last_modified, i.key) for i in infos]


def _fileio_candidates(table: Table) -> list[_File]:
    """Files under the table's ``data/`` and its ``metadata/`` manifests, manifest lists and
    metadata JSON, listed through the table's FileIO (pyarrow's or fsspec's file system)."""
    from pyarrow import fs as pafs
    from pyiceberg.io.fsspec import FsspecFileIO
    from pyiceberg.io.pyarrow import PyArrowFileIO

    io = table.io
    location = table.location().rstrip("/")
    out: list[_File] = []
    wanted = (".avro", ".metadata.json")
    if isinstance(io, PyArrowFileIO):
        scheme, netloc, path = PyArrowFileIO.parse_location(location)
        filesystem = io.fs_by_scheme(scheme, netloc)
        local = scheme in ("file", "")
        for sub in ("data", "metadata"):
            selector = pafs.FileSelector(f"{path}/{sub}", recursive=True, allow_not_found=True)
            for info in filesystem.get_file_info(selector):
                if info.type != pafs.FileType.File:
                    continue
                if sub == "metadata" and not info.path.endswith(wanted):
                    continue
                uri = info.path if local else f"{scheme}://{info.path}"
                mtime = info.mtime or datetime.now(UTC)
                out.append(_File(uri, info.size or 0, mtime.astimezone(UTC)))
        return out
    if isinstance(io, FsspecFileIO):
        scheme = location.split("://", 1)[0] if "://" in location else "file"
        filesystem = io.get_fs(scheme)
        for sub in ("data", "metadata"):
            found = filesystem.find(f"{location}/{sub}", detail=True)
            for path, info in found.items():
                if sub == "metadata" and not path.endswith(wanted):
                    continue
                uri = path if scheme == "file" else f"{scheme}://{path.split('://', 1)[-1]}"
                stamp = info.get("LastModified") or info.get("mtime") or info.get("created")
                if isinstance(stamp, datetime):
                    modified = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
                elif isinstance(stamp, int | float):
                    modified = datetime.fromtimestamp(stamp, UTC)
                else:
                    modified = datetime.now(UTC)  # unknown age: treated as young, kept
                out.append(_File(uri, int(info.get("size") or 0), modified))
        return out
    raise ValueError(
        f"{table.name()}: orphan cleanup needs a FileIO that can list files (pyarrow or "
        f"fsspec), not {type(io).__name__}"
    )


def vacuum(
    catalog: Catalog,
    identifier: str,
    older_than: timedelta = timedelta(days=3),
    dry_run: bool = False,
    progress: Progress | None = None,
    min_window: timedelta = timedelta(0),
) -> VacuumReport:
    """Delete files of the table that no retained snapshot references and whose
    last-modified time is older than ``older_than``.

    Candidates are the objects under ``data/`` and the manifest / manifest-list files
    (``*.avro``) under ``metadata/``; with a catalog other than the object-store catalog
    (listed and deleted through the table's FileIO) also the ``*.metadata.json`` files that
    are neither current nor in the metadata log. Referenced = everything the current metadata
    version and its retained previous versions reference; the object-store catalog's metadata
    JSON and hint files are never touched. Candidates are listed BEFORE the metadata is read,
    so a file committed during the vacuum is seen as referenced.

    ``min_window`` is the shortest window the caller accepts (``min_vacuum_window`` of the
    longest run; ``lockgate vacuum`` passes it): a shorter ``older_than`` raises
    ``VacuumRefused`` before anything is listed or deleted.
    """
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    if older_than < min_window:
        raise VacuumRefused(
            f"{identifier}: a window of {older_than} is shorter than the longest run plus a "
            f"margin ({min_window}): a run still alive may yet commit the staged files it "
            "would delete. Use a longer --older-than"
        )
    report = VacuumReport(table=identifier, dry_run=dry_run)
    cutoff = datetime.now(UTC) - older_than
    if isinstance(catalog, ObjectStoreCatalog):
        store = catalog.store
        candidates = _store_candidates(catalog, identifier)

        def delete(f: _File) -> None:
            store.delete(f.key)

    else:
        table = catalog.load_table(identifier)
        candidates = _fileio_candidates(table)

        def delete(f: _File) -> None:
            table.io.delete(f.uri)

    report.scanned = len(candidates)
    if progress:
        progress(0, len(candidates))
    referenced = _referenced(catalog, identifier)
    doomed = []
    for f in candidates:
        if _norm(f.uri) in referenced:
            report.referenced += 1
        elif f.modified >= cutoff:
            report.too_young += 1
        else:
            doomed.append(f)
    crash_point("vacuum.before_delete")
    done = len(candidates) - len(doomed)
    for f in doomed:
        if not dry_run:
            delete(f)
            crash_point("vacuum.mid_delete")
        report.deleted.append(f.uri)
        report.bytes_deleted += f.size
        done += 1
        if progress:
            progress(done, len(candidates))
    if progress:
        progress(len(candidates), len(candidates))
    return report
