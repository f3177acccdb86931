"""lockgate.yaml: discovery of the file, defaults, relative paths, schema types, and errors that
name both the key path and the file."""

from __future__ import annotations

import json
import os
import re
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa
import pytest
import yaml

from lockgate.resources.config import (
    CONFIG_ENV,
    DEFAULT_MAX_BYTES_PER_BATCH,
    ConfigError,
    CsvOptions,
    LockgateConfig,
    config_json_schema,
    load_config,
    parse_schema_type,
    parse_size,
)

REPO = Path(__file__).resolve().parents[2]

MINIMAL = {
    "warehouse": ".lockgate/warehouse",
    "sources": {
        "events": {
            "landing": "landing/events",
            "format": "jsonl",
            "table": "raw.events",
            "partition": {"pattern": r"dt=(\d{4}-\d{2}-\d{2})", "start": "2026-01-01"},
        }
    },
}


def write(tmp_path: Path, doc: Any, name: str = "lockgate.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


def with_source(**changes: Any) -> dict[str, Any]:
    doc = yaml.safe_load(yaml.safe_dump(MINIMAL))
    doc["sources"]["events"].update(changes)
    return doc


def test_full_contract_from_the_brief(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    path = write(
        tmp_path,
        textwrap.dedent(
            r"""
            warehouse: .lockgate/warehouse
            ledger: .lockgate/ledger
            s3:
              endpoint_url: http://127.0.0.1:9000
              region: us-east-1
            catalog: {}
            dagster:
              sensor_interval_seconds: 30
              max_runs_per_tick: 20
              max_runtime_seconds: 600
            sources:
              events:
                landing: s3://landing/events/
                format: jsonl
                table: raw.events
                partition:
                  pattern: 'dt=(\d{4}-\d{2}-\d{2})'
                  start: 2026-01-01
                schema:
                  id: long
                  ts: timestamp
                max_files_per_batch: 1000
                max_bytes_per_batch: 256MiB
                allow_overwrites: false
                clean_source: off
              orders:
                landing: landing/orders
                format: csv
                csv: {delimiter: ";", header: false, quote_char: "'"}
                table: raw.orders
                partition: {start: 2026-02-01}
            """
        ),
    )
    cfg = load_config(str(path))
    assert cfg.path == str(path)
    assert cfg.warehouse == str(tmp_path / ".lockgate/warehouse")
    assert cfg.ledger == str(tmp_path / ".lockgate/ledger")
    assert cfg.s3.endpoint_url == "http://127.0.0.1:9000" and cfg.s3.region == "us-east-1"
    assert dict(cfg.catalog) == {}
    assert (cfg.dagster.sensor_interval_seconds, cfg.dagster.max_runs_per_tick) == (30, 20)
    assert cfg.dagster.max_runtime_seconds == 600
    assert list(cfg.sources) == ["events", "orders"]
    ev = cfg.source("events")
    assert ev.landing == "s3://landing/events"
    assert (ev.format, ev.namespace, ev.table_name) == ("jsonl", "raw", "events")
    assert ev.table == "raw.events" and ev.table_identifier == ("raw", "events")
    assert ev.partition_pattern is not None and ev.partition_pattern.groups == 1
    assert ev.partition_start == date(2026, 1, 1)
    assert ev.schema == (("id", "long"), ("ts", "timestamp"))
    assert ev.arrow_schema() == pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us"))])
    assert (ev.max_files_per_batch, ev.max_bytes_per_batch) == (1000, 256 * 1024 * 1024)
    assert (ev.allow_overwrites, ev.clean_source) == (False, "off")
    assert ev.fingerprint() == {
        "landing": "s3://landing/events",
        "format": "jsonl",
        "table": "raw.events",
    }
    orders = cfg.source("orders")
    assert orders.landing == str(tmp_path / "landing/orders")
    assert orders.csv == CsvOptions(delimiter=";", header=False, quote_char="'")
    assert orders.arrow_schema() is None and orders.partition_pattern is None


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    cfg = load_config(str(write(tmp_path, MINIMAL)))
    src = cfg.source("events")
    assert cfg.ledger == os.path.join(cfg.warehouse, "_ledger")
    assert cfg.s3.endpoint_url is None
    assert (cfg.dagster.sensor_interval_seconds, cfg.dagster.max_runs_per_tick) == (30, 20)
    assert src.csv == CsvOptions(delimiter=",", header=True, quote_char='"')
    assert src.schema is None and src.arrow_schema() is None
    assert (src.max_files_per_batch, src.max_bytes_per_batch) == (1000, DEFAULT_MAX_BYTES_PER_BATCH)
    assert (src.allow_overwrites, src.clean_source) == (False, "off")


def test_s3_ledger_default_and_endpoint_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9999")
    doc = {**MINIMAL, "warehouse": "s3://whs/lake/"}
    cfg = load_config(str(write(tmp_path, doc)))
    assert cfg.warehouse == "s3://whs/lake" and cfg.ledger == "s3://whs/lake/_ledger"
    assert cfg.s3.endpoint_url == "http://127.0.0.1:9999"


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    path = write(sub, MINIMAL)
    monkeypatch.chdir(tmp_path)
    cfg = load_config("conf/lockgate.yaml")
    assert cfg.path == str(path)
    assert cfg.warehouse == str(sub / ".lockgate/warehouse")
    assert cfg.source("events").landing == str(sub / "landing/events")
    doc = with_source(landing="file://" + str(tmp_path / "abs"))
    doc["warehouse"] = "~/wh"
    cfg = load_config(str(write(sub, doc, "other.yaml")))
    assert cfg.source("events").landing == str(tmp_path / "abs")
    assert cfg.warehouse == os.path.expanduser("~/wh")


def test_config_is_found_by_env_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write(tmp_path, MINIMAL, "from-env.yaml")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    write(cwd, MINIMAL)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(CONFIG_ENV, str(env_file))
    assert load_config().path == str(env_file)
    monkeypatch.delenv(CONFIG_ENV)
    assert load_config().path == str(cwd / "lockgate.yaml")
    explicit = write(tmp_path, MINIMAL, "explicit.yaml")
    monkeypatch.setenv(CONFIG_ENV, str(env_file))
    assert load_config(str(explicit)).path == str(explicit)


def test_missing_config_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"config file not found.*--config.*LOCKGATE_CONFIG"):
        load_config()
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(str(tmp_path / "nope.yaml"))


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "sources: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(path) in str(err.value) and "not valid YAML" in str(err.value)


BAD_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown top key", {**MINIMAL, "wharehouse": "x"}, "wharehouse", "unknown key"),
    ("missing warehouse", {"sources": MINIMAL["sources"]}, "warehouse", "required"),
    ("missing sources", {"warehouse": "w"}, "sources", "required"),
    ("empty sources", {"warehouse": "w", "sources": {}}, "sources", "at least one source"),
    ("sources not a map", {"warehouse": "w", "sources": ["a"]}, "sources", "mapping"),
    ("warehouse not a string", {**MINIMAL, "warehouse": 5}, "warehouse", "non-empty string"),
    ("bad url scheme", {**MINIMAL, "warehouse": "gs://b/x"}, "warehouse", "s3://"),
    ("bad bucket", {**MINIMAL, "warehouse": "s3://B_/x"}, "warehouse", "bucket"),
    ("unknown s3 key", {**MINIMAL, "s3": {"secret_access_key": "x"}}, "s3.secret_access_key", ""),
    ("bad endpoint", {**MINIMAL, "s3": {"endpoint_url": "localhost:9000"}}, "s3.endpoint_url", ""),
    ("catalog nested", {**MINIMAL, "catalog": {"type": {"a": 1}}}, "catalog.type", "scalar"),
    (
        "dagster interval",
        {**MINIMAL, "dagster": {"sensor_interval_seconds": 0}},
        "dagster.sensor_interval_seconds",
        "positive integer",
    ),
    (
        "dagster unknown",
        {**MINIMAL, "dagster": {"max_runs": 3}},
        "dagster.max_runs",
        "unknown key",
    ),
    (
        "bad source name",
        {"warehouse": "w", "sources": {"Events-1": MINIMAL["sources"]["events"]}},
        "sources.Events-1",
        "[a-z][a-z0-9_]*",
    ),
    ("unknown source key", with_source(landin="x"), "sources.events.landin", "unknown key"),
    ("missing landing", with_source(landing=None), "sources.events.landing", "required"),
    ("bad format", with_source(format="xml"), "sources.events.format", "jsonl | csv | parquet"),
    ("csv on jsonl", with_source(csv={"delimiter": ";"}), "sources.events.csv", "format"),
    (
        "csv delimiter",
        with_source(format="csv", csv={"delimiter": ";;"}),
        "sources.events.csv.delimiter",
        "one character",
    ),
    (
        "csv header type",
        with_source(format="csv", csv={"header": "yes"}),
        "sources.events.csv.header",
        "true or false",
    ),
    (
        "csv quote equals delimiter",
        with_source(format="csv", csv={"quote_char": ","}),
        "sources.events.csv.quote_char",
        "differ",
    ),
    ("table without namespace", with_source(table="events"), "sources.events.table", "namespace"),
    ("table with dash", with_source(table="raw.ev-ents"), "sources.events.table", "namespace"),
    ("table three parts", with_source(table="a.b.c"), "sources.events.table", ""),
    (
        "bad regex",
        with_source(partition={"pattern": "dt=(\\d{4", "start": "2026-01-01"}),
        "sources.events.partition.pattern",
        "regular expression",
    ),
    (
        "regex without group",
        with_source(partition={"pattern": "dt=\\d+", "start": "2026-01-01"}),
        "sources.events.partition.pattern",
        "capturing group",
    ),
    (
        "missing start",
        with_source(partition={"pattern": "dt=(.*)"}),
        "sources.events.partition.start",
        "required",
    ),
    (
        "bad start",
        with_source(partition={"start": "2026-13-01"}),
        "sources.events.partition.start",
        "YYYY-MM-DD",
    ),
    (
        "partition unknown key",
        with_source(partition={"start": "2026-01-01", "tz": "UTC"}),
        "sources.events.partition.tz",
        "unknown key",
    ),
    ("bad size unit", with_source(max_bytes_per_batch="10 parsecs"), "max_bytes_per_batch", ""),
    ("zero size", with_source(max_bytes_per_batch=0), "sources.events.max_bytes_per_batch", ""),
    ("negative files", with_source(max_files_per_batch=-1), "max_files_per_batch", "positive"),
    ("bool files", with_source(max_files_per_batch=True), "max_files_per_batch", "positive"),
    ("string files", with_source(max_files_per_batch="10"), "max_files_per_batch", "positive"),
    ("overwrites", with_source(allow_overwrites="no"), "allow_overwrites", "true or false"),
    ("clean mode", with_source(clean_source="purge"), "clean_source", "off | archive | delete"),
    ("clean true", with_source(clean_source=True), "sources.events.clean_source", ""),
    ("schema type", with_source(schema={"id": "bigint"}), "sources.events.schema.id", "unknown"),
    ("schema list", with_source(schema=["id"]), "sources.events.schema", "mapping"),
    ("schema empty", with_source(schema={}), "sources.events.schema", "at least one field"),
    (
        "schema decimal",
        with_source(schema={"amount": "decimal(40,2)"}),
        "sources.events.schema.amount",
        "precision",
    ),
    (
        "schema reserved",
        with_source(schema={"_source_row": "long"}),
        "sources.events.schema._source_row",
        "reserved",
    ),
    (
        "warehouse inside landing",
        {**with_source(landing="."), "warehouse": "wh"},
        "sources.events.landing",
        "warehouse",
    ),
]


@pytest.mark.parametrize(
    ("doc", "key_path", "needle"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_errors_name_key_path_and_file(
    tmp_path: Path, doc: dict[str, Any], key_path: str, needle: str
) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    message = str(err.value)
    assert str(path) in message, message
    assert key_path in message, message
    assert needle in message, message
    assert err.value.file == str(path)
    assert err.value.key_path is not None and key_path.endswith(err.value.key_path.split(".")[-1])


def test_duplicate_landing_and_table_is_refused(tmp_path: Path) -> None:
    doc = yaml.safe_load(yaml.safe_dump(MINIMAL))
    doc["sources"]["again"] = dict(doc["sources"]["events"])
    with pytest.raises(ConfigError, match=r"sources\.\w+\.landing.*already ingests"):
        load_config(str(write(tmp_path, doc)))


def test_off_parses_as_false_and_modes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        yaml.safe_dump(with_source(clean_source="archive")).replace(
            "clean_source: archive", "clean_source: off"
        ),
    )
    assert "clean_source: off" in path.read_text()
    assert load_config(str(path)).source("events").clean_source == "off"
    cfg = load_config(str(write(tmp_path, with_source(clean_source="delete"))))
    assert (cfg.source("events").clean_source, cfg.source("events").clean_archive_to) == (
        "delete",
        None,
    )
    archive = {"mode": "archive", "archive_to": "archive/"}
    src = load_config(str(write(tmp_path, with_source(clean_source=archive)))).source("events")
    assert (src.clean_source, src.clean_archive_to) == ("archive", str(tmp_path / "archive"))


@pytest.mark.parametrize(
    ("clean", "key_path", "reason"),
    [
        ("archive", "sources.events.clean_source", "{mode: archive, archive_to:"),
        ({"mode": "archive"}, "sources.events.clean_source", "needs archive_to"),
        ({"mode": "delete", "archive_to": "a"}, "sources.events.clean_source", "only used by"),
        ({"mode": "archive", "archive_to": "landing/old"}, "archive_to", "overlaps the landing"),
        ({"mode": "archive", "archive_to": "."}, "archive_to", "overlaps the landing"),
        ({"mode": "archive", "archive_to": "warehouse/a"}, "archive_to", "overlaps the warehouse"),
        ({"mode": "archive", "archive_to": "s3://bkt/a"}, "archive_to", "same kind of store"),
        ({"mode": "purge"}, "sources.events.clean_source.mode", "off | archive | delete"),
    ],
)
def test_clean_source_refusals(tmp_path: Path, clean: Any, key_path: str, reason: str) -> None:
    doc = with_source(clean_source=clean)
    doc["sources"]["events"]["landing"] = "landing"
    doc["warehouse"] = "warehouse"
    err = refusal(tmp_path, doc)
    assert err.key_path is not None and err.key_path.endswith(key_path), err
    assert reason in str(err), err


def test_an_archive_inside_another_sources_landing_is_refused(tmp_path: Path) -> None:
    doc = with_source(landing="in/a", clean_source={"mode": "archive", "archive_to": "in/b/x"})
    other = dict(doc["sources"]["events"], landing="in/b", table="lake.other")
    other.pop("clean_source")
    doc["sources"]["other"] = other
    err = refusal(tmp_path, doc)
    assert "overlaps the landing prefix of source 'other'" in str(err), err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1000, 1000),
        ("1000", 1000),
        ("256MiB", 256 * 1024**2),
        ("256 MiB", 256 * 1024**2),
        ("1GB", 1000**3),
        ("64kib", 64 * 1024),
        ("2M", 2 * 1024**2),
        ("10B", 10),
    ],
)
def test_parse_size(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "1.5GB", "-1", 0, "1 furlong", True, None, 2.5])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("spec", "arrow"),
    [
        ("string", pa.string()),
        ("long", pa.int64()),
        ("int", pa.int32()),
        ("double", pa.float64()),
        ("float", pa.float32()),
        ("boolean", pa.bool_()),
        ("date", pa.date32()),
        ("timestamp", pa.timestamp("us")),
        ("timestamptz", pa.timestamp("us", tz="UTC")),
        ("binary", pa.binary()),
        ("decimal(10,2)", pa.decimal128(10, 2)),
        ("decimal( 38 , 0 )", pa.decimal128(38, 0)),
    ],
)
def test_schema_type_mapping(spec: str, arrow: pa.DataType) -> None:
    assert parse_schema_type(spec) == arrow


@pytest.mark.parametrize("spec", ["str", "decimal(0,0)", "decimal(5,6)", "decimal(10)", "Long", 5])
def test_schema_type_rejects(spec: Any) -> None:
    with pytest.raises(ValueError):
        parse_schema_type(spec)


def test_partition_day(tmp_path: Path) -> None:
    doc = with_source(partition={"pattern": r"dt=(\d{4}-?\d{2}-?\d{2})", "start": date(2026, 1, 1)})
    src = load_config(str(write(tmp_path, doc))).source("events")
    lm = datetime(2026, 3, 4, 23, 30, tzinfo=UTC)
    assert src.partition_day("a/dt=2026-01-05/x.json", lm) == date(2026, 1, 5)
    assert src.partition_day("a/dt=20260106/x.json", lm) == date(2026, 1, 6)
    assert src.partition_day("a/no-day/x.json", lm) == date(2026, 3, 4)
    with pytest.raises(ValueError, match="not a valid date"):  # never filed under another day
        src.partition_day("a/dt=2026-02-30/x.json", lm)
    named = with_source(
        partition={
            "pattern": r"year=(?P<year>\d{4})/month=(?P<month>\d{2})/day=(?P<day>\d{2})",
            "start": "2026-01-01",
        }
    )
    src = load_config(str(write(tmp_path, named))).source("events")
    assert src.partition_day("year=2026/month=02/day=03/f", lm) == date(2026, 2, 3)


def test_secrets_stay_out_of_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key")
    doc = {**MINIMAL, "catalog": {"type": "rest", "credential": "client:very-secret-token"}}
    cfg = load_config(str(write(tmp_path, doc)))
    assert cfg.catalog["credential"] == "client:very-secret-token"
    text = repr(cfg)
    assert "very-secret" not in text
    assert isinstance(cfg, LockgateConfig)


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(str(write(tmp_path, MINIMAL)))
    with pytest.raises(AttributeError):
        cfg.warehouse = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.sources["x"] = cfg.source("events")  # type: ignore[index]
    with pytest.raises(ConfigError, match="unknown source 'nope' \\(known: events\\)"):
        cfg.source("nope")


def test_repo_demo_config_loads() -> None:
    cfg = load_config(str(REPO / "lockgate.yaml"))
    assert set(cfg.sources) == {"events", "orders"}
    assert cfg.source("events").arrow_schema() is not None
    assert cfg.source("orders").arrow_schema() is None
    assert cfg.dagster.sensor_interval_seconds == 15
    assert re.search(r"\.lockgate", cfg.warehouse)


def two_sources(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """MINIMAL with sources ``events`` and ``other``, each ``events``' spec updated."""
    doc = yaml.safe_load(yaml.safe_dump(MINIMAL))
    base = doc["sources"]["events"]
    doc["sources"] = {"events": {**base, **first}, "other": {**base, **second}}
    return doc


def refusal(tmp_path: Path, doc: dict[str, Any]) -> ConfigError:
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(path) in str(err.value)
    return err.value


def test_two_sources_one_table_refused(tmp_path: Path) -> None:
    """Issue 12 item 2: a rebuild of one source overwrites whole days of its table, so two
    sources on one table lose rows; the config refuses it, naming both sources."""
    for other_table in ("raw.events", "RAW.Events"):
        err = refusal(
            tmp_path,
            two_sources({"landing": "landing/a"}, {"landing": "landing/b", "table": other_table}),
        )
        assert err.key_path == "sources.other.table"
        assert "'events'" in err.reason and "'other'" in err.reason
        assert "raw.events" in err.reason
    ok = two_sources({"landing": "landing/a"}, {"landing": "landing/b", "table": "raw.other"})
    cfg = load_config(str(write(tmp_path, ok)))
    assert [s.table for s in cfg.sources.values()] == ["raw.events", "raw.other"]


@pytest.mark.parametrize(
    ("first", "second", "how"),
    [
        ("landing/events", "landing/events/late", "lies inside"),
        ("landing/events/late", "landing/events", "contains"),
        ("s3://bkt/landing", "s3://bkt/landing/x/y", "lies inside"),
        ("s3://bkt", "s3://bkt/landing", "lies inside"),
    ],
)
def test_nested_landing_prefixes_refused(tmp_path: Path, first: str, second: str, how: str) -> None:
    """Issue 12 item 2: two sources whose landing prefixes nest both read the inner objects
    (doubling their rows when the tables are one); refused whatever the tables."""
    doc = two_sources({"landing": first}, {"landing": second, "table": "raw.other"})
    err = refusal(tmp_path, doc)
    assert err.key_path == "sources.other.landing"
    assert how in err.reason and "'events'" in err.reason and "'other'" in err.reason


def test_sibling_landing_prefixes_load(tmp_path: Path) -> None:
    """Prefixes that share a leading string but do not nest, or are in different stores, are
    separate landings."""
    for first, second in (
        ("landing/events", "landing/events2"),
        ("s3://bkt/landing", "s3://bkt/landing-late"),
        ("s3://bkt/landing", "s3://bkt2/landing"),
        ("landing", "s3://landing/landing"),
    ):
        doc = two_sources({"landing": first}, {"landing": second, "table": "raw.other"})
        cfg = load_config(str(write(tmp_path, doc)))
        assert len(cfg.sources) == 2


@pytest.mark.parametrize("quarantined_first", [True, False])
def test_table_that_is_a_quarantine_table_refused(tmp_path: Path, quarantined_first: bool) -> None:
    """Issue 12 item 2: ``raw.events__quarantine`` holds source events' quarantine; a source
    writing it would mix its rows with quarantine entries. Refused in either order."""
    events = {"landing": "landing/a", "table": "raw.events"}
    thief = {"landing": "landing/b", "table": "raw.events__quarantine"}
    first, second = (events, thief) if quarantined_first else (thief, events)
    err = refusal(tmp_path, two_sources(first, second))
    assert err.key_path == "sources.other.table"
    assert "quarantine" in err.reason and "'events'" in err.reason and "'other'" in err.reason


def test_all_problems_are_reported(tmp_path: Path) -> None:
    """The first problem is the error's key path; the others follow in the message."""
    err = refusal(tmp_path, with_source(format="xml", max_files_per_batch=0, landin="x"))
    assert err.key_path == "sources.events.format"
    for needle in ("sources.events.landin: unknown key", "sources.events.max_files_per_batch"):
        assert needle in str(err)


def test_null_means_not_given(tmp_path: Path) -> None:
    """``null`` is the default for sections and optional keys, "missing" for required keys and
    an error for keys with a scalar default."""
    doc = {**with_source(csv=None, schema=None), "ledger": None, "s3": None, "dagster": None}
    cfg = load_config(str(write(tmp_path, doc)))
    assert cfg.ledger == os.path.join(cfg.warehouse, "_ledger")
    assert cfg.dagster.max_runs_per_tick == 20 and cfg.source("events").schema is None
    err = refusal(tmp_path, with_source(max_bytes_per_batch=None))
    assert err.key_path == "sources.events.max_bytes_per_batch"
    err = refusal(tmp_path, with_source(table=None))
    assert err.key_path == "sources.events.table" and "required" in err.reason


def test_non_string_keys_are_named(tmp_path: Path) -> None:
    err = refusal(tmp_path, with_source(schema={1: "long"}))
    assert err.key_path == "sources.events.schema.1" and "keys must be strings" in err.reason


def test_fingerprints_of_existing_configs_are_unchanged(tmp_path: Path) -> None:
    """A changed fingerprint makes existing ledgers refuse to run: the typed model must give
    exactly what the hand-written parser gave."""
    doc = with_source(landing="s3a://bkt/landing/events/", format="JSONL", table=" raw.events ")
    assert load_config(str(write(tmp_path, doc))).source("events").fingerprint() == {
        "landing": "s3://bkt/landing/events",
        "format": "jsonl",
        "table": "raw.events",
    }
    demo = load_config(str(REPO / "lockgate.yaml"))
    assert demo.source("orders").fingerprint() == {
        "landing": str(Path(demo.path).parent / ".lockgate/landing/orders"),
        "format": "csv",
        "table": "raw.orders",
    }


def test_seconds_keys_take_durations(tmp_path: Path) -> None:
    """``dagster.*_seconds`` take whole seconds or a duration (``90s``, ``15m``, ``1h``)."""
    doc = {**MINIMAL, "dagster": {"sensor_interval_seconds": "90s", "max_runtime_seconds": "1h"}}
    cfg = load_config(str(write(tmp_path, doc)))
    assert (cfg.dagster.sensor_interval_seconds, cfg.dagster.max_runtime_seconds) == (90, 3600)
    for bad in ("0.5s", "10", "1 fortnight", "0m"):
        err = refusal(tmp_path, {**MINIMAL, "dagster": {"max_runtime_seconds": bad}})
        assert err.key_path == "dagster.max_runtime_seconds" and "duration" in err.reason
    err = refusal(tmp_path, {**MINIMAL, "dagster": {"max_runs_per_tick": "5m"}})
    assert err.key_path == "dagster.max_runs_per_tick"


def _as_editor_sees(doc: Any) -> Any:
    """A YAML document as JSON (dates as ISO strings, as a YAML 1.2 editor reads them)."""
    return json.loads(json.dumps(doc, default=str))


def test_json_schema_validates_the_demo_config() -> None:
    """``lockgate schema``'s JSON Schema accepts the demo lockgate.yaml and rejects what the
    loader rejects for the same reason (unknown keys, bad sizes, unknown types)."""
    schema = config_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    demo = _as_editor_sees(yaml.safe_load((REPO / "lockgate.yaml").read_text()))
    assert list(validator.iter_errors(demo)) == []
    assert set(schema["properties"]) == {
        "warehouse",
        "ledger",
        "s3",
        "catalog",
        "dagster",
        "sources",
    }
    assert schema["required"] == ["warehouse", "sources"]
    full = _as_editor_sees(yaml.safe_load(write_full_example()))
    assert list(validator.iter_errors(full)) == []
    for bad in (
        {**MINIMAL, "wharehouse": "x"},
        with_source(max_bytes_per_batch="10 parsecs"),
        with_source(schema={"id": "bigint"}),
        with_source(schema={"_source_row": "long"}),
        with_source(clean_source="purge"),
        {**MINIMAL, "dagster": {"max_runtime_seconds": "1 fortnight"}},
        {"warehouse": "w", "sources": {"Events-1": MINIMAL["sources"]["events"]}},
        {"warehouse": "w", "sources": {}},
    ):
        assert list(validator.iter_errors(_as_editor_sees(bad))), bad


def write_full_example() -> str:
    """Every key of lockgate.yaml once."""
    return textwrap.dedent(
        r"""
        warehouse: s3://whs/lake
        ledger: s3://whs/ledger
        s3: {endpoint_url: "http://127.0.0.1:9000", region: us-east-1}
        catalog: {type: sql, uri: "sqlite:///x.db", "py-io-impl": x, retries: 3, strict: true}
        dagster: {sensor_interval_seconds: 5, max_runs_per_tick: 2, max_runtime_seconds: 15m}
        sources:
          orders_2:
            landing: s3://landing/orders
            format: csv
            csv: {delimiter: "\t", header: false, quote_char: false}
            table: raw.orders
            partition: {pattern: 'dt=(\d{8})', start: 2026-01-01}
            schema: {id: long, amount: "decimal(10, 2)", at: timestamptz, ok: boolean}
            max_files_per_batch: 10
            max_bytes_per_batch: 1GB
            max_record_bytes: 1048576
            max_decompressed_bytes: 2 GiB
            max_compression_ratio: 100
            allow_overwrites: true
            clean_source: {mode: archive, archive_to: s3://archive/orders/}
        """
    )


def test_secrets_stay_out_of_errors(tmp_path: Path) -> None:
    """A secret in a misplaced or malformed key is named by its key path, never shown."""
    for doc in (
        {**MINIMAL, "s3": {"secret_access_key": "very-secret-key"}},
        {**MINIMAL, "catalog": {"credential": {"token": "very-secret-token"}}},
        {**MINIMAL, "catalog": ["very-secret-token"], "dagster": {"max_runs_per_tick": 0}},
    ):
        err = refusal(tmp_path, doc)
        assert err.key_path in ("s3.secret_access_key", "catalog.credential", "catalog")
        assert "very-secret" not in str(err), str(err)


def test_catalog_environment_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``{env: NAME}`` and ``"${NAME}"`` keep the variable's name only; the value is read when
    the catalog properties are used, and a missing variable is named, never a value."""
    doc = {
        **MINIMAL,
        "catalog": {
            "type": "rest",
            "uri": "https://catalog.example",
            "token": {"env": "LG_TEST_TOKEN"},
            "credential": "${LG_TEST_CREDENTIAL}",
        },
    }
    monkeypatch.delenv("LG_TEST_TOKEN", raising=False)
    monkeypatch.setenv("LG_TEST_CREDENTIAL", "very-secret-credential")
    cfg = load_config(str(write(tmp_path, doc)))
    assert dict(cfg.catalog) == {"type": "rest", "uri": "https://catalog.example"}
    assert dict(cfg.catalog_env) == {"token": "LG_TEST_TOKEN", "credential": "LG_TEST_CREDENTIAL"}
    with pytest.raises(ConfigError) as err:
        cfg.catalog_properties()
    assert err.value.key_path == "catalog.token" and "LG_TEST_TOKEN is not set" in str(err.value)
    monkeypatch.setenv("LG_TEST_TOKEN", "very-secret-token")
    assert cfg.catalog_properties() == {
        "type": "rest",
        "uri": "https://catalog.example",
        "token": "very-secret-token",
        "credential": "very-secret-credential",
    }
    # a value resolved elsewhere (Dagster's EnvVar) wins over the environment
    assert cfg.catalog_properties(given={"token": "from-dagster"})["token"] == "from-dagster"
    assert "very-secret" not in repr(cfg)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"env": "1BAD"}, "environment variable name"),
        ({"env": "OK", "default": "very-secret-x"}, "{env: NAME}"),
        ("postgresql://u:${PW}@host/db", "must be the whole value"),
        ("${}", "environment variable name"),
    ],
)
def test_catalog_environment_reference_refused(tmp_path: Path, value: object, message: str) -> None:
    err = refusal(tmp_path, {**MINIMAL, "catalog": {"uri": value}})
    assert err.key_path == "catalog.uri" and message in str(err)
    assert "very-secret" not in str(err)


def test_catalog_environment_reference_in_the_json_schema() -> None:
    validator = jsonschema.Draft202012Validator(config_json_schema())
    ok = {**MINIMAL, "catalog": {"token": {"env": "X"}, "uri": "${Y}", "n": 3}}
    assert not list(validator.iter_errors(ok))
    assert list(validator.iter_errors({**MINIMAL, "catalog": {"token": {"env": "X", "y": 1}}}))
