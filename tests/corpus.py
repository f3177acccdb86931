"""A corpus of bad input, each kind with the exact outcome Lockgate must produce.

A ``Case`` is one source (its own landing folder and table) with the objects to land, and
what must come out: every row (object, record index, data values, ``_rescued_data`` as parsed
JSON) and every quarantine entry (object, record index or None for the whole object, a
substring of the reason). Large inputs (a 20 MB line, bombs) are generated when landed, never
kept in the module.

Declared sources use ``DECLARED`` (``id: long, name: string, score: double``) unless a case
says otherwise.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

DAY = "2026-03-01"
DECLARED: dict[str, str] = {"id": "long", "name": "string", "score": "double"}
MiB = 1024 * 1024

Content = bytes | Callable[[], bytes]


@dataclass
class Case:
    """One kind of input and its exact outcome."""

    name: str
    objects: list[tuple[str, Content]]  # (object name under the day folder, content)
    rows: list[dict[str, Any]]  # {"_obj", "_row", <data columns>, "_rescued_data"}
    quarantine: list[tuple[str, int | None, str]] = field(default_factory=list)
    format: str = "jsonl"
    schema: dict[str, str] | None = field(default_factory=lambda: dict(DECLARED))
    extra: dict[str, Any] = field(default_factory=dict)  # more source config keys
    after_claim: str | None = None  # "delete" / "rewrite" the first object once claimed
    records: dict[str, int] | None = None  # records read per object (default: rows + quarantined)

    def key(self, obj: str) -> str:
        return f"{DAY}/{obj}"

    def source_spec(self, landing: str) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "landing": landing,
            "format": self.format,
            "table": f"corpus.{self.name}",
            "partition": {"pattern": r"(\d{4}-\d{2}-\d{2})", "start": "2026-01-01"},
            "min_age": 0,  # objects are written whole before they are listed
        }
        if self.schema is not None:
            spec["schema"] = dict(self.schema)
        spec.update(self.extra)
        return spec


def row(obj: str, i: int, rescued: dict[str, Any] | None = None, **values: Any) -> dict[str, Any]:
    return {"_obj": obj, "_row": i, **values, "_rescued_data": rescued}


def decl(obj: str, i: int, rescued: dict[str, Any] | None = None, **values: Any) -> dict[str, Any]:
    """A row of a ``DECLARED`` source: unspecified columns are null."""
    return row(obj, i, rescued, **{"id": None, "name": None, "score": None, **values})


def jl(*records: Any) -> bytes:
    return b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records
    )


def parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# -- generated large inputs --------------------------------------------------------------------


def long_line() -> bytes:
    """A 20 MB single JSON line between two good ones."""
    return (
        jl({"id": 1}) + b'{"id": 2, "name": "' + b"x" * (20 * 1000 * 1000) + b'"}\n' + jl({"id": 3})
    )


LONG_LINE_BYTES = len(b'{"id": 2, "name": "') + 20 * 1000 * 1000 + len(b'"}')


def ratio_bomb() -> bytes:
    """gzip: one good line, then a 60 MB line of one byte (about 60 KB compressed, ratio ~1000)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as f:
        f.write(jl({"id": 1}))
        f.write(b'{"id": 2, "name": "')
        block = b"a" * MiB
        for _ in range(60):
            f.write(block)
        f.write(b'"}\n')
    return out.getvalue()


SIZE_LIMIT = 64 * 1024
SIZE_BOMB_PLAIN = b"".join(
    json.dumps({"id": i, "name": f"n{i:05d}", "score": 0.5}).encode() + b"\n" for i in range(3000)
)


def size_bomb() -> bytes:
    return gzip.compress(SIZE_BOMB_PLAIN)


def ids_within(data: bytes, limit: int) -> list[int]:
    """Ids of the JSON lines that end within the first ``limit`` bytes."""
    return [json.loads(line)["id"] for line in data[:limit].split(b"\n")[:-1]]


TRUNC_PLAIN = jl(*({"id": i, "name": f"row-{i}-" + "q" * (i % 37)} for i in range(4000)))
TRUNC_BLOB = gzip.compress(TRUNC_PLAIN)[:6000]


def truncated_gzip_ids() -> list[int]:
    """Ids of the lines a decompressor recovers completely from ``TRUNC_BLOB``."""
    out = zlib.decompressobj(31).decompress(TRUNC_BLOB)
    return ids_within(out, len(out))


#: An object name of more than 1,000 characters (segments within file-system limits).
LONG_KEY = "/".join(["d" * 200] * 5) + "/" + "k" * 150 + ".jsonl"

TS_RECORDS = [
    {"id": 0, "ts": "2026-03-01T10:00:00Z"},
    {"id": 1, "ts": "2026-03-01T12:00:00+02:00"},
    {"id": 2, "ts": "2026-03-01T05:00:00-0500"},
    {"id": 3, "ts": "2026-03-01 10:00:00"},
    {"id": 4, "ts": "2026-03-01T10:00:00.250000Z"},
    {"id": 5, "ts": "2026-03-01T11:00:00+01"},
    {"id": 6, "ts": "01/03/2026 10:00"},
    {"id": 7, "ts": 1772359200},
]


def _cases() -> list[Case]:
    from datetime import UTC, date, datetime

    t10 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    ws = date(2026, 3, 1)
    cases = [
        Case(
            "good_jsonl",
            [("a.jsonl", jl({"id": 1, "name": "a", "score": 1.5}, {"id": 2}))],
            [decl("a.jsonl", 0, id=1, name="a", score=1.5), decl("a.jsonl", 1, id=2)],
        ),
        Case(
            "truncated_gzip",
            [("t.jsonl.gz", TRUNC_BLOB)],
            [
                row("t.jsonl.gz", i, id=i, name=f"row-{i}-" + "q" * (i % 37))
                for i in truncated_gzip_ids()
            ],
            [("t.jsonl.gz", None, "unreadable after record")],
            schema={"id": "long", "name": "string"},
        ),
        Case(
            "gzip_ratio_bomb",
            [("bomb.jsonl.gz", ratio_bomb)],
            [decl("bomb.jsonl.gz", 0, id=1)],
            [("bomb.jsonl.gz", None, "exceeds max_compression_ratio (200)")],
        ),
        Case(
            "gzip_size_bomb",
            [("big.jsonl.gz", size_bomb)],
            [
                decl("big.jsonl.gz", i, id=i, name=f"n{i:05d}", score=0.5)
                for i in ids_within(SIZE_BOMB_PLAIN, SIZE_LIMIT)
            ],
            [("big.jsonl.gz", None, f"exceeds max_decompressed_bytes ({SIZE_LIMIT})")],
            extra={"max_decompressed_bytes": SIZE_LIMIT},
        ),
        Case(
            "invalid_utf8",
            [("u.jsonl", b'{"id": 1, "name": "ok"}\n{"id": 2, "name": "\xff\xfe"}\n{"id": 3}\n')],
            [decl("u.jsonl", 0, id=1, name="ok"), decl("u.jsonl", 2, id=3)],
            [("u.jsonl", 1, "invalid UTF-8")],
        ),
        Case(
            "bom_jsonl",
            [("b.jsonl", b'\xef\xbb\xbf{"id": 1, "name": "bom"}\n{"id": 2}\n')],
            [decl("b.jsonl", 0, id=1, name="bom"), decl("b.jsonl", 1, id=2)],
        ),
        Case(
            "crlf_jsonl",
            [("c.jsonl", b'{"id": 1, "name": "a"}\r\n{"id": 2, "name": "b"}\r\n')],
            [decl("c.jsonl", 0, id=1, name="a"), decl("c.jsonl", 1, id=2, name="b")],
        ),
        Case(
            "crlf_bom_csv",
            [("c.csv", b"\xef\xbb\xbfid,name,score\r\n1,a,1.5\r\n2,b,\r\n")],
            [decl("c.csv", 0, id=1, name="a", score=1.5), decl("c.csv", 1, id=2, name="b")],
            format="csv",
        ),
        Case(
            "long_line_20mb",
            [("l.jsonl", long_line)],
            [decl("l.jsonl", 0, id=1), decl("l.jsonl", 2, id=3)],
            [("l.jsonl", 1, f"record of {LONG_LINE_BYTES} bytes exceeds max_record_bytes")],
        ),
        Case("empty_object", [("e.jsonl", b"")], [], records={"e.jsonl": 0}),
        Case(
            "empty_gzip_object", [("e.jsonl.gz", gzip.compress(b""))], [], records={"e.jsonl.gz": 0}
        ),
        Case(
            "blank_lines_only",
            [("w.jsonl", b"\n   \n\t\n\r\n")],
            [],
            records={"w.jsonl": 0},
        ),
        Case(
            "header_only_csv",
            [("h.csv", b"id,name,score\n")],
            [],
            format="csv",
            records={"h.csv": 0},
        ),
        Case(
            "ragged_csv",
            [("r.csv", b"id,name,score\n1,a,1\n2,b\n3,c,3,extra\n4,d,4\n")],
            [
                decl("r.csv", 0, id=1, name="a", score=1.0),
                decl("r.csv", 3, id=4, name="d", score=4.0),
            ],
            [("r.csv", 1, "expected 3 fields, got 2"), ("r.csv", 2, "expected 3 fields, got 4")],
            format="csv",
        ),
        Case(
            "quoted_tsv",
            [("q.tsv", b'id\tname\tscore\n1\t"tab\there"\t1\n2\t"multi\nline ""quoted"""\t2\n')],
            [
                decl("q.tsv", 0, id=1, name="tab\there", score=1.0),
                decl("q.tsv", 1, id=2, name='multi\nline "quoted"', score=2.0),
            ],
            format="csv",
            extra={"csv": {"delimiter": "\t"}},
        ),
        Case(
            "csv_no_header_no_quotes",
            [("n.csv", b'1;"x;2.5\n2;y;\n')],
            [decl("n.csv", 0, id=1, name='"x', score=2.5), decl("n.csv", 1, id=2, name="y")],
            format="csv",
            extra={"csv": {"delimiter": ";", "header": False, "quote_char": False}},
        ),
        Case(
            "wrong_types_jsonl",
            [
                (
                    "w.jsonl",
                    jl(
                        {"id": "two", "name": "a"},
                        {"id": 3, "score": "high"},
                        {"id": 4.5, "name": 7},
                        {"id": True, "score": 1},
                        {"id": 6, "name": "fine", "score": "2.5"},
                    ),
                )
            ],
            [
                decl("w.jsonl", 0, {"id": "two"}, name="a"),
                decl("w.jsonl", 1, {"score": "high"}, id=3),
                decl("w.jsonl", 2, {"id": 4.5, "name": 7}),
                decl("w.jsonl", 3, {"id": True}, score=1.0),
                decl("w.jsonl", 4, {"score": "2.5"}, id=6, name="fine"),
            ],
        ),
        Case(
            "wrong_types_csv",
            [("w.csv", b"id,name,score\nx,a,1\n2,b,high\n 3 ,c, 4.5 \n4, d ,\n")],
            [
                decl("w.csv", 0, {"id": "x"}, name="a", score=1.0),
                decl("w.csv", 1, {"score": "high"}, id=2, name="b"),
                decl("w.csv", 2, id=3, name="c", score=4.5),
                decl("w.csv", 3, id=4, name=" d "),
            ],
            format="csv",
        ),
        Case(
            "nested_where_flat",
            [
                (
                    "n.jsonl",
                    jl({"id": 1, "name": {"first": "a", "last": "b"}}, {"id": 2, "score": [1, 2]}),
                )
            ],
            [
                decl("n.jsonl", 0, {"name": {"first": "a", "last": "b"}}, id=1),
                decl("n.jsonl", 1, {"score": [1, 2]}, id=2),
            ],
        ),
        Case(
            "fields_not_declared",
            [
                (
                    "x.jsonl",
                    jl({"id": 1, "extra": "e", "deep": {"k": [1, 2]}}, {"id": 2, "extra": None}),
                )
            ],
            [
                decl("x.jsonl", 0, {"extra": "e", "deep": {"k": [1, 2]}}, id=1),
                decl("x.jsonl", 1, id=2),
            ],
        ),
        Case(
            "csv_columns_not_declared",
            [("x.csv", b"id,name,note,score\n1,a,hello,1\n2,b,,2\n")],
            [
                decl("x.csv", 0, {"note": "hello"}, id=1, name="a", score=1.0),
                decl("x.csv", 1, id=2, name="b", score=2.0),
            ],
            format="csv",
        ),
        Case(
            "duplicate_json_keys",
            [
                (
                    "d.jsonl",
                    b'{"id": 1, "id": 2, "name": "x"}\n'
                    b'{"id": 3, "name": "a", "name": "b", "name": "c"}\n',
                )
            ],
            [
                decl("d.jsonl", 0, {"id": 1}, id=2, name="x"),
                decl("d.jsonl", 1, {"name": "a", "name#2": "b"}, id=3, name="c"),
            ],
        ),
        Case(
            "nan_infinity",
            [
                (
                    "f.jsonl",
                    b'{"id": 1, "score": NaN}\n{"id": 2, "score": Infinity}\n'
                    b'{"id": 3, "score": -Infinity}\n{"id": NaN, "name": "n"}\n',
                )
            ],
            [
                decl("f.jsonl", 0, id=1, score=float("nan")),
                decl("f.jsonl", 1, id=2, score=float("inf")),
                decl("f.jsonl", 2, id=3, score=float("-inf")),
                decl("f.jsonl", 3, {"id": "NaN"}, name="n"),
            ],
        ),
        Case(
            "int_overflow",
            [("o.jsonl", b'{"id": 99999999999999999999}\n{"id": -9223372036854775808}\n')],
            [
                decl("o.jsonl", 0, {"id": 99999999999999999999}),
                decl("o.jsonl", 1, id=-9223372036854775808),
            ],
        ),
        Case(
            "timestamps_formats_zones",
            [("t.jsonl", jl(*TS_RECORDS))],
            [
                row("t.jsonl", 0, id=0, ts=t10),
                row("t.jsonl", 1, id=1, ts=t10),
                row("t.jsonl", 2, id=2, ts=t10),
                row("t.jsonl", 3, id=3, ts=t10),
                row("t.jsonl", 4, id=4, ts=t10.replace(microsecond=250000)),
                row("t.jsonl", 5, id=5, ts=t10),
                row("t.jsonl", 6, {"ts": "01/03/2026 10:00"}, id=6, ts=None),
                row("t.jsonl", 7, {"ts": 1772359200}, id=7, ts=None),
            ],
            schema={"id": "long", "ts": "timestamptz"},
        ),
        Case(
            "dates_and_decimals",
            [("d.csv", b"day,amount\n2026-03-01,1.50\n2026-02-30,1.234\n,\n")],
            [
                row("d.csv", 0, day=ws, amount=__import__("decimal").Decimal("1.50")),
                row("d.csv", 1, {"day": "2026-02-30", "amount": "1.234"}, day=None, amount=None),
                row("d.csv", 2, day=None, amount=None),
            ],
            format="csv",
            schema={"day": "date", "amount": "decimal(6,2)"},
        ),
        Case(
            "not_json",
            [("g.jsonl", b'garbage\n[1, 2]\n"text"\n{"id": \n{"id": 1} {"id": 2}\n{"id": 5}\n')],
            [decl("g.jsonl", 5, id=5)],
            [
                ("g.jsonl", 0, "malformed JSON"),
                ("g.jsonl", 1, "not a JSON object (got list)"),
                ("g.jsonl", 2, "not a JSON object (got str)"),
                ("g.jsonl", 3, "malformed JSON"),
                ("g.jsonl", 4, "malformed JSON: Extra data"),
            ],
        ),
        Case(
            "reserved_names_inferred",
            [
                (
                    "r.jsonl",
                    jl(
                        {
                            "id": 1,
                            "_source_row": 99,
                            "_day": "x",
                            "_rescued_data": "y",
                            "": 3,
                            "a.b": 4,
                        }
                    ),
                )
            ],
            [
                row(
                    "r.jsonl",
                    0,
                    {"_source_row": 99, "_day": "x", "_rescued_data": "y", "": 3, "a.b": 4},
                    id=1,
                )
            ],
            schema=None,
        ),
        Case(
            "object_deleted_mid_batch",
            [("gone.jsonl", jl({"id": 1})), ("stays.jsonl", jl({"id": 2}))],
            [decl("stays.jsonl", 0, id=2)],
            [],  # gone before read: no row, no quarantine entry, 0 records
            after_claim="delete",
        ),
        Case(
            "object_changed_mid_batch",
            [("changed.jsonl", jl({"id": 1})), ("stays.jsonl", jl({"id": 2}))],
            # changed before read: the claimed version counts for nothing; the new version
            # is claimed as a new object and ingested
            [
                decl("changed.jsonl", 0, id=999),
                decl("changed.jsonl", 1, id=1000),
                decl("stays.jsonl", 0, id=2),
            ],
            [],
            after_claim="rewrite",
        ),
        Case(
            "parquet_incompatible_schema",
            [
                (
                    "p.parquet",
                    parquet(
                        pa.table(
                            {
                                "id": pa.array(["1", "x", None]),
                                "name": pa.array([{"f": 1}, {"f": 2}, None]),
                                "score": pa.array([1, 2, 3], pa.int32()),
                                "other": pa.array([True, None, False]),
                            }
                        )
                    ),
                )
            ],
            [
                decl("p.parquet", 0, {"name": {"f": 1}, "other": True}, id=1, score=1.0),
                decl("p.parquet", 1, {"id": "x", "name": {"f": 2}}, score=2.0),
                decl("p.parquet", 2, {"other": False}, score=3.0),
            ],
            format="parquet",
        ),
        Case(
            "parquet_truncated",
            [("t.parquet", parquet(pa.table({"id": [1, 2, 3]}))[:-20])],
            [],
            [("t.parquet", None, "not a readable Parquet file")],
            format="parquet",
        ),
        Case(
            "csv_named_parquet",
            [("c.parquet", b"id,name\n1,a\n")],
            [],
            [("c.parquet", None, "not a Parquet file")],
            format="parquet",
        ),
        Case(
            "gzip_suffix_plain_content",
            [("p.jsonl.gz", jl({"id": 1}))],
            [],
            [("p.jsonl.gz", None, "suffix says gzip")],
        ),
        Case(
            "gzip_content_no_suffix",
            [("p.jsonl", gzip.compress(jl({"id": 1})))],
            [],
            [("p.jsonl", None, "no .gz suffix")],
        ),
        Case(
            "corrupt_zstd",
            [("z.jsonl.zst", b"\x28\xb5\x2f\xfd" + b"\x00garbage-not-a-frame" * 4)],
            [],
            [("z.jsonl.zst", None, "zstd error")],
        ),
        Case(
            "corrupt_bz2_and_good_bz2",
            [
                ("bad.jsonl.bz2", b"BZh91AY&SY" + b"\x00" * 40),
                ("ok.jsonl.bz2", bz2.compress(jl({"id": 7}))),
                ("ok.jsonl.zst", zstandard.ZstdCompressor().compress(jl({"id": 8}))),
            ],
            [decl("ok.jsonl.bz2", 0, id=7), decl("ok.jsonl.zst", 0, id=8)],
            [("bad.jsonl.bz2", None, "bz2 error")],
        ),
        Case(
            "control_chars_and_unicode",
            [
                (
                    "c.jsonl",
                    jl(
                        {"id": 1, "name": "nul\u0000tab\tbell\u0007"},
                        {"id": 2, "name": "日本語 🚀 \u202e"},
                    ),
                )
            ],
            [
                decl("c.jsonl", 0, id=1, name="nul\u0000tab\tbell\u0007"),
                decl("c.jsonl", 1, id=2, name="日本語 🚀 \u202e"),
            ],
        ),
        Case(
            "odd_key_names",
            [
                ("with space ünï 日本.jsonl", jl({"id": 1})),
                (LONG_KEY, jl({"id": 2})),
            ],
            [decl(LONG_KEY, 0, id=2), decl("with space ünï 日本.jsonl", 0, id=1)],
        ),
        Case(
            "code_is_never_evaluated",
            [
                (
                    "e.csv",
                    b"id,name,score\n1,=cmd|' /C calc'!A0,1\n2,__import__('os').system('x'),2\n"
                    b"3,${jndi:ldap://x},3\n",
                )
            ],
            [
                decl("e.csv", 0, id=1, name="=cmd|' /C calc'!A0", score=1.0),
                decl("e.csv", 1, id=2, name="__import__('os').system('x')", score=2.0),
                decl("e.csv", 2, id=3, name="${jndi:ldap://x}", score=3.0),
            ],
            format="csv",
        ),
        Case(
            "inferred_type_conflict_in_object",
            [("i.jsonl", jl({"a": 1, "b": "x"}, {"a": "one"}, {"a": 2.5}, {"a": 3}))],
            [
                row("i.jsonl", 0, a=1, b="x"),
                row("i.jsonl", 1, {"a": "one"}, a=None, b=None),
                row("i.jsonl", 2, {"a": 2.5}, a=None, b=None),
                row("i.jsonl", 3, a=3, b=None),
            ],
            schema=None,
        ),
        Case(
            "null_and_scalar_lines",
            [("n.jsonl", b'null\n{"id": 1}\nnull\ntrue\n12\n{"id": 2}\n')],
            [decl("n.jsonl", 1, id=1), decl("n.jsonl", 5, id=2)],
            [
                ("n.jsonl", 0, "not a JSON object (got NoneType)"),
                ("n.jsonl", 2, "not a JSON object (got NoneType)"),
                ("n.jsonl", 3, "not a JSON object (got bool)"),
                ("n.jsonl", 4, "not a JSON object (got int)"),
            ],
        ),
        Case(
            "deep_nesting",
            [
                (
                    "deep.jsonl",
                    jl({"id": 1})
                    + b'{"id": 2, "name": '
                    + b"[" * 5000
                    + b"]" * 5000
                    + b"}\n"
                    + b'{"id": 3, "name": '
                    + b"[" * 50
                    + b"]" * 50
                    + b"}\n",
                )
            ],
            [
                decl("deep.jsonl", 0, id=1),
                decl("deep.jsonl", 2, {"name": json.loads("[" * 50 + "]" * 50)}, id=3),
            ],
            [("deep.jsonl", 1, "nested too deeply")],
        ),
        Case(
            "csv_invalid_utf8",
            [("u.csv", b"id,name,score\n1,ok,1\n2,\xff\xfe,2\n3,c,3\n")],
            [
                decl("u.csv", 0, id=1, name="ok", score=1.0),
                decl("u.csv", 2, id=3, name="c", score=3.0),
            ],
            [("u.csv", 1, "invalid UTF-8")],
            format="csv",
        ),
        Case(
            "gzip_multi_member",
            [("m.jsonl.gz", gzip.compress(jl({"id": 1})) + gzip.compress(jl({"id": 2})))],
            [decl("m.jsonl.gz", 0, id=1), decl("m.jsonl.gz", 1, id=2)],
        ),
        Case(
            "gzip_trailing_garbage",
            [("g.jsonl.gz", gzip.compress(jl({"id": 1}, {"id": 2})) + b"trailing garbage")],
            [decl("g.jsonl.gz", 0, id=1), decl("g.jsonl.gz", 1, id=2)],
            [("g.jsonl.gz", None, "unreadable after record 1: gzip error: Not a gzipped file")],
        ),
        Case(
            "reserved_names_declared",
            [
                (
                    "r.jsonl",
                    jl({"id": 1, "_source_key": "evil", "_batch_id": 9, "_day": "2020-01-01"}),
                )
            ],
            [
                decl(
                    "r.jsonl",
                    0,
                    {"_source_key": "evil", "_batch_id": 9, "_day": "2020-01-01"},
                    id=1,
                )
            ],
        ),
        Case(
            "empty_parquet_object",
            [("e.parquet", b"")],
            [],
            format="parquet",
            records={"e.parquet": 0},
        ),
    ]
    return cases


CASES: list[Case] = _cases()
