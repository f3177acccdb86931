"""The exactly-once invariants of DESIGN.md, checked against the table, its quarantine and
the ledger. Used by ``lockgate verify`` and the ``exactly_once`` asset check.

For one source, at the table's current version:

1. no two rows share ``(_source_key, _source_etag, _source_row)``;
2. for every committed batch with a commit record, each object contributes exactly
   ``records(object) = rows in table + entries in quarantine``; an object the batch recorded
   as *changed before read* / *gone before read* was not read: 0 records, so it must have no
   row and no entry (reported in ``not_read``, not a violation);
3. no row belongs to an unclaimed object or to a batch the table's marker does not hold;
4. every batch in the marker is claimed in the ledger;
5. every non-null ``_rescued_data`` is a JSON object (what a row's unfit values became);
6. for every commit record that holds ``bytes_read``, each object read consumed exactly the
   size its claim holds (a lying endpoint cannot make a batch look complete).

A batch's accounting (record counts, not read, bytes read) is its latest rebuild record's, if a
rebuild re-read it (``Ledger.account``), else its commit record: after a rebuild (e.g. of a day
whose object was restored) the table is checked against what the rebuild read.

``lockgate.pipelines.verify_deep`` (``lockgate verify --deep``) re-reads the source objects
instead.

Reading the lineage columns is O(table rows): this is an audit, not a per-commit check.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import NoSuchTableError

from lockgate.pipelines.rescue import RESCUED
from lockgate.resources.config import SourceConfig
from lockgate.resources.ledger import Claim, UnknownBatch
from lockgate.resources.runtime import Runtime, quarantine_table

LINEAGE_KEY = ("_source_key", "_source_etag", "_source_row")
MAX_EXAMPLES = 10


@dataclass
class VerifyReport:
    source: str
    table: str
    rows: int = 0
    quarantined: int = 0
    rescued: int = 0  # rows with a non-null _rescued_data
    committed_batches: int = 0
    checked_batches: int = 0
    # objects whose claimed version was gone when their batch read them: (batch, key, outcome)
    not_read: list[tuple[int, str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "table": self.table,
            "ok": self.ok,
            "rows": self.rows,
            "quarantined": self.quarantined,
            "rescued": self.rescued,
            "committed_batches": self.committed_batches,
            "checked_batches": self.checked_batches,
            "not_read": [{"batch_id": b, "key": k, "outcome": o} for b, k, o in self.not_read],
            "violations": self.violations,
        }


def _scan(
    rt: Runtime, identifier: str, columns: tuple[str, ...], optional: tuple[str, ...] = ()
) -> pa.Table | None:
    """``columns`` of the table, plus those of ``optional`` it has; None if no table."""
    try:
        table = rt.tables.load(identifier)
    except NoSuchTableError:
        return None
    names = table.schema().as_arrow().names
    wanted = (*columns, *(c for c in optional if c in names))
    return table.scan(selected_fields=wanted).to_arrow()


def verify_source(rt: Runtime, source: SourceConfig) -> VerifyReport:
    report = VerifyReport(source.name, source.table)
    rows = _scan(rt, source.table, (*LINEAGE_KEY, "_batch_id"), optional=(RESCUED,))
    quarantine = _scan(rt, quarantine_table(source), ("_source_key", "_batch_id"))
    marker = rt.tables.committed(source.table, source.name)
    report.committed_batches = len(marker)
    if rows is None:
        if marker:
            report.violations.append("the table is missing but batches are marked")
        return report
    report.rows = rows.num_rows
    report.quarantined = quarantine.num_rows if quarantine is not None else 0
    if RESCUED in rows.column_names:
        _check_rescued(rows.column(RESCUED), report)

    # 1. unique lineage
    dup = (
        rows.group_by(list(LINEAGE_KEY))
        .aggregate([("_batch_id", "count")])
        .filter(pc.greater(pc.field("_batch_id_count"), 1))
    )
    if dup.num_rows:
        ex = dup.slice(0, MAX_EXAMPLES).to_pylist()
        report.violations.append(f"{dup.num_rows} duplicated lineage keys, e.g. {ex}")

    # 3./4. rows only of marked, claimed batches
    ledger = rt.ledger(source)
    batch_ids = set(pc.unique(rows.column("_batch_id")).to_pylist())
    unmarked = sorted(b for b in batch_ids if b not in marker)
    if unmarked:
        report.violations.append(f"rows of batches not marked committed: {unmarked[:MAX_EXAMPLES]}")
    claims = {}
    for b in sorted(set(marker) | batch_ids):
        try:
            claims[b] = ledger.get_claim(b)
        except UnknownBatch:
            report.violations.append(f"batch {b} has rows or a marker but no claim")

    # 2./3. per-object accounting
    per_key = Counter(
        {
            (r["_batch_id"], r["_source_key"]): r["_source_row_count"]
            for r in rows.group_by(["_batch_id", "_source_key"])
            .aggregate([("_source_row", "count")])
            .to_pylist()
        }
    )
    q_per_key: Counter[tuple[int, str]] = Counter()
    if quarantine is not None and quarantine.num_rows:
        for r in (
            quarantine.group_by(["_batch_id", "_source_key"])
            .aggregate([("_source_key", "count")])
            .to_pylist()
        ):
            q_per_key[(r["_batch_id"], r["_source_key"])] = r["_source_key_count"]
    for b, claim in claims.items():
        keys = {o.key for o in claim.objects}
        stray = [k for (bb, k) in per_key if bb == b and k not in keys]
        if stray:
            report.violations.append(f"batch {b}: rows of unclaimed objects {stray[:MAX_EXAMPLES]}")
        rec = ledger.account(b)  # the latest rebuild's accounting, else the commit record
        if rec is not None and rec.bytes_read is not None:
            _check_bytes(b, claim, rec.bytes_read, report)
        if rec is None or rec.record_counts is None:
            continue
        report.checked_batches += 1
        for key, outcome in sorted((rec.unread or {}).items()):
            report.not_read.append((b, key, outcome))
            if rec.record_counts.get(key, 0):
                report.violations.append(
                    f"batch {b} object {key!r}: recorded {outcome} but counts "
                    f"{rec.record_counts[key]} records"
                )
        for key, records in rec.record_counts.items():
            got = per_key.get((b, key), 0) + q_per_key.get((b, key), 0)
            if got != records:
                report.violations.append(
                    f"batch {b} object {key!r}: {records} records read but "
                    f"{per_key.get((b, key), 0)} rows + {q_per_key.get((b, key), 0)} quarantined"
                )
    return report


def _check_bytes(
    batch_id: int, claim: Claim, consumed: Mapping[str, int], report: VerifyReport
) -> None:
    """Invariant 6: every object read to its end consumed exactly its claimed size."""
    claimed = {o.key: o.size for o in claim.objects}
    for key, n in sorted(consumed.items()):
        if key not in claimed:
            report.violations.append(
                f"batch {batch_id} object {key!r}: bytes read of an object the claim does not hold"
            )
        elif n != claimed[key]:
            report.violations.append(
                f"batch {batch_id} object {key!r}: consumed {n} bytes but the claim says "
                f"{claimed[key]}"
            )


def _check_rescued(column: pa.ChunkedArray, report: VerifyReport) -> None:
    """Count rows with rescued values; each must be a JSON object (invariant 5)."""
    col = column.drop_null()
    report.rescued = len(col)
    bad = []
    for text in col.to_pylist():
        try:
            ok = isinstance(json.loads(text), dict)
        except ValueError:
            ok = False
        if not ok:
            bad.append(text[:80])
    if bad:
        report.violations.append(
            f"{len(bad)} _rescued_data values are not JSON objects, e.g. {bad[:MAX_EXAMPLES]}"
        )
