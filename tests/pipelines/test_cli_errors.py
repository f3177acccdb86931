"""Every expected error reaches the operator as one line and its own exit code.

Shown: each class of the error hierarchy is terminal or transient (never both, never neither),
exit codes are distinct per kind, terminal and transient kinds never share a code, and the
"Exit codes" table of docs/operations.md lists every code. Through ``lockgate`` (in this
process, or the installed command in a subprocess): a bad config (3), a missing config file
(3), an unsafe S3 endpoint (4, the loopback imitation that ignores ``If-None-Match``), a
changed source declaration (5), a refused rebuild (6), a rebuild that loses every race to
incremental batches (7, a real conflict: a batch of the same day commits during each attempt),
a missing table (8), a corrupt ledger (9), a missing bucket (12, on the moto server) and bad
arguments (2) each print exactly one
``lockgate: error:`` line and no traceback; ``--config`` works after the command; an unexpected
exception still propagates with its traceback.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import lockgate.pipelines
import lockgate.resources
import lockgate.sensors
from lockgate.pipelines import rebuild as rebuild_module
from lockgate.pipelines.cli import main
from lockgate.pipelines.commands.common import CommandError
from lockgate.pipelines.ingest import ingest_source
from lockgate.pipelines.rebuild import RebuildRefused
from lockgate.resources.config import ConfigError
from lockgate.resources.errors import (
    ExitCode,
    LockgateError,
    MissingTable,
    TerminalError,
    TransientError,
)
from lockgate.resources.ledger import FingerprintMismatch, LedgerCorrupt
from lockgate.resources.probe import reset_probe_cache
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import LocalStore, UnsafeEndpoint
from lockgate.resources.store_s3 import S3Error
from lockgate.resources.tables import CommitConflict, RebuildConflict
from tests.conftest import MOTO_ENV
from tests.helpers_s3 import LaxS3Server
from tests.platform_helpers import REPO, Lander, run_lockgate, source_spec, write_config

#: bases that group a family and are never raised themselves
FAMILIES = {
    "lockgate.resources.errors.LockgateError",
    "lockgate.resources.errors.TerminalError",
    "lockgate.resources.errors.TransientError",
    "lockgate.resources.store.StoreError",
    "lockgate.resources.store_s3.S3Error",
    "lockgate.resources.ledger_records.LedgerError",
    "lockgate.resources.tables.TablesError",
    "lockgate.resources.sqs.QueueError",
}
DAY = "2026-02-10"


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__name__}"


def _exception_classes() -> Iterator[type[BaseException]]:
    """Every public exception class defined in a module of ``lockgate``."""
    for package in (lockgate.resources, lockgate.sensors, lockgate.pipelines):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if (
                    inspect.isclass(obj)
                    and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__
                    and not name.startswith("_")  # private control flow, never escapes
                ):
                    yield obj


# -- the hierarchy --------------------------------------------------------------------------


def test_every_error_class_is_terminal_or_transient() -> None:
    classes = set(_exception_classes())
    assert {ConfigError, UnsafeEndpoint, RebuildRefused, CommandError, S3Error} <= classes
    for cls in classes:
        assert issubclass(cls, LockgateError), f"{_qualname(cls)} is not a LockgateError"
        if _qualname(cls) in FAMILIES:
            continue
        kinds = issubclass(cls, TerminalError), issubclass(cls, TransientError)
        assert kinds.count(True) == 1, f"{_qualname(cls)}: terminal, transient = {kinds}"
        assert cls.exit_code not in (ExitCode.OK, ExitCode.FAILED, ExitCode.INTERRUPTED), cls
    # the old bases are kept, so `except ValueError` / `except FileNotFoundError` still work
    assert issubclass(ConfigError, ValueError)
    from lockgate.resources.store import NotFound

    assert issubclass(NotFound, FileNotFoundError)


def test_exit_codes_are_distinct_per_kind() -> None:
    codes = [c.value for c in ExitCode]
    assert len(codes) == len(set(codes))
    expected = {
        ConfigError: 3,
        UnsafeEndpoint: 4,
        FingerprintMismatch: 5,
        RebuildRefused: 6,
        RebuildConflict: 7,
        CommitConflict: 7,
        MissingTable: 8,
        LedgerCorrupt: 9,
        CommandError: 2,
    }
    assert {cls: int(cls.exit_code) for cls in expected} == expected
    leaves = [c for c in _exception_classes() if _qualname(c) not in FAMILIES]
    terminal = {c.exit_code for c in leaves if issubclass(c, TerminalError)}
    transient = {c.exit_code for c in leaves if issubclass(c, TransientError)}
    assert terminal and transient and not terminal & transient
    assert S3Error.of("x", transient=True).transient
    assert not S3Error.of("x", transient=False).transient


def test_the_exit_codes_table_lists_every_code() -> None:
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.MULTILINE))
    assert rows == {str(c.value): c.name for c in ExitCode}


def test_one_line_joins_the_lines_and_adds_the_hint() -> None:
    err = RebuildConflict("lost  5 races")
    assert err.one_line() == f"lost 5 races (hint: {RebuildConflict.hint})"
    many = ConfigError("2 errors:\n  a.b: bad\n\n  c:  worse\n")
    assert many.one_line() == "2 errors: a.b: bad; c: worse"
    assert ConfigError("").one_line() == "ConfigError"


# -- through the command ----------------------------------------------------------------------


def _one_error_line(err: str) -> str:
    """The single ``lockgate: error:`` line of ``err`` (other lines may be progress)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("lockgate: error: ")]
    assert len(lines) == 1, err
    assert err.rstrip("\n").endswith(lines[0]), "the error is the last line"
    return lines[0]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.fixture
def local(tmp_path: Path) -> tuple[Path, Lander]:
    """A committed local source: 3 objects of one day in ``lake.events``."""
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        ledger=str(tmp_path / "ledger"),
        sources={"events": source_spec("events", str(tmp_path / "landing"))},
    )
    lander = Lander(LocalStore(tmp_path / "landing"))
    for i in range(3):
        lander.land(f"{DAY}/part-{i}.jsonl", n=2)
    rt = Runtime.from_config(str(path))
    ingest_source(rt, rt.source("events"))
    return path, lander


def test_bad_config_in_a_subprocess_is_one_line_and_exit_3(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "bad.yaml",
        warehouse=str(tmp_path / "wh"),
        sources={"events": source_spec("events", str(tmp_path / "in"), format="xml")},
    )
    out = run_lockgate(path, "verify")
    assert out.returncode == 3, out.stderr
    line = _one_error_line(out.stderr)
    assert out.stderr.strip() == line
    assert "sources.events.format" in line and str(path) in line


def test_missing_config_file_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.yaml"
    code, err = _run(["status", "--config", str(missing)], capsys)
    assert code == ExitCode.CONFIG
    assert err.strip() == _one_error_line(err)
    assert str(missing) in err and "config file not found" in err


def _without_ages(out: str) -> str:
    return re.sub(r'"(\w*age_s)": [0-9.]+', r'"\1": 0', out)


def test_config_is_accepted_before_or_after_the_command(
    local: tuple[Path, Lander], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = local
    assert main(["--config", str(path), "status", "--json"]) == 0
    before = capsys.readouterr().out
    assert main(["status", "--json", "--config", str(path)]) == 0
    # the same report, but for the ages (seconds since a commit or tick) that grow meanwhile
    assert _without_ages(capsys.readouterr().out) == _without_ages(before)
    assert '"events"' in before
    # given twice, the one after the command wins
    code, err = _run(
        ["--config", str(tmp_path / "nope.yaml"), "status", "--config", str(path)], capsys
    )
    assert code == 0, err
    # a config file named like a command is a path, not the command
    code, err = _run(["--config", "verify", "status"], capsys)
    assert code == ExitCode.CONFIG and "verify: config file not found" in _one_error_line(err)


def test_unsafe_endpoint_exits_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for k, v in MOTO_ENV.items():
        monkeypatch.setenv(k, v)
    reset_probe_cache()
    with LaxS3Server() as lax:
        path = write_config(
            tmp_path / "lockgate.yaml",
            warehouse=str(tmp_path / "wh"),
            ledger="s3://bucket/ledger",
            endpoint=lax.url,
            sources={"events": source_spec("events", str(tmp_path / "landing"))},
        )
        Lander(LocalStore(tmp_path / "landing")).land(f"{DAY}/a.jsonl")
        code, err = _run(["ingest", "--config", str(path)], capsys)
        assert lax.objects == {}  # nothing was claimed
    reset_probe_cache()
    assert code == ExitCode.UNSAFE_ENDPOINT
    line = _one_error_line(err)
    assert "silently overwrote a create-only put" in line and "lockgate doctor" in line


@pytest.mark.s3
def test_missing_bucket_exits_12(
    moto_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for k, v in MOTO_ENV.items():
        monkeypatch.setenv(k, v)
    secret = "do-not-print-this-secret-0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    path = write_config(
        tmp_path / "lockgate.yaml",
        warehouse=str(tmp_path / "wh"),
        ledger="s3://no-such-bucket/ledger",
        endpoint=moto_server,
        sources={"events": source_spec("events", str(tmp_path / "landing"))},
    )
    Lander(LocalStore(tmp_path / "landing")).land(f"{DAY}/a.jsonl")
    code, err = _run(["ingest", "--config", str(path)], capsys)
    assert code == ExitCode.STORE_REFUSED
    line = _one_error_line(err)
    assert "bucket 'no-such-bucket' does not exist" in line and "hint: check the bucket" in line
    assert secret not in err


def test_changed_source_declaration_exits_5(
    local: tuple[Path, Lander], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = local
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("lake.events", "lake.other"), encoding="utf-8")
    code, err = _run(["--config", str(path), "ingest"], capsys)
    assert code == ExitCode.FINGERPRINT_MISMATCH
    line = _one_error_line(err)
    assert "declaration changed" in line and "lockgate ledger reset --source events" in line


def test_backfill_refused_exits_6(
    local: tuple[Path, Lander], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = local
    (tmp_path / "landing" / DAY / "part-1.jsonl").unlink()
    argv = ["--config", str(path), "backfill", "--source", "events", "--from", DAY, "--to", DAY]
    code, err = _run(argv, capsys)
    assert code == ExitCode.REBUILD_REFUSED
    assert "part-1.jsonl" in _one_error_line(err) and "was deleted" in err


def test_backfill_losing_every_race_exits_7(
    local: tuple[Path, Lander],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """During each attempt an incremental batch of the same day commits: a real conflict."""
    path, lander = local
    real_stage = rebuild_module.stage_claims
    landed: list[str] = []

    def stage_then_race(rt: Runtime, *args: object, **kwargs: object) -> object:
        staged = real_stage(rt, *args, **kwargs)  # type: ignore[arg-type]
        key = f"{DAY}/late-{len(landed)}.jsonl"
        lander.land(key)
        landed.append(key)
        other = Runtime.from_config(str(path))
        assert ingest_source(other, other.source("events")).batches  # committed meanwhile
        return staged

    monkeypatch.setattr(rebuild_module, "REBUILD_ATTEMPTS", 2)
    monkeypatch.setattr(rebuild_module, "stage_claims", stage_then_race)
    argv = ["backfill", "--source", "events", "--from", DAY, "--to", DAY, "--config", str(path)]
    code, err = _run(argv, capsys)
    assert len(landed) == 2  # both attempts lost a race
    assert code == ExitCode.CONFLICT
    line = _one_error_line(err)
    assert "lost 2 races" in line and "hint: run the backfill again" in line


def test_missing_table_exits_8(
    local: tuple[Path, Lander], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = local
    argv = ["vacuum", "--table", "lake.nope", "--no-progress", "--config", str(path)]
    code, err = _run(argv, capsys)
    assert code == ExitCode.MISSING_TABLE
    assert err.strip() == _one_error_line(err)
    assert "table lake.nope does not exist" in err


def test_corrupt_ledger_exits_9(
    local: tuple[Path, Lander], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = local
    claims = sorted((tmp_path / "ledger" / "events").rglob("offsets/*.json"))
    assert claims
    claims[0].write_bytes(b"not json")
    code, err = _run(["ledger", "show", "--source", "events", "--config", str(path)], capsys)
    assert code == ExitCode.CORRUPT_STATE
    assert err.strip() == _one_error_line(err)
    assert "not valid JSON" in err and "hint: Lockgate never changes a ledger file" in err


def test_bad_arguments_exit_2(
    local: tuple[Path, Lander], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = local
    argv = ["backfill", "--source", "events", "--from", DAY, "--to", "2026-02-01"]
    code, err = _run([*argv, "--config", str(path)], capsys)
    assert code == ExitCode.USAGE
    assert err.strip() == _one_error_line(err) and "is before --from" in err


def test_an_unexpected_error_keeps_its_traceback(
    local: tuple[Path, Lander], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = local

    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("lockgate.pipelines.commands.status.source_status", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["status", "--config", str(path)])


def test_a_store_failing_past_every_retry_exits_13(
    local: tuple[Path, Lander], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Arrow's S3 filesystem (pyiceberg's FileIO) words its errors only as ``OSError`` text."""
    path, _ = local

    def unavailable(*_args: object, **_kwargs: object) -> None:
        raise OSError(
            "When completing multiple part upload for key 'wh/m0.avro' in bucket 'b': AWS Error "
            "NETWORK_CONNECTION during CompleteMultipartUpload operation: curlCode: 52"
        )

    monkeypatch.setattr("lockgate.pipelines.commands.status.source_status", unavailable)
    code, err = _run(["status", "--config", str(path)], capsys)
    assert code == ExitCode.STORE_UNAVAILABLE
    assert err.strip() == _one_error_line(err) and "NETWORK_CONNECTION" in err
