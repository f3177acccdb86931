"""Independent readers of a finished trial: the current table version found by listing
``metadata/`` (not through Lockgate's catalog), read once by DuckDB's iceberg extension and
once by pyiceberg's ``StaticTable``.

What is compared (``TableCheck``): the multiset of ``id`` values each engine reads, the
lineage key ``(_source_key, _source_etag, _source_row)`` duplicates each engine finds, and
whether ``metadata/version-hint.text`` names the current version (engines that open a table
by path trust it)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
from pyiceberg.table import StaticTable

from tests.resources.test_interop_duckdb import extension_path

_VERSION = re.compile(r"^v(\d+)\.metadata\.json$")
#: the harness's record ids: ``i`` good, ``b`` bad, ``o`` in files outside the landing root
ID_RE = re.compile(r"\b[ibo]\d+-\d+-\d+\b")


class Blobs:
    """Listing and reading a warehouse: a local folder or an S3 bucket (boto3, directly on
    the moto server, not through the fault proxy)."""

    def __init__(self, s3_endpoint: str | None = None) -> None:
        self.endpoint = s3_endpoint
        self._s3: Any = None
        if s3_endpoint:
            import boto3

            self._s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")

    @staticmethod
    def _split(url: str) -> tuple[str, str]:
        rest = url[len("s3://") :]
        bucket, _, key = rest.partition("/")
        return bucket, key

    def list_names(self, folder: str) -> list[str]:
        if folder.startswith("s3://"):
            bucket, prefix = self._split(folder.rstrip("/") + "/")
            names: list[str] = []
            kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            while True:
                page = self._s3.list_objects_v2(**kw)
                names += [o["Key"][len(prefix) :] for o in page.get("Contents", [])]
                if not page.get("IsTruncated"):
                    return names
                kw["ContinuationToken"] = page["NextContinuationToken"]
        import os

        return os.listdir(folder) if os.path.isdir(folder) else []

    def read(self, url: str) -> bytes | None:
        if url.startswith("s3://"):
            bucket, key = self._split(url)
            try:
                return bytes(self._s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            except self._s3.exceptions.NoSuchKey:
                return None
        try:
            with open(url, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None


@dataclass
class TableCheck:
    location: str
    version: int = 0
    duck_ids: Counter[str] = field(default_factory=Counter)
    ice_ids: Counter[str] = field(default_factory=Counter)
    duck_lineage_dups: int = 0
    ice_lineage_dups: int = 0
    hint_ok: bool = True
    rows: int = 0


def current_metadata(blobs: Blobs, location: str) -> tuple[int, str] | None:
    """``(N, url of vN.metadata.json)`` for the highest N present, by listing."""
    folder = f"{location}/metadata"
    versions = [int(m.group(1)) for n in blobs.list_names(folder) if (m := _VERSION.match(n))]
    if not versions:
        return None
    n = max(versions)
    return n, f"{folder}/v{n}.metadata.json"


class Readers:
    """One DuckDB connection (extensions from the pip packages) per harness worker."""

    def __init__(self, s3_endpoint: str | None = None) -> None:
        self.s3_endpoint = s3_endpoint
        self.blobs = Blobs(s3_endpoint)
        self.con = duckdb.connect(
            config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
        )
        for name in ("httpfs", "avro", "iceberg"):
            self.con.execute(f"LOAD '{extension_path(name)}'")
        self.props: dict[str, str] = {}
        if s3_endpoint:
            hostport = s3_endpoint.split("://", 1)[1]
            self.con.execute(
                "CREATE SECRET moto (TYPE S3, KEY_ID 'testing', SECRET 'testing', "
                f"REGION 'us-east-1', ENDPOINT '{hostport}', URL_STYLE 'path', USE_SSL false)"
            )
            self.props = {
                "s3.endpoint": s3_endpoint,
                "s3.region": "us-east-1",
                "s3.access-key-id": "testing",
                "s3.secret-access-key": "testing",
            }

    def close(self) -> None:
        self.con.close()

    def check_table(self, location: str) -> TableCheck:
        out = TableCheck(location)
        found = current_metadata(self.blobs, location)
        if found is None:
            return out
        out.version, meta = found
        hint = self.blobs.read(f"{location}/metadata/version-hint.text")
        out.hint_ok = hint is not None and hint.decode().strip().lstrip("v") == str(out.version)
        scan = f"iceberg_scan('{meta}')"
        for ident, n in self.con.execute(f"SELECT id, count(*) FROM {scan} GROUP BY id").fetchall():
            out.duck_ids[str(ident)] = int(n)
        row = self.con.execute(
            "SELECT coalesce(sum(c - 1), 0) FROM (SELECT count(*) c FROM "
            f"{scan} GROUP BY _source_key, _source_etag, _source_row HAVING count(*) > 1)"
        ).fetchone()
        out.duck_lineage_dups = int(row[0]) if row else 0
        table = StaticTable.from_metadata(meta, self.props)
        arrow = table.scan(selected_fields=("id", "_source_key", "_source_etag", "_source_row"))
        data = arrow.to_arrow()
        out.rows = data.num_rows
        out.ice_ids = Counter(str(x) for x in data.column("id").to_pylist())
        out.ice_lineage_dups = _lineage_dups(data)
        return out

    def scan(self, location: str, fields: tuple[str, ...] | None = None) -> pa.Table | None:
        """The current version of the table at ``location`` (pyiceberg ``StaticTable``): the
        ``fields`` given (all if None); None if the table does not exist."""
        found = current_metadata(self.blobs, location)
        if found is None:
            return None
        table = StaticTable.from_metadata(found[1], self.props)
        return table.scan(selected_fields=fields or ("*",)).to_arrow()

    def quarantined_ids(self, location: str) -> Counter[str] | None:
        """Ids found in the ``raw`` text of the quarantine table (pyiceberg), None if none."""
        found = current_metadata(self.blobs, location)
        if found is None:
            return None
        table = StaticTable.from_metadata(found[1], self.props)
        data = table.scan(selected_fields=("raw", "_source_key", "_source_row")).to_arrow()
        ids: Counter[str] = Counter()
        for raw in data.column("raw").to_pylist():
            ids.update(ID_RE.findall(raw or ""))
        return ids


def _lineage_dups(data: pa.Table) -> int:
    cols = [data.column(k).to_pylist() for k in ("_source_key", "_source_etag", "_source_row")]
    counts = Counter(zip(*cols, strict=True))
    return sum(c - 1 for c in counts.values() if c > 1)
