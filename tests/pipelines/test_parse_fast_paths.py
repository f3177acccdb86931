"""The cheap checks in front of (and after) the JSON/CSV fast paths (issue 13) give the same
rows, ``_rescued_data``, quarantine entries and lineage as the per-record / per-value slow
paths, on hostile input too: nesting around ``max_nesting_depth`` (short lines, whose depth is
read from the parsed types, and long ones, screened by counting ``{``/``[``), brackets inside
strings, timestamps with and without zones and surrounding whitespace, nulls, empty text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lockgate.pipelines import formats
from lockgate.pipelines.formats import FormatOptions, QuarantineRecord, read_object
from lockgate.resources.store import LocalStore

DEPTH = 6  # a small max_nesting_depth keeps the inputs small
SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
LONG = formats._SHORT_LINE_BYTES + 10


def _nested(depth: int, shape: str) -> Any:
    """A JSON value nesting ``depth`` deep (0: a scalar)."""
    value: Any = 1
    for level in range(depth):
        if shape == "array" or (shape == "mixed" and level % 2):
            value = [value]
        elif shape == "empty":
            value = [] if level == 0 else [value]
        else:
            value = {"b": value}
    return value


def _record(i: int, depth: int, shape: str, brackets: int, long: bool) -> bytes:
    """A JSON object nesting ``depth`` deep (the object itself counts: ``depth`` >= 1), with
    ``brackets`` ``[``/``{`` inside a string (not nesting) and, if ``long``, padded past
    ``_SHORT_LINE_BYTES``."""
    rec: dict[str, Any] = {"id": i, "s": "[{" * brackets}
    if depth > 1:
        rec["nest"] = _nested(depth - 1, shape)
    if long:
        rec["pad"] = "x" * LONG
    return json.dumps(rec).encode()


def _read(
    store: LocalStore, fmt: FormatOptions, schema: pa.Schema | None
) -> tuple[list[dict[str, Any]], list[QuarantineRecord]]:
    info = store.head("p.jsonl")
    rows: list[dict[str, Any]] = []
    quarantined: list[QuarantineRecord] = []
    for chunk in read_object(store, "p.jsonl", info.etag, fmt, schema, info.size):
        rows += chunk.batch.to_pylist()
        quarantined += chunk.quarantined
    return rows, quarantined


def _fast_and_slow(
    store: LocalStore, fmt: FormatOptions, schema: pa.Schema | None, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any]:
    fast = _read(store, fmt, schema)
    with monkeypatch.context() as m:
        m.setattr(formats, "_parse_fast", lambda *_args: None)  # every block: per record
        slow = _read(store, fmt, schema)
    return fast, slow


RECORD = st.tuples(
    st.integers(1, DEPTH + 3),
    st.sampled_from(["object", "array", "mixed", "empty"]),
    st.sampled_from([0, 1, DEPTH, DEPTH + 2]),
    st.booleans(),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    records=st.lists(RECORD, min_size=1, max_size=30),
    block=st.sampled_from([512, 4096, 1 << 20]),
    declared=st.booleans(),
)
@example(records=[(DEPTH + 1, "array", 0, False)], block=1 << 20, declared=False)
@example(records=[(DEPTH + 1, "object", 0, True)], block=1 << 20, declared=True)
@example(records=[(DEPTH, "empty", DEPTH + 2, False)], block=1 << 20, declared=False)
def test_depth_checks_equal_per_record_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    records: list[tuple[int, str, int, bool]],
    block: int,
    declared: bool,
) -> None:
    """Short lines are parsed first and their depth read from the parsed types; long ones are
    screened by counting; either way the result is the per-record path's, and every record
    nested deeper than the limit is quarantined for it."""
    store = LocalStore(tmp_path / f"d{abs(hash((tuple(records), block, declared)))}")
    lines = [_record(i, *r) for i, r in enumerate(records)]
    store.put("p.jsonl", b"\n".join(lines) + b"\n")
    fmt = FormatOptions("jsonl", block_bytes=block, max_nesting_depth=DEPTH)
    fast, slow = _fast_and_slow(store, fmt, SCHEMA if declared else None, monkeypatch)
    assert fast == slow
    rows, quarantined = fast
    deep = [i for i, (depth, *_rest) in enumerate(records) if depth > DEPTH]
    assert [q.record_index for q in quarantined] == deep
    assert all("nested too deeply" in q.reason for q in quarantined)
    assert sorted(r["_source_row"] for r in rows) == [
        i for i in range(len(records)) if i not in deep
    ]


def test_fast_lines_tiers() -> None:
    """Short lines: parsed unscreened (the types are checked); long lines: screened by
    counting openers; a long line with too many openers, a blank or non-object line, or one
    over ``max_record_bytes``: not for the fast path."""
    short = b'{"a": [[1]]}\n{"b": {"c": 2}}'
    assert formats._fast_lines(short, 1000, 3) == (2, False)
    pad = b"x" * LONG
    long_ok = b'{"p": "' + pad + b'", "a": [[1]]}\n{"b": 1}'
    assert formats._fast_lines(long_ok, 1 << 20, 3) == (2, True)
    long_deep = b'{"p": "' + pad + b'", "a": [[[1]]]}\n{"b": 1}'
    assert formats._fast_lines(long_deep, 1 << 20, 3) is None
    # brackets in a long line's strings count (conservative: the per-record path decides)
    long_text = b'{"p": "' + pad + b'[[[["}'
    assert formats._fast_lines(long_text, 1 << 20, 3) is None
    assert formats._fast_lines(b'{"a": 1}\n\n{"b": 2}', 1000, 3) is None
    assert formats._fast_lines(b'{"a": 1}\nnull', 1000, 3) is None
    assert formats._fast_lines(b'{"a": 1}\n' + b'{"b": "' + pad + b'"}', LONG, 3) is None
    assert formats._fast_lines(b'{"a": 1}\n' + b'{"b": "' + pad + b'"}', LONG + 20, 3) == (
        2,
        True,
    )


def test_type_depth() -> None:
    assert formats._type_depth(pa.int64()) == 0
    assert formats._type_depth(pa.list_(pa.null())) == 1
    assert formats._type_depth(pa.struct([])) == 1
    nested = pa.struct([("a", pa.list_(pa.struct([("b", pa.string())]))), ("c", pa.int8())])
    assert formats._type_depth(nested) == 3
    assert formats._type_depth(pa.map_(pa.string(), pa.list_(pa.int64()))) == 2


def test_short_lines_nested_to_their_length_are_parsed_safely(tmp_path: Path) -> None:
    """The bound that lets short lines reach pyarrow unscreened: a whole block of lines of
    ``_SHORT_LINE_BYTES`` nested as deep as they can be (arrays, objects, unclosed) is parsed
    in this process without crashing it, and every line is quarantined as too deep."""
    half = formats._SHORT_LINE_BYTES // 2 - 8
    shapes = [
        b'{"a":' + b"[" * half + b"]" * half + b"}",
        b'{"a":' + b'{"b":' * (half // 3) + b"1" + b"}" * (half // 3) + b"}",
        b'{"a":' + b"[" * (formats._SHORT_LINE_BYTES - 8),
    ]
    assert all(len(s) <= formats._SHORT_LINE_BYTES for s in shapes)
    store = LocalStore(tmp_path / "s")
    lines = [shapes[i % 3] for i in range(300)]
    store.put("p.jsonl", b"\n".join(lines))
    rows, quarantined = _read(store, FormatOptions("jsonl"), None)
    assert rows == []
    assert [q.record_index for q in quarantined] == list(range(300))
    assert [q.reason.split(":")[0] for q in quarantined[:3]] == [
        "JSON nested too deeply",
        "JSON nested too deeply",
        "JSON nested too deeply",
    ]


def test_small_objects_with_deep_lines_equal_alone(tmp_path: Path) -> None:
    """Small objects parsed as one block (depth from the parsed types) against each object
    read on its own (the per-object path)."""
    store = LocalStore(tmp_path / "s")
    bodies = {
        "a.jsonl": _record(0, 1, "object", 0, False) + b"\n" + _record(1, 3, "array", 9, False),
        "b.jsonl": _record(0, DEPTH + 1, "mixed", 0, False),
        "c.jsonl": _record(0, DEPTH, "empty", 0, True) + b"\n",
        "d.jsonl": _record(0, DEPTH + 2, "array", 0, True),
    }
    for key, body in bodies.items():
        store.put(key, body)
    objects = [(k, store.head(k).etag, len(b)) for k, b in bodies.items()]
    fmt = FormatOptions("jsonl", max_nesting_depth=DEPTH)
    together = formats.read_small_objects(store, objects, fmt, SCHEMA)
    assert together.batch is not None
    grouped: dict[str, list[Any]] = {}
    offset = 0
    for (key, _, _), n, chunks in zip(objects, together.rows, together.chunks, strict=True):
        rows = together.batch.slice(offset, n).to_pylist()
        offset += n
        quarantined: list[Any] = []
        for chunk in chunks:
            rows += chunk.batch.to_pylist()
            quarantined += [(q.record_index, q.reason) for q in chunk.quarantined]
        grouped[key] = [rows, quarantined]
    for key, etag, size in objects:
        alone: list[Any] = [[], []]
        for chunk in read_object(store, key, etag, fmt, SCHEMA, size):
            alone[0] += chunk.batch.to_pylist()
            alone[1] += [(q.record_index, q.reason) for q in chunk.quarantined]
        assert grouped[key] == alone, key
    assert together.rows == [2, 0, 1, 0]
    assert [len(grouped[k][1]) for k in bodies] == [0, 1, 0, 1]


DATE = st.sampled_from(["2024-03-01", "2024-02-30", "1999-12-31", "20240301", "2024-3-1"])
TIME = st.sampled_from(["", "10", "10:00", "10:00:00", "23:59:60", "1:00", "10:00:00.", "10:0"])
FRACTION = st.sampled_from(["", ".5", ".123456", ".123456789", ".1234567"])
ZONE = st.sampled_from(["", "Z", "z", "+01:00", "+0100", "+01", "-05:30", " Z", "UTC", "Zz"])
SPACE = st.sampled_from(["", "", " ", "\t", "\u00a0", "\n"])
TIMESTAMP_TEXT = st.one_of(
    st.none(),
    st.just(""),
    st.builds(
        lambda a, d, sep, t, f, z, b: a + d + sep + t + f + z + b,
        SPACE,
        DATE,
        st.sampled_from(["T", " ", "t", ""]),
        TIME,
        FRACTION,
        ZONE,
        SPACE,
    ),
    st.text(max_size=12),
)
SCALAR_TEXT = st.one_of(
    st.none(),
    st.builds(
        lambda a, v, b: a + v + b,
        SPACE,
        st.sampled_from(
            [
                "1",
                "-0",
                "+5",
                "0x10",
                "1e3",
                "2.5",
                "NaN",
                "inf",
                "true",
                "True",
                "TRUE",
                "0",
                "yes",
                "",
                "12345678901234567890",
                "1_000",
                "2024-03-01",
                "3.14159",
            ]
        ),
        SPACE,
    ),
    st.text(max_size=6),
)
TARGETS = {
    "ts_us_utc": pa.timestamp("us", tz="UTC"),
    "ts_us": pa.timestamp("us"),
    "ts_ns": pa.timestamp("ns"),
    "ts_ms_utc": pa.timestamp("ms", tz="UTC"),
    "i64": pa.int64(),
    "i32": pa.int32(),
    "f64": pa.float64(),
    "flag": pa.bool_(),
    "day": pa.date32(),
    "dec": pa.decimal128(10, 2),
}


def _coerce_all(columns: dict[str, list[str | None]]) -> list[dict[str, Any]]:
    schema = pa.schema([(name, TARGETS[name]) for name in columns])
    table = pa.table({name: pa.array(v, pa.string()) for name, v in columns.items()})
    out: list[dict[str, Any]] = formats._Coercer(schema).coerce(table).to_pylist()
    return out


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.integers(1, 12).flatmap(
        lambda n: st.fixed_dictionaries(
            {
                name: st.lists(
                    TIMESTAMP_TEXT if name.startswith("ts") else SCALAR_TEXT, min_size=n, max_size=n
                )
                for name in TARGETS
            }
        )
    ),
    uniform=st.sampled_from(["", "2024-03-01T10:00:00.5Z", "2024-03-01 10:00", "2024-03-01T10Z"]),
)
@example(rows={n: ["2024-03-01T10Z"] if n.startswith("ts") else ["1"] for n in TARGETS}, uniform="")
@example(
    rows={n: ["2024-03-01T10:00+01"] if n.startswith("ts") else [" 1"] for n in TARGETS}, uniform=""
)
def test_one_step_casts_equal_trim_and_zone_split(
    monkeypatch: pytest.MonkeyPatch, rows: dict[str, list[str | None]], uniform: str
) -> None:
    """``_cast_text`` (one cast, no trim, no zone regex) gives what the trimming, zone-splitting
    path gives, values and ``_rescued_data`` alike; ``uniform`` makes most timestamp columns
    take the one-step path."""
    if uniform:
        rows = {
            n: [uniform if n.startswith("ts") and i else v for i, v in enumerate(vals)]
            for n, vals in rows.items()
        }
    fast = _coerce_all(rows)
    with monkeypatch.context() as m:
        m.setattr(formats, "_cast_text", lambda *_args: None)
        slow = _coerce_all(rows)
    assert repr(fast) == repr(slow)  # (repr: NaN equals NaN)


def test_one_step_cast_is_taken_for_clean_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zoned (``Z``) and naive timestamps and clean numbers take the one-step cast; text with
    whitespace, empty text or a mix of zones does not (and still converts the same)."""
    utc = pa.timestamp("us", tz="UTC")
    clean = pa.chunked_array([["2024-03-01T10:00:00.038683Z", None, "2024-03-01T10:00Z"]])
    naive = pa.chunked_array([["2024-03-01 10:00:00", "2024-03-01"]])
    assert formats._cast_text(clean, utc) is not None
    assert formats._cast_text(naive, pa.timestamp("us")) is not None
    assert formats._cast_text(pa.chunked_array([["12", "-3"]]), pa.int64()) is not None
    for text, target in [
        (["2024-03-01T10:00:00Z", "2024-03-01T10:00:00+01:00"], utc),
        ([" 2024-03-01T10:00:00Z"], utc),
        (["2024-03-01T10Z"], utc),
        (["12", ""], pa.int64()),
        ([" 12"], pa.int64()),
    ]:
        col = pa.chunked_array([text])
        assert formats._cast_text(col, target) is None
    mixed = pa.chunked_array([["2024-03-01T10:00:00Z", "2024-03-01T11:00:00+01:00", " "]])
    assert formats._from_text(mixed, utc).to_pylist() == [
        formats._from_text(pa.chunked_array([["2024-03-01T10:00:00Z"]]), utc)[0].as_py()
    ] * 2 + [None]


ELEMENT = st.one_of(
    st.sampled_from(["us", "", 'a "q"', "back\\slash", "tab\tnew\nline", "\x00\x1f", "é€𝄞"]),
    st.text(max_size=5),
)


@settings(max_examples=60, deadline=None)
@given(
    lists=st.lists(st.lists(ELEMENT, max_size=4), min_size=1, max_size=8),
    start=st.integers(0, 2),
    large=st.booleans(),
)
@example(lists=[[], ["a"], []], start=1, large=False)
@example(lists=[['"'], ["x"]], start=2, large=True)
def test_string_lists_render_as_the_generic_path(
    lists: list[list[str]], start: int, large: bool
) -> None:
    """Lists of strings without nulls (one join over the lists, quotes around the joined
    text) render the same text as the element-by-element path that lists with nulls take,
    sliced or not, escaped or not, empty lists included."""
    from lockgate.pipelines.rescue import extras_json

    list_type = pa.large_list(pa.large_string()) if large else pa.list_(pa.string())
    col = pa.array([["pad", '"']] * start + lists, list_type).slice(start)
    fast = extras_json(pa.table({"tags": col}), ["tags"]).to_pylist()
    with_null = pa.concat_arrays([col, pa.nulls(1, list_type)])
    generic = extras_json(pa.table({"tags": with_null}), ["tags"]).to_pylist()
    assert fast == generic[:-1]
    assert [json.loads(text) for text in fast] == [{"tags": v} for v in lists]
    nested = pa.StructArray.from_arrays([col], names=["tags"])  # a list inside a struct
    inner = extras_json(pa.table({"d": nested}), ["d"]).to_pylist()
    assert [json.loads(text) for text in inner] == [{"d": {"tags": v}} for v in lists]


@settings(max_examples=80, deadline=None)
@given(
    lines=st.lists(
        st.sampled_from(["a,b", "", "\r", "\rx,y", "c,d\r", "e,f", "x" * 40]), max_size=12
    ),
    tail=st.sampled_from(["", "g,h", "\r"]),
)
@example(lines=["a,b", ""], tail="")
@example(lines=["", "a,b"], tail="g,h")
def test_csv_whole_block_cut_refuses_blank_lines(lines: list[str], tail: str) -> None:
    """``cut_plain`` (one vectorised newline scan) takes a block whole only when every line
    is a record on its own -- none blank, none starting with ``\\r``, none too long -- and
    counts its records exactly; else it consumes nothing."""
    max_bytes = 30
    splitter = formats._Splitter(max_bytes, b'"', formats._csv_blank, formats._CSV_NONBLANK)
    splitter.first = False
    data = "".join(f"{line}\n" for line in lines) + tail
    got = splitter.cut_plain(data.encode())
    plain = bool(lines) and all(
        line and not line.startswith("\r") and len(line) <= max_bytes for line in lines
    )
    if not plain or len(tail) > max_bytes:
        assert got is None
        assert splitter.carry == b""
        return
    assert got == ("\n".join(lines).encode(), len(lines))
    assert splitter.carry == tail.encode()


CSV_SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string()), ("t", pa.timestamp("us", "UTC"))])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["1", " 2 ", "", "x", "9" * 25]),
            st.text(alphabet=st.sampled_from('ab ,"é\\'), max_size=6),
            st.sampled_from(["2024-03-01T00:00:00Z", "", "not a time", "2024-03-01"]),
            st.sampled_from(["", "extra", "ü"]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_csv_ascii_blocks_read_as_binary_equal_the_text_path(
    rows: list[tuple[str, str, str, str]],
) -> None:
    """An ASCII CSV block is read as binary and viewed as text (no second UTF-8 check); the
    table, rescued values included, is the one the text path gives. A block with non-ASCII
    bytes takes the text path."""
    names = ["id", "v", "t", "more"]
    block = "\n".join(
        ",".join([i, '"' + v.replace('"', '""') + '"', t, m]) for i, v, t, m in rows
    ).encode()
    fmt = FormatOptions("csv")

    def parse(ascii_path: bool) -> pa.Table | str:
        ctx = formats._Context("k", "e", CSV_SCHEMA)
        parser = formats._CsvParser(names, fmt, ctx)
        if not ascii_path:
            parser.convert_ascii = None
        try:
            return parser.attempt_block(block, len(rows))
        except formats._RecordError as e:
            return e.reason

    assert parse(True) == parse(False)
    parser = formats._CsvParser(names, fmt, formats._Context("k", "e", CSV_SCHEMA))
    assert parser.convert_ascii is not None
