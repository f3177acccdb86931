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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import pyarrow as pa

from resources.store import S3Options

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
    raise NotImplementedError


def parse_schema_type(spec: str) -> pa.DataType:
    """The Arrow type of one schema type name (see ``SCHEMA_TYPES``); ``ValueError`` if unknown.

    ``timestamp`` is UTC without zone, microseconds (``timestamp[us]``); ``timestamptz`` is
    ``timestamp[us, tz=UTC]``; ``decimal(p,s)`` is ``decimal128(p, s)`` with 1 <= p <= 38,
    0 <= s <= p.
    """
    raise NotImplementedError


@dataclass(frozen=True)
class CsvOptions:
    """CSV/TSV dialect. ``quote_char`` None disables quoting. Without a header, columns are
    named after the declared schema (in order) or ``f0, f1, ...`` when inferred."""

    delimiter: str = ","
    header: bool = True
    quote_char: str | None = '"'


@dataclass(frozen=True)
class DagsterSettings:
    sensor_interval_seconds: int = 30
    max_runs_per_tick: int = 20


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
        raise NotImplementedError

    def partition_day(self, key: str, last_modified: datetime) -> date:
        """The partition day of an object: the pattern's first group (``YYYY-MM-DD``; or the
        named groups ``year``/``month``/``day``) if the pattern matches the key (``re.search``)
        and yields a valid date, else the UTC day of ``last_modified``."""
        raise NotImplementedError

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
        raise NotImplementedError


def find_config(path: str | None = None) -> str:
    """The config file to use: ``path``, else ``$LOCKGATE_CONFIG``, else ``./lockgate.yaml``.
    ``ConfigError`` if that file does not exist."""
    raise NotImplementedError


def parse_config(data: Any, path: str) -> LockgateConfig:
    """Validate an already-parsed YAML document that came from ``path`` (used for relative
    paths and error messages)."""
    raise NotImplementedError


def load_config(path: str | None = None) -> LockgateConfig:
    """Find, read, parse and validate the config (see ``find_config`` / ``parse_config``)."""
    raise NotImplementedError
