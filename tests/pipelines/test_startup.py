"""Start-up: ``lockgate ingest`` does not import pandas (pyiceberg -> pyarrow.dataset would load
it, about a second per process), nor run the modules pyiceberg imports but ingest never calls
(pyparsing's row-filter parser, strictyaml), and all of them still work afterwards in the same
process; with nothing pending it loads no table code at all."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.platform_helpers import python_result, source_spec, write_config

CODE = """
import json, sys
from lockgate.pipelines.cli import main
rc = main(["--config", sys.argv[1], "ingest"])
loaded = "pandas" in sys.modules
unused = sorted(m for m in ("pyparsing", "strictyaml.ruamel") if m in sys.modules)
import pyarrow as pa
frame = pa.table({"a": [1, 2]}).to_pandas()  # imported on first use
from pyiceberg.expressions.parser import parse  # loaded on first use
import strictyaml
doc = strictyaml.load("a: 1").data
print("RESULT", json.dumps({"rc": rc, "pandas_at_ingest": loaded, "frame_rows": len(frame),
      "unused_at_ingest": unused, "filter": str(parse("_batch_id == 3")), "yaml": doc}))
"""


def run_code(code: str, config: Path) -> tuple[Any, str]:
    """``code`` run in a fresh interpreter with ``config`` as its argument: the JSON of its
    ``RESULT`` line, and its stdout."""
    return python_result(code, str(config))


def events_config(tmp_path: Path, body: bytes) -> Path:
    """A config with one source ``events`` over a landing holding one object, ``body``."""
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "events-2026-03-01.jsonl").write_bytes(body)
    return write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={"events": source_spec("events", str(landing))},
    )


def test_ingest_does_not_import_pandas(tmp_path: Path) -> None:
    config = events_config(tmp_path, b'{"id": 1, "v": "a"}\n{"id": 2}\n')
    result, stdout = run_code(CODE, config)
    assert result == {
        "rc": 0,
        "pandas_at_ingest": False,
        "frame_rows": 2,
        "unused_at_ingest": [],
        "filter": "EqualTo(term=Reference(name='_batch_id'), literal=LongLiteral(3))",
        "yaml": {"a": "1"},
    }
    assert "idle after 1 batches, 2 rows, 0 quarantined" in stdout, stdout


IDLE = """
import json, sys
from lockgate.pipelines.cli import main
rc = main(["--config", sys.argv[1], "ingest"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pyiceberg", "pandas")
               or m in ("lockgate.pipelines.batch", "lockgate.resources.tables"))
print("RESULT", json.dumps({"rc": rc, "heavy": heavy}))
"""


def test_idle_ingest_imports_no_table_code(tmp_path: Path) -> None:
    """With nothing pending, ``lockgate ingest`` lists and reads the ledger only: the catalog,
    the table store and the batch path (pyiceberg, ~0.6 s CPU of imports) are not loaded."""
    from lockgate.pipelines.cli import main

    config = events_config(tmp_path, b'{"id": 1, "v": "a"}\n')
    assert main(["--config", str(config), "ingest"]) == 0  # the table exists, batch 0 committed
    result, stdout = run_code(IDLE, config)
    assert result == {"rc": 0, "heavy": []}
    assert "events: idle after 0 batches, 0 rows" in stdout, stdout


def test_batch_loads_its_table_metadata_four_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch on an existing table reads its metadata 4 times (committed? / declared schema /
    staging / the commit loop's reload) and checks the table's existence once without reading
    it; every load is a hint read, two probes and a metadata parse."""
    from lockgate.pipelines.ingest import ingest_source
    from lockgate.resources.runtime import Runtime

    landing = tmp_path / "landing"
    landing.mkdir()
    config = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={"events": source_spec("events", str(landing))},
    )
    rt = Runtime.from_config(str(config))
    source = rt.source("events")
    (landing / "events-2026-03-01.jsonl").write_bytes(b'{"id": 1, "v": "a"}\n')
    assert ingest_source(rt, source).rows == 1  # creates the table
    catalog = rt.tables.catalog
    loads: list[str] = []
    real = catalog.load_table

    def counting(identifier: Any) -> Any:
        loads.append(str(identifier))
        return real(identifier)

    monkeypatch.setattr(catalog, "load_table", counting)
    (landing / "events-2026-03-02.jsonl").write_bytes(b'{"id": 2, "v": "b"}\n')
    report = ingest_source(rt, source)
    assert [b.rows for b in report.batches] == [1]
    assert loads == ["lake.events"] * 4


def test_gc_paused_restores_the_collector_and_freezes_what_loaded() -> None:
    import gc

    from lockgate.pipelines.startup import gc_paused

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        with gc_paused():
            assert not gc.isenabled()
            loaded = [[i] for i in range(1_000)]  # container objects the collector tracks
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(loaded)  # never scanned again
        gc.disable()
        with gc_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
        gc.unfreeze()


def test_main_leaves_the_collector_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    import gc

    from lockgate.pipelines.cli import main

    try:
        assert main(["schema"]) == 0
        assert gc.isenabled()
        assert json.loads(capsys.readouterr().out)["title"]
    finally:
        gc.unfreeze()


PLUGINS = """
import json, os, sys
from lockgate.pipelines.startup import without_pydantic_plugins
without_pydantic_plugins()
import pydantic
class M(pydantic.BaseModel):
    x: int
first = {"env": os.environ.get("PYDANTIC_DISABLE_PLUGINS"), "valid": M(x=1).x,
         "scanned": "importlib.metadata" in sys.modules}
os.environ["PYDANTIC_DISABLE_PLUGINS"] = ""  # turned on later in the process
class N(pydantic.BaseModel):
    y: int
loader = sys.modules["pydantic.plugin._loader"]
print("RESULT", json.dumps({**first, "later": N(y=2).y, "handed_over": loader._plugins == {}}))
"""


@pytest.mark.parametrize(
    ("given", "expected", "scanned"), [(None, "__all__", False), ("", "", True)]
)
def test_pydantic_plugins_are_off_unless_asked_for(
    given: str | None, expected: str, scanned: bool
) -> None:
    """The command skips pydantic's scan of every distribution's entry points, and the import
    of ``importlib.metadata`` it needs; an operator's setting (here: the empty string, plugins
    on) stands. Plugins turned on later in the process: pydantic's own loader takes over (and
    finds none installed here)."""
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if given is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = given
    result, _ = python_result(PLUGINS, env=env)
    assert result == {
        "env": expected,
        "valid": 1,
        "scanned": scanned,
        "later": 2,
        "handed_over": True,
    }


BLAS = """
import json, os
from lockgate.pipelines.startup import without_blas_threads
without_blas_threads()
import numpy
print("RESULT", json.dumps({"env": os.environ.get("OPENBLAS_NUM_THREADS"),
      "threads": len(os.listdir("/proc/self/task"))}))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
@pytest.mark.parametrize("given", [None, "2"])
def test_blas_starts_no_threads_unless_asked_for(given: str | None) -> None:
    """After the command's switch, importing numpy starts no OpenBLAS thread (the process has
    its main thread only); an operator's setting stands (2 threads where 2 cores exist)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    result, _ = python_result(BLAS, env=env)
    if given is None:
        assert result == {"env": "1", "threads": 1}
    else:
        assert result["env"] == given
        assert result["threads"] == min(2, os.cpu_count() or 1)


def test_lazy_module_imports_once_at_first_use_from_any_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LazyModule`` imports nothing until read; threads reading first at once wait for ONE
    import (the module's body runs once) and all see the module; the global is rebound to it."""
    import threading

    from lockgate.pipelines.startup import LazyModule

    (tmp_path / "lg_slow_module.py").write_text(
        "import time\nRUNS = []\nRUNS.append(1)\ntime.sleep(0.2)\nVALUE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict[str, object] = {}
    namespace["slow"] = LazyModule("lg_slow_module", namespace, "slow")
    assert "lg_slow_module" not in sys.modules
    seen: list[object] = []
    threads = [
        threading.Thread(target=lambda: seen.append(namespace["slow"].VALUE))  # type: ignore[attr-defined]
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    module = sys.modules.pop("lg_slow_module")
    assert seen == [42] * 4
    assert module.RUNS == [1]
    assert namespace["slow"] is module
