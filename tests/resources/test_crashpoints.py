"""``LOCKGATE_CRASH_AT`` and ``LOCKGATE_CRASH_ONCE`` in real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.platform_helpers import REPO

_REACH = (
    "from lockgate.resources.crashpoints import crash_point\n"
    "crash_point('stage.after_read')\n"
    "print('passed')"
)


def _reach(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_CRASH")}
    return subprocess.run(
        [sys.executable, "-c", _REACH],
        env={**full, **env},
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_crash_point_kills_every_process_that_reaches_it(tmp_path: Path) -> None:
    env = {"LOCKGATE_CRASH_AT": "stage.after_read"}
    assert [_reach(env).returncode for _ in range(2)] == [-signal.SIGKILL] * 2
    assert _reach({}).stdout.strip() == "passed"


def test_crash_once_kills_only_the_first_process(tmp_path: Path) -> None:
    once = tmp_path / "crashed"
    env = {"LOCKGATE_CRASH_AT": "stage.after_read", "LOCKGATE_CRASH_ONCE": str(once)}
    first, second = _reach(env), _reach(env)
    assert first.returncode == -signal.SIGKILL and once.exists()
    assert second.returncode == 0 and second.stdout.strip() == "passed"
