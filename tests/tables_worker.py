"""A committing process for the multi-process table tests (run as ``python -m``).

``python -m tests.tables_worker <warehouse> <endpoint|-> <worker> <rows> <batch ids...>``
stages and commits each batch (lineage: ``_source_key = b<id>``, ``_source_row``) and prints
one JSON line per batch with the ``CommitResult``.
"""

from __future__ import annotations

import json
import sys
from datetime import date

import pyarrow as pa

from lockgate.resources.catalog import make_catalog
from lockgate.resources.store import S3Options
from lockgate.resources.tables import TableSettings, TableStore

SCHEMA = pa.schema(
    [
        ("_source_key", pa.string()),
        ("_source_row", pa.int64()),
        ("_batch_id", pa.int64()),
        ("writer", pa.int32()),
        ("_day", pa.date32()),
    ]
)
IDENT = "ns.mp"


def batch(batch_id: int, n: int, worker: int) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array([f"b{batch_id}"] * n),
            pa.array(range(n), pa.int64()),
            pa.array([batch_id] * n, pa.int64()),
            pa.array([worker] * n, pa.int32()),
            pa.array([date(2024, 1, 1 + batch_id % 3)] * n, pa.date32()),
        ],
        schema=SCHEMA,
    )


def main(argv: list[str]) -> int:
    warehouse, endpoint, worker, n = argv[0], argv[1], int(argv[2]), int(argv[3])
    ids = [int(a) for a in argv[4:]]
    opts = S3Options(endpoint_url=endpoint, region="us-east-1") if endpoint != "-" else None
    ts = TableStore(
        make_catalog(warehouse, opts),
        TableSettings(commit_attempts=500, retry_base_s=0.01, retry_max_s=0.5),
    )
    ts.ensure_table(IDENT, SCHEMA)
    for b in ids:
        r = ts.commit_batch(IDENT, "src", b, ts.stage(IDENT, [batch(b, n, worker)]))
        print(
            json.dumps(
                {"batch": b, "worker": worker, "duplicate": r.duplicate, "attempts": r.attempts}
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
