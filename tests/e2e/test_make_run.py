"""`make run` really works: one `dagster dev` start, watched over HTTP, GraphQL and a browser.

The module starts ``make run`` once (module fixture), pointed at a free loopback port, a
copy of ``lockgate.yaml`` in a temporary folder (so landing, warehouse and ledger live there)
and a temporary ``LOCKGATE_HOME`` (Dagster home): a developer's ``.lockgate`` is never
touched. The tests then check, in file order:

1. the webserver answers and GraphQL lists one asset per source and every sensor RUNNING;
2. a sensor-requested run succeeds and materializes a partition;
3. Chromium renders the asset page with the asset's description and materialization metadata
   (screenshot and DOM kept under ``test-artifacts/``);
4. SIGINT to the process group (Ctrl-C) stops everything: no process of the instance survives.

Waits are bounded; no assertion is about speed. The figures (seconds to HTTP 200 and to the
first successful run) are written to ``test-artifacts/make_run_timings.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from lockgate.resources.config import LockgateConfig, load_config
from tests.browser import BrowserError, Chromium, chromium_available
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
HTTP_TIMEOUT = 240.0  # first start: venv imports, code server, daemon
RUN_TIMEOUT = 180.0  # sensor tick (15 s) + queue + one run
STOP_GRACE = 120.0  # SIGINT: dagster dev stops webserver, daemon, code server, run workers
BROWSER_TIMEOUT = 90.0

# Variables a surrounding `make test` exports; the inner make must not inherit them.
MAKE_ENV = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES", "DAGSTER_HOME")

T = TypeVar("T")


@dataclass
class MakeRun:
    """A running ``make run`` (its own session, so its pgid is its pid) and what was seen."""

    proc: subprocess.Popen[bytes]
    port: int
    config: LockgateConfig
    home: Path
    log: Path
    started: float
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    stop_outcome: str | None = None
    dagster_home: str = "dagster_home"  # `make run-postgres` uses dagster_home_postgres
    stop_grace: float = STOP_GRACE

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def track(self) -> None:
        """Remember every descendant alive now (run workers come and go between polls)."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for(self, what: str, timeout: float, probe: Callable[[], T | None]) -> T:
        """Poll ``probe`` until it returns a value; fail with the log tail on timeout or if
        ``make run`` exits."""
        deadline = time.monotonic() + timeout
        while True:
            self.track()
            value = probe()
            if value is not None:
                return value
            if self.proc.poll() is not None:
                pytest.fail(
                    f"make run exited ({self.proc.returncode}) while waiting for {what}:\n"
                    + self.log_tail()
                )
            if time.monotonic() >= deadline:
                pytest.fail(f"no {what} within {timeout:.0f} s; log tail:\n{self.log_tail()}")
            time.sleep(2.0)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"{self.base}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer: dict[str, Any] = json.load(resp)
        assert not answer.get("errors"), answer["errors"]
        data: dict[str, Any] = answer["data"]
        return data

    def survivors(self) -> list[psutil.Process]:
        """Processes of this instance still alive: in its process group, seen as its
        descendants, or carrying its DAGSTER_HOME in their environment."""
        alive: dict[int, psutil.Process] = {}
        home = str(self.home / self.dagster_home)
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, OSError):
                if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                    continue
                if os.getpgid(p.pid) == self.proc.pid or p.environ().get("DAGSTER_HOME") == home:
                    alive[p.pid] = p
        for pid, p in self.seen.items():
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive[pid] = p
        return list(alive.values())

    def stop(self) -> str:
        """Ctrl-C: SIGINT to the process group, wait; SIGKILL what is left after the grace.
        Returns "sigint" or "sigkill". Idempotent."""
        if self.stop_outcome is not None:
            return self.stop_outcome
        self.track()
        outcome = "sigint"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        deadline = time.monotonic() + self.stop_grace
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and not self.survivors():
                break
            with contextlib.suppress(OSError), open(self.log.with_suffix(".stop"), "a") as out:
                for p in self.survivors():
                    with contextlib.suppress(psutil.Error):
                        out.write(f"{time.strftime('%T')} {p.pid} {' '.join(p.cmdline())[:150]}\n")
            time.sleep(1.0)
        else:
            outcome = "sigkill"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            for p in self.survivors():
                with contextlib.suppress(psutil.Error):
                    p.kill()
            self.proc.wait(timeout=30)
            psutil.wait_procs(list(self.seen.values()), timeout=30)
        self.timings["stop_s"] = round(time.monotonic() - (deadline - self.stop_grace), 1)
        self.stop_outcome = outcome
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copyfile(self.log, ARTIFACTS / "make_run.log")
        return outcome


def _child_signals() -> None:
    # `dagster dev` started with SIGINT ignored ignores SIGTERM too and never stops: make sure
    # the child starts with default dispositions whatever this process inherited.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def start_make(target: str, variables: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """``make <target> HOST=127.0.0.1 PORT=<port> <variables>`` in its own session (its pgid is
    its pid), default signal dispositions, output to ``log``, without a surrounding make's
    variables."""
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV}
    argv = ["make", "--no-print-directory", "-C", str(REPO), target, "HOST=127.0.0.1"]
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*argv, f"PORT={port}", *variables],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            restore_signals=True,
            preexec_fn=_child_signals,
        )


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    root = tmp_path_factory.mktemp("make_run")
    config_path = root / "lockgate.yaml"
    shutil.copyfile(REPO / "lockgate.yaml", config_path)  # relative paths resolve under root
    config = load_config(str(config_path))
    home = root / ".lockgate"
    port = free_port()
    log = root / "make_run.log"
    proc = start_make("run", [f"LOCKGATE_HOME={home}", f"LOCKGATE_CONFIG={config_path}"], port, log)
    run = MakeRun(proc, port, config, home, log, time.monotonic())
    try:
        yield run
    finally:
        run.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "make_run_timings.json").write_text(json.dumps(run.timings, indent=2))
        print(f"\nmake run figures: {run.timings}")


def _http_ok(url: str) -> bool | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return True if resp.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def test_make_run_honours_state_overrides(tmp_path: Path) -> None:
    """Fast: `make -n run` with overrides points the demo, Dagster home, config and port at
    them, and execs `dagster dev` (so Ctrl-C reaches it) on loopback."""
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV}
    cfg, home = tmp_path / "x.yaml", tmp_path / "state"
    out = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-n",
            "-C",
            str(REPO),
            "run",
            "PORT=3999",
            f"LOCKGATE_HOME={home}",
            f"LOCKGATE_CONFIG={cfg}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert f'-m lockgate.pipelines.demo --home "{home}/dagster_home" --config "{cfg}"' in out, out
    assert "exec .venv/bin/dagster dev -w" in out and "-h 127.0.0.1 -p 3999" in out, out
    assert not home.exists()  # a dry run creates nothing


SENSORS_QUERY = """
{ repositoriesOrError { __typename ... on RepositoryConnection {
    nodes { name location { name } sensors { name sensorState { status } } } } } }
"""
ASSETS_QUERY = """
{ assetNodes { assetKey { path } isPartitioned partitionStats { numMaterialized } } }
"""
SUCCESS_QUERY = """
{ runsOrError(filter: {statuses: [SUCCESS]}) { __typename ... on Runs {
    results { runId status tags { key value } } } } }
"""


@pytest.mark.timeout(900)
def test_ui_lists_assets_and_running_sensors(make_run: MakeRun) -> None:
    make_run.wait_for(
        "HTTP 200 from /server_info", HTTP_TIMEOUT, lambda: _http_ok(f"{make_run.base}/server_info")
    )
    make_run.timings["http_200_s"] = round(time.monotonic() - make_run.started, 1)
    info = json.loads(urllib.request.urlopen(f"{make_run.base}/server_info", timeout=10).read())
    assert info["dagster_webserver_version"]

    sources = list(make_run.config.sources.values())
    nodes = make_run.graphql(ASSETS_QUERY)["assetNodes"]
    keys = {tuple(n["assetKey"]["path"]) for n in nodes}
    tables = {(s.namespace, s.table_name) for s in sources}
    assert keys >= tables | {("landing", s.name) for s in sources}
    assert all(n["isPartitioned"] for n in nodes if tuple(n["assetKey"]["path"]) in tables)

    repos = make_run.graphql(SENSORS_QUERY)["repositoriesOrError"]
    assert repos["__typename"] == "RepositoryConnection", repos
    sensors = {s["name"]: s["sensorState"]["status"] for r in repos["nodes"] for s in r["sensors"]}
    assert sensors == {f"{s.name}_sensor": "RUNNING" for s in sources}


@pytest.mark.timeout(900)
def test_sensor_run_succeeds_and_materializes(make_run: MakeRun) -> None:
    def succeeded() -> list[dict[str, Any]] | None:
        """The successful batch runs (a sensor's: they carry ``lockgate/batch``). Other runs
        may succeed first, e.g. the demo's compaction schedule on its first ticks."""
        runs = make_run.graphql(SUCCESS_QUERY)["runsOrError"]
        assert runs["__typename"] == "Runs", runs
        batches = [
            r for r in runs["results"] if any(t["key"] == "lockgate/batch" for t in r["tags"])
        ]
        return batches or None

    runs = make_run.wait_for("successful sensor run", RUN_TIMEOUT, succeeded)
    make_run.timings["first_success_s"] = round(time.monotonic() - make_run.started, 1)
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert tags.get("lockgate/source") in make_run.config.sources, tags
    assert "lockgate/batch" in tags, tags
    assert "dagster/partition" in tags, tags

    nodes = make_run.graphql(ASSETS_QUERY)["assetNodes"]
    materialized = {
        "/".join(n["assetKey"]["path"]): n["partitionStats"]["numMaterialized"]
        for n in nodes
        if n["partitionStats"]  # the landing assets are external: no partitions
    }
    assert sum(materialized.values()) >= 1, materialized


@pytest.mark.timeout(900)
def test_asset_page_renders_in_chromium(make_run: MakeRun, tmp_path: Path) -> None:
    if not chromium_available():
        message = "/usr/bin/chromium is missing: run `make browser` as root (apt-get install)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if make_run.stop_outcome is not None or make_run.proc.poll() is not None:
        pytest.fail("make run is not running (an earlier test failed)")
    # The page of a materialized asset: its description proves the definitions reached the
    # browser, a materialization metadata key that the run's metadata reached it too.
    nodes = make_run.graphql(ASSETS_QUERY)["assetNodes"]
    done = [
        n["assetKey"]["path"]
        for n in nodes
        if n["partitionStats"] and n["partitionStats"]["numMaterialized"]
    ]
    if not done:
        pytest.fail("no materialized asset to look at (did the run test pass?)")
    path = done[0]
    source = next(
        s for s in make_run.config.sources.values() if [s.namespace, s.table_name] == path
    )
    # Dismiss Dagster's first-visit "Join the community" dialog as its Skip button does (the
    # flag lives in the temporary DAGSTER_HOME), so the screenshot shows the page itself.
    assert make_run.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
    url = f"{make_run.base}/assets/{'/'.join(path)}"
    png = ARTIFACTS / "make_run_asset_page.png"
    png.unlink(missing_ok=True)
    needles = [f"Iceberg table {source.table}", "batch_id", "snapshot_id"]
    try:
        with Chromium(tmp_path / "chromium-profile", log_path=tmp_path / "chromium.log") as b:
            page = b.capture(url, needles, png, timeout=BROWSER_TIMEOUT)
    except BrowserError as e:
        log = tmp_path / "chromium.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        pytest.fail(f"{e}\nchromium log tail:\n{tail}")
    (ARTIFACTS / "make_run_asset_page.html").write_text(page.html)
    make_run.timings["browser_page_s"] = round(page.seconds, 1)

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A blank 1400x900 page is ~6 KB; the rendered asset page is well over 50 KB.
    assert png.stat().st_size > 30_000, png.stat().st_size
    assert source.table_name in page.html and f"Iceberg table {source.table}" in page.html

    # The column schema (``dagster/column_schema`` of the materialization) and the landing
    # asset upstream of the table (the lineage) reach the page too.
    lineage_png = ARTIFACTS / "make_run_asset_columns_lineage.png"
    lineage_png.unlink(missing_ok=True)
    needles = ["_source_etag", "_ingested_at", "landing"]
    try:
        with Chromium(tmp_path / "chromium-profile-2", log_path=tmp_path / "chromium2.log") as b:
            page = b.capture(url, needles, lineage_png, timeout=BROWSER_TIMEOUT)
    except BrowserError as e:
        pytest.fail(f"the asset page shows no column schema or landing lineage: {e}")
    (ARTIFACTS / "make_run_asset_columns_lineage.html").write_text(page.html)
    assert lineage_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"landing / {source.name}" in page.html or f"landing/{source.name}" in page.html


@pytest.mark.timeout(900)
def test_ctrl_c_stops_everything(make_run: MakeRun) -> None:
    make_run.track()
    assert make_run.seen, "make run had no child processes"
    assert make_run.proc.poll() is None, "make run had already exited:\n" + make_run.log_tail()
    outcome = make_run.stop()
    left = make_run.survivors()
    assert not left, [(p.pid, p.name()) for p in left]
    assert outcome == "sigint", (
        f"SIGINT did not stop make run within {STOP_GRACE:.0f} s (needed SIGKILL):\n"
        + make_run.log_tail()
    )
