"""Every use of pyiceberg's private API, in one place (written against pyiceberg 0.12.x).

Lockgate needs five things pyiceberg does not expose: a commit without pyiceberg's internal
retry (it would re-apply a stale marker over a newer one), whether a transaction staged any
update, the arrow -> Iceberg schema conversion that ``create_table`` uses, a ``replace``
snapshot (files rewritten, data unchanged: compaction), which pyiceberg 0.12 cannot produce,
and a transaction that does not recompute its metadata on every read (``MemoTransaction``).

Contract: nothing else in Lockgate touches a private pyiceberg name. ``PRIVATE_NAMES`` lists
each one; ``tests/resources/test_iceberg_private.py`` checks that they all still exist, so an
upgrade of pyiceberg that moves one fails there, loudly, instead of deep inside a commit.
"""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.manifest import DataFile, ManifestFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update import AssertTableUUID, TableUpdate
from pyiceberg.table.update.snapshot import _ManifestMergeManager, _OverwriteFiles
from pyiceberg.typedef import EMPTY_DICT
from pyiceberg.utils.properties import property_as_int

# (owner, name): the owner is a class, or "Transaction" for instance attributes of one.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("Catalog", "_convert_schema_if_needed"),
    ("Transaction", "_table"),
    ("Transaction", "_updates"),
    ("Transaction", "_requirements"),
    ("Transaction", "_snapshot_producers"),
    ("Table", "_do_commit"),
    ("_SnapshotProducer", "_clean_all_uncommitted"),
    ("_SnapshotProducer", "_summary"),
    ("_OverwriteFiles", "_deleted_entries"),
    ("_SnapshotProducer", "_process_manifests"),
    ("_ManifestMergeManager", "merge_manifests"),
)

#: Table property (Iceberg's) bounding the size of a manifest written by a merge.
MANIFEST_TARGET_SIZE = "commit.manifest.target-size-bytes"
MANIFEST_TARGET_SIZE_DEFAULT = 8 * 1024 * 1024


class MemoTransaction(Transaction):
    """pyiceberg's ``Transaction`` whose ``table_metadata`` (the base with the staged updates
    applied) is computed once per state of the staged updates instead of on every read.

    pyiceberg re-applies every staged update to a deep copy of the whole table metadata each
    time the property is read, and a snapshot producer reads it about 15 times per append: a
    third of a commit's CPU, growing with the table's snapshots and metadata log. Staged
    updates only ever grow, each ``_stage`` binding a new tuple, so the tuple's identity names
    the state. The value is shared between readers, not copied: pyiceberg's metadata models
    are frozen, and every update builds a new one. Use it for every transaction Lockgate
    plans (``commit_strict`` commits it like any other)."""

    _memo: tuple[tuple[TableUpdate, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        memo = self._memo
        if memo is not None and memo[0] is self._updates:
            return memo[1]
        metadata = super().table_metadata
        self._memo = (self._updates, metadata)  # holding the tuple keeps its identity unique
        return metadata


def commit_strict(txn: Transaction) -> Table:
    """Commit ``txn`` exactly once against its base, without pyiceberg's internal retry.

    ``Transaction.commit_transaction`` retries a snapshot producer on a fresh base but keeps
    the other staged updates, so it would re-apply a stale marker value over a newer one.
    Here a conflict raises ``CommitFailedException`` or ``ValidationException`` (after deleting
    the manifests written for this attempt) and the caller re-plans from a reload. The commit
    also requires the table's UUID, so a table dropped and re-created meanwhile conflicts.
    """
    table = txn._table
    requirements = (*txn._requirements, AssertTableUUID(uuid=table.metadata.table_uuid))
    try:
        table._do_commit(updates=txn._updates, requirements=requirements)
    except (CommitFailedException, ValidationException):
        for producer in txn._snapshot_producers:
            producer._clean_all_uncommitted()
        raise
    return table


def has_updates(txn: Transaction) -> bool:
    """Whether ``txn`` staged any metadata update (an empty one must commit nothing)."""
    return bool(txn._updates)


def iceberg_schema(schema: pa.Schema) -> Schema:
    """``schema`` as an Iceberg v2 schema, the conversion ``Catalog.create_table`` applies
    (field ids not yet assigned)."""
    return Catalog._convert_schema_if_needed(schema, 2)


class _ReplaceFiles(_OverwriteFiles):
    """pyiceberg's overwrite producer, recorded as a ``replace`` snapshot.

    The overwrite producer already does what a rewrite needs: it deletes exactly the given
    data files (``ValidationException`` if one is no longer live in the base snapshot), keeps
    every other entry, and adds the new files. Only pyiceberg's summary update refuses the
    ``replace`` operation, so the totals are computed as for an overwrite and the operation
    is then renamed (totals are identical: the same rows are removed and added).

    The snapshot's manifests are merged (as Iceberg's rewrite-manifests does): every manifest
    of the new snapshot goes into manifests of up to ``commit.manifest.target-size-bytes``,
    keeping the entries this snapshot adds or deletes and every live entry (as existing, with
    its sequence numbers), and dropping the deleted entries of earlier snapshots. Without it,
    each compaction leaves a manifest of the files it deleted that the next compaction carries
    on, so a compacted table's readers still decode one entry per file it ever had.
    """

    def _process_manifests(self, manifests: list[ManifestFile]) -> list[ManifestFile]:
        target = property_as_int(
            self._transaction.table_metadata.properties,
            MANIFEST_TARGET_SIZE,
            MANIFEST_TARGET_SIZE_DEFAULT,
        )
        merger = _ManifestMergeManager(
            target_size_bytes=target or MANIFEST_TARGET_SIZE_DEFAULT,
            min_count_to_merge=2,
            merge_enabled=True,
            snapshot_producer=self,
        )
        return merger.merge_manifests(manifests)

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        summary = super()._summary(snapshot_properties)
        return Summary(Operation.REPLACE, **summary.additional_properties)


def replace_files(
    txn: Transaction,
    deleted: list[DataFile],
    added: list[DataFile],
    snapshot_properties: dict[str, str],
) -> None:
    """Stage in ``txn`` ONE ``replace`` snapshot on ``main`` that deletes exactly ``deleted``
    and adds ``added``. Raises ``ValidationException`` (at staging) if a file of ``deleted``
    is not live in ``txn``'s base snapshot; the snapshot asserts ``main``'s head, so a
    concurrent commit makes ``commit_strict`` fail (re-plan from a reload)."""
    producer = _ReplaceFiles(
        operation=Operation.OVERWRITE,
        transaction=txn,
        io=txn._table.io,
        snapshot_properties=snapshot_properties,
    )
    for f in deleted:
        producer.delete_data_file(f)
    for f in added:
        producer.append_data_file(f)
    producer.commit()
