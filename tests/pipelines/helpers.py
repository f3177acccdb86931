"""A local Lockgate (config, landing, ledger and warehouse under ``tmp_path``) for the unit tests
of ``execute_batch``, ``rebuild`` and ``verify``: land JSONL objects, claim them, read the table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pyiceberg.exceptions import NoSuchTableError

from lockgate.resources.config import SourceConfig, load_config
from lockgate.resources.ledger import Claim
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import LocalStore
from tests.platform_helpers import Lander, source_spec, write_config

DAY = "2026-01-05"
SOURCE = "ev"


def local_runtime(tmp_path: Path, **extra: Any) -> Runtime:
    """A runtime of one JSONL source ``ev`` (declared ``{id: long, v: string}``, day from the
    key, at most 2 files per batch) with everything under ``tmp_path``."""
    spec = source_spec(SOURCE, str(tmp_path / "landing"), **extra)
    path = write_config(
        tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources={SOURCE: spec}
    )
    return Runtime.from_config(load_config(str(path)))


def lander(tmp_path: Path) -> Lander:
    return Lander(LocalStore(tmp_path / "landing"))


def claim_keys(rt: Runtime, keys: list[str], day: str = DAY) -> Claim:
    """Claim the landed ``keys`` as the next batch of ``day``."""
    source = rt.source(SOURCE)
    landing = rt.landing(source)
    return rt.ledger(source).claim(day, [landing.head(k) for k in keys])


def table_ids(rt: Runtime, identifier: str | None = None) -> Counter[int]:
    """The multiset of ``id`` in the source's table (empty if there is no table)."""
    try:
        table = rt.tables.load(identifier or src(rt).table)
    except NoSuchTableError:
        return Counter()
    return Counter(table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())


def src(rt: Runtime) -> SourceConfig:
    return rt.source(SOURCE)
