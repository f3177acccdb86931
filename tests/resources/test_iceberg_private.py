"""Every private pyiceberg name Lockgate uses still exists (resources/iceberg_private.py): an
upgrade that moves one fails here, loudly, instead of deep inside a commit."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table, Transaction
from pyiceberg.table.update.snapshot import (
    _ManifestMergeManager,
    _OverwriteFiles,
    _SnapshotProducer,
)

from lockgate.resources.catalog import ObjectStoreCatalog
from lockgate.resources.iceberg_private import (
    PRIVATE_NAMES,
    MemoTransaction,
    has_updates,
    iceberg_schema,
)
from lockgate.resources.markers import IdRanges
from lockgate.resources.store import LocalStore
from lockgate.resources.tables import TableStore

OWNERS: dict[str, type] = {
    "Catalog": Catalog,
    "Table": Table,
    "_SnapshotProducer": _SnapshotProducer,
    "_OverwriteFiles": _OverwriteFiles,
    "_ManifestMergeManager": _ManifestMergeManager,
}


@pytest.mark.parametrize(("owner", "name"), PRIVATE_NAMES)
def test_private_name_exists(owner: str, name: str, tmp_path: Path) -> None:
    if owner == "Transaction":  # instance attributes: look at a real transaction
        store = LocalStore(tmp_path)
        catalog = ObjectStoreCatalog(warehouse=store.uri(), store=store)
        table = catalog.create_table("ns.t", schema=iceberg_schema(pa.schema([("a", pa.int64())])))
        assert hasattr(Transaction(table), name), f"pyiceberg Transaction lost {name}"
    else:
        assert hasattr(OWNERS[owner], name), f"pyiceberg {owner} lost {name}"


def test_has_updates_sees_staged_updates(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    catalog = ObjectStoreCatalog(warehouse=store.uri(), store=store)
    table = catalog.create_table("ns.t", schema=iceberg_schema(pa.schema([("a", pa.int64())])))
    txn = Transaction(table)
    assert not has_updates(txn)
    txn.set_properties({"k": "v"})
    assert has_updates(txn)


def test_memo_transaction_metadata_is_pyicebergs(tmp_path: Path) -> None:
    """``MemoTransaction.table_metadata`` is what pyiceberg computes for the same staged updates,
    and it follows every new staged update."""
    store = LocalStore(tmp_path)
    catalog = ObjectStoreCatalog(warehouse=store.uri(), store=store)
    table = catalog.create_table("ns.t", schema=iceberg_schema(pa.schema([("a", pa.int64())])))
    memo, plain = MemoTransaction(table), Transaction(table)
    assert memo.table_metadata.properties == plain.table_metadata.properties
    for txn in (memo, plain):
        txn.set_properties({"k": "v"})
    assert memo.table_metadata.properties["k"] == "v"
    assert memo.table_metadata is memo.table_metadata  # computed once for this state
    for txn in (memo, plain):
        txn.set_properties({"k": "w"})
    assert memo.table_metadata.properties == plain.table_metadata.properties
    assert memo.table_metadata.properties["k"] == "w"


def test_batch_commit_computes_metadata_a_bounded_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch commit applies its updates to the table metadata a few times, not once per read
    of ``Transaction.table_metadata`` (pyiceberg's ~15 deep copies per append)."""
    import pyiceberg.table

    store = LocalStore(tmp_path)
    tables = TableStore(ObjectStoreCatalog(warehouse=store.uri(), store=store))
    schema = pa.schema([("id", pa.int64()), ("_day", pa.date32())])
    tables.ensure_table("ns.t", schema, "_day")
    batch = pa.record_batch([pa.array([1, 2]), pa.array([date(2024, 3, 1)] * 2)], schema=schema)
    staged = tables.stage("ns.t", [batch])
    calls = 0
    real = pyiceberg.table.update_table_metadata

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(pyiceberg.table, "update_table_metadata", counting)
    result = tables.commit_batch("ns.t", "src", 0, staged)
    assert not result.duplicate and tables.committed("ns.t", "src") == IdRanges.of([0])
    assert 1 <= calls <= 2, calls
