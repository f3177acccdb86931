"""The configuration contract: ``lockgate.yaml`` parsed, validated and frozen.

``load_config`` finds the file (explicit path, else ``$LOCKGATE_CONFIG``, else
``./lockgate.yaml``), validates the document against the typed model ``ConfigDocument``
(pydantic, unknown keys forbidden) and returns a frozen ``LockgateConfig``.
``config_json_schema()`` is that model's JSON Schema (``lockgate schema``), for editors.

Contract:

* Every error is a ``ConfigError`` raised at load time; its message names the key path
  (``sources.events.partition.pattern``) and the file. Unknown keys are errors. A ``null``
  value means "not given" for required keys (an error), sections and optional keys (the
  default); for a key with a scalar default it is an error.
* Sizes are positive integers (bytes) or strings like ``64MiB``, ``1GB`` (``parse_size``);
  the ``*_seconds`` keys take whole seconds or durations like ``90s``, ``15m``, ``1h``
  (``parse_duration``).
* Relative local paths (``warehouse``, ``ledger``, ``sources.*.landing``) resolve relative
  to the config file's folder and ``~`` expands to the home folder; no other expansion
  happens. The loaded config holds absolute paths or ``s3://`` URLs.
* Sources are independent: refused are two sources writing one table, two sources whose
  landing prefixes nest (equal, or one inside the other, in the same store) whatever their
  tables, and a source whose table is another source's quarantine table
  (``<table>__quarantine``); the error names both sources. A rebuild overwrites whole days
  of a table and ``verify`` counts a table's rows per object, so a shared table or shared
  objects would lose or double rows.
* Secrets never appear in a repr or an error: S3 credentials come only from the environment
  (the usual AWS variables), catalog properties are hidden from ``repr``, and error
  messages show values only of keys that are never secret. A catalog property may be an
  environment reference (``{env: NAME}`` or ``"${NAME}"``, the whole value): the config
  keeps the variable's name only, and the value is read where the catalog is opened
  (``LockgateConfig.catalog_properties``; in Dagster, through ``dg.EnvVar``).
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType, NoneType, UnionType
from typing import Annotated, Any, ClassVar, Literal, NoReturn

import pyarrow as pa
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from lockgate.resources.days import day_from_match
from lockgate.resources.errors import ExitCode, TerminalError
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
#: Seconds a file in a local landing must be unchanged before it is claimed (see ``min_age``).
DEFAULT_LOCAL_MIN_AGE_S = 5.0
MAX_MIN_AGE_S = 86400.0
#: When the ``exactly_once`` check (a full table scan) runs by default: daily, 03:00 UTC.
DEFAULT_EXACTLY_ONCE_CRON = "0 3 * * *"
#: Compaction and maintenance (per source; ``compaction:`` / ``maintenance:`` in lockgate.yaml):
#: when they run (cron, UTC), the compacted file size (on-disk bytes), how many small files a
#: day needs before it is compacted, and how old an unreferenced file must be before the
#: maintenance deletes it (at least the longest run plus VACUUM_MARGIN, one hour).
DEFAULT_COMPACTION_CRON = "0 * * * *"
DEFAULT_COMPACTION_TARGET = 128 * 1024 * 1024
DEFAULT_COMPACTION_MIN_FILES = 8
DEFAULT_MAINTENANCE_CRON = "30 * * * *"
DEFAULT_ORPHAN_OLDER_THAN_S = 3 * 86400
ORPHAN_MARGIN_S = 3600  # = lockgate.resources.maintenance.VACUUM_MARGIN
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
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")
_DURATION_UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
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
#: A source's quarantine table is ``<namespace>.<table>`` + this suffix.
QUARANTINE_SUFFIX = "__quarantine"

Format = Literal["jsonl", "csv", "parquet"]
CleanSource = Literal["off", "archive", "delete"]


class ConfigError(TerminalError, ValueError):
    """An invalid or missing configuration. ``str(err)`` names the file and the key path."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFIG

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


def parse_duration(value: object) -> timedelta:
    """A duration from a string like ``90s``, ``15m``, ``12h``, ``3d``, ``1w`` (a decimal number
    and one unit: s, m, h, d, w). Raises ``ValueError`` for anything else or for zero."""
    m = _DURATION_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"expected a duration like 90s, 15m, 12h, 3d, 1w; got {_kind(value)}")
    duration = timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2)])
    if duration <= timedelta(0):
        raise ValueError(f"a duration must be positive, got {value!r}")
    return duration


def parse_schema_type(spec: object) -> pa.DataType:
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


#: The default hung-run limit of a batch run: its bytes budget read at this (conservative)
#: throughput, at least ``HUNG_RUN_MIN_S`` and at most ``HUNG_RUN_MAX_S``; run monitoring
#: (polling every 15 s) then releases a hung run's table within 5 minutes.
HUNG_RUN_BYTES_PER_S = 1024**2
HUNG_RUN_MIN_S = 120
HUNG_RUN_MAX_S = 240
#: The limit of compaction and maintenance runs when ``dagster.max_runtime_seconds`` is unset.
UPKEEP_RUNTIME_S = 3600


@dataclass(frozen=True)
class DagsterSettings:
    """``dagster:`` in lockgate.yaml. A batch run's limit (``batch_max_runtime_s``) is set on
    every batch run (``dagster/max_runtime``): run monitoring fails a run still STARTED after
    it (a worker killed or frozen) so that run retries take over and the table's pool is
    released. ``max_runtime_seconds`` None: derived per source from its bytes budget."""

    sensor_interval_seconds: int = 30
    max_runs_per_tick: int = 20
    max_runtime_seconds: int | None = None
    # batch runs of one table that may run at once (its Dagster pool's limit, set by its sensor)
    table_concurrency: int = 1
    # keys one sensor tick lists per listing; a full listing is a pass spread over ticks
    max_keys_listed_per_tick: int = 20_000
    # seconds one listing of a sensor tick may take (stops at a page boundary; 0: no bound)
    max_listing_seconds_per_tick: int = 5

    def batch_max_runtime_s(self, source: SourceConfig) -> int:
        """The hung-run limit of ``source``'s batch runs: ``max_runtime_seconds`` if set,
        else ``max_bytes_per_batch / HUNG_RUN_BYTES_PER_S`` clamped to
        ``[HUNG_RUN_MIN_S, HUNG_RUN_MAX_S]``."""
        if self.max_runtime_seconds is not None:
            return self.max_runtime_seconds
        derived = -(-source.max_bytes_per_batch // HUNG_RUN_BYTES_PER_S)
        return max(HUNG_RUN_MIN_S, min(HUNG_RUN_MAX_S, derived))

    def upkeep_runtime_s(self) -> int:
        """The limit of compaction and maintenance runs: ``max_runtime_seconds`` if set, else
        ``UPKEEP_RUNTIME_S`` (they rewrite a day's files, which can take long)."""
        return self.max_runtime_seconds or UPKEEP_RUNTIME_S

    def longest_run_s(self, sources: typing.Iterable[SourceConfig] = ()) -> int:
        """The longest any run that stages files may last (a batch of ``sources`` or an upkeep
        run): what orphan cleanup and vacuum windows must outlast."""
        return max(self.longest_batch_runtime_s(sources), self.upkeep_runtime_s())

    def longest_batch_runtime_s(self, sources: typing.Iterable[SourceConfig] = ()) -> int:
        """The longest limit of any of ``sources``' batch runs (``HUNG_RUN_MAX_S`` for none,
        unless ``max_runtime_seconds`` is set)."""
        limits = [self.batch_max_runtime_s(s) for s in sources]
        if self.max_runtime_seconds is not None:
            return self.max_runtime_seconds
        return max(limits, default=HUNG_RUN_MAX_S)


@dataclass(frozen=True)
class CompactionSettings:
    """``compaction:`` of a source. ``cron`` None: no compaction schedule (``lockgate compact``
    still works). ``sort_by`` is the source's ``sort_by``: compacted files are sorted by it."""

    cron: str | None = DEFAULT_COMPACTION_CRON
    target_file_size: int = DEFAULT_COMPACTION_TARGET
    min_files: int = DEFAULT_COMPACTION_MIN_FILES
    sort_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class MaintenanceSettings:
    """``maintenance:`` of a source: when the maintenance of its table and quarantine table
    runs (``cron`` None: never on a schedule) and the age after which an unreferenced file is
    deleted (``orphan_older_than_s``)."""

    cron: str | None = DEFAULT_MAINTENANCE_CRON
    orphan_older_than_s: int = DEFAULT_ORPHAN_OLDER_THAN_S


DiscoveryMode = Literal["listing", "notifications"]
#: Notification mode: the backstop full listing's default period (seconds), and how many
#: receives of an unparseable message before it is moved aside.
DEFAULT_FULL_LISTING_EVERY_S = 6 * 3600
DEFAULT_MAX_RECEIVES = 5
#: Notification mode: seconds a received message stays invisible while a tick handles it.
DEFAULT_VISIBILITY_TIMEOUT_S = 300


@dataclass(frozen=True)
class DiscoverySettings:
    """``sources.<name>.discovery``: how new objects are found. ``listing`` (default) lists the
    landing prefix every tick. ``notifications`` receives S3 event notifications from the SQS
    queue ``queue_url`` (S3 landings only) and lists everything only every
    ``full_listing_every_s`` seconds (the backstop for lost events). An unparseable message is
    moved aside (to ``dead_letter_queue_url`` if given, else deleted; always counted) once it
    has been received ``max_receives`` times."""

    mode: DiscoveryMode = "listing"
    queue_url: str | None = None
    full_listing_every_s: int = DEFAULT_FULL_LISTING_EVERY_S
    dead_letter_queue_url: str | None = None
    max_receives: int = DEFAULT_MAX_RECEIVES
    #: seconds a received message stays invisible to other receivers (a crashed tick's
    #: messages come back after it)
    visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S


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
    # ``clean_source.archive_to`` (absolute path or s3:// URL): where ``archive`` copies the
    # objects of committed batches (set exactly when ``clean_source`` is ``archive``).
    clean_archive_to: str | None = None
    # ``min_age`` in lockgate.yaml (seconds): an object is claimable only once it has not
    # changed for this long. None: DEFAULT_LOCAL_MIN_AGE_S for a local landing, 0 for S3.
    min_age_s: float | None = None
    # Dagster only (not part of the fingerprint): the table asset's owners and tags, the
    # freshness policy's window, and the cron (UTC) of the exactly_once check.
    owners: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    freshness_max_lag_s: int | None = None
    exactly_once_cron: str = DEFAULT_EXACTLY_ONCE_CRON
    # Tables stay fast to read (not part of the fingerprint).
    compaction: CompactionSettings = field(default_factory=CompactionSettings)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)

    # How new objects are found (not part of the fingerprint: the ledger decides either way).
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)

    @property
    def effective_min_age_s(self) -> float:
        """Seconds an object must have been unchanged before it may be claimed."""
        if self.min_age_s is not None:
            return self.min_age_s
        return 0.0 if _is_s3(self.landing) else DEFAULT_LOCAL_MIN_AGE_S

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
        named groups ``year``/``month``/``day``) if the pattern matches the key (``re.search``),
        else the UTC day of ``last_modified``. A match that is not a date (``dt=2026-02-30``)
        raises ``ValueError``: such an object is not claimed (discovery reports it as
        ``invalid_day``), never filed under another day."""
        if self.partition_pattern is not None:
            m = self.partition_pattern.search(key)
            if m:
                day = day_from_match(m)
                if day is None:
                    raise ValueError(
                        f"{key!r}: the partition pattern matches {m.group(0)!r}, "
                        "which is not a valid date"
                    )
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
    # catalog properties given as environment references: property -> variable name
    catalog_env: Mapping[str, str] = field(default_factory=dict)

    def catalog_properties(self, given: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every catalog property with its value: the plain ones, then each environment
        reference from ``given`` (e.g. resolved by Dagster) else from the environment now;
        ``ConfigError`` naming the variable (never a value) if it is not set."""
        given = given or {}
        props = dict(self.catalog)
        for key, var in self.catalog_env.items():
            value = given.get(key, os.environ.get(var))
            if value is None:
                raise ConfigError(
                    f"environment variable {var} is not set",
                    key_path=f"catalog.{key}",
                    file=self.path,
                )
            props[key] = value
        return props

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
    paths and error messages). ``ConfigError`` on the first problem (the others follow in
    its message)."""
    file = os.path.abspath(path)
    try:
        doc = ConfigDocument.model_validate(data, context={"base": os.path.dirname(file)})
    except ValidationError as e:
        raise _config_error(e, file) from None
    return _Builder(file).config(doc)


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``lockgate.yaml``. Checks what a schema can state
    (keys, types, sizes, enums, name patterns); the loader also checks what it cannot
    (a valid regex, cross-source refusals)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **ConfigDocument.model_json_schema(by_alias=True),
    }


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


# -- the document model: one value at a time --------------------------------------------------
# Each validator takes the raw YAML value and returns the loaded one, or raises ``ValueError``
# whose text becomes the ``ConfigError`` reason (after the key path).


def _string(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {_kind(value)}")
    return value.strip()


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive integer, got {_kind(value)}")
    return value


def _seconds(value: object) -> int:
    """Whole seconds >= 1 from an int or a duration string (``parse_duration``)."""
    expected = "expected a positive integer (seconds) or a duration like 90s, 15m, 1h"
    if isinstance(value, str):
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError:
            raise ValueError(f"{expected}, got {_kind(value)}") from None
        if seconds != int(seconds):
            raise ValueError(f"{expected} (whole seconds), got {_kind(value)}")
        return int(seconds)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{expected}, got {_kind(value)}")
    return value


def _min_age(value: object) -> float:
    """Seconds >= 0 (at most a day) from a number or a duration string (``parse_duration``)."""
    expected = "expected a number of seconds >= 0 or a duration like 5s, 2m"
    if isinstance(value, str):
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError:
            raise ValueError(f"{expected}, got {_kind(value)}") from None
    elif isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{expected}, got {_kind(value)}")
    else:
        seconds = float(value)
    if seconds > MAX_MIN_AGE_S:
        raise ValueError(f"at most {MAX_MIN_AGE_S:.0f} seconds (one day), got {value!r}")
    return float(seconds)


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    return value


def _location(value: object, info: ValidationInfo) -> str:
    """An ``s3://bucket[/prefix]`` URL (kept, ``s3a`` normalised) or an absolute path (relative
    ones against ``context["base"]``, the config file's folder)."""
    text = _string(value)
    if _is_s3(text):
        rest = text.split("://", 1)[1]
        bucket = rest.split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"invalid S3 bucket name {bucket!r} in {text!r}")
        prefix = rest[len(bucket) :].strip("/")
        if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
            raise ValueError(f"invalid S3 prefix in {text!r}")
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"expected a local path or s3://bucket/prefix, got {text!r}")
    if text.startswith("file://"):
        text = text[len("file://") :]
    path = os.path.expanduser(text)
    if not os.path.isabs(path):
        base = (info.context or {}).get("base") or os.getcwd()
        path = os.path.join(base, path)
    return os.path.normpath(path)


def _endpoint(value: object) -> str:
    text = _string(value)
    if not re.match(r"https?://[^/\s]+", text):
        raise ValueError(f"expected http(s)://host[:port], got {text!r}")
    return text


def _format(value: object) -> str:
    fmt = _string(value).lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (expected {' | '.join(FORMATS)})")
    return fmt


def _table(value: object) -> str:
    text = _string(value)
    parts = text.split(".")
    if len(parts) != 2 or not all(_IDENT_RE.fullmatch(p) for p in parts):
        raise ValueError(f"expected <namespace>.<table> (letters, digits, _), got {text!r}")
    return text


def _pattern(value: object) -> re.Pattern[str]:
    text = _string(value)
    try:
        pattern = re.compile(text)
    except re.error as e:
        raise ValueError(f"not a valid regular expression: {e}") from None
    named = {"year", "month", "day"} <= set(pattern.groupindex)
    if pattern.groups < 1 and not named:
        raise ValueError("needs a capturing group for the day, e.g. (\\d{4}-\\d{2}-\\d{2})")
    return pattern


def _date(value: object) -> date:
    if isinstance(value, datetime):
        raise ValueError(f"expected a date YYYY-MM-DD, got a datetime {value}")
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"expected a date YYYY-MM-DD, got {value!r}") from None
    if not isinstance(value, date):
        raise ValueError(f"expected a date YYYY-MM-DD, got {_kind(value)}")
    return value


def _schema_type(value: object) -> str:
    parse_schema_type(value)  # ValueError for anything but a type name
    return str(value).strip().replace(" ", "")


def _field_name(name: str) -> str:
    if name in LINEAGE_COLUMNS or name in RESERVED_COLUMNS:
        raise ValueError("this column name is reserved for lineage")
    return name


def _declared_fields(fields: dict[str, str]) -> dict[str, str]:
    if not fields:
        raise ValueError("declare at least one field, or remove the key to infer the schema")
    if any(not name.strip() for name in fields):
        raise ValueError("field names must not be blank")
    return fields


def _source_name(name: str) -> str:
    if not _SOURCE_NAME_RE.fullmatch(name):
        raise ValueError("source names must match [a-z][a-z0-9_]*")
    return name


def _one_char(value: object) -> str:
    if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
        raise ValueError(f"expected one character, got {_kind(value)}")
    return value


def _quote_char(value: object) -> str | None:
    if value is False or value is None:
        return None
    if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
        raise ValueError(f"expected one character or false, got {_kind(value)}")
    return value


def _clean_mode(value: object) -> str:
    if value is False:
        return "off"
    if not isinstance(value, str) or value not in CLEAN_MODES:
        raise ValueError(f"expected {' | '.join(CLEAN_MODES)}, got {_kind(value)}")
    return value


@dataclass(frozen=True)
class EnvRef:
    """A catalog property given as ``{env: NAME}`` or ``"${NAME}"``: its value is read from
    the environment variable ``NAME`` where it is used, never stored in the config."""

    name: str


_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_REF_RE = re.compile(r"\$\{([^}]*)\}")


def _env_ref(name: object) -> EnvRef:
    if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
        raise ValueError(
            "expected an environment variable name (letters, digits, _) in {env: NAME} or "
            f"${{NAME}}, got {_kind(name) if not isinstance(name, str) else repr(name)}"
        )
    return EnvRef(name)


def _catalog_value(value: object) -> str | EnvRef:
    """A scalar (as a string), or an environment reference: ``{env: NAME}`` or ``"${NAME}"``
    (the whole value; a reference inside a longer string is refused, never passed on as is)."""
    if isinstance(value, Mapping):
        if set(value) != {"env"}:
            raise ValueError("expected a scalar value or {env: NAME}, got a mapping")
        return _env_ref(value["env"])
    if isinstance(value, str) and "${" in value:
        whole = _ENV_REF_RE.fullmatch(value.strip())
        if whole is None:
            raise ValueError(
                "an environment reference ${NAME} must be the whole value (no interpolation)"
            )
        return _env_ref(whole.group(1))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"expected a scalar value, got {_kind(value)}")


def _mapping(value: object) -> dict[Any, Any]:
    """A YAML mapping as a dict; its keys are checked by the model (strings only)."""
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping, got {_kind(value)}")
    return dict(value)


def _not_empty(what: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError(what)
        return value

    return check


_SIZE_JSON: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": r"^\s*[0-9]+\s*([bB]|[kKmMgGtT]([iI]?[bB])?)?\s*$"},
    ],
}
_SECONDS_JSON: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*[smhdw]\s*$"},
    ],
}
_TYPE_JSON: dict[str, Any] = {
    "anyOf": [
        {"enum": list(_SIMPLE_TYPES)},
        {"type": "string", "pattern": r"^\s*decimal\s*\(\s*[0-9]+\s*,\s*[0-9]+\s*\)\s*$"},
    ],
}

NonEmptyStr = Annotated[str, PlainValidator(_string), WithJsonSchema({"type": "string"})]
Location = Annotated[
    str,
    PlainValidator(_location),
    WithJsonSchema({"type": "string", "minLength": 1}),
]
PositiveInt = Annotated[
    int, PlainValidator(_positive_int), WithJsonSchema({"type": "integer", "minimum": 1})
]
Size = Annotated[int, PlainValidator(parse_size), WithJsonSchema(_SIZE_JSON)]
Seconds = Annotated[int, PlainValidator(_seconds), WithJsonSchema(_SECONDS_JSON)]


def _seconds_or_zero(value: object) -> int:
    """``_seconds``, or 0 (the setting's "no bound")."""
    return 0 if value == 0 and not isinstance(value, bool) else _seconds(value)


NonNegativeSeconds = Annotated[
    int,
    PlainValidator(_seconds_or_zero),
    WithJsonSchema({"anyOf": [{"const": 0}, *_SECONDS_JSON["anyOf"]]}),
]
Bool = Annotated[bool, PlainValidator(_boolean), WithJsonSchema({"type": "boolean"})]
SchemaType = Annotated[str, PlainValidator(_schema_type), WithJsonSchema(_TYPE_JSON)]
FieldName = Annotated[str, AfterValidator(_field_name)]
SourceName = Annotated[
    str,
    AfterValidator(_source_name),
    WithJsonSchema({"type": "string", "pattern": f"^{_SOURCE_NAME_RE.pattern}$"}),
]
CatalogValue = Annotated[
    str | EnvRef,
    PlainValidator(_catalog_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": ["string", "number", "boolean"]},
                {
                    "type": "object",
                    "properties": {"env": {"type": "string"}},
                    "required": ["env"],
                    "additionalProperties": False,
                },
            ]
        }
    ),
]


class _Section(BaseModel):
    """A mapping of known keys. ``null`` for a key means "not given" (so: missing, or the
    default) unless the key has a scalar default, for which ``null`` is invalid."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_absent(cls, data: object) -> object:
        if data is None:
            data = {}
        spec = _mapping(data)
        fields = {f.alias or name: f for name, f in cls.model_fields.items()}
        out: dict[str, Any] = {}
        for k, v in spec.items():
            f = fields.get(k)
            if v is None and f is not None:
                scalar_default = not f.is_required() and f.default is not None
                if not scalar_default or f.default_factory is not None:
                    continue
            out[k] = v
        return out


class S3Document(_Section):
    model_config = ConfigDict(title="s3")

    endpoint_url: (
        Annotated[
            str,
            PlainValidator(_endpoint),
            WithJsonSchema({"type": "string", "pattern": r"^https?://[^/\s]+"}),
        ]
        | None
    ) = Field(
        default=None,
        description="http(s)://host[:port] of the S3 API (default: $AWS_ENDPOINT_URL, else AWS). "
        "Credentials come only from the usual AWS environment variables.",
    )
    region: NonEmptyStr | None = Field(
        default=None, description="AWS region (default: $AWS_REGION, else $AWS_DEFAULT_REGION)"
    )


class DagsterDocument(_Section):
    model_config = ConfigDict(title="dagster")

    sensor_interval_seconds: Seconds = Field(
        default=DagsterSettings.sensor_interval_seconds,
        description="seconds between sensor ticks (or a duration: 30s, 2m)",
    )
    max_runs_per_tick: PositiveInt = Field(
        default=DagsterSettings.max_runs_per_tick, description="run requests one tick may emit"
    )
    max_runtime_seconds: Seconds | None = Field(
        default=DagsterSettings.max_runtime_seconds,
        description="run monitoring fails a batch run still going after this many seconds "
        "(or a duration: 15m, 1h); default: the source's max_bytes_per_batch at 1 MiB/s, "
        f"between {HUNG_RUN_MIN_S} and {HUNG_RUN_MAX_S} s",
    )
    table_concurrency: PositiveInt = Field(
        default=DagsterSettings.table_concurrency,
        description="batch runs of one table that may run at once: each sensor sets its table's "
        "Dagster pool limit to this; their commits race and retry (create-only metadata put)",
    )
    max_keys_listed_per_tick: PositiveInt = Field(
        default=DagsterSettings.max_keys_listed_per_tick,
        description="keys a sensor tick lists at most per listing, so a tick's time is bounded "
        "whatever the bucket size: a full listing resumes on the next tick where this one "
        "stopped (its continuation lives in the sensor cursor)",
    )
    max_listing_seconds_per_tick: NonNegativeSeconds = Field(
        default=DagsterSettings.max_listing_seconds_per_tick,
        description="seconds a sensor tick spends at most in one listing (or a duration: 10s): "
        "it stops at the next page boundary after them and a full listing resumes on the next "
        "tick, so a tick stays short when LIST pages are slow; 0: bounded by keys only",
    )


class CsvDocument(_Section):
    model_config = ConfigDict(title="csv")

    delimiter: Annotated[
        str, PlainValidator(_one_char), WithJsonSchema({"type": "string", "minLength": 1})
    ] = Field(default=CsvOptions.delimiter, description="one character")
    header: Bool = Field(
        default=CsvOptions.header,
        description="first line names the columns; without it, columns are named after the "
        "declared schema (in order) or f0, f1, ...",
    )
    quote_char: Annotated[
        str | None,
        PlainValidator(_quote_char),
        WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1}, {"enum": [False, None]}]}),
    ] = Field(
        default=CsvOptions.quote_char, description="one character, or false to disable quoting"
    )


class PartitionDocument(_Section):
    model_config = ConfigDict(title="partition")

    pattern: (
        Annotated[
            re.Pattern[str],
            PlainValidator(_pattern),
            WithJsonSchema({"type": "string", "format": "regex"}),
        ]
        | None
    ) = Field(
        default=None,
        description="regex searched in the object key: its first group (YYYY-MM-DD) or the "
        "named groups year/month/day give the day; no match: the last-modified day (UTC)",
    )
    start: Annotated[
        date, PlainValidator(_date), WithJsonSchema({"type": "string", "format": "date"})
    ] = Field(description="first partition day (YYYY-MM-DD)")


def _cron(value: object) -> str:
    """A five-field cron expression (as Dagster schedules take it)."""
    if not isinstance(value, str) or len(value.split()) != 5:
        raise ValueError(f"expected a cron expression like '0 3 * * *', got {_kind(value)}")
    return " ".join(value.split())


def _tag(value: object) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool) or value == "":
        raise ValueError(f"expected a non-empty string, got {_kind(value)}")
    return str(value)


Cron = Annotated[str, PlainValidator(_cron), WithJsonSchema({"type": "string"})]


def _cron_or_off(value: object) -> str:
    """A cron expression, or ``off`` / false (no schedule; returned as ``off``)."""
    if value is False or value == "off":
        return "off"
    return _cron(value)


CronOrOff = Annotated[
    str,
    PlainValidator(_cron_or_off),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"enum": [False, "off"]}]}),
]


class CompactionDocument(_Section):
    model_config = ConfigDict(title="compaction")

    schedule: CronOrOff = Field(
        default=DEFAULT_COMPACTION_CRON,
        description="cron (UTC) of the table's compaction job, or off",
    )
    target_file_size: Size = Field(
        default=DEFAULT_COMPACTION_TARGET,
        description="size of a compacted file (on-disk bytes, e.g. 128MiB); smaller files "
        "are compacted",
    )
    min_files: Annotated[
        int, PlainValidator(_positive_int), WithJsonSchema({"type": "integer", "minimum": 2})
    ] = Field(
        default=DEFAULT_COMPACTION_MIN_FILES,
        description="a day is compacted once it has at least this many small files (>= 2)",
    )


class MaintenanceDocument(_Section):
    model_config = ConfigDict(title="maintenance")

    schedule: CronOrOff = Field(
        default=DEFAULT_MAINTENANCE_CRON,
        description="cron (UTC) of the table's maintenance job (snapshot expiry, metadata "
        "retirement, orphan-file cleanup), or off",
    )
    orphan_older_than: Seconds = Field(
        default=DEFAULT_ORPHAN_OLDER_THAN_S,
        description="unreferenced files older than this are deleted (a duration: 3d; at least "
        "dagster.max_runtime_seconds + 1h)",
    )


class FreshnessDocument(_Section):
    model_config = ConfigDict(title="freshness")

    max_lag: Seconds = Field(
        description="the table asset fails its freshness policy when no batch or rebuild has "
        "materialized it for this long (seconds, or a duration: 2h, 1d)"
    )


class ChecksDocument(_Section):
    model_config = ConfigDict(title="checks")

    exactly_once: Cron = Field(
        default=DEFAULT_EXACTLY_ONCE_CRON,
        description="cron (UTC) of the exactly_once check, a full scan of the table",
    )


class CleanSourceDocument(_Section):
    model_config = ConfigDict(title="clean_source")

    mode: Annotated[str, PlainValidator(_clean_mode)] = Field(description="off | archive | delete")
    archive_to: Location | None = Field(
        default=None,
        description="archive only: s3://bucket/prefix/ or a local folder (relative to this "
        "file); each object is kept under its key below it",
    )

    @model_validator(mode="after")
    def _archive_needs_location(self) -> CleanSourceDocument:
        if self.mode == "archive" and self.archive_to is None:
            raise ValueError("mode archive needs archive_to (s3://bucket/prefix/ or a folder)")
        if self.mode != "archive" and self.archive_to is not None:
            raise ValueError(f"archive_to is only used by mode archive, not {self.mode}")
        return self


def _clean_source(value: object) -> object:
    """The scalar form (``off`` / ``delete``) as ``{mode: ...}``; ``archive`` has no sensible
    default location, so its scalar form is refused with the form to write instead."""
    if not isinstance(value, Mapping):
        mode = "off" if value is None else _clean_mode(value)
        if mode == "archive":
            raise ValueError(
                "archive needs a location: write clean_source: {mode: archive, "
                "archive_to: s3://bucket/prefix/} (or a local folder)"
            )
        return {"mode": mode}
    return value


_CLEAN_SOURCE_JSON: dict[str, Any] = {
    "anyOf": [
        {"enum": ["off", "delete", False]},
        {
            "type": "object",
            "properties": {
                "mode": {"enum": list(CLEAN_MODES)},
                "archive_to": {"type": "string", "minLength": 1},
            },
            "required": ["mode"],
            "additionalProperties": False,
        },
    ]
}


def _queue_url(value: object) -> str:
    text = _string(value)
    if not re.fullmatch(r"https?://[^/\s@]+/[^\s]+", text):
        raise ValueError(
            "expected an SQS queue URL like "
            f"https://sqs.<region>.amazonaws.com/<account>/<queue>, got {text!r}"
        )
    return text


QueueUrl = Annotated[
    str,
    PlainValidator(_queue_url),
    WithJsonSchema({"type": "string", "pattern": r"^https?://[^/\s@]+/\S+$"}),
]


class DiscoveryDocument(_Section):
    model_config = ConfigDict(title="discovery")

    mode: Literal["listing", "notifications"] = Field(
        default="listing",
        description="listing: list the landing prefix every tick; notifications: receive S3 "
        "event notifications from queue_url (S3 landings only)",
    )
    queue_url: QueueUrl | None = Field(
        default=None, description="the SQS queue S3 sends the landing's events to"
    )
    full_listing_every: Seconds | None = Field(
        default=None,
        description="notifications: a backstop full listing this often (seconds, or a "
        "duration: 6h, 1d; default 6h)",
    )
    dead_letter_queue_url: QueueUrl | None = Field(
        default=None,
        description="notifications: where unparseable messages go (default: deleted, counted)",
    )
    max_receives: PositiveInt | None = Field(
        default=None,
        description=f"notifications: receives of an unparseable message before it is moved "
        f"aside (default {DEFAULT_MAX_RECEIVES})",
    )
    visibility_timeout: Seconds | None = Field(
        default=None,
        description="notifications: how long a received message stays invisible while a tick "
        "handles it; a crashed tick's messages come back after it (seconds or a duration, "
        f"1-43200; default {DEFAULT_VISIBILITY_TIMEOUT_S})",
    )


class SourceDocument(_Section):
    model_config = ConfigDict(title="source")

    landing: Location = Field(
        description="local folder (relative to this file) or s3://bucket/prefix to ingest from"
    )
    format: Annotated[str, PlainValidator(_format), WithJsonSchema({"enum": list(FORMATS)})] = (
        Field(description="object format; .gz/.zst/.bz2 objects are decompressed by suffix")
    )
    csv: CsvDocument | None = Field(default=None, description="CSV dialect (format: csv only)")
    table: Annotated[
        str,
        PlainValidator(_table),
        WithJsonSchema(
            {
                "type": "string",
                "pattern": f"^{_IDENT_RE.pattern}\\.{_IDENT_RE.pattern}$",
            }
        ),
    ] = Field(description="target Iceberg table, <namespace>.<table>; one source per table")
    partition: PartitionDocument = Field(description="how an object's day is found")
    schema_: (
        Annotated[
            dict[FieldName, SchemaType],
            BeforeValidator(_mapping),
            AfterValidator(_declared_fields),
        ]
        | None
    ) = Field(
        default=None,
        alias="schema",
        description="declared fields (name: type), cast strictly; absent: inferred from data",
        json_schema_extra={
            "minProperties": 1,
            "propertyNames": {"not": {"enum": list(LINEAGE_COLUMNS + RESERVED_COLUMNS)}},
        },
    )
    max_files_per_batch: PositiveInt = Field(
        default=DEFAULT_MAX_FILES_PER_BATCH, description="most objects in one batch"
    )
    max_bytes_per_batch: Size = Field(
        default=DEFAULT_MAX_BYTES_PER_BATCH,
        description="most object bytes in one batch (e.g. 64MiB)",
    )
    max_record_bytes: Size = Field(
        default=DEFAULT_MAX_RECORD_BYTES, description="largest record; larger ones are quarantined"
    )
    max_decompressed_bytes: Size = Field(
        default=DEFAULT_MAX_DECOMPRESSED_BYTES,
        description="most bytes one object may decompress to",
    )
    max_compression_ratio: PositiveInt = Field(
        default=DEFAULT_MAX_COMPRESSION_RATIO, description="largest decompressed/compressed ratio"
    )
    allow_overwrites: Bool = Field(
        default=False, description="claim a claimed key again when it is re-written (new etag)"
    )
    clean_source: Annotated[
        CleanSourceDocument,
        BeforeValidator(_clean_source),
        WithJsonSchema(_CLEAN_SOURCE_JSON),
    ] = Field(
        default_factory=lambda: CleanSourceDocument(mode="off"),
        description="after the commit record: leave (off), archive (copy under archive_to, "
        "then delete) or delete the batch's objects; {mode: archive, archive_to: ...}",
    )
    owners: list[Annotated[str, PlainValidator(_tag)]] | None = Field(
        default=None, description="owners of the table asset (user emails or team:name)"
    )
    tags: dict[str, Annotated[str, PlainValidator(_tag)]] | None = Field(
        default=None, description="tags of the table asset"
    )
    freshness: FreshnessDocument | None = Field(
        default=None, description="a freshness policy for the table asset"
    )
    checks: ChecksDocument | None = Field(default=None, description="when checks run")
    compaction: CompactionDocument | None = Field(
        default=None, description="compaction of the table's small files (on by default)"
    )
    maintenance: MaintenanceDocument | None = Field(
        default=None, description="scheduled maintenance of the table (on by default)"
    )
    sort_by: list[NonEmptyStr] | None = Field(
        default=None,
        description="columns compacted files are sorted by (recorded as the "
        "table's sort order), e.g. [ts]",
    )
    min_age: (
        Annotated[
            float,
            PlainValidator(_min_age),
            WithJsonSchema({"type": ["number", "string"], "minimum": 0}),
        ]
        | None
    ) = Field(
        default=None,
        description="seconds an object must be unchanged before it is claimed "
        f"(default: {DEFAULT_LOCAL_MIN_AGE_S:g} for a local landing, 0 for S3)",
    )
    discovery: DiscoveryDocument | None = Field(
        default=None, description="how new objects are found (default: listing)"
    )


class ConfigDocument(_Section):
    """``lockgate.yaml`` as written (paths already absolute); ``_Builder`` freezes it."""

    model_config = ConfigDict(title="lockgate.yaml")

    warehouse: Location = Field(
        description="where tables live: local folder (relative to this file) or s3://bucket/prefix"
    )
    ledger: Location | None = Field(
        default=None, description="where the ledgers live (default: <warehouse>/_ledger)"
    )
    s3: S3Document = Field(default_factory=S3Document, description="how to reach S3")
    catalog: Annotated[dict[str, CatalogValue], BeforeValidator(_mapping)] = Field(
        default_factory=dict,
        description="pyiceberg catalog properties (default: the built-in create-only catalog)",
    )
    dagster: DagsterDocument = Field(default_factory=DagsterDocument)
    sources: Annotated[
        dict[SourceName, SourceDocument],
        BeforeValidator(_mapping),
        AfterValidator(_not_empty("declare at least one source")),
    ] = Field(
        description="source name -> source",
        json_schema_extra={"minProperties": 1, "additionalProperties": False},
    )


# -- from the document to the frozen config ---------------------------------------------------


class _Builder:
    """Freezes a validated document and checks what involves more than one key."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, key_path: str, message: str) -> NoReturn:
        raise ConfigError(message, key_path=key_path, file=self.file)

    def config(self, doc: ConfigDocument) -> LockgateConfig:
        ledger = doc.ledger if doc.ledger is not None else _child(doc.warehouse, "_ledger")
        sources: dict[str, SourceConfig] = {}
        for name, spec in doc.sources.items():
            src = self.source(name, spec)
            self.check_against_state(src, doc.warehouse, ledger)
            self.check_archive(src, doc.warehouse, ledger)
            for other in sources.values():
                self.check_against_source(src, other)
            sources[name] = src
        dagster = DagsterSettings(**doc.dagster.model_dump())
        for src in sources.values():
            self.check_upkeep(src, dagster)
        return LockgateConfig(
            path=self.file,
            warehouse=doc.warehouse,
            ledger=ledger,
            s3=S3Options.from_env(endpoint_url=doc.s3.endpoint_url, region=doc.s3.region),
            sources=MappingProxyType(sources),
            dagster=dagster,
            catalog=MappingProxyType(
                {k: v for k, v in doc.catalog.items() if not isinstance(v, EnvRef)}
            ),
            catalog_env=MappingProxyType(
                {k: v.name for k, v in doc.catalog.items() if isinstance(v, EnvRef)}
            ),
        )

    def source(self, name: str, spec: SourceDocument) -> SourceConfig:
        kp = f"sources.{name}"
        csv = CsvOptions()
        if spec.csv is not None:
            if spec.format != "csv":
                self.fail(f"{kp}.csv", f"csv options given but format is {spec.format!r}")
            if spec.csv.quote_char == spec.csv.delimiter:
                self.fail(f"{kp}.csv.quote_char", "must differ from the delimiter")
            csv = CsvOptions(**spec.csv.model_dump())
        namespace, table_name = spec.table.split(".")
        return SourceConfig(
            name=name,
            landing=spec.landing,
            format=typing.cast(Format, spec.format),
            namespace=namespace,
            table_name=table_name,
            partition_start=spec.partition.start,
            partition_pattern=spec.partition.pattern,
            csv=csv,
            schema=None if spec.schema_ is None else tuple(spec.schema_.items()),
            max_files_per_batch=spec.max_files_per_batch,
            max_bytes_per_batch=spec.max_bytes_per_batch,
            max_record_bytes=spec.max_record_bytes,
            max_decompressed_bytes=spec.max_decompressed_bytes,
            max_compression_ratio=spec.max_compression_ratio,
            allow_overwrites=spec.allow_overwrites,
            clean_source=typing.cast(CleanSource, spec.clean_source.mode),
            clean_archive_to=spec.clean_source.archive_to,
            min_age_s=spec.min_age,
            owners=tuple(spec.owners or ()),
            tags=tuple(sorted((spec.tags or {}).items())),
            freshness_max_lag_s=spec.freshness.max_lag if spec.freshness else None,
            exactly_once_cron=(
                spec.checks.exactly_once if spec.checks else DEFAULT_EXACTLY_ONCE_CRON
            ),
            compaction=self.compaction(kp, spec),
            maintenance=self.maintenance(spec),
            discovery=self.discovery(kp, spec),
        )

    def discovery(self, kp: str, spec: SourceDocument) -> DiscoverySettings:
        """``notifications`` needs a queue and an S3 landing; the notification-only keys are
        refused in ``listing`` mode (they would do nothing there)."""
        doc = spec.discovery
        if doc is None:
            return DiscoverySettings()
        if doc.mode == "listing":
            for key in (
                "queue_url",
                "full_listing_every",
                "dead_letter_queue_url",
                "max_receives",
                "visibility_timeout",
            ):
                if getattr(doc, key) is not None:
                    self.fail(f"{kp}.discovery.{key}", "only used with mode: notifications")
            return DiscoverySettings()
        if doc.queue_url is None:
            self.fail(f"{kp}.discovery.queue_url", "mode: notifications needs the SQS queue URL")
        if not _is_s3(spec.landing):
            self.fail(
                f"{kp}.discovery.mode",
                "notifications need an s3:// landing (S3 event notifications); a local landing "
                "is discovered by listing",
            )
        if doc.dead_letter_queue_url == doc.queue_url:
            self.fail(f"{kp}.discovery.dead_letter_queue_url", "must differ from queue_url")
        visibility = doc.visibility_timeout
        if visibility is not None and not 1 <= visibility <= 43200:
            self.fail(f"{kp}.discovery.visibility_timeout", "must be 1 s to 12 h (SQS's range)")
        return DiscoverySettings(
            mode="notifications",
            queue_url=doc.queue_url,
            full_listing_every_s=(
                doc.full_listing_every
                if doc.full_listing_every is not None
                else DEFAULT_FULL_LISTING_EVERY_S
            ),
            dead_letter_queue_url=doc.dead_letter_queue_url,
            max_receives=doc.max_receives or DEFAULT_MAX_RECEIVES,
            visibility_timeout_s=visibility or DEFAULT_VISIBILITY_TIMEOUT_S,
        )

    def compaction(self, kp: str, spec: SourceDocument) -> CompactionSettings:
        doc = spec.compaction or CompactionDocument()
        if doc.min_files < 2:
            self.fail(f"{kp}.compaction.min_files", "must be at least 2")
        sort_by = tuple(spec.sort_by or ())
        if len(set(sort_by)) != len(sort_by):
            self.fail(f"{kp}.sort_by", f"a column is named twice: {list(sort_by)}")
        if spec.schema_ is not None:
            known = {*spec.schema_, *LINEAGE_COLUMNS, *RESERVED_COLUMNS}
            unknown = [c for c in sort_by if c not in known]
            if unknown:
                self.fail(f"{kp}.sort_by", f"columns {unknown} are not in the declared schema")
        return CompactionSettings(
            cron=None if doc.schedule == "off" else doc.schedule,
            target_file_size=doc.target_file_size,
            min_files=doc.min_files,
            sort_by=sort_by,
        )

    def maintenance(self, spec: SourceDocument) -> MaintenanceSettings:
        doc = spec.maintenance or MaintenanceDocument()
        return MaintenanceSettings(
            cron=None if doc.schedule == "off" else doc.schedule,
            orphan_older_than_s=doc.orphan_older_than,
        )

    def check_upkeep(self, src: SourceConfig, dagster: DagsterSettings) -> None:
        """The orphan window must outlast any run: a run's staged files are unreferenced
        until it commits."""
        least = dagster.longest_run_s([src]) + ORPHAN_MARGIN_S
        if src.maintenance.orphan_older_than_s < least:
            self.fail(
                f"sources.{src.name}.maintenance.orphan_older_than",
                f"{src.maintenance.orphan_older_than_s}s is shorter than the longest run "
                f"({dagster.longest_run_s([src])}s: dagster.max_runtime_seconds, else the "
                "batch limit or the upkeep jobs' limit) plus an hour: "
                f"at least {least}s, else a file a live run is about to commit could be deleted",
            )

    def check_against_state(self, src: SourceConfig, warehouse: str, ledger: str) -> None:
        """The warehouse and the ledger must not lie inside a landing prefix."""
        for where, what in ((warehouse, "warehouse"), (ledger, "ledger")):
            if _inside(where, src.landing):
                self.fail(
                    f"sources.{src.name}.landing",
                    f"the {what} ({where}) lies inside this landing prefix",
                )

    def check_archive(self, src: SourceConfig, warehouse: str, ledger: str) -> None:
        """``clean_source.archive_to`` is in the landing's kind of store (copies are made by
        the store) and shares no location with the landing, the warehouse or the ledger."""
        archive = src.clean_archive_to
        if archive is None:
            return
        kp = f"sources.{src.name}.clean_source.archive_to"
        if _is_s3(archive) != _is_s3(src.landing):
            self.fail(kp, "must be in the same kind of store as the landing (both s3:// or local)")
        for where, what in ((src.landing, "the landing prefix"), (warehouse, "the warehouse")):
            if _inside(archive, where) or _inside(where, archive):
                self.fail(kp, f"{archive} overlaps {what} ({where}): choose a separate location")
        if _inside(archive, ledger) or _inside(ledger, archive):
            self.fail(kp, f"{archive} overlaps the ledger ({ledger}): choose a separate location")

    def check_against_source(self, src: SourceConfig, other: SourceConfig) -> None:
        """``src`` (declared after ``other``) must read other objects and write another table
        than ``other``, and neither table may be the other's quarantine table."""
        both = f"sources {other.name!r} and {src.name!r}"
        if src.landing == other.landing:
            self.fail(
                f"sources.{src.name}.landing",
                f"source {other.name!r} already ingests this landing prefix ({src.landing}); "
                f"{both} would both read its objects",
            )
        for inner, outer, how in ((src, other, "lies inside"), (other, src, "contains")):
            if _inside(inner.landing, outer.landing):
                self.fail(
                    f"sources.{src.name}.landing",
                    f"this landing prefix ({src.landing}) {how} the landing prefix of source "
                    f"{other.name!r} ({other.landing}); {both} would both read the objects "
                    f"under {inner.landing}",
                )
        for a, b in ((src, other), (other, src)):
            archive = a.clean_archive_to
            for where, what in ((b.landing, "landing prefix"), (b.clean_archive_to, "archive")):
                if archive and where and (_inside(archive, where) or _inside(where, archive)):
                    self.fail(
                        f"sources.{a.name}.clean_source.archive_to",
                        f"{archive} overlaps the {what} of source {b.name!r} ({where}); "
                        f"{both} must not share objects",
                    )
        if _same_table(src.table, other.table):
            self.fail(
                f"sources.{src.name}.table",
                f"{both} both write table {other.table}; a rebuild of one would replace the "
                "other's rows: give each source its own table",
            )
        for table_of, quarantined in ((src, other), (other, src)):
            if _same_table(table_of.table, quarantined.table + QUARANTINE_SUFFIX):
                self.fail(
                    f"sources.{src.name}.table",
                    f"table {table_of.table} of source {table_of.name!r} is the quarantine "
                    f"table of source {quarantined.name!r} (table {quarantined.table}); "
                    f"{both} must not share it",
                )


def _same_table(a: str, b: str) -> bool:
    """Whether two ``<namespace>.<table>`` names denote one table; case-insensitive, since
    catalogs and file systems may be."""
    return a.casefold() == b.casefold()


# -- pydantic errors as ConfigError -----------------------------------------------------------


_MORE_SHOWN = 5


def _config_error(err: ValidationError, file: str) -> ConfigError:
    """The first problem as the error's key path and reason; the others follow in the text."""
    problems = [(_key_path(e["loc"]), _reason(e)) for e in err.errors(include_url=False)]
    (key_path, reason), rest = problems[0], problems[1:]
    if rest:
        more = "; ".join(f"{k}: {r}" for k, r in rest[:_MORE_SHOWN])
        if len(rest) > _MORE_SHOWN:
            more += "; ..."
        reason = f"{reason} (and {len(rest)} more: {more})"
    return ConfigError(reason, key_path=key_path, file=file)


def _key_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc if p != "[key]") or "(top level)"


def _reason(e: Any) -> str:
    kind, loc = e["type"], e["loc"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        allowed = ", ".join(sorted(_keys_at(loc[:-1])))
        return f"unknown key (allowed: {allowed})"
    if kind == "value_error" and "error" in e.get("ctx", {}):
        return str(e["ctx"]["error"])
    if kind == "invalid_key" or (kind == "string_type" and loc and loc[-1] == "[key]"):
        return "keys must be strings"
    return str(e["msg"])


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model allows at ``loc`` (a mapping's key path in the document)."""
    tp: Any = ConfigDocument
    parts = list(loc)
    while parts:
        tp = _unwrap(tp)
        part = parts.pop(0)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias or n: f for n, f in tp.model_fields.items()}
            tp = fields[str(part)].annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    """``tp`` without ``Annotated`` metadata and without ``| None``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (UnionType, typing.Union):
            args = [a for a in typing.get_args(tp) if a is not NoneType]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp
