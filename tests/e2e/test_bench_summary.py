"""The ingest summary of ``make bench`` (``bench.summary``) at toy size without Spark: its one
table has a row per goal with the expected columns, and writing BENCHMARKS.md replaces the
earlier sections of the same title (the summary stays last). Nothing here is timed against a
goal; the S3 and 10x checks have their own fast tests below (the counting server and the
hard-linked 10x D1 set)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from bench import common, generate, s3_small, scale, summary

TOY = 0.0005  # 500 rows per JSON data set, 10 objects in D3

EXPECTED_ROWS = [
    ("throughput vs raw pyarrow", "D1"),
    ("throughput vs raw pyarrow", "D2"),
    ("throughput vs raw pyarrow", "D4"),
    ("small objects vs raw pyarrow", "D3"),
    ("fixed cost of a process", "D0"),
    ("wall vs Spark (JVM start included)", "D1"),
    ("wall vs Spark (JVM start included)", "D2"),
    ("wall vs Spark (JVM start included)", "D3"),
    ("steady-state rows/s vs Spark warm", "D1"),
    ("steady-state rows/s vs Spark warm", "D2"),
    ("cost per byte: time", "10x D1"),
    ("cost per byte: peak RSS", "10x D1"),
    ("small objects on S3 (moto over HTTP): GETs in flight", "D3 on S3"),
]


def _table(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in ``text`` (header first, separator dropped)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]


def test_summary_toy_one_table_and_one_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "BENCHMARKS.md"
    monkeypatch.setattr(common, "BENCHMARKS", out_file)
    # An earlier run's sections, and another benchmark's written after them.
    common.append_section(common.SUMMARY_TITLE, "old", "OLD SUMMARY TABLE")
    common.append_section("Core ingest vs raw pyarrow (issue 8.1)", "old", "OLD RAW TABLE")
    common.append_section("Compaction: files per day", "python -m bench.compaction", "KEPT")

    rc = summary.main(
        [
            "--scale",
            str(TOY),
            "--rounds",
            "1",
            "--no-spark",
            "--skip",
            "scale",
            "s3",
            "--profile",
            "never",
        ]
    )

    table = _table(capsys.readouterr().out)
    assert table[0] == list(summary.HEADER)
    body = table[1:]
    assert [(r[0], r[1].split(" (")[0]) for r in body] == EXPECTED_ROWS
    assert all(len(r) == len(summary.HEADER) for r in body)
    results = {(r[0], r[1].split(" (")[0]): r[6] for r in body}
    assert results[("wall vs Spark (JVM start included)", "D1")].startswith(
        "skipped (Spark skipped"
    )
    assert results[("cost per byte: time", "10x D1")] == "skipped (--skip scale)"
    assert results[("fixed cost of a process", "D0")] == "context (no goal)"
    for check, data in EXPECTED_ROWS[:4]:  # measured: a verdict, never "skipped"
        assert results[(check, data)].replace("**", "").split(" ")[0] in ("ok", "MISSED")
    assert rc == (1 if any("MISSED" in v for v in results.values()) else 0)

    text = out_file.read_text()
    _, sections = common.split_sections(text)
    titles = [t for t, _ in sections]
    assert titles.count(common.SUMMARY_TITLE) == 1
    assert titles.count("Core ingest vs raw pyarrow (issue 8.1)") == 1
    assert titles[-1] == common.SUMMARY_TITLE
    assert "KEPT" in text and "OLD SUMMARY TABLE" not in text and "OLD RAW TABLE" not in text
    last = sections[-1][1]
    assert "Load average (1/5/15 min) before the run:" in last and "Code: " in last
    assert _table(last)[0] == list(summary.HEADER)

    # Writing the summary again (a second run) still leaves exactly one, last.
    common.append_section("Memory", "python -m bench.memory", "M")
    common.append_section(common.SUMMARY_TITLE, "again", "NEW SUMMARY TABLE")
    titles = [t for t, _ in common.split_sections(out_file.read_text())[1]]
    assert titles.count(common.SUMMARY_TITLE) == 1 and titles[-1] == common.SUMMARY_TITLE
    assert titles.index("Memory") < titles.index(common.SUMMARY_TITLE)


def test_replace_section_keeps_place_and_fences() -> None:
    text = common.PREAMBLE
    text = common.replace_section(text, "A (x)", "## A (x) (2026-01-01 00:00 UTC)\n\nold a\n")
    text = common.replace_section(
        text, "B", "## B (2026-01-01 00:00 UTC)\n\n```\n## not a heading\n```\n"
    )
    text = common.replace_section(text, "A (x)", "## A (x) (2026-01-02 00:00 UTC)\n\nnew a\n")
    preamble, sections = common.split_sections(text)
    assert preamble.startswith("# Benchmarks")
    assert [t for t, _ in sections] == ["A (x)", "B"]  # replaced in place; "(x)" is title
    assert "new a" in sections[0][1] and "old a" not in text
    assert "## not a heading" in sections[1][1]
    summary = f"## {common.SUMMARY_TITLE} (2026-01-02 00:00 UTC)\n\nS\n"
    newest_b = "\n## B (2026-01-03 00:00 UTC)\n\nnewest b\n"
    merged = text.replace("## B (", summary + "\n## B (") + newest_b  # as after a merge
    tidy = common.latest_only(merged)
    assert [t for t, _ in common.split_sections(tidy)[1]] == ["A (x)", "B", common.SUMMARY_TITLE]
    assert "newest b" in tidy and "## not a heading" not in tidy


def test_ten_x_d1_is_ten_links_of_d1() -> None:
    ds = generate.ensure(TOY, ("d1",))
    folder = scale.ensure_x10(ds)
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    assert len(files) == scale.COPIES
    d1 = ds.files("d1")[0].read_bytes()
    assert all(p.read_bytes() == d1 for p in files)
    assert len({p.name for p in files}) == scale.COPIES  # distinct keys, same day pattern
    assert all(p.name.startswith(f"events-{generate.DAY}-") for p in files)


def test_get_counter_counts_object_gets_in_flight() -> None:
    """The S3 bench's server-side counter: 20 concurrent slow object GETs -> 20 in flight;
    listings and PUTs are not counted."""
    gate = threading.Barrier(20, timeout=30)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] == "GET" and "list-type" not in environ["QUERY_STRING"]:
            gate.wait()  # every GET is inside the app at once
        start_response("200 OK", [])
        return [b"x"]

    counter = s3_small.GetCounter(app)

    def get(path: str, query: str = "", method: str = "GET") -> None:
        env = {"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": method}
        body = counter(env, lambda *a: None)
        assert b"".join(body) == b"x"
        getattr(body, "close", lambda: None)()

    threads = [threading.Thread(target=get, args=(f"/landing/d3/k{i}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    get("/landing", "list-type=2")
    get("/landing/d3/new", method="PUT")
    assert counter.gets == 20 and counter.max_in_flight == 20 and counter.in_flight == 0
