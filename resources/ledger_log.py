"""The ledger's logs: batch id -> one immutable JSON record, like Spark's ``HDFSMetadataLog``.

``ClaimLog`` is ``<source>/offsets/<batch:020d>.json`` (what a batch will ingest) and
``CommitLog`` is ``<source>/commits/<batch:020d>.json`` (what a batch produced), and
``RebuildLog`` is ``<source>/rebuilds/<table version:020d>.json`` (what a rebuild's overwrite
commit re-read), all on the source's sub-store of the ledger root.

Contract:

* ``add`` is a create-only put (``put_if_absent``): a record is never overwritten or deleted,
  so a name a stale writer may still target is never freed (DESIGN, Hazards).
* A 412 (``AlreadyExists``) is answered by reading the record back: the same bytes mean the
  put was ours (an earlier attempt whose response was lost), and ``add`` reports success.
* ``get`` returns None for a missing record and raises ``LedgerCorrupt`` for one that does not
  parse or belongs to another batch or source; it never guesses.
* A log keeps no state of its own besides its store: any number of instances may share it.
"""

from __future__ import annotations

from lockgate.resources.ledger_records import (
    Claim,
    CommitRecord,
    LedgerCorrupt,
    RebuildRecord,
    _dumps,
    _loads,
    batch_name,
)
from lockgate.resources.store import AlreadyExists, NotFound, ObjectStore

OFFSETS = "offsets/"
COMMITS = "commits/"
REBUILDS = "rebuilds/"


class _BatchLog:
    """Create-only files ``<prefix><batch:020d>.json`` on ``store`` (one source's sub-store)."""

    prefix = ""

    def __init__(self, store: ObjectStore, source: str) -> None:
        self.store = store
        self.source = source

    def name(self, batch_id: int) -> str:
        return self.prefix + batch_name(batch_id)

    def _get_raw(self, batch_id: int) -> bytes | None:
        try:
            return self.store.get(self.name(batch_id))
        except NotFound:
            return None

    def _add_raw(self, batch_id: int, body: bytes) -> bool:
        """Create-only put; True if ``body`` is stored now (by this put, or found identical on
        read-back after a 412), False if another record holds the id."""
        try:
            self.store.put_if_absent(self.name(batch_id), body)
        except AlreadyExists:
            return self._get_raw(batch_id) == body
        return True

    def exists(self, batch_id: int) -> bool:
        return self.store.exists(self.name(batch_id))


class ClaimLog(_BatchLog):
    """The claims (write-ahead log of planned input)."""

    prefix = OFFSETS

    def get(self, batch_id: int) -> Claim | None:
        """The claim of ``batch_id``, or None if no claim has that id yet."""
        data = self._get_raw(batch_id)
        if data is None:
            return None
        name = self.name(batch_id)
        claim = Claim.from_json(_loads(data, f"{self.source}/{name}"))
        if claim.batch_id != batch_id or claim.source != self.source:
            raise LedgerCorrupt(
                f"{self.source}/{name} holds batch {claim.batch_id} of {claim.source}"
            )
        return claim

    def add(self, claim: Claim) -> bool:
        """Create-only put of ``claim`` at its id; False if another claim took the id."""
        if claim.source != self.source:
            raise ValueError(f"claim of {claim.source!r} added to the log of {self.source!r}")
        return self._add_raw(claim.batch_id, _dumps(claim.to_json()))


class CommitLog(_BatchLog):
    """The commit records (what each finished batch produced)."""

    prefix = COMMITS

    def get(self, batch_id: int) -> CommitRecord | None:
        """The commit record of ``batch_id``, or None."""
        data = self._get_raw(batch_id)
        if data is None:
            return None
        return CommitRecord.from_json(_loads(data, f"{self.source}/{self.name(batch_id)}"))

    def add(self, rec: CommitRecord) -> CommitRecord:
        """Create-only put of ``rec``; returns the stored record (``rec``, or the record that
        was there first, unchanged)."""
        if self._add_raw(rec.batch_id, _dumps(rec.to_json(self.source))):
            return rec
        existing = self.get(rec.batch_id)
        if existing is None:
            raise LedgerCorrupt(
                f"source {self.source!r}: commit record {rec.batch_id} vanished after a 412"
            )
        return existing


class RebuildLog(_BatchLog):
    """The rebuild records, named by the table version of their overwrite commit (one commit
    per version, so a name is never contended by two rebuilds)."""

    prefix = REBUILDS

    def get(self, table_version: int) -> RebuildRecord | None:
        data = self._get_raw(table_version)
        if data is None:
            return None
        return RebuildRecord.from_json(_loads(data, f"{self.source}/{self.name(table_version)}"))

    def add(self, rec: RebuildRecord) -> RebuildRecord:
        """Create-only put of ``rec``; returns the stored record (``rec``, or the one that was
        there first, unchanged)."""
        if self._add_raw(rec.table_version, _dumps(rec.to_json(self.source))):
            return rec
        existing = self.get(rec.table_version)
        if existing is None:
            raise LedgerCorrupt(
                f"source {self.source!r}: rebuild record {rec.table_version} vanished after a 412"
            )
        return existing

    def versions(self) -> list[int]:
        """The table versions of every rebuild record, ascending (one LIST: rebuilds are rare)."""
        out = []
        for info in self.store.list(self.prefix):
            stem = info.key[len(self.prefix) :].removesuffix(".json")
            if stem.isdigit():
                out.append(int(stem))
        return sorted(out)
