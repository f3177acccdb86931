"""Every kind of bad input in ``tests/corpus.py`` ingested end to end through the real batch
path (config in tmp, ``Runtime.from_config``, ``ingest_source``), then read back with
pyiceberg: the rows (values and ``_rescued_data``) and the quarantine entries are exactly the
expected ones, the accounting in the commit record holds, ``verify`` is ok, and a second
ingest commits nothing. One warehouse for the module; each case is its own source."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.exceptions import NoSuchTableError

from lockgate.pipelines.ingest import IngestReport, ingest_source
from lockgate.pipelines.verify import verify_source
from lockgate.resources.config import load_config
from lockgate.resources.runtime import Runtime, quarantine_table
from lockgate.resources.store import LocalStore
from lockgate.sensors.discovery import discover, rule_for_source
from tests.corpus import CASES, Case
from tests.platform_helpers import write_config


def _land(store: LocalStore, case: Case) -> None:
    for name, content in case.objects:
        data = content() if callable(content) else content
        store.put(case.key(name), data)


def _after_claim(rt: Runtime, case: Case) -> None:
    """Claim the case's objects, then delete / rewrite the first one before any read."""
    source = rt.source(case.name)
    ledger = rt.ledger(source)
    result = discover(rt.landing(source), ledger, rule_for_source(source))
    assert result.claims
    store = rt.landing(source)
    first = case.key(case.objects[0][0])
    if case.after_claim == "delete":
        store.delete(first)
    else:
        store.put(first, b'{"id": 999}\n{"id": 1000}\n')


class Corpus:
    def __init__(self, root: Path):
        self.root = root
        sources = {c.name: c.source_spec(str(root / "landing" / c.name)) for c in CASES}
        path = write_config(root / "lockgate.yaml", warehouse=str(root / "wh"), sources=sources)
        self.rt = Runtime.from_config(load_config(str(path)))
        self.first: dict[str, IngestReport] = {}
        self.second: dict[str, IngestReport] = {}

    def ingest(self, case: Case) -> None:
        _land(LocalStore(self.root / "landing" / case.name), case)
        if case.after_claim:
            _after_claim(self.rt, case)
        self.first[case.name] = ingest_source(self.rt, self.rt.source(case.name))
        self.second[case.name] = ingest_source(self.rt, self.rt.source(case.name))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    c = Corpus(tmp_path_factory.mktemp("corpus"))
    for case in CASES:
        c.ingest(case)
    yield c


def _norm(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _table_rows(rt: Runtime, case: Case) -> list[dict[str, Any]]:
    source = rt.source(case.name)
    try:
        table = rt.tables.load(source.table).scan().to_arrow()
    except NoSuchTableError:
        return []
    prefix = case.key("")
    rows = table.sort_by([("_source_key", "ascending"), ("_source_row", "ascending")]).to_pylist()
    out = []
    for r in rows:
        data = {k: _norm(v) for k, v in r.items() if not k.startswith("_")}
        rescued = r["_rescued_data"]
        out.append(
            {
                "_obj": r["_source_key"][len(prefix) :],
                "_row": r["_source_row"],
                **data,
                "_rescued_data": json.loads(rescued) if rescued is not None else None,
            }
        )
    return out


def _quarantine(rt: Runtime, case: Case) -> list[dict[str, Any]]:
    try:
        table = rt.tables.load(quarantine_table(rt.source(case.name))).scan().to_arrow()
    except NoSuchTableError:
        return []
    key = [("_source_key", "ascending"), ("_source_row", "ascending")]
    return table.sort_by(key).to_pylist()


def test_corpus_has_at_least_30_kinds() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_exact_outcome(corpus: Corpus, case: Case) -> None:
    rt = corpus.rt
    got_rows = _table_rows(rt, case)
    want_rows = [{k: _norm(v) for k, v in r.items()} for r in case.rows]
    want_rows.sort(key=lambda r: (case.key(r["_obj"]), r["_row"]))
    assert got_rows == want_rows

    got_q = _quarantine(rt, case)
    prefix = case.key("")
    assert [(q["_source_key"][len(prefix) :], q["_source_row"]) for q in got_q] == [
        (o, i) for o, i, _ in case.quarantine
    ]
    for q, (_, _, needle) in zip(got_q, case.quarantine, strict=True):
        assert needle in q["reason"], q["reason"]
        assert len(q["raw"]) <= 64 * 1024

    # accounting: records read = rows + quarantined, per object, in the commit record
    source = rt.source(case.name)
    ledger = rt.ledger(source)
    counts: dict[str, int] = {}
    for b in corpus.first[case.name].batches:
        rec = ledger.commit_record(b.batch_id)
        assert rec is not None and rec.record_counts is not None
        counts.update(rec.record_counts)
    expected = case.records or {}
    for o, _ in case.objects:
        n = sum(1 for r in case.rows if r["_obj"] == o) + sum(
            1 for q in case.quarantine if q[0] == o
        )
        expected.setdefault(o, n)
    assert counts == {case.key(o): n for o, n in expected.items()}
    report = verify_source(rt, source)
    assert report.ok, report.violations
    assert report.rows == len(case.rows) and report.quarantined == len(case.quarantine)
    assert report.rescued == sum(1 for r in case.rows if r["_rescued_data"] is not None)

    # a second ingest is a no-op
    second = corpus.second[case.name]
    assert all(b.already_committed for b in second.batches) and second.rows == 0


def test_no_landing_key_names_a_written_file(corpus: Corpus) -> None:
    """Everything Lockgate wrote lies under the warehouse, in metadata/ or data/ (uuid names),
    and no landing object name (spaces, unicode, 1,000 characters) appears in any path."""
    wh = corpus.root / "wh"
    uuid_name = re.compile(r"\d{5}-\d+-[0-9a-f-]{36}\.parquet")
    written = [p for p in wh.rglob("*") if p.is_file()]
    assert written
    for p in written:
        rel = p.relative_to(wh).as_posix()
        assert "/metadata/" in rel or "/data/" in rel or rel.startswith("_ledger/"), rel
        if "/data/" in rel:
            # <table>/data/_day=<day>/<uuid name>: nothing from the landing key
            assert rel.split("/data/", 1)[1].split("/")[0].startswith("_day="), rel
            assert uuid_name.fullmatch(p.name), rel
    outside = [p for p in corpus.root.rglob("*") if p.is_file()]
    assert all(
        p.is_relative_to(wh)
        or p.is_relative_to(corpus.root / "landing")
        or p.name == "lockgate.yaml"
        for p in outside
    )


@pytest.mark.parametrize(
    "key",
    [
        "2026-03-01/../escape.jsonl",
        "/2026-03-01/lead.jsonl",
        "2026-03-01/./dot.jsonl",
        "2026-03-01/back\\slash.jsonl",
    ],
)
def test_unsafe_s3_keys_are_quarantined_unread(s3_options: Any, bucket: str, key: str) -> None:
    """S3 allows keys the stores refuse (they could name a path outside a root): such an
    object is quarantined whole with its reason, never read, never written anywhere."""
    import boto3

    from lockgate.pipelines.formats import FormatOptions, read_object
    from lockgate.resources.stores import open_store

    client = boto3.client(
        "s3",
        endpoint_url=s3_options.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.put_object(Bucket=bucket, Key=f"landing/{key}", Body=b'{"id": 1}\n')
    store = open_store(f"s3://{bucket}/landing", s3_options)
    listed = [o for o in store.list() if o.key == key]
    assert len(listed) == 1  # the store lists it as is
    chunks = list(read_object(store, key, listed[0].etag, FormatOptions("jsonl"), None))
    assert len(chunks) == 1 and chunks[0].batch.num_rows == 0
    [q] = chunks[0].quarantined
    assert q.record_index is None and q.reason.startswith("unsafe object key")
    assert q.source_key == key


_values = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
)


@settings(max_examples=60, deadline=None)
@given(
    strings=st.lists(_values, min_size=1, max_size=6),
    data=st.data(),
)
def test_rescued_json_is_exact_for_any_values(strings: list[str | None], data: Any) -> None:
    """The column-wise JSON of rescued fields parses back to exactly the non-null values."""
    import pyarrow as pa

    from lockgate.pipelines.rescue import extras_json

    n = len(strings)
    ints = data.draw(
        st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=n, max_size=n)
    )
    floats = data.draw(
        st.lists(
            st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
            min_size=n,
            max_size=n,
        )
    )
    bools = data.draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n, max_size=n))
    table = pa.table(
        {
            's "q"': pa.array(strings, pa.string()),
            "i": pa.array(ints, pa.int64()),
            "f": pa.array(floats, pa.float64()),
            "b": pa.array(bools, pa.bool_()),
        }
    )
    got = extras_json(table, table.column_names).to_pylist()
    for r, text in enumerate(got):
        want = {k: v for k, v in table.slice(r, 1).to_pylist()[0].items() if v is not None}
        assert (json.loads(text) if text is not None else {}) == want
        assert (text is None) == (not want)


@settings(max_examples=60, deadline=None)
@given(
    tags=st.lists(st.one_of(st.none(), st.lists(st.one_of(st.none(), _values), max_size=4))),
    data=st.data(),
)
def test_rescued_json_of_nested_values_is_exact(
    tags: list[list[str | None] | None], data: Any
) -> None:
    """Lists and structs (nested in each other, with nulls at every level, sliced) are rendered
    column-wise into exactly the JSON of their Python values."""
    import pyarrow as pa

    from lockgate.pipelines.rescue import extras_json

    n = len(tags)
    devices = data.draw(
        st.lists(
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {
                        "os": st.one_of(st.none(), _values),
                        "n": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
                        "xs": st.one_of(st.none(), st.lists(st.one_of(st.none(), st.booleans()))),
                    }
                ),
            ),
            min_size=n,
            max_size=n,
        )
    )
    device_type = pa.struct([("os", pa.string()), ("n", pa.int64()), ("xs", pa.list_(pa.bool_()))])
    table = pa.table(
        {
            "tags": pa.array([None, *tags], pa.list_(pa.string())).slice(1),
            "d": pa.array([None, *devices], device_type).slice(1),
            "ds": pa.array([[d, None] if d else [] for d in devices], pa.list_(device_type)),
        }
    )
    got = extras_json(table, table.column_names).to_pylist()
    for r, text in enumerate(got):
        want = {k: v for k, v in table.slice(r, 1).to_pylist()[0].items() if v is not None}
        assert (json.loads(text) if text is not None else {}) == want
        assert (text is None) == (not want)


def test_s3_source_with_odd_keys_end_to_end(
    tmp_path: Path, moto_server: str, s3_options: Any, bucket: str
) -> None:
    """An S3 landing prefix holding a key with a leading ``/`` (after the prefix), spaces and
    unicode, and over 1,000 characters (1,015 with the prefix; S3's limit is 1,024 bytes):
    the odd-but-safe keys land, the unsafe one is quarantined whole unread, verify is ok, and
    nothing is written outside the warehouse and ledger."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    keys = {
        "landing//2026-03-01/lead.jsonl": b'{"id": 1}\n',
        "landing/2026-03-01/sp ace ünï 日本.jsonl": b'{"id": 2}\n',
        "landing/2026-03-01/" + "k" * 990 + ".jsonl": b'{"id": 3}\n',
    }
    for key, body in keys.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    spec = {
        "landing": f"s3://{bucket}/landing",
        "format": "jsonl",
        "table": "lake.odd",
        "partition": {"pattern": r"(\d{4}-\d{2}-\d{2})", "start": "2026-01-01"},
        "schema": {"id": "long"},
    }
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=f"s3://{bucket}/warehouse",
        ledger=f"s3://{bucket}/ledger",
        endpoint=moto_server,
        sources={"odd": spec},
    )
    rt = Runtime.from_config(load_config(str(path)))
    source = rt.source("odd")
    report = ingest_source(rt, source)
    assert report.rows == 2 and report.quarantined == 1
    table = rt.tables.load("lake.odd").scan().to_arrow()
    got = zip(table.column("id").to_pylist(), table.column("_source_key").to_pylist(), strict=True)
    assert sorted(got) == [
        (2, "2026-03-01/sp ace ünï 日本.jsonl"),
        (3, "2026-03-01/" + "k" * 990 + ".jsonl"),
    ]
    [q] = rt.tables.load(quarantine_table(source)).scan().to_arrow().to_pylist()
    assert q["_source_key"] == "/2026-03-01/lead.jsonl" and q["_source_row"] is None
    assert q["reason"].startswith("unsafe object key")
    assert verify_source(rt, source).ok
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert all(k.startswith(("landing/", "warehouse/", "ledger/")) for k in listed), listed
    assert set(k for k in listed if k.startswith("landing")) == set(keys)


def test_bomb_guard_config_keys(tmp_path: Path) -> None:
    """The guard's keys parse (sizes with units), default sanely and name themselves in errors."""
    from lockgate.pipelines.formats import FormatOptions
    from lockgate.resources.config import (
        DEFAULT_MAX_COMPRESSION_RATIO,
        DEFAULT_MAX_DECOMPRESSED_BYTES,
        ConfigError,
    )

    def spec(**extra: Any) -> dict[str, Any]:
        return {
            "landing": str(tmp_path / "l"),
            "format": "jsonl",
            "table": "a.b",
            "partition": {"start": "2026-01-01"},
            **extra,
        }

    path = write_config(tmp_path / "a.yaml", warehouse=str(tmp_path / "w"), sources={"s": spec()})
    src = load_config(str(path)).source("s")
    assert (src.max_decompressed_bytes, src.max_compression_ratio) == (
        DEFAULT_MAX_DECOMPRESSED_BYTES,
        DEFAULT_MAX_COMPRESSION_RATIO,
    )
    path = write_config(
        tmp_path / "b.yaml",
        warehouse=str(tmp_path / "w"),
        sources={"s": spec(max_decompressed_bytes="2GiB", max_compression_ratio=50)},
    )
    fmt = FormatOptions.from_source(load_config(str(path)).source("s"))
    assert (fmt.max_decompressed_bytes, fmt.max_compression_ratio) == (2 * 1024**3, 50)
    for key, value in (("max_compression_ratio", 0), ("max_decompressed_bytes", "lots")):
        path = write_config(
            tmp_path / "c.yaml", warehouse=str(tmp_path / "w"), sources={"s": spec(**{key: value})}
        )
        with pytest.raises(ConfigError, match=f"sources.s.{key}"):
            load_config(str(path))
    path = write_config(
        tmp_path / "d.yaml",
        warehouse=str(tmp_path / "w"),
        sources={"s": spec(schema={"id": "long", "_rescued_data": "string"})},
    )
    with pytest.raises(ConfigError, match="reserved"):
        load_config(str(path))
