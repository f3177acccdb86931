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

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from pyiceberg.catalog import Catalog


@dataclass(frozen=True)
class MaintenancePolicy:
    """How much history to keep. A snapshot is expired when it is neither among the last
    ``keep_snapshots`` of ``main`` nor younger than ``keep_newer_than``; the current snapshot
    is never expired. ``keep_metadata_versions`` metadata files stay readable."""

    keep_snapshots: int = 20
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
    to expire). Conflicts are retried a few times, then given up (maintenance is optional)."""
    raise NotImplementedError


def maintain(
    catalog: Catalog, identifier: str, policy: MaintenancePolicy | None = None
) -> MaintenanceReport:
    """Expire snapshots, then retire metadata versions (object-store catalog only)."""
    raise NotImplementedError


def vacuum(
    catalog: Catalog,
    identifier: str,
    older_than: timedelta = timedelta(days=3),
    dry_run: bool = False,
    progress: Progress | None = None,
) -> VacuumReport:
    """Delete files of the table that no retained snapshot references and whose
    last-modified time is older than ``older_than``.

    Referenced = data files, manifests and manifest lists of every snapshot in the current
    metadata, plus metadata JSON / hint files (never touched). Files are listed before the
    metadata is read, so a file committed during the vacuum is seen as referenced. Only
    object-store catalogs (local or S3 warehouses) are supported.
    """
    raise NotImplementedError
