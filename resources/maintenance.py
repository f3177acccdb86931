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
  commits). pyiceberg never deletes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Transaction
from pyiceberg.table.metadata import TableMetadataUtil
from pyiceberg.table.update.snapshot import ExpireSnapshots

from lockgate.resources.catalog import ObjectStoreCatalog, is_tombstone, parse_metadata_version
from lockgate.resources.crashpoints import crash_point
from lockgate.resources.errors import ExitCode, TerminalError
from lockgate.resources.iceberg_private import commit_strict
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
    expired_snapshots: int
    retired_versions: int
    table_version: int


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


def expire_snapshots(catalog: Catalog, identifier: str, policy: MaintenancePolicy) -> int:
    """Expire snapshots outside the policy; return how many. One commit (none if nothing
    to expire). Conflicts are retried a few times, then given up (maintenance is optional).

    "Last N" is by sequence number, not by clock; the age rule only ever keeps more."""
    if policy.keep_snapshots < 1:
        raise ValueError("keep_snapshots must be >= 1")
    for _ in range(5):
        table = catalog.load_table(identifier)
        snaps = sorted(table.metadata.snapshots, key=lambda s: s.sequence_number or 0)
        if len(snaps) <= policy.keep_snapshots:
            return 0
        keep = {s.snapshot_id for s in snaps[-policy.keep_snapshots :]}
        keep |= {ref.snapshot_id for ref in table.metadata.refs.values()}
        cutoff_ms = int((datetime.now(UTC) - policy.keep_newer_than).timestamp() * 1000)
        expire = [
            s.snapshot_id
            for s in snaps
            if s.snapshot_id not in keep
            and (policy.keep_newer_than <= timedelta(0) or s.timestamp_ms < cutoff_ms)
        ]
        if not expire:
            return 0
        txn = Transaction(table)
        with ExpireSnapshots(txn) as exp:
            exp.by_ids(expire)
        try:
            commit_strict(txn)
        except CommitFailedException:
            continue
        crash_point("maintenance.after_expire")
        return len(expire)
    return 0


def maintain(
    catalog: Catalog, identifier: str, policy: MaintenancePolicy | None = None
) -> MaintenanceReport:
    """Expire snapshots, then retire metadata versions (object-store catalog only)."""
    policy = policy or MaintenancePolicy()
    expired = expire_snapshots(catalog, identifier, policy)
    retired = 0
    version = 0
    if isinstance(catalog, ObjectStoreCatalog):
        retired = catalog.retire_versions(identifier, keep=policy.keep_metadata_versions)
        version = catalog.current_version(identifier)
    return MaintenanceReport(
        expired_snapshots=expired, retired_versions=retired, table_version=version
    )


def _norm(location: str) -> str:
    return location[len("file://") :] if location.startswith("file://") else location


def _referenced(catalog: ObjectStoreCatalog, identifier: str) -> set[str]:
    """Every file a readable metadata version references: manifest lists, manifests and
    live data files of each of their snapshots (the current version and the retained
    previous versions, so a reader that loaded a recent version keeps working)."""
    table = catalog.load_table(identifier)
    io = table.io
    metadatas = [table.metadata]
    for log_entry in table.metadata.metadata_log:
        try:
            version = parse_metadata_version(log_entry.metadata_file)
            data = catalog.store.get(catalog.metadata_key(identifier, version))
        except (ValueError, NotFound):
            continue
        if is_tombstone(data):
            continue
        metadatas.append(TableMetadataUtil.parse_raw(data.decode("utf-8")))
    refs: set[str] = set()
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
    (``*.avro``) under ``metadata/``. Referenced = everything the current metadata version
    and its retained previous versions reference; metadata JSON and hint files are never
    touched. Candidates are listed BEFORE the metadata is read, so a file committed during
    the vacuum is seen as referenced. Only object-store catalogs are supported.

    ``min_window`` is the shortest window the caller accepts (``min_vacuum_window`` of the
    longest run; ``lockgate vacuum`` passes it): a shorter ``older_than`` raises
    ``VacuumRefused`` before anything is listed or deleted.
    """
    if not isinstance(catalog, ObjectStoreCatalog):
        raise ValueError("vacuum needs the object-store catalog (local or S3 warehouse)")
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    if older_than < min_window:
        raise VacuumRefused(
            f"{identifier}: a window of {older_than} is shorter than the longest run plus a "
            f"margin ({min_window}): a run still alive may yet commit the staged files it "
            "would delete. Use a longer --older-than"
        )
    store = catalog.store
    prefix = catalog.table_prefix(identifier)
    report = VacuumReport(table=identifier, dry_run=dry_run)
    cutoff = datetime.now(UTC) - older_than
    candidates = list(store.list(f"{prefix}/data/"))
    candidates += [i for i in store.list(f"{prefix}/metadata/") if i.key.endswith(".avro")]
    report.scanned = len(candidates)
    if progress:
        progress(0, len(candidates))
    referenced = _referenced(catalog, identifier)
    doomed = []
    for info in candidates:
        if _norm(store.uri(info.key)) in referenced:
            report.referenced += 1
        elif info.last_modified >= cutoff:
            report.too_young += 1
        else:
            doomed.append(info)
    crash_point("vacuum.before_delete")
    done = len(candidates) - len(doomed)
    for info in doomed:
        if not dry_run:
            store.delete(info.key)
            crash_point("vacuum.mid_delete")
        report.deleted.append(store.uri(info.key))
        report.bytes_deleted += info.size
        done += 1
        if progress:
            progress(done, len(candidates))
    if progress:
        progress(len(candidates), len(candidates))
    return report
