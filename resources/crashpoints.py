"""Named crash points for the torture harness.

``LOCKGATE_CRASH_AT=<point>[:<nth>]`` makes the process SIGKILL itself the ``nth`` time
(default 1st) execution reaches ``crash_point(<point>)``. With ``LOCKGATE_CRASH_ONCE=<path>``
too, only the first process to get there crashes (it creates ``path`` exclusively): one crash
among many processes sharing the environment, e.g. Dagster run workers and their retries.
With ``LOCKGATE_CRASH_SIGNAL=STOP`` the process freezes instead (SIGSTOP to itself, after writing
its PID into the ``LOCKGATE_CRASH_ONCE`` file if given): a hung worker, to be continued or killed
by whoever reads that PID. Unset, a crash point is one dictionary lookup. Every name must be
registered in ``POINTS`` so the harness can enumerate them and a typo fails loudly instead of
never firing.
"""

from __future__ import annotations

import os
import signal

ENV = "LOCKGATE_CRASH_AT"
ONCE_ENV = "LOCKGATE_CRASH_ONCE"
SIGNAL_ENV = "LOCKGATE_CRASH_SIGNAL"

POINTS: frozenset[str] = frozenset(
    {
        # object store
        "store.put_if_absent.before",
        "store.put_if_absent.after",
        # discovery / claim (ledger)
        "discovery.after_list",
        # notification mode: between receive, claim and delete
        "notifications.after_receive",
        "notifications.after_claim",
        "notifications.after_delete",
        "ledger.claim.before_put",
        "ledger.claim.after_put",
        "ledger.compact.before_put",
        "ledger.compact.after_segment",
        "ledger.compact.after_put",
        "ledger.commit_record.before_put",
        "ledger.commit_record.after_put",
        "ledger.rebuild_record.before_put",
        "ledger.rebuild_record.after_put",
        "ledger.fingerprint.before_put",
        "ledger.fingerprint.after_put",
        # stage
        "stage.after_read",
        "stage.after_write_file",
        "stage.after_quarantine",
        # commit (table store / catalog)
        "commit.before_metadata_put",
        "commit.after_metadata_put",
        "commit.after_version_hint",
        "commit.quarantine_committed",
        # compaction
        "compact.after_stage",
        "compact.after_commit",
        # maintenance / vacuum
        "maintenance.after_expire",
        "maintenance.after_state",
        "maintenance.before_delete_metadata",
        "vacuum.before_delete",
        "vacuum.mid_delete",
        # cleaning the landing (clean_source)
        "clean.after_copy",
        "clean.after_archive_record",
        "clean.after_delete",
        "clean.after_marker",
        # backfill
        "backfill.after_stage",
        "backfill.after_commit",
    }
)


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, nth = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown crash point {name!r}")
    return name, int(nth or 1)


_TARGET = _parse(os.environ.get(ENV))
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process here if ``LOCKGATE_CRASH_AT`` names this point (and hit count)."""
    if _TARGET is None:
        return
    if name not in POINTS:
        raise ValueError(f"unregistered crash point {name!r}")
    if name != _TARGET[0]:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _TARGET[1] and _first_to_crash():
        if os.environ.get(SIGNAL_ENV, "KILL").upper() == "STOP":
            once = os.environ.get(ONCE_ENV)
            if once:
                with open(once, "w", encoding="ascii") as f:
                    f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGSTOP)
            return
        os.kill(os.getpid(), signal.SIGKILL)


def _first_to_crash() -> bool:
    path = os.environ.get(ONCE_ENV)
    if not path:
        return True
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
