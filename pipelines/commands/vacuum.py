"""``lockgate vacuum``: delete data files no snapshot references, once older than a window.

``lockgate vacuum [--table ns.t] [--older-than 3d] [--dry-run] [--warehouse URL] [--no-run-alive]``

Without ``--table`` every table of the config's sources and their ``__quarantine`` tables
(or, with ``--warehouse`` alone, every table found in the warehouse) is vacuumed. The window
must exceed the longest run: a running batch's staged files are unreferenced until it
commits. A window shorter than ``dagster.max_runtime_seconds`` (of the config; its default
without one) plus ``VACUUM_MARGIN`` is refused (exit 2), unless ``--no-run-alive`` states
that no batch run or rebuild can be alive (everything stopped).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta
from typing import TextIO

from pyiceberg.catalog import Catalog

from lockgate.pipelines.commands.common import CommandError
from lockgate.resources.catalog import ObjectStoreCatalog, make_catalog
from lockgate.resources.config import DagsterSettings, find_config, load_config
from lockgate.resources.errors import LockgateError, MissingTable
from lockgate.resources.maintenance import VacuumReport, min_vacuum_window, vacuum
from lockgate.resources.runtime import quarantine_table
from lockgate.resources.store import S3Options

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``3d``, ``1w`` -> timedelta; ``ValueError`` otherwise."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"expected a duration like 3d, 12h, 15m, 90s, 1w; got {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", help="namespace.table (default: every table)")
    parser.add_argument(
        "--older-than",
        default="3d",
        help="only delete unreferenced files older than this (default 3d; e.g. 12h, 1w)",
    )
    parser.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    parser.add_argument("--warehouse", help="warehouse URL (default: from lockgate.yaml)")
    parser.add_argument("--endpoint-url", help="S3 endpoint (default: $AWS_ENDPOINT_URL)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-run-alive",
        action="store_true",
        help="accept a window shorter than the longest run: only when no batch run or "
        "rebuild can be alive (all stopped)",
    )


class _Bar:
    """A minimal progress bar on ``stream`` (default: ``sys.stderr`` as it is when the bar is
    made, not when this module was imported; tqdm when available)."""

    def __init__(self, label: str, enabled: bool, stream: TextIO | None = None) -> None:
        stream = stream if stream is not None else sys.stderr
        self.label = label
        self.enabled = enabled and stream.isatty()
        self.stream = stream
        self._tqdm = None
        if self.enabled:
            try:
                from tqdm import tqdm

                self._tqdm = tqdm(desc=label, unit="file", file=stream, leave=False)
            except ImportError:
                self._tqdm = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self._tqdm is not None:
            if total is not None and self._tqdm.total != total:
                self._tqdm.total = total
            self._tqdm.n = done
            self._tqdm.refresh()
            return
        self.stream.write(f"\r{self.label}: {done}/{total if total is not None else '?'}")
        self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled:
            self.stream.write("\n")


def _catalog_and_tables(args: argparse.Namespace) -> tuple[Catalog, list[str], int]:
    """The catalog, the tables to vacuum, and the longest run (``max_runtime_seconds``)."""
    tables: list[str] = [args.table] if args.table else []
    max_runtime = DagsterSettings().longest_run_s()
    if args.warehouse:
        s3 = S3Options.from_env(endpoint_url=args.endpoint_url)
        catalog = make_catalog(args.warehouse, s3)
        try:
            path: str | None = find_config(getattr(args, "config", None))
        except ValueError:  # no config: the default longest run
            path = None
        if path is not None:
            found = load_config(path)
            max_runtime = found.dagster.longest_run_s(found.sources.values())
    else:
        cfg = load_config(getattr(args, "config", None))
        max_runtime = cfg.dagster.longest_run_s(cfg.sources.values())
        catalog = make_catalog(cfg.warehouse, cfg.s3, cfg.catalog_properties() or None)
        if not tables:
            tables = sorted(
                {t for src in cfg.sources.values() for t in (src.table, quarantine_table(src))}
            )
    if not tables:
        if not isinstance(catalog, ObjectStoreCatalog):
            raise ValueError("--table is required for this catalog")
        tables = [
            f"{ns}.{t}" for (ns,) in catalog.list_namespaces() for _, t in catalog.list_tables(ns)
        ]
    return catalog, tables, max_runtime


def _print_report(r: VacuumReport, out: TextIO) -> None:
    verb = "would delete" if r.dry_run else "deleted"
    out.write(
        f"{r.table}: scanned {r.scanned}, referenced {r.referenced}, too young {r.too_young}, "
        f"{verb} {len(r.deleted)} ({r.bytes_deleted} bytes)\n"
    )
    if r.dry_run:
        for loc in r.deleted:
            out.write(f"  {loc}\n")


def run(args: argparse.Namespace) -> int:
    """Errors are raised: a bad ``--older-than`` as ``CommandError``, a missing ``--table`` as
    ``MissingTable``, config errors as ``ConfigError``."""
    try:
        older_than = parse_duration(args.older_than)
        catalog, tables, max_runtime = _catalog_and_tables(args)
    except LockgateError:
        raise
    except ValueError as e:
        raise CommandError(str(e)) from None
    min_window = timedelta(0) if args.no_run_alive else min_vacuum_window(max_runtime)
    if older_than < min_window:
        raise CommandError(
            f"--older-than {args.older_than} is shorter than the longest run "
            f"(dagster.max_runtime_seconds = {max_runtime}) plus a margin: at least "
            f"{min_window}. A run still alive may yet commit the staged files it would delete; "
            "nothing was deleted. Use a longer window, or --no-run-alive when every run and "
            "rebuild is stopped"
        )
    for table in tables:
        if not catalog.table_exists(table):
            # a configured source that has not committed anything yet has no table
            if args.table:
                raise MissingTable.named(table)
            print(f"{table}: no table yet, nothing to vacuum")
            continue
        bar = _Bar(f"vacuum {table}", enabled=not args.no_progress)
        try:
            report = vacuum(
                catalog,
                table,
                older_than=older_than,
                dry_run=args.dry_run,
                progress=bar,
                min_window=min_window,
            )
        finally:
            bar.close()
        _print_report(report, sys.stdout)
    return 0
