"""A source's fingerprint: what its ledger was written for (landing URL, format, table, ...).

Layout on the source's sub-store of the ledger root::

    _source.json                      fingerprint version 0
    fingerprints/<version:06d>.json   versions written by a reset (1, 2, ...)

Contract:

* Versions are written create-only and never changed; the latest version is the highest one.
* ``settle`` writes version 0 on first use; later it raises ``FingerprintMismatch`` when the
  wanted values differ from the latest version, unless ``reset``: then it writes the next
  version (``from_batch`` = the next batch id), and a concurrent reset makes it compare again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lockgate.resources.crashpoints import crash_point
from lockgate.resources.ledger_records import (
    Fingerprint,
    FingerprintMismatch,
    _dumps,
    _loads,
    check_source,
    utcnow,
)
from lockgate.resources.store import AlreadyExists, NotFound, ObjectStore

SOURCE_FILE = "_source.json"
FINGERPRINTS = "fingerprints/"


#: Fields whose change a claim made before it survives: its objects are still read where they
#: were listed (the landing of the claim's fingerprint version, ``Runtime.claim_landing``), so
#: the claim means the same objects. A change of any other field (format, table) means a claim
#: made before it cannot run under the new declaration.
MOVABLE = frozenset({"landing"})


Changes = dict[str, tuple[str | None, str | None]]


def blocking(changes: Mapping[str, tuple[str | None, str | None]]) -> Changes:
    """The ``changes`` (``fingerprint_changes``) that keep a claim from running now: all but
    the ``MOVABLE`` fields."""
    return {k: v for k, v in changes.items() if k not in MOVABLE}


def read_version(store: ObjectStore, source: str, version: int) -> Fingerprint | None:
    """Fingerprint ``version`` of ``source`` (``store`` is the ledger root), or None if it is
    not stored."""
    sub = store.child(check_source(source))
    name = SOURCE_FILE if version == 0 else f"{FINGERPRINTS}{version:06d}.json"
    try:
        return Fingerprint.from_json(_loads(sub.get(name), f"{source}/{name}"))
    except NotFound:
        return None


def read_fingerprint(store: ObjectStore, source: str) -> Fingerprint | None:
    """The latest fingerprint version of ``source`` (``store`` is the ledger root), or None if
    the source has no ledger. Checks nothing (for inspection tools)."""
    sub = store.child(check_source(source))
    try:
        data = sub.get(SOURCE_FILE)
    except NotFound:
        return None
    latest = Fingerprint.from_json(_loads(data, f"{source}/{SOURCE_FILE}"))
    names = [o.key for o in sub.list(FINGERPRINTS) if o.key.endswith(".json")]
    if names:
        name = max(names)
        latest = Fingerprint.from_json(_loads(sub.get(name), f"{source}/{name}"))
    return latest


def settle(
    store: ObjectStore,
    source: str,
    fingerprint: Mapping[str, str],
    reset: bool,
    next_batch_id: Callable[[Fingerprint], int],
) -> Fingerprint:
    """The fingerprint version ``source``'s ledger runs under, written if needed (see the
    module contract). ``next_batch_id(current)`` is the id the next claim will take."""
    wanted = {str(k): str(v) for k, v in fingerprint.items()}
    sub = store.child(check_source(source))
    current = read_fingerprint(store, source)
    if current is None:
        fp0 = Fingerprint(0, wanted, 0, utcnow())
        crash_point("ledger.fingerprint.before_put")
        try:
            sub.put_if_absent(SOURCE_FILE, _dumps(fp0.to_json(source)))
            current = fp0
        except AlreadyExists:
            current = read_fingerprint(store, source)
            assert current is not None
        crash_point("ledger.fingerprint.after_put")
    while dict(current.values) != wanted:
        if not reset:
            raise FingerprintMismatch(source, changes(current.values, wanted))
        new = Fingerprint(current.version + 1, wanted, next_batch_id(current), utcnow())
        crash_point("ledger.fingerprint.before_put")
        try:
            sub.put_if_absent(f"{FINGERPRINTS}{new.version:06d}.json", _dumps(new.to_json(source)))
            current = new
        except AlreadyExists:
            latest = read_fingerprint(store, source)
            assert latest is not None
            current = latest  # a concurrent reset: compare again
        crash_point("ledger.fingerprint.after_put")
    return current


def changes(
    old: Mapping[str, str], new: Mapping[str, str]
) -> dict[str, tuple[str | None, str | None]]:
    """``field -> (old, new)`` of every field whose value differs."""
    return {
        k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    }
