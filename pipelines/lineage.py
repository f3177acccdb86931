"""The lineage columns every row carries, and the quarantine table's schema.

Contract: ``(_source_key, _source_etag, _source_row)`` identifies a record of an object
version; ``_batch_id`` its batch; ``_day`` is the partition value. Names are stable: tables,
``verify`` and other engines read them.
"""

from __future__ import annotations

from datetime import date, datetime

import pyarrow as pa

from lockgate.pipelines.formats import QUARANTINE_SCHEMA
from lockgate.pipelines.rescue import RESCUED_FIELD
from lockgate.resources.ledger import Claim

SOURCE_ROW = "_source_row"
DAY = "_day"
LINEAGE_SCHEMA = pa.schema(
    [
        RESCUED_FIELD,
        pa.field("_source_key", pa.string()),
        pa.field("_source_etag", pa.string()),
        pa.field(SOURCE_ROW, pa.int64()),
        pa.field("_batch_id", pa.int64()),
        pa.field("_ingested_at", pa.timestamp("us", tz="UTC")),
        pa.field(DAY, pa.date32()),
    ]
)
QUARANTINE_TABLE_SCHEMA = pa.schema(
    [
        *QUARANTINE_SCHEMA,
        *(f for f in LINEAGE_SCHEMA if f.name in ("_batch_id", "_ingested_at", DAY)),
    ]
)


def lineage_arrays(
    claim: Claim, n: int, ingested_at: datetime, key: str | None, etag: str | None
) -> dict[str, pa.Array]:
    # pa.repeat builds each constant column in C: converting n-element Python lists cost
    # ~5 s per million rows (bench/ingest_vs_pyarrow.py profile), more than the JSON parse.
    arrays: dict[str, pa.Array] = {
        "_batch_id": pa.repeat(pa.scalar(claim.batch_id, pa.int64()), n),
        "_ingested_at": pa.repeat(pa.scalar(ingested_at, pa.timestamp("us", tz="UTC")), n),
        DAY: pa.repeat(pa.scalar(date.fromisoformat(claim.partition), pa.date32()), n),
    }
    if key is not None:
        arrays["_source_key"] = pa.repeat(pa.scalar(key, pa.string()), n)
        arrays["_source_etag"] = pa.repeat(pa.scalar(etag, pa.string()), n)
    return arrays
