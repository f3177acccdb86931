"""Every private pyiceberg name Lockgate uses still exists (resources/iceberg_private.py): an
upgrade that moves one fails here, loudly, instead of deep inside a commit."""

from __future__ import annotations

from pathlib import Path

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
from lockgate.resources.iceberg_private import PRIVATE_NAMES, has_updates, iceberg_schema
from lockgate.resources.store import LocalStore

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
