"""The configuration contract: ``lockgate.yaml`` parsed, validated and frozen.

``load_config`` finds the file (explicit path, else ``$LOCKGATE_CONFIG``, else
``./lockgate.yaml``), validates every key and returns a frozen ``LockgateConfig``.

Contract:

* Every error is a ``ConfigError`` raised at load time; its message names the key path
  (``sources.events.partition.pattern``) and the file. Unknown keys are errors.
* Relative local paths (``warehouse``, ``ledger``, ``sources.*.landing``) resolve relative
  to the config file's folder; the loaded config holds absolute paths or ``s3://`` URLs.
* Secrets never appear in a repr: S3 credentials come only from the environment (the usual
  AWS variables) and catalog properties are hidden from ``repr``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any, Literal, NoReturn

import pyarrow as pa
import yaml

from lockgate.resources.days import day_from_match
from lockgate.resources.store import S3Options

CONFIG_ENV = "LOCKGATE_CONFIG"
DEFAULT_CONFIG_NAME = "lockgate.yaml"

#: Columns Lockgate adds to every row; a declared schema may not use these names.
LINEAGE_COLUMNS: tuple[str, ...] = (
    "_source_key",
    "_source_etag",
    "_source_row",
    "_batch_id",
    "_ingested_at",
)

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
CLEAN_MODES: tuple[str, ...] = ("off", "archive", "delete")
SCHEMA_TYPES: tuple[str, ...] = (
    "string",
    "long",
    "int",
    "double",
    "float",
    "boolean",
    "date",
    "timestamp",
    "timestamptz",
    "binary",
    "decimal(p,s)",
)

DEFAULT_MAX_FILES_PER_BATCH = 1000
DEFAULT_MAX_BYTES_PER_BATCH = 256 * 1024 * 1024
DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
#: Decompression-bomb guard: content bytes one object may decompress to, and the largest
#: decompressed/compressed ratio (checked once 4 MiB are out; gzip tops out near 1000).
DEFAULT_MAX_DECOMPRESSED_BYTES = 16 * 1024**3
DEFAULT_MAX_COMPRESSION_RATIO = 200
#: Column names Lockgate owns besides the lineage columns; declared schemas may not use them.
RESERVED_COLUMNS: tuple[str, ...] = ("_day", "_rescued_data")

_SIZE_RE = re.compile(r"(\d+)\s*([A-Za-z]*)")
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIMPLE_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "long": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "float": pa.float32(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "binary": pa.binary(),
}
_DECIMAL_RE = re.compile(r"decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_SOURCE_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Format = Literal["jsonl", "csv", "parquet"]
CleanSource = Literal["off", "archive", "delete"]


class ConfigError(ValueError):
    """An invalid or missing configuration. ``str(err)`` names the file and the key path."""

    def __init__(self, message: str, *, key_path: str | None = None, file: str | None = None):
        self.key_path = key_path
        self.file = file
        self.reason = message
        where = f"{file}: " if file else ""
        at = f"{key_path}: " if key_path else ""
        super().__init__(f"{where}{at}{message}")


def parse_size(value: object) -> int:
    """Bytes from an int or a string like ``256MiB``, ``1GB``, ``64 KiB``, ``1000``.

    Units: B; KB/MB/GB/TB (powers of 1000); KiB/MiB/GiB/TiB (powers of 1024); K/M/G/T are
    taken as binary. Raises ``ValueError`` for anything else or for a size < 1.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 256MiB, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _SIZE_RE.fullmatch(value.strip())
        if not m:
            raise ValueError(f"expected a size like 256MiB, got {value!r}")
        unit = m.group(2).lower()
        if unit not in _SIZE_UNITS:
            raise ValueError(f"unknown size unit {m.group(2)!r} in {value!r}")
        n = int(m.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ValueError(f"expected a size like 256MiB, got {value!r}")
    if n < 1:
        raise ValueError(f"size must be at least 1 byte, got {value!r}")
    return n


def parse_schema_type(spec: str) -> pa.DataType:
    """The Arrow type of one schema type name (see ``SCHEMA_TYPES``); ``ValueError`` if unknown.

    ``timestamp`` is UTC without zone, microseconds (``timestamp[us]``); ``timestamptz`` is
    ``timestamp[us, tz=UTC]``; ``decimal(p,s)`` is ``decimal128(p, s)`` with 1 <= p <= 38,
    0 <= s <= p.
    """
    if not isinstance(spec, str):
        raise ValueError(f"expected a type name ({', '.join(SCHEMA_TYPES)}), got {spec!r}")
    name = spec.strip()
    if name in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[name]
    m = _DECIMAL_RE.fullmatch(name)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        if not 1 <= p <= 38 or not 0 <= s <= p:
            raise ValueError(f"decimal({p},{s}): need 1 <= precision <= 38 and 0 <= scale <= p")
        return pa.decimal128(p, s)
    raise ValueError(f"unknown type {spec!r}; expected one of {', '.join(SCHEMA_TYPES)}")


@dataclass(frozen=True)
class CsvOptions:
    """CSV/TSV dialect. ``quote_char`` None disables quoting. Without a header, columns are
    named after the declared schema (in order) or ``f0, f1, ...`` when inferred."""

    delimiter: str = ","
    header: bool = True
    quote_char: str | None = '"'


@dataclass(frozen=True)
class DagsterSettings:
    """``dagster:`` in lockgate.yaml. ``max_runtime_seconds`` is set on every batch run
    (``dagster/max_runtime``): run monitoring fails a run still STARTED after it (e.g. its
    worker was killed) so that run retries take over and the table's pool is released."""

    sensor_interval_seconds: int = 30
    max_runs_per_tick: int = 20
    max_runtime_seconds: int = 900


@dataclass(frozen=True)
class SourceConfig:
    """One source: a landing prefix, its format, its partition rule and its target table.

    ``schema`` holds the declared fields as ``(name, type spec)`` pairs in declared order, or
    None when the schema is inferred from the data.
    """

    name: str
    landing: str  # absolute local path or s3://bucket/prefix (as written, normalised)
    format: Format
    namespace: str
    table_name: str
    partition_start: date
    partition_pattern: re.Pattern[str] | None = None
    csv: CsvOptions = field(default_factory=CsvOptions)
    schema: tuple[tuple[str, str], ...] | None = None
    max_files_per_batch: int = DEFAULT_MAX_FILES_PER_BATCH
    max_bytes_per_batch: int = DEFAULT_MAX_BYTES_PER_BATCH
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    max_compression_ratio: int = DEFAULT_MAX_COMPRESSION_RATIO
    allow_overwrites: bool = False
    clean_source: CleanSource = "off"

    @property
    def table(self) -> str:
        """``<namespace>.<table>`` as written in the config."""
        return f"{self.namespace}.{self.table_name}"

    @property
    def table_identifier(self) -> tuple[str, str]:
        """``(namespace, table)`` as pyiceberg identifiers."""
        return (self.namespace, self.table_name)

    def arrow_schema(self) -> pa.Schema | None:
        """The declared schema as Arrow (all fields nullable), or None when inferred."""
        if self.schema is None:
            return None
        return pa.schema([pa.field(n, parse_schema_type(t)) for n, t in self.schema])

    def partition_day(self, key: str, last_modified: datetime) -> date:
        """The partition day of an object: the pattern's first group (``YYYY-MM-DD``; or the
        named groups ``year``/``month``/``day``) if the pattern matches the key (``re.search``)
        and yields a valid date, else the UTC day of ``last_modified``."""
        if self.partition_pattern is not None:
            m = self.partition_pattern.search(key)
            if m:
                day = day_from_match(m)
                if day is not None:
                    return day
        if last_modified.tzinfo is None:
            last_modified = last_modified.replace(tzinfo=UTC)
        return last_modified.astimezone(UTC).date()

    def fingerprint(self) -> dict[str, str]:
        """What identifies the source's ledger: landing URL, format and table. A ledger written
        under one fingerprint must not be reused under another."""
        return {"landing": self.landing, "format": self.format, "table": self.table}


@dataclass(frozen=True)
class LockgateConfig:
    """The whole configuration. ``sources`` keeps the file's order."""

    path: str  # absolute path of the config file
    warehouse: str  # absolute local path or s3://bucket/prefix
    ledger: str  # absolute local path or s3://bucket/prefix; default <warehouse>/_ledger
    s3: S3Options
    sources: Mapping[str, SourceConfig]
    dagster: DagsterSettings = field(default_factory=DagsterSettings)
    catalog: Mapping[str, str] = field(default_factory=dict, repr=False)

    def source(self, name: str) -> SourceConfig:
        """The source called ``name``; ``ConfigError`` naming the known sources if absent."""
        try:
            return self.sources[name]
        except KeyError:
            known = ", ".join(self.sources) or "none"
            raise ConfigError(
                f"unknown source {name!r} (known: {known})", key_path="sources", file=self.path
            ) from None


def find_config(path: str | None = None) -> str:
    """The config file to use: ``path``, else ``$LOCKGATE_CONFIG``, else ``./lockgate.yaml``.
    ``ConfigError`` if that file does not exist."""
    if path:
        origin = "the given path"
    elif os.environ.get(CONFIG_ENV):
        path, origin = os.environ[CONFIG_ENV], f"${CONFIG_ENV}"
    else:
        path, origin = DEFAULT_CONFIG_NAME, "the current folder"
    resolved = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(resolved):
        raise ConfigError(
            f"config file not found ({origin}); pass --config, set ${CONFIG_ENV} or create "
            f"./{DEFAULT_CONFIG_NAME}",
            file=resolved,
        )
    return resolved


def parse_config(data: Any, path: str) -> LockgateConfig:
    """Validate an already-parsed YAML document that came from ``path`` (used for relative
    paths and error messages)."""
    return _Parser(os.path.abspath(path)).config(data)


def load_config(path: str | None = None) -> LockgateConfig:
    """Find, read, parse and validate the config (see ``find_config`` / ``parse_config``)."""
    resolved = find_config(path)
    try:
        with open(resolved, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", file=resolved) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", file=resolved) from e
    return parse_config(data, resolved)


def _is_s3(url: str) -> bool:
    return url.startswith("s3://") or url.startswith("s3a://")


class _Parser:
    """Validates one document; every error names ``self.file`` and the key path."""

    def __init__(self, file: str):
        self.file = file
        self.base = os.path.dirname(file)

    def fail(self, key_path: str, message: str) -> NoReturn:
        raise ConfigError(message, key_path=key_path, file=self.file)

    # -- generic checks ---------------------------------------------------------------------

    def mapping(
        self,
        value: object,
        key_path: str,
        allowed: tuple[str, ...] | None = None,
        required: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(key_path or "(top level)", f"expected a mapping, got {_kind(value)}")
        for k in value:
            if not isinstance(k, str):
                self.fail(_join(key_path, str(k)), "keys must be strings")
            if allowed is not None and k not in allowed:
                self.fail(
                    _join(key_path, k), f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )
        for k in required:
            if value.get(k) is None:
                self.fail(_join(key_path, k), "required key is missing")
        return value

    def string(self, value: object, key_path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key_path, f"expected a non-empty string, got {_kind(value)}")
        return value.strip()

    def boolean(self, value: object, key_path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key_path, f"expected true or false, got {_kind(value)}")
        return value

    def positive_int(self, value: object, key_path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(key_path, f"expected a positive integer, got {_kind(value)}")
        return value

    def size(self, value: object, key_path: str) -> int:
        try:
            return parse_size(value)
        except ValueError as e:
            self.fail(key_path, str(e))

    def location(self, value: object, key_path: str) -> str:
        """An ``s3://bucket[/prefix]`` URL (kept, ``s3a`` normalised) or an absolute path."""
        text = self.string(value, key_path)
        if _is_s3(text):
            rest = text.split("://", 1)[1]
            bucket = rest.split("/", 1)[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
                self.fail(key_path, f"invalid S3 bucket name {bucket!r} in {text!r}")
            prefix = rest[len(bucket) :].strip("/")
            if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
                self.fail(key_path, f"invalid S3 prefix in {text!r}")
            return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        if "://" in text and not text.startswith("file://"):
            self.fail(key_path, f"expected a local path or s3://bucket/prefix, got {text!r}")
        if text.startswith("file://"):
            text = text[len("file://") :]
        path = os.path.expanduser(text)
        if not os.path.isabs(path):
            path = os.path.join(self.base, path)
        return os.path.normpath(path)

    # -- sections ---------------------------------------------------------------------------

    def config(self, data: object) -> LockgateConfig:
        top = self.mapping(
            data,
            "",
            allowed=("warehouse", "ledger", "s3", "catalog", "dagster", "sources"),
            required=("warehouse", "sources"),
        )
        warehouse = self.location(top["warehouse"], "warehouse")
        if top.get("ledger") is None:
            ledger = _child(warehouse, "_ledger")
        else:
            ledger = self.location(top["ledger"], "ledger")
        s3 = self.s3(top.get("s3"))
        catalog = self.catalog(top.get("catalog"))
        dagster = self.dagster(top.get("dagster"))
        raw_sources = self.mapping(top["sources"], "sources")
        if not raw_sources:
            self.fail("sources", "declare at least one source")
        sources: dict[str, SourceConfig] = {}
        for name, spec in raw_sources.items():
            src = self.source(name, spec)
            self.check_overlap(src, sources, warehouse, ledger)
            sources[name] = src
        return LockgateConfig(
            path=self.file,
            warehouse=warehouse,
            ledger=ledger,
            s3=s3,
            sources=MappingProxyType(sources),
            dagster=dagster,
            catalog=MappingProxyType(catalog),
        )

    def s3(self, value: object) -> S3Options:
        spec = self.mapping(value, "s3", allowed=("endpoint_url", "region"))
        endpoint = None
        if spec.get("endpoint_url") is not None:
            endpoint = self.string(spec["endpoint_url"], "s3.endpoint_url")
            if not re.match(r"https?://[^/\s]+", endpoint):
                self.fail("s3.endpoint_url", f"expected http(s)://host[:port], got {endpoint!r}")
        region = None
        if spec.get("region") is not None:
            region = self.string(spec["region"], "s3.region")
        return S3Options.from_env(endpoint_url=endpoint, region=region)

    def catalog(self, value: object) -> dict[str, str]:
        spec = self.mapping(value, "catalog")
        out: dict[str, str] = {}
        for k, v in spec.items():
            if isinstance(v, bool):
                out[k] = "true" if v else "false"
            elif isinstance(v, str | int | float):
                out[k] = str(v)
            else:
                self.fail(_join("catalog", k), f"expected a scalar value, got {_kind(v)}")
        return out

    def dagster(self, value: object) -> DagsterSettings:
        spec = self.mapping(
            value,
            "dagster",
            allowed=("sensor_interval_seconds", "max_runs_per_tick", "max_runtime_seconds"),
        )
        d = DagsterSettings()
        return DagsterSettings(
            sensor_interval_seconds=self.positive_int(
                spec.get("sensor_interval_seconds", d.sensor_interval_seconds),
                "dagster.sensor_interval_seconds",
            ),
            max_runs_per_tick=self.positive_int(
                spec.get("max_runs_per_tick", d.max_runs_per_tick), "dagster.max_runs_per_tick"
            ),
            max_runtime_seconds=self.positive_int(
                spec.get("max_runtime_seconds", d.max_runtime_seconds),
                "dagster.max_runtime_seconds",
            ),
        )

    def source(self, name: str, value: object) -> SourceConfig:
        kp = f"sources.{name}"
        if not _SOURCE_NAME_RE.fullmatch(name):
            self.fail(kp, "source names must match [a-z][a-z0-9_]*")
        spec = self.mapping(
            value,
            kp,
            allowed=(
                "landing",
                "format",
                "csv",
                "table",
                "partition",
                "schema",
                "max_files_per_batch",
                "max_bytes_per_batch",
                "max_record_bytes",
                "max_decompressed_bytes",
                "max_compression_ratio",
                "allow_overwrites",
                "clean_source",
            ),
            required=("landing", "format", "table", "partition"),
        )
        landing = self.location(spec["landing"], f"{kp}.landing")
        fmt = self.string(spec["format"], f"{kp}.format").lower()
        if fmt not in FORMATS:
            self.fail(f"{kp}.format", f"unknown format {fmt!r} (expected {' | '.join(FORMATS)})")
        csv = CsvOptions()
        if spec.get("csv") is not None:
            if fmt != "csv":
                self.fail(f"{kp}.csv", f"csv options given but format is {fmt!r}")
            csv = self.csv_options(spec["csv"], f"{kp}.csv")
        namespace, table_name = self.table(spec["table"], f"{kp}.table")
        pattern, start = self.partition(spec["partition"], f"{kp}.partition")
        schema = None
        if spec.get("schema") is not None:
            schema = self.schema(spec["schema"], f"{kp}.schema")
        clean = spec.get("clean_source", "off")
        if clean is False:
            clean = "off"
        if clean not in CLEAN_MODES:
            self.fail(
                f"{kp}.clean_source", f"expected {' | '.join(CLEAN_MODES)}, got {_kind(clean)}"
            )
        return SourceConfig(
            name=name,
            landing=landing,
            format=fmt,  # type: ignore[arg-type]
            namespace=namespace,
            table_name=table_name,
            partition_start=start,
            partition_pattern=pattern,
            csv=csv,
            schema=schema,
            max_files_per_batch=self.positive_int(
                spec.get("max_files_per_batch", DEFAULT_MAX_FILES_PER_BATCH),
                f"{kp}.max_files_per_batch",
            ),
            max_bytes_per_batch=self.size(
                spec.get("max_bytes_per_batch", DEFAULT_MAX_BYTES_PER_BATCH),
                f"{kp}.max_bytes_per_batch",
            ),
            max_record_bytes=self.size(
                spec.get("max_record_bytes", DEFAULT_MAX_RECORD_BYTES), f"{kp}.max_record_bytes"
            ),
            max_decompressed_bytes=self.size(
                spec.get("max_decompressed_bytes", DEFAULT_MAX_DECOMPRESSED_BYTES),
                f"{kp}.max_decompressed_bytes",
            ),
            max_compression_ratio=self.positive_int(
                spec.get("max_compression_ratio", DEFAULT_MAX_COMPRESSION_RATIO),
                f"{kp}.max_compression_ratio",
            ),
            allow_overwrites=self.boolean(
                spec.get("allow_overwrites", False), f"{kp}.allow_overwrites"
            ),
            clean_source=clean,
        )

    def csv_options(self, value: object, kp: str) -> CsvOptions:
        spec = self.mapping(value, kp, allowed=("delimiter", "header", "quote_char"))
        d = CsvOptions()
        delimiter = spec.get("delimiter", d.delimiter)
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n":
            self.fail(f"{kp}.delimiter", f"expected one character, got {_kind(delimiter)}")
        header = self.boolean(spec.get("header", d.header), f"{kp}.header")
        quote = spec.get("quote_char", d.quote_char)
        if quote is False or quote is None:
            quote = None
        elif not isinstance(quote, str) or len(quote) != 1 or quote in "\r\n":
            self.fail(f"{kp}.quote_char", f"expected one character or false, got {_kind(quote)}")
        elif quote == delimiter:
            self.fail(f"{kp}.quote_char", "must differ from the delimiter")
        return CsvOptions(delimiter=delimiter, header=header, quote_char=quote)

    def table(self, value: object, kp: str) -> tuple[str, str]:
        text = self.string(value, kp)
        parts = text.split(".")
        if len(parts) != 2 or not all(_IDENT_RE.fullmatch(p) for p in parts):
            self.fail(kp, f"expected <namespace>.<table> (letters, digits, _), got {text!r}")
        return parts[0], parts[1]

    def partition(self, value: object, kp: str) -> tuple[re.Pattern[str] | None, date]:
        spec = self.mapping(value, kp, allowed=("pattern", "start"), required=("start",))
        pattern = None
        if spec.get("pattern") is not None:
            text = self.string(spec["pattern"], f"{kp}.pattern")
            try:
                pattern = re.compile(text)
            except re.error as e:
                self.fail(f"{kp}.pattern", f"not a valid regular expression: {e}")
            named = {"year", "month", "day"} <= set(pattern.groupindex)
            if pattern.groups < 1 and not named:
                self.fail(
                    f"{kp}.pattern",
                    "needs a capturing group for the day, e.g. (\\d{4}-\\d{2}-\\d{2})",
                )
        start = spec["start"]
        if isinstance(start, datetime):
            self.fail(f"{kp}.start", f"expected a date YYYY-MM-DD, got a datetime {start}")
        if isinstance(start, str):
            try:
                start = date.fromisoformat(start.strip())
            except ValueError:
                self.fail(f"{kp}.start", f"expected a date YYYY-MM-DD, got {start!r}")
        if not isinstance(start, date):
            self.fail(f"{kp}.start", f"expected a date YYYY-MM-DD, got {_kind(start)}")
        return pattern, start

    def schema(self, value: object, kp: str) -> tuple[tuple[str, str], ...]:
        spec = self.mapping(value, kp)
        if not spec:
            self.fail(kp, "declare at least one field, or remove the key to infer the schema")
        fields: list[tuple[str, str]] = []
        for name, type_spec in spec.items():
            if name in LINEAGE_COLUMNS or name in RESERVED_COLUMNS:
                self.fail(f"{kp}.{name}", "this column name is reserved for lineage")
            if not name.strip():
                self.fail(kp, "field names must not be blank")
            try:
                parse_schema_type(type_spec)
            except ValueError as e:
                self.fail(f"{kp}.{name}", str(e))
            fields.append((name, type_spec.strip().replace(" ", "")))
        return tuple(fields)

    def check_overlap(
        self, src: SourceConfig, earlier: Mapping[str, SourceConfig], warehouse: str, ledger: str
    ) -> None:
        kp = f"sources.{src.name}.landing"
        for where, what in ((warehouse, "warehouse"), (ledger, "ledger")):
            if _inside(where, src.landing):
                self.fail(kp, f"the {what} ({where}) lies inside this landing prefix")
        for other in earlier.values():
            if other.landing == src.landing and other.table == src.table:
                self.fail(
                    kp,
                    f"source {other.name!r} already ingests this landing prefix into {src.table}",
                )


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, bool | int | float):
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__


def _child(location: str, name: str) -> str:
    if _is_s3(location):
        return f"{location.rstrip('/')}/{name}"
    return os.path.join(location, name)


def _inside(inner: str, outer: str) -> bool:
    """Whether location ``inner`` is ``outer`` or below it."""
    if _is_s3(inner) != _is_s3(outer):
        return False
    o = outer.rstrip("/")
    sep = "/" if _is_s3(outer) else os.sep
    return inner.rstrip("/") == o or inner.startswith(o + sep)
