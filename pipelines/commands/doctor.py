"""``lockgate doctor``: check the environment and every storage location Lockgate will use.

Prints one ``PASS`` / ``FAIL`` (or ``SKIP`` / ``INFO``) line per check and exits 0 only if no check
failed. Locations are the ``--url`` arguments, else the warehouse, ledger and landing
locations of the config. For each location: reachable, listable, and -- the one that
matters most -- the endpoint honours create-only puts (the conditional-write probe writes
and deletes one ``_lockgate/probe/<uuid>`` object there). Secrets are never printed:
endpoint URLs are shown without user info and credentials only by their source.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from lockgate.resources.probe import probe_conditional_writes
from lockgate.resources.retry import RetryPolicy
from lockgate.resources.store import LocalStore, ObjectStore, S3Options, UnsafeEndpoint
from lockgate.resources.stores import open_store

# A doctor must answer quickly: a few short retries, not the production policy.
DOCTOR_RETRY = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=1.0, max_total=10.0)

REQUIRED_PACKAGES = ("dagster", "dagster-webserver", "pyiceberg", "pyarrow", "s3fs", "pyyaml")
OPTIONAL_PACKAGES = ("lockgate", "dagster-aws", "aiobotocore", "botocore", "duckdb", "pandas")


@dataclass
class Report:
    """Collected check results; ``failed`` counts FAIL lines."""

    lines: list[str] = field(default_factory=list)
    failed: int = 0

    def add(self, status: str, what: str, detail: str = "") -> None:
        text = f"  {status:<4}  {what}" + (f": {detail}" if detail else "")
        self.lines.append(text)
        print(text, flush=True)
        if status == "FAIL":
            self.failed += 1

    def section(self, title: str) -> None:
        self.lines.append(title)
        print(title, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="URL",
        help="a location to check (s3://bucket/prefix or a local path); repeatable. "
        "Default: the warehouse, ledger and landing locations of the config",
    )
    parser.add_argument(
        "--endpoint-url",
        default=None,
        help="S3 endpoint (default: $AWS_ENDPOINT_URL, else the config's, else AWS)",
    )
    parser.add_argument("--region", default=None, help="S3 region (default: $AWS_REGION)")


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


def _check_environment(report: Report) -> None:
    report.section("environment")
    py = platform.python_version()
    if sys.version_info[:2] == (3, 11):
        report.add("PASS", "python", py)
    else:
        report.add("FAIL", "python", f"{py} (Lockgate needs Python 3.11)")
    for name in REQUIRED_PACKAGES + OPTIONAL_PACKAGES:
        try:
            report.add("PASS", name, importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            if name in REQUIRED_PACKAGES:
                report.add("FAIL", name, "not installed (run `make .venv/.installed`)")
            else:
                report.add("SKIP", name, "not installed")


def _credential_source(options: S3Options) -> str:
    """Where S3 credentials come from (never their values)."""
    if options.access_key_id:
        return "explicit options"
    try:
        import botocore.session

        creds = botocore.session.get_session().get_credentials()
    except Exception as e:  # a broken profile must not crash the doctor
        return f"unknown ({type(e).__name__})"
    if creds is None:
        return "none found"
    return str(getattr(creds, "method", "found"))


def _locations_from_config(args: argparse.Namespace, report: Report) -> list[str] | None:
    """The config's locations, or None (with a FAIL line) if there is no usable config."""
    try:
        from lockgate.resources.config import load_config
    except ImportError:
        report.add("FAIL", "config", "this build has no config module; pass --url")
        return None
    try:
        cfg = load_config(getattr(args, "config", None))
    except Exception as e:
        report.add("FAIL", "config", f"{_one_line(e)} (or pass --url to check a location)")
        return None
    report.add("PASS", "config", cfg.path)
    if not args.endpoint_url and cfg.s3.endpoint_url:
        args.endpoint_url = cfg.s3.endpoint_url
    if not args.region and cfg.s3.region:
        args.region = cfg.s3.region
    urls = [cfg.warehouse, cfg.ledger] + [s.landing for s in cfg.sources.values()]
    return list(dict.fromkeys(urls))


def _open(url: str, options: S3Options) -> ObjectStore:
    if url.startswith(("s3://", "s3a://")):
        from lockgate.resources.store_s3 import S3Store

        return S3Store(url, options, retry=DOCTOR_RETRY)
    return open_store(url, options)


def _check(report: Report, what: str, fn: Callable[[], str]) -> bool:
    try:
        detail = fn()
    except Exception as e:
        report.add("FAIL", what, _one_line(e))
        return False
    report.add("PASS", what, detail)
    return True


def _check_location(report: Report, url: str, options: S3Options) -> None:
    try:
        store = _open(url, options)
    except Exception as e:
        report.section(url)
        report.add("FAIL", "location", _one_line(e))
        return
    if isinstance(store, LocalStore):
        report.section(f"{store.url}  (local folder)")
    else:
        report.section(f"{store.url}  (endpoint {getattr(store, 'endpoint_url', '?')})")

    def reachable() -> str:
        check_bucket = getattr(store, "check_bucket", None)
        if check_bucket is not None:
            check_bucket()
            return f"bucket {getattr(store, 'bucket', '')!r} answers"
        assert isinstance(store, LocalStore)
        if store.root.is_dir():
            return "folder exists"
        parent = next((p for p in store.root.parents if p.exists()), None)
        if parent is None or not parent.is_dir():
            raise OSError(f"no existing parent folder of {store.root}")
        return f"folder will be created (below {parent})"

    if not _check(report, "reachable", reachable):
        report.add("SKIP", "list", "not reachable")
        report.add("SKIP", "create-only puts", "not reachable")
        return

    def listable() -> str:
        first = next(iter(store.list("")), None)
        return "allowed" + ("" if first is not None else " (empty)")

    _check(report, "list", listable)

    try:
        probe_conditional_writes(store)
    except UnsafeEndpoint as e:
        report.add("FAIL", "create-only puts", _one_line(e))
    except Exception as e:
        report.add("FAIL", "create-only puts", f"could not run the probe: {_one_line(e)}")
    else:
        report.add("PASS", "create-only puts", "honoured (a second create of one key was refused)")


def _check_queues(report: Report, args: argparse.Namespace) -> None:
    """For each notification-mode source: its queue (and dead-letter queue) exists and
    answers. Reads attributes only: receiving would hide messages from the sensor."""
    try:
        from lockgate.resources.config import load_config
        from lockgate.resources.sqs import SqsQueue

        cfg = load_config(getattr(args, "config", None))
    except Exception:
        return  # reported by the configuration section
    for src in cfg.sources.values():
        d = src.discovery
        if d.mode != "notifications" or d.queue_url is None:
            continue
        report.section(f"queue of source {src.name}  ({d.queue_url})")
        for what, url in (("queue", d.queue_url), ("dead-letter queue", d.dead_letter_queue_url)):
            if url is None:
                continue
            queue = SqsQueue(url, cfg.s3, retry=DOCTOR_RETRY)

            def reachable(q: SqsQueue = queue) -> str:
                a = q.attributes("QueueArn", "ApproximateNumberOfMessages")
                return f"{a['QueueArn']} answers, about {a['ApproximateNumberOfMessages']} waiting"

            _check(report, what, reachable)


#: Where the archive check writes (then deletes) its probe object, under the archive location.
ARCHIVE_PROBE = "_lockgate/doctor/"


def _check_archives(report: Report, args: argparse.Namespace) -> None:
    """For each source with ``clean_source`` on: says what cleaning does, and for ``archive``
    checks that the archive location is writable (puts, reads back and deletes one
    ``_lockgate/doctor/<uuid>`` object there: an archive copy is a put, and cleaning deletes)."""
    try:
        from lockgate.resources.config import load_config

        cfg = load_config(getattr(args, "config", None))
    except Exception:
        return  # reported by the configuration section
    options = S3Options.from_env(endpoint_url=args.endpoint_url, region=args.region)
    for src in cfg.sources.values():
        if src.clean_source == "off":
            continue
        if src.clean_source == "delete":
            report.section(f"clean_source of source {src.name}")
            report.add(
                "INFO",
                "clean_source delete",
                "committed objects are deleted from the landing; a rebuild of their days refuses",
            )
            continue
        url = src.clean_archive_to or ""
        report.section(f"archive of source {src.name}  ({url})")
        report.add(
            "INFO",
            "clean_source archive",
            "committed objects are copied here, then deleted from the landing",
        )

        def writable(target: str = url) -> str:
            import uuid

            store = _open(target, options)
            key = f"{ARCHIVE_PROBE}{uuid.uuid4().hex}"
            store.put(key, b"lockgate doctor: archive write check\n")
            try:
                if store.get(key) != b"lockgate doctor: archive write check\n":
                    raise OSError(f"{key} read back other bytes")
            finally:
                store.delete(key)
            return "a probe object was written, read back and deleted"

        _check(report, "archive writable", writable)


def run(args: argparse.Namespace) -> int:
    # the report says it all; retry chatter from the store would only repeat it
    quiet = logging.getLogger("resources")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return _run(args)
    finally:
        quiet.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    report = Report()
    print("lockgate doctor", flush=True)
    _check_environment(report)
    urls: list[str] | None = list(args.url)
    if not urls:
        report.section("configuration")
        urls = _locations_from_config(args, report)
    if urls:
        options = S3Options.from_env(endpoint_url=args.endpoint_url, region=args.region)
        if any(u.startswith(("s3://", "s3a://")) for u in urls):
            report.section("s3")
            endpoint = options.endpoint_url or "default AWS endpoint"
            from lockgate.resources.store_s3 import redact_url

            report.add("INFO", "endpoint", redact_url(endpoint))
            source = _credential_source(options)
            status = "FAIL" if source == "none found" else "PASS"
            report.add(status, "credentials", source)
        for url in urls:
            _check_location(report, url, options)
    if not args.url:
        _check_queues(report, args)
        _check_archives(report, args)
    if report.failed:
        print(f"{report.failed} check(s) FAILED", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0
