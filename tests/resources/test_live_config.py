"""``live_config.current_source``: what a loaded code location's ticks and runs act on after
``lockgate.yaml`` is edited -- the file as it is now, or ``DefinitionsStale`` naming what the
loaded definitions cannot follow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lockgate.resources.config import ConfigError, load_config
from lockgate.resources.live_config import DefinitionsStale, current_source
from tests.platform_helpers import source_spec, write_config


def _write(tmp_path: Path, **specs: dict[str, Any]) -> Path:
    sources = {
        name: {**source_spec(name, str(tmp_path / "landing" / name)), **spec}
        for name, spec in specs.items()
    }
    path = write_config(tmp_path / "lockgate.yaml", warehouse=str(tmp_path / "wh"), sources=sources)
    st = path.stat()  # a distinct mtime for every write, even on a coarse clock
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + len(path.read_bytes())))
    return path


def test_unchanged_and_moved_landing_need_no_reload(tmp_path: Path) -> None:
    loaded = load_config(str(_write(tmp_path, ev={}, other={})))
    cfg, src = current_source(loaded, loaded.source("ev"))
    assert src == loaded.source("ev") and cfg.sources.keys() == loaded.sources.keys()
    _write(tmp_path, ev={"landing": str(tmp_path / "moved"), "max_files_per_batch": 7}, other={})
    cfg, src = current_source(loaded, loaded.source("ev"))
    assert src.landing == str(tmp_path / "moved") and src.max_files_per_batch == 7
    assert cfg.source("ev") is src


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"table": "lake.renamed"}, "table: 'lake.ev' -> 'lake.renamed'"),
        (
            {"partition": {"pattern": r"(\d{4}-\d{2}-\d{2})", "start": "2026-02-01"}},
            "partition.start",
        ),
    ],
)
def test_a_change_the_definitions_are_built_from_needs_a_reload(
    tmp_path: Path, edit: dict[str, Any], named: str
) -> None:
    loaded = load_config(str(_write(tmp_path, ev={})))
    _write(tmp_path, ev=edit)
    with pytest.raises(DefinitionsStale) as err:
        current_source(loaded, loaded.source("ev"))
    assert named in str(err.value) and "reload the code location" in str(err.value)


def test_a_removed_source_or_an_invalid_file_is_an_error(tmp_path: Path) -> None:
    loaded = load_config(str(_write(tmp_path, ev={}, other={})))
    _write(tmp_path, other={})
    with pytest.raises(DefinitionsStale, match="source 'ev' was removed"):
        current_source(loaded, loaded.source("ev"))
    (tmp_path / "lockgate.yaml").write_text("sources: [not, a, mapping]\n")
    with pytest.raises(ConfigError):
        current_source(loaded, loaded.source("other"))
