"""ObjectStoreCatalog: create-only commits of v<N+1> on a local folder and on S3 (moto)."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.table import StaticTable

from lockgate.resources.catalog import ObjectStoreCatalog, make_catalog
from lockgate.resources.store import AlreadyExists, LocalStore, ObjectStore, S3Options

SCHEMA = pa.schema([("id", pa.int64()), ("_day", pa.date32())])


@pytest.fixture
def catalog(request: pytest.FixtureRequest, store: ObjectStore) -> ObjectStoreCatalog:
    opts = request.getfixturevalue("s3_options") if store.uri().startswith("s3://") else None
    return ObjectStoreCatalog(warehouse=store.uri(), s3_options=opts, store=store)


def _bump(catalog: ObjectStoreCatalog, ident: str, n: int) -> None:
    for i in range(n):
        catalog.load_table(ident).transaction().set_properties(step=str(i)).commit_transaction()


def test_create_load_and_hint(catalog: ObjectStoreCatalog) -> None:
    t = catalog.create_table("ns.t", SCHEMA)
    assert t.metadata_location.endswith("ns/t/metadata/v1.metadata.json")
    assert catalog.current_version("ns.t") == 1
    _bump(catalog, "ns.t", 3)
    assert catalog.current_version("ns.t") == 4
    assert catalog.store.get("ns/t/metadata/version-hint.text") == b"4"
    loaded = catalog.load_table("ns.t")
    assert loaded.properties["step"] == "2"
    assert loaded.metadata_location == catalog.store.uri("ns/t/metadata/v4.metadata.json")
    assert catalog.table_exists("ns.t") and not catalog.table_exists("ns.missing")
    with pytest.raises(NoSuchTableError):
        catalog.load_table("ns.missing")
    assert catalog.list_tables("ns") == [("ns", "t")]
    assert catalog.list_namespaces() == [("ns",)]


def test_concurrent_creators_make_one_table(catalog: ObjectStoreCatalog) -> None:
    outcomes: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        try:
            catalog.create_table("ns.race", SCHEMA)
            r = "created"
        except TableAlreadyExistsError:
            r = "exists"
        with lock:
            outcomes.append(r)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(outcomes) == ["created"] + ["exists"] * 5
    assert catalog.current_version("ns.race") == 1


def test_lost_race_is_a_commit_conflict(catalog: ObjectStoreCatalog) -> None:
    catalog.create_table("ns.t", SCHEMA)
    a = catalog.load_table("ns.t")
    b = catalog.load_table("ns.t")
    a.transaction().set_properties(who="a").commit_transaction()
    with pytest.raises(CommitFailedException):
        b.transaction().set_properties(who="b").commit_transaction()
    assert catalog.load_table("ns.t").properties["who"] == "a"
    assert catalog.current_version("ns.t") == 2


def test_stale_or_missing_hint_still_finds_current(catalog: ObjectStoreCatalog) -> None:
    catalog.create_table("ns.t", SCHEMA)
    _bump(catalog, "ns.t", 12)
    catalog.store.put("ns/t/metadata/version-hint.text", b"2")
    assert catalog.current_version("ns.t") == 13
    catalog.store.delete("ns/t/metadata/version-hint.text")
    assert catalog.current_version("ns.t") == 13
    catalog.store.put("ns/t/metadata/version-hint.text", b"garbage")
    assert catalog.load_table("ns.t").properties["step"] == "11"


def test_retired_versions_stay_taken(catalog: ObjectStoreCatalog) -> None:
    catalog.create_table("ns.t", SCHEMA)
    stale = catalog.load_table("ns.t")  # a writer that loaded v1 long ago
    _bump(catalog, "ns.t", 9)
    assert catalog.retire_versions("ns.t", keep=3) == 7
    assert catalog.retire_versions("ns.t", keep=3) == 0  # idempotent
    assert len(catalog.store.get("ns/t/metadata/v2.metadata.json")) < 256
    # the stale writer targets v2: the name is a tombstone, so its put loses
    with pytest.raises(CommitFailedException):
        stale.transaction().set_properties(stale="yes").commit_transaction()
    t = catalog.load_table("ns.t")
    assert "stale" not in t.properties and catalog.current_version("ns.t") == 10
    catalog.store.put("ns/t/metadata/version-hint.text", b"1")  # hint pointing at a tombstone
    assert catalog.load_table("ns.t").properties["step"] == "8"


class _LostResponseStore(LocalStore):
    """Lands the create-only put, then reports 412 as a retried request would."""

    def put_if_absent(self, key: str, data: bytes) -> None:
        super().put_if_absent(key, data)
        if key.endswith(".metadata.json") and not key.endswith("v1.metadata.json"):
            raise AlreadyExists(key)


def test_lost_response_is_recognised_as_ours(tmp_path: Path) -> None:
    store = _LostResponseStore(tmp_path / "wh")
    catalog = ObjectStoreCatalog(warehouse=store.uri(), store=store)
    catalog.create_table("ns.t", SCHEMA)
    catalog.load_table("ns.t").transaction().set_properties(k="v").commit_transaction()
    assert catalog.load_table("ns.t").properties["k"] == "v"


def test_secrets_never_in_metadata(moto_server: str, bucket: str) -> None:
    secret = "s3cr3t-VALUE-never-logged"
    opts = S3Options(
        endpoint_url=moto_server,
        region="us-east-1",
        access_key_id="AKIALOCKGATETEST",
        secret_access_key=secret,
    )
    catalog = make_catalog(f"s3://{bucket}/wh", opts)
    assert isinstance(catalog, ObjectStoreCatalog)
    catalog.create_table("ns.t", SCHEMA)
    catalog.load_table("ns.t").transaction().set_properties(k="v").commit_transaction()
    assert secret not in repr(catalog)
    for info in catalog.store.list("ns/t/metadata/"):
        body = catalog.store.get(info.key)
        assert secret.encode() not in body and b"AKIALOCKGATETEST" not in body
    assert not any(
        "secret" in k or "access-key" in k for k in catalog.load_table("ns.t").properties
    )


def test_static_table_opens_latest_by_path(catalog: ObjectStoreCatalog) -> None:
    catalog.create_table("ns.t", SCHEMA)
    _bump(catalog, "ns.t", 2)
    props = {k: v for k, v in catalog.properties.items() if k.startswith("s3.")}
    st = StaticTable.from_metadata(catalog.table_location("ns.t"), props)
    assert st.metadata_location.endswith("v3.metadata.json")
    assert st.properties["step"] == "1"


def test_make_catalog_sql(tmp_path: Path) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    cat = make_catalog(
        str(tmp_path / "wh"),
        None,
        {"type": "sql", "uri": f"sqlite:///{tmp_path / 'cat.db'}"},
    )
    assert isinstance(cat, SqlCatalog)
    assert isinstance(make_catalog(str(tmp_path / "wh2")), ObjectStoreCatalog)


def test_bad_identifiers(tmp_path: Path) -> None:
    catalog = ObjectStoreCatalog(warehouse=str(tmp_path / "wh"))
    for bad in ("t", "a.b.c", "ns.t/x", "ns.."):
        with pytest.raises((ValueError, NoSuchTableError)):
            catalog.create_table(bad, SCHEMA)
