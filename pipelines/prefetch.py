"""Reading an object ahead of its consumer: a batch's first object while the batch path is
imported, and (``lockgate.pipelines.stage``) the next objects while the current one is staged.

A ``lockgate ingest`` process that finds a pending batch must import the batch path
(pyiceberg, Parquet; ``lockgate.pipelines.batch``) before it can stage. That import is Python
bytecode on one core; ``import_while_reading`` runs it while another thread reads the first
object of the batch (its blocks parse on ``formats``' parse pool, outside the GIL), so the
machine's other cores are not idle during start-up.

Contract:

* Reading is all a ``Prefetch`` does: it writes nothing, claims nothing and commits nothing. A
  prefetched read that is never used (the batch was committed by someone else meanwhile, the
  import failed) is closed and its bytes are simply dropped.
* The chunks a ``Prefetch`` hands over (``take``) are exactly those ``read_object`` yields for
  the object, in order, followed by whatever that read raised (``VersionNotRead``,
  ``SizeMismatch``, a transient error), raised at the same point: the consumer cannot tell a
  prefetched read from its own. ``take`` hands them over once; a second call (a restaged
  batch) returns None and the caller reads the object again.
* Memory: at most ``PREFETCH_BYTES`` of parsed rows (plus the reader's block budget) are held
  before the consumer takes them, while the stage holds nothing yet; as the stage takes them
  its buffer fills with the same rows (not a copy), so during start-up memory is at most
  ``PREFETCH_BYTES`` more than the stage's own bound (``lockgate.pipelines.stage``). A read
  ahead of a later object (``stage``) holds at most its own, smaller ``budget``.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import TypeVar

import pyarrow as pa

from lockgate.pipelines.formats import (
    FormatOptions,
    ReadChunk,
    ReadMeter,
    is_small_object,
    read_object,
)
from lockgate.resources.config import SourceConfig
from lockgate.resources.fingerprint import blocking
from lockgate.resources.ledger import Claim, ClaimedObject, Ledger
from lockgate.resources.runtime import Runtime
from lockgate.resources.store import ObjectStore

#: Parsed bytes (Arrow) a prefetch holds at most before its consumer takes them. A safety
#: bound: the import it overlaps lasts about half a second, in which two cores parse less
#: (D4: 64 MiB was reached and the rest of the import ran on one core; 128 MiB: 2.35 -> 2.22 s).
PREFETCH_BYTES = 128 * 1024 * 1024
#: The GIL switch interval while the import runs beside the reader: the reader's threads hold
#: the GIL only briefly between calls that release it, and would otherwise wait up to the
#: default 5 ms each time for the importing thread to let go. On D1 (2 cores), 1 ms read
#: twice the blocks of 5 ms during the import, which took about as long.
OVERLAP_SWITCH_INTERVAL_S = 0.001

T = TypeVar("T")


class Prefetch:
    """One object's read (``read_object``), pulled ahead of its consumer: by ``pull`` calls,
    or by a background thread between ``start`` and ``stop``, until ``budget`` bytes of parsed
    rows are held or the read ends."""

    def __init__(
        self,
        batch_id: int,
        obj: ClaimedObject,
        read: Callable[[ReadMeter], Iterator[ReadChunk]],
        budget: int = PREFETCH_BYTES,
    ):
        self.batch_id = batch_id
        self.key = obj.key
        self.etag = obj.etag
        self.budget = budget
        self.meter = ReadMeter()
        self._chunks = read(self.meter)
        self._buffered: deque[ReadChunk] = deque()
        self._bytes = 0
        self._error: Exception | None = None
        self._ended = False
        self._taken = False
        self._stopping = threading.Event()
        self._puller: threading.Thread | None = None

    @classmethod
    def first_of(
        cls, rt: Runtime, source: SourceConfig, ledger: Ledger, claim: Claim
    ) -> Prefetch | None:
        """A prefetch of the first object of ``claim`` that is read alone (not one of the small
        objects read together), or None when there is none or the batch is not to be read now:
        it has a commit record, or it was claimed under another format or table (the batch
        path reports that before any read, ``ClaimFingerprintChanged``). Also None when any of
        that cannot be found out now (a transient error, a corrupt ledger): the batch path
        meets the same error where it always did."""
        try:
            if ledger.commit_record(claim.batch_id) is not None:
                return None
            if blocking(ledger.fingerprint_changes(claim)):
                return None
            fmt = FormatOptions.from_source(source)
            obj = next((o for o in claim.objects if not is_small_object(o.key, o.size, fmt)), None)
            if obj is None:
                return None
            landing = rt.claim_landing(source, claim)
            declared = source.arrow_schema()
        except Exception:
            return None
        return cls.of_object(claim.batch_id, obj, landing, fmt, declared)

    @classmethod
    def of_object(
        cls,
        batch_id: int,
        obj: ClaimedObject,
        landing: ObjectStore,
        fmt: FormatOptions,
        schema: pa.Schema | None,
        budget: int = PREFETCH_BYTES,
    ) -> Prefetch:
        """A prefetch of ``read_object(landing, obj, fmt, schema)`` (not begun yet)."""

        def read(meter: ReadMeter) -> Iterator[ReadChunk]:
            return read_object(landing, obj.key, obj.etag, fmt, schema, obj.size, meter)

        return cls(batch_id, obj, read, budget=budget)

    @property
    def full(self) -> bool:
        """Nothing more is pulled: the read ended (or failed), or ``budget`` bytes are held."""
        return self._ended or self._bytes >= self.budget

    def pull(self) -> bool:
        """Read one more chunk; False when ``full`` (or taken)."""
        if self.full or self._taken:
            return False
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._ended = True
            return False
        except Exception as e:  # handed to the consumer where the read raised it
            self._error = e
            self._ended = True
            return False
        self._buffered.append(chunk)
        self._bytes += chunk.batch.nbytes
        return True

    def start(self) -> None:
        """Pull on a background thread until ``stop`` (or ``full``)."""
        if self._puller is not None:
            return

        def run() -> None:
            while not self._stopping.is_set() and self.pull():
                pass

        self._puller = threading.Thread(target=run, name="lockgate-prefetch", daemon=True)
        self._puller.start()

    def stop(self) -> None:
        """Stop the background thread (after the chunk it is reading); the read stays open."""
        self._stopping.set()
        if self._puller is not None:
            self._puller.join()

    def take(self, batch_id: int, obj: ClaimedObject) -> Iterator[ReadChunk] | None:
        """The whole read of ``obj`` (buffered chunks, then the rest) if this prefetch is of it
        and was not taken yet; None otherwise. ``meter`` reports it as ``read_object``'s would."""
        if self._taken or (batch_id, obj.key, obj.etag) != (self.batch_id, self.key, self.etag):
            return None
        self.stop()
        self._taken = True
        return self._drain()

    def _drain(self) -> Iterator[ReadChunk]:
        try:
            while self._buffered:
                chunk = self._buffered.popleft()
                self._bytes -= chunk.batch.nbytes
                yield chunk
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if not self._ended:
                yield from self._chunks
        finally:
            self.close()

    def close(self) -> None:
        """Stop pulling, drop what is buffered and close the read (its parse-ahead is
        cancelled). Idempotent."""
        self.stop()
        self._buffered.clear()
        self._bytes = 0
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def import_while_reading(do_import: Callable[[], T], prefetch: Prefetch | None) -> T:
    """``do_import()`` (in this thread) while another thread pulls ``prefetch`` until the
    import is done or the prefetch is full. Returns what ``do_import`` returned; the prefetch
    is left to its consumer (or to ``close``)."""
    if prefetch is None:
        return do_import()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(OVERLAP_SWITCH_INTERVAL_S)
    prefetch.start()
    try:
        return do_import()
    finally:
        prefetch.stop()
        sys.setswitchinterval(interval)


__all__ = ["PREFETCH_BYTES", "Prefetch", "import_while_reading"]
