"""Lockgate's errors: one base, split by what a retry can do, each with its exit code.

Contract:

* Every error Lockgate raises on purpose derives from ``LockgateError`` and from exactly one of
  ``TerminalError`` (retrying the same operation cannot help: the config, the endpoint, the
  durable state or the request must change first) and ``TransientError`` (the same operation
  may succeed when run again: a lost race, throttling, an endpoint that did not answer).
  Family bases (``StoreError``, ``LedgerError``, ``TablesError``) derive from ``LockgateError``
  only and are never raised themselves.
* Each class carries ``exit_code``, one ``ExitCode`` per kind of failure; the ``lockgate``
  command exits with it after printing one line (``lockgate: error: <message>``, then the
  class's ``hint`` if it has one). Exit codes are part of the CLI's interface: never renumber.
* Classes keep their modules and other bases (``ConfigError`` is a ``ValueError``,
  ``NotFound`` a ``FileNotFoundError``, ...), so ``except`` clauses written for them keep
  working.

This module imports nothing from Lockgate: every layer may raise these.
"""

from __future__ import annotations

from enum import IntEnum, unique
from typing import ClassVar


@unique
class ExitCode(IntEnum):
    """Exit codes of the ``lockgate`` command (documented in docs/operations.md)."""

    OK = 0
    #: a check failed (``verify`` found violations, ``doctor`` a failing check), or an
    #: unexpected error (printed with its traceback)
    FAILED = 1
    #: bad arguments: argparse's errors, an unknown batch, an impossible day range
    USAGE = 2
    #: the config is missing, unreadable or invalid, or names no such source
    CONFIG = 3
    #: the S3 endpoint ignores create-only puts: exactly-once is impossible there
    UNSAFE_ENDPOINT = 4
    #: a source's declaration changed since its ledger was written
    FINGERPRINT_MISMATCH = 5
    #: a rebuild would shrink a partition (a claimed object is gone or re-written)
    REBUILD_REFUSED = 6
    #: transient: a commit, claim or rebuild lost every race to concurrent writers
    CONFLICT = 7
    #: the Iceberg table does not exist
    MISSING_TABLE = 8
    #: durable state breaks an invariant (corrupt ledger, retired metadata read as current)
    CORRUPT_STATE = 9
    #: a schema change the table cannot take (no safe widening)
    INCOMPATIBLE_SCHEMA = 10
    #: an object is not the version expected: gone, or changed since it was listed
    OBJECT_CHANGED = 11
    #: the object store refused a request (access denied, no such bucket, bad request)
    STORE_REFUSED = 12
    #: transient: the object store did not answer or throttled, after every retry
    STORE_UNAVAILABLE = 13
    #: interrupted (Ctrl-C)
    INTERRUPTED = 130


class LockgateError(Exception):
    """Base of every error Lockgate raises on purpose.

    ``exit_code`` is the command's exit status for this error; ``hint`` (class-wide, or set
    on an instance) is what an operator can do about it, or None.
    """

    exit_code: ClassVar[ExitCode] = ExitCode.FAILED
    hint: str | None = None

    @property
    def transient(self) -> bool:
        """True if running the same operation again may succeed."""
        return isinstance(self, TransientError)

    def one_line(self) -> str:
        """The message and hint on one line: the message's lines are joined with ``; ``
        (with a space after a line ending in ``:``), runs of whitespace become one space."""
        # a KeyError's str() is the repr of its argument: show the message itself
        raw = self.args[0] if isinstance(self, KeyError) and self.args else self
        text = ""
        for line in str(raw).splitlines():
            part = " ".join(line.split())
            if part:
                text += ("" if not text else " " if text.endswith(":") else "; ") + part
        text = text or type(self).__name__
        if self.hint and self.hint not in text:
            text = f"{text} (hint: {self.hint})"
        return text


class TerminalError(LockgateError):
    """Retrying the same operation cannot help: something must be changed first."""


class TransientError(LockgateError):
    """The same operation may succeed when run again (a lost race, throttling, a timeout)."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFLICT
    hint: str | None = "this may succeed when run again"


class MissingTable(TerminalError):
    """An Iceberg table does not exist (``identifier``, when known)."""

    exit_code: ClassVar[ExitCode] = ExitCode.MISSING_TABLE
    hint: str | None = (
        "a source's table is created by its first committed batch; check the table name"
    )

    def __init__(self, message: str, identifier: str | None = None) -> None:
        self.identifier = identifier
        super().__init__(message)

    @classmethod
    def named(cls, identifier: str) -> MissingTable:
        return cls(f"table {identifier} does not exist", identifier)
