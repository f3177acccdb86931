"""The object-store catalog: Iceberg commits on plain object storage, no service, no database.

Layout. A table ``<ns>.<name>`` lives at ``<warehouse>/<ns>/<name>/`` with ``data/`` and
``metadata/``. Its versions are ``metadata/v<N>.metadata.json`` (N = 1, 2, ...; the first is
written by ``create_table``). ``metadata/version-hint.text`` holds a recent N (the Hadoop
convention, so DuckDB, Spark and ``StaticTable`` can open the table by path). Namespaces are
just key prefixes.

Commit. A transaction based on version N commits by the create-only put
(``ObjectStore.put_if_absent``) of ``v<N+1>``. Of any number of writers based on N, exactly
one put succeeds; the others get ``AlreadyExists``, which becomes pyiceberg's
``CommitFailedException`` (a conflict: reload and retry). The new metadata is always built
from the writer's own base N, never from a reloaded table, so a commit can never silently
rebase a stale value (e.g. a batch marker) onto a newer version. A lost response (the put
landed, its reply did not) is recognised by reading ``v<N+1>`` back: identical bytes mean
the commit is ours.

Everything rests on the endpoint's create-only put being atomic under concurrency (S3 and
local ``os.link`` are). An endpoint that checks and then writes (moto's threaded server
does) lets two racing writers both "create" ``v<N+1>``: the later silently replaces the
earlier commit. ``lockgate.resources.probe`` refuses endpoints that ignore the header; it cannot
detect such a race.

Finding the current version. Names are never freed (see below), so ``v<k>`` exists for every
``k <= current``: existence is monotone in k. ``load_table`` reads the hint H and probes
``v<H+1>``, ``v<H+2>``, ``v<H+4>``, ... then binary-searches the gap: O(1) requests when the
hint is fresh, O(log gap) when stale, never a listing of ``metadata/`` (O(commits)).

Retiring old versions (the freed-name hazard). Deleting ``v<k>`` would let a writer whose
base is ``k-1`` (loaded long ago) create ``v<k>`` again: a commit on a dead branch, and a
hole that breaks the monotone probe. So old versions are never deleted: ``retire_versions``
overwrites them with a tiny *tombstone* (a JSON object with the key ``lockgate-tombstone``)
under the same name. A stale writer's create-only put of a tombstoned name fails like any
other lost race; readers never read a tombstone because only versions at least
``keep`` below the current one are retired, and the current version only grows. The highest
retired version is recorded in ``metadata/lockgate-retired.text`` (best effort: losing it
only makes the next retirement redo work, tombstoning is idempotent).

Secrets. Credentials are catalog (FileIO) properties only; they are never written into
table properties or metadata, and ``__repr__`` does not show them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from pyiceberg.catalog import Catalog, MetastoreCatalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    NoSuchViewError,
    TableAlreadyExistsError,
)
from pyiceberg.io import FileIO, load_file_io
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import CommitTableResponse, Table
from pyiceberg.table.metadata import TableMetadata, TableMetadataUtil
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER, SortOrder
from pyiceberg.table.update import (
    AssertCreate,
    TableRequirement,
    TableUpdate,
    update_table_metadata,
)
from pyiceberg.typedef import EMPTY_DICT, Identifier, Properties
from pyiceberg.utils.config import Config

from lockgate.resources.crashpoints import crash_point
from lockgate.resources.errors import ExitCode, TransientError
from lockgate.resources.store import AlreadyExists, NotFound, ObjectStore, S3Options
from lockgate.resources.stores import open_store

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.view import View

log = logging.getLogger(__name__)

METADATA_DIR = "metadata"
DATA_DIR = "data"
VERSION_HINT = "version-hint.text"
RETIRED_MARK = "lockgate-retired.text"
TOMBSTONE_KEY = "lockgate-tombstone"
_VERSION_RE = re.compile(r"^v(\d+)\.metadata\.json$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class TombstoneRead(CommitFailedException, TransientError):
    """A retired (tombstoned) metadata version was read as current: the store broke the
    'names are never freed' invariant, or the hint raced a retirement (loading again finds
    the current version)."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFLICT


def fileio_properties(warehouse_url: str, s3_options: S3Options | None) -> dict[str, str]:
    """pyiceberg FileIO properties reaching the same endpoint/credentials as ``S3Options``.

    Local warehouses need none (pyarrow's local FileIO). The result holds secrets: pass it to
    a catalog, never to table properties, never to a log.
    """
    if not (warehouse_url.startswith("s3://") or warehouse_url.startswith("s3a://")):
        return {}
    opts = s3_options or S3Options.from_env()
    props: dict[str, str] = {}
    if opts.endpoint_url:
        props["s3.endpoint"] = opts.endpoint_url
    if opts.region:
        props["s3.region"] = opts.region
    if opts.access_key_id:
        props["s3.access-key-id"] = opts.access_key_id
    if opts.secret_access_key:
        props["s3.secret-access-key"] = opts.secret_access_key
    if opts.session_token:
        props["s3.session-token"] = opts.session_token
    return props


def metadata_file_name(version: int) -> str:
    return f"v{version}.metadata.json"


def parse_metadata_version(location: str) -> int:
    """The N of ``.../v<N>.metadata.json``; ``ValueError`` for any other name."""
    m = _VERSION_RE.match(location.rstrip("/").rsplit("/", 1)[-1])
    if not m:
        raise ValueError(f"not an object-store catalog metadata file: {location!r}")
    return int(m.group(1))


def serialize_metadata(metadata: TableMetadata) -> bytes:
    """The bytes pyiceberg would write for ``metadata`` (uncompressed JSON)."""
    exclude_none = not Config().get_bool("legacy-current-snapshot-id")
    return metadata.model_dump_json(exclude_none=exclude_none).encode("utf-8")


def is_tombstone(data: bytes) -> bool:
    return len(data) < 256 and TOMBSTONE_KEY.encode() in data


class ObjectStoreCatalog(MetastoreCatalog):
    """A pyiceberg catalog whose only state is the table's own ``metadata/`` folder.

    ``warehouse`` is a URL (``s3://bucket/prefix`` or a local path); ``store`` may be given
    instead of being opened from it (it must be rooted at the warehouse).
    """

    def __init__(
        self,
        name: str = "lockgate",
        *,
        warehouse: str,
        s3_options: S3Options | None = None,
        store: ObjectStore | None = None,
        **properties: str,
    ) -> None:
        self.store: ObjectStore = store or open_store(warehouse, s3_options)
        io_props = fileio_properties(warehouse, s3_options)
        super().__init__(name, **{**io_props, **properties, "warehouse": self.store.uri()})
        self._io: FileIO | None = None

    def __repr__(self) -> str:
        return f"ObjectStoreCatalog(name={self.name!r}, warehouse={self.store.uri()!r})"

    # ---- names -------------------------------------------------------------------------

    def _split(self, identifier: str | Identifier) -> tuple[str, str]:
        ns, name = self.identifier_to_database_and_table(identifier, NoSuchTableError)
        for part in (ns, name):
            if not _NAME_RE.match(part):
                raise ValueError(f"invalid table identifier {identifier!r}: use [A-Za-z0-9_-]")
        return ns, name

    def table_prefix(self, identifier: str | Identifier) -> str:
        """The table's key prefix relative to the warehouse (``<ns>/<name>``)."""
        ns, name = self._split(identifier)
        return f"{ns}/{name}"

    def metadata_key(self, identifier: str | Identifier, version: int) -> str:
        return f"{self.table_prefix(identifier)}/{METADATA_DIR}/{metadata_file_name(version)}"

    def _hint_key(self, identifier: str | Identifier) -> str:
        return f"{self.table_prefix(identifier)}/{METADATA_DIR}/{VERSION_HINT}"

    def table_location(self, identifier: str | Identifier) -> str:
        return self.store.uri(self.table_prefix(identifier))

    @property
    def io(self) -> FileIO:
        """One FileIO per catalog (its filesystems are cached, so reuse it)."""
        if self._io is None:
            self._io = load_file_io(self.properties, self.store.uri())
        return self._io

    def _load_file_io(
        self, properties: Properties = EMPTY_DICT, location: str | None = None
    ) -> FileIO:
        return self.io

    # ---- versions ----------------------------------------------------------------------

    def _read_hint(self, identifier: str | Identifier) -> int | None:
        try:
            text = self.store.get(self._hint_key(identifier)).decode("utf-8", "replace").strip()
        except NotFound:
            return None
        m = re.match(r"^v?(\d+)", text)
        return int(m.group(1)) if m else None

    def _exists(self, identifier: str | Identifier, version: int) -> bool:
        return self.store.exists(self.metadata_key(identifier, version))

    def current_version(self, identifier: str | Identifier) -> int:
        """The highest existing version N (0: no table). Never lists ``metadata/``.

        A hint below N is rewritten (best effort): a writer killed between its metadata put
        and its hint write, or a slower writer's older hint landing last, would otherwise
        leave engines that open the table by path on an old version until the next commit.
        """
        hint = self._read_hint(identifier)
        lo = hint if hint is not None and hint >= 1 and self._exists(identifier, hint) else 0
        if lo == 0 and not self._exists(identifier, 1):
            return 0
        lo = max(lo, 1)
        step = 1
        while self._exists(identifier, lo + step):
            lo += step
            step *= 2
        hi = lo + step  # missing
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._exists(identifier, mid):
                lo = mid
            else:
                hi = mid
        if hint != lo:
            self._write_hint(identifier, lo)
        return lo

    def _write_hint(self, identifier: str | Identifier, version: int) -> None:
        """Best effort; skipped if a newer version already exists (it writes its own)."""
        try:
            if self._exists(identifier, version + 1):
                return
            self.store.put(self._hint_key(identifier), str(version).encode())
        except Exception as e:  # the hint is an optimisation: never fail a landed commit
            log.warning("version hint of %s not written: %s", identifier, type(e).__name__)

    def _read_version(self, identifier: str | Identifier, version: int) -> TableMetadata:
        data = self.store.get(self.metadata_key(identifier, version))
        if is_tombstone(data):
            raise TombstoneRead(f"{identifier}: v{version} is retired")
        return TableMetadataUtil.parse_raw(data.decode("utf-8"))

    def _table(self, identifier: str | Identifier, version: int, metadata: TableMetadata) -> Table:
        ns, name = self._split(identifier)
        return Table(
            identifier=(ns, name),
            metadata=metadata,
            metadata_location=self.store.uri(self.metadata_key(identifier, version)),
            io=self.io,
            catalog=self,
        )

    # ---- tables ------------------------------------------------------------------------

    def load_table(self, identifier: str | Identifier) -> Table:
        for _ in range(5):
            version = self.current_version(identifier)
            if version == 0:
                raise NoSuchTableError(f"Table does not exist: {identifier}")
            try:
                return self._table(identifier, version, self._read_version(identifier, version))
            except (NotFound, TombstoneRead):
                continue  # a racing retirement or a vanished hint: probe again
        raise NoSuchTableError(f"Table {identifier}: no readable current metadata version")

    def table_exists(self, identifier: str | Identifier) -> bool:
        return self.current_version(identifier) > 0

    def _resolve_table_location(
        self, location: str | None, database_name: str, table_name: str
    ) -> str:
        expected = self.store.uri(f"{database_name}/{table_name}")
        if location and location.rstrip("/") != expected:
            raise ValueError(f"tables of this catalog live at {expected}, not {location}")
        return expected

    def create_table(
        self,
        identifier: str | Identifier,
        schema: Schema | pa.Schema,
        location: str | None = None,
        partition_spec: PartitionSpec = UNPARTITIONED_PARTITION_SPEC,
        sort_order: SortOrder = UNSORTED_SORT_ORDER,
        properties: Properties = EMPTY_DICT,
    ) -> Table:
        """Create the table by the create-only put of ``v1``; ``TableAlreadyExistsError`` if
        it exists (of concurrent creators exactly one succeeds)."""
        self._split(identifier)
        staged = self._create_staged_table(
            identifier, schema, location, partition_spec, sort_order, properties
        )
        key = self.metadata_key(identifier, 1)
        data = serialize_metadata(staged.metadata)
        crash_point("commit.before_metadata_put")
        try:
            self.store.put_if_absent(key, data)
        except AlreadyExists as e:
            raise TableAlreadyExistsError(f"Table {identifier} already exists") from e
        crash_point("commit.after_metadata_put")
        self._write_hint(identifier, 1)
        crash_point("commit.after_version_hint")
        return self._table(identifier, 1, staged.metadata)

    def commit_table(
        self,
        table: Table,
        requirements: tuple[TableRequirement, ...],
        updates: tuple[TableUpdate, ...],
    ) -> CommitTableResponse:
        """Commit ``updates`` on top of exactly ``table``'s version N by creating ``v<N+1>``.

        ``CommitFailedException`` if a requirement fails against the base or if ``v<N+1>``
        already exists (a concurrent commit won, or the name is retired).
        """
        identifier = table.name()
        creating = any(isinstance(r, AssertCreate) for r in requirements)
        if creating:
            base_version, base = 0, None
        else:
            base_version, base = parse_metadata_version(table.metadata_location), table.metadata
        for requirement in requirements:
            requirement.validate(base)
        updated = update_table_metadata(
            base_metadata=base if base is not None else self._empty_table_metadata(),
            updates=updates,
            enforce_validation=base is None,
            metadata_location=table.metadata_location if base is not None else None,
        )
        if base is not None and updated == base:
            return CommitTableResponse(metadata=base, metadata_location=table.metadata_location)  # type: ignore[call-arg]
        version = base_version + 1
        key = self.metadata_key(identifier, version)
        data = serialize_metadata(updated)
        crash_point("commit.before_metadata_put")
        try:
            self.store.put_if_absent(key, data)
        except AlreadyExists as e:
            if not self._is_ours(key, data):
                if creating:
                    raise TableAlreadyExistsError(f"Table {identifier} already exists") from e
                raise CommitFailedException(
                    f"{'.'.join(identifier)}: v{version} was committed concurrently"
                ) from e
        crash_point("commit.after_metadata_put")
        self._write_hint(identifier, version)
        crash_point("commit.after_version_hint")
        return CommitTableResponse(metadata=updated, metadata_location=self.store.uri(key))  # type: ignore[call-arg]

    def _is_ours(self, key: str, data: bytes) -> bool:
        """After ``AlreadyExists``: is the object our own put whose response was lost?"""
        try:
            return self.store.get(key) == data
        except NotFound:
            return False

    def register_table(
        self, identifier: str | Identifier, metadata_location: str, overwrite: bool = False
    ) -> Table:
        raise NotImplementedError(
            "the object-store catalog finds tables by path; copy them instead"
        )

    def drop_table(self, identifier: str | Identifier) -> None:
        raise NotImplementedError(
            "dropping would free metadata names a running writer may still target; "
            "stop all writers and delete the table's prefix by hand"
        )

    def rename_table(
        self, from_identifier: str | Identifier, to_identifier: str | Identifier
    ) -> Table:
        raise NotImplementedError("tables are found by path; renaming is not supported")

    # ---- retirement --------------------------------------------------------------------

    def retire_versions(self, identifier: str | Identifier, keep: int) -> int:
        """Tombstone every version more than ``keep`` below the current one; return how many
        were newly tombstoned. Names stay taken (see the module docstring)."""
        if keep < 1:
            raise ValueError("keep must be >= 1 (the current version is never retired)")
        current = self.current_version(identifier)
        upto = current - keep
        mark_key = f"{self.table_prefix(identifier)}/{METADATA_DIR}/{RETIRED_MARK}"
        try:
            done = int(self.store.get(mark_key).decode().strip() or 0)
        except (NotFound, ValueError):
            done = 0
        if upto <= done:
            return 0
        tomb = json.dumps(
            {TOMBSTONE_KEY: 1, "note": "retired metadata version; read version-hint.text"}
        ).encode()
        count = 0
        for v in range(done + 1, upto + 1):
            crash_point("maintenance.before_delete_metadata")
            self.store.put(self.metadata_key(identifier, v), tomb)
            count += 1
        with contextlib.suppress(Exception):
            self.store.put(mark_key, str(upto).encode())
        return count

    # ---- namespaces (prefixes) ---------------------------------------------------------

    def create_namespace(
        self, namespace: str | Identifier, properties: Properties = EMPTY_DICT
    ) -> None:
        ns = self.namespace_to_string(namespace)
        if self.namespace_exists(ns):
            raise NamespaceAlreadyExistsError(ns)

    def create_namespace_if_not_exists(
        self, namespace: str | Identifier, properties: Properties = EMPTY_DICT
    ) -> None:
        return None

    def drop_namespace(self, namespace: str | Identifier) -> None:
        raise NotImplementedError("namespaces are key prefixes; nothing to drop")

    def _table_keys(self, prefix: str) -> Iterator[tuple[str, str]]:
        for info in self.store.list(prefix):
            parts = info.key.split("/")
            if len(parts) == 4 and parts[2] == METADATA_DIR and parts[3] == metadata_file_name(1):
                yield parts[0], parts[1]

    def list_tables(self, namespace: str | Identifier) -> list[Identifier]:
        """O(objects under the namespace): for tools, not for the commit path."""
        ns = self.namespace_to_string(namespace)
        return [(a, b) for a, b in self._table_keys(f"{ns}/")]

    def list_namespaces(self, namespace: str | Identifier = ()) -> list[Identifier]:
        """O(objects in the warehouse): for tools, not for the commit path."""
        if namespace:
            return []
        return sorted({(a,) for a, _ in self._table_keys("")})

    def namespace_exists(self, namespace: str | Identifier) -> bool:
        ns = self.namespace_to_string(namespace)
        return any(True for _ in self._table_keys(f"{ns}/"))

    def load_namespace_properties(self, namespace: str | Identifier) -> Properties:
        self.namespace_to_string(namespace, NoSuchNamespaceError)
        return {}

    def update_namespace_properties(
        self,
        namespace: str | Identifier,
        removals: set[str] | None = None,
        updates: Properties = EMPTY_DICT,
    ) -> Any:
        raise NotImplementedError("namespaces are key prefixes without properties")

    # ---- views (unsupported) -----------------------------------------------------------

    def list_views(self, namespace: str | Identifier) -> list[Identifier]:
        return []

    def view_exists(self, identifier: str | Identifier) -> bool:
        return False

    def load_view(self, identifier: str | Identifier) -> View:
        raise NoSuchViewError(f"views are not supported: {identifier}")

    def register_view(self, identifier: str | Identifier, metadata_location: str) -> View:
        raise NotImplementedError("views are not supported")

    def drop_view(self, identifier: str | Identifier) -> None:
        raise NoSuchViewError(f"views are not supported: {identifier}")


def make_catalog(
    warehouse_url: str,
    s3_options: S3Options | None = None,
    catalog_properties: dict[str, str] | None = None,
    name: str = "lockgate",
) -> Catalog:
    """The catalog for a warehouse: ``ObjectStoreCatalog`` unless ``catalog_properties``
    name a pyiceberg catalog (``type: sql | rest | glue | ...`` or ``py-catalog-impl``), which
    is then loaded by ``pyiceberg.catalog.load_catalog`` with the warehouse and the S3 FileIO
    properties as defaults (explicit properties win)."""
    props = dict(catalog_properties or {})
    kind = props.get("type")
    if kind in (None, "", "lockgate", "object-store") and "py-catalog-impl" not in props:
        props.pop("type", None)
        extra: dict[str, Any] = props
        return ObjectStoreCatalog(name, warehouse=warehouse_url, s3_options=s3_options, **extra)
    merged = {"warehouse": warehouse_url, **fileio_properties(warehouse_url, s3_options), **props}
    return load_catalog(name, **merged)
