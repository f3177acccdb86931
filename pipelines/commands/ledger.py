"""``lockgate ledger``: inspect a source's ledger (read-only), or reset its fingerprint.

``lockgate ledger show --source S [--batch N] [--json] [--ledger URL]`` prints the claims count,
the committed and pending batches, the high-water key and the last compaction; with ``--batch``
the batch's objects and commit record. ``show`` never writes.

``lockgate ledger reset --source S --yes`` accepts a changed source declaration (landing URL,
format, table): it writes a new fingerprint version and keeps every claim, so an object
``(key, etag)`` already claimed is never ingested again. Needs the config (the new fingerprint
comes from it). When the change moved the landing alone, it then claims what is left in the
earlier landing (``lockgate.pipelines.move``); running it again (fingerprint unchanged) claims
what landed there since.

The ledger root is ``--ledger URL`` if given, else the ``ledger`` of the config file.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lockgate.pipelines.commands.common import CommandError
from lockgate.resources.errors import LockgateError
from lockgate.resources.ledger import Claim, CommitRecord, Ledger
from lockgate.resources.store import ObjectStore, S3Options
from lockgate.resources.stores import open_store

PENDING_SHOWN = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("show", "reset"), default="show")
    parser.add_argument("--source", required=True, help="source name")
    parser.add_argument("--batch", type=int, help="show one batch: its objects and commit record")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--ledger", help="ledger root URL (local path or s3://bucket/prefix); default: config"
    )
    parser.add_argument("--s3-endpoint", help="S3 endpoint URL for --ledger s3://...")
    parser.add_argument("--yes", action="store_true", help="confirm `reset`")


def _load_config(args: argparse.Namespace) -> Any | None:
    """The parsed config, or None when the config module is not available."""
    try:
        from lockgate.resources.config import load_config
    except ImportError:
        return None
    return load_config(getattr(args, "config", None))


def _ledger_store(args: argparse.Namespace, config: Any | None) -> ObjectStore:
    if args.ledger:
        s3 = config.s3 if config is not None else S3Options.from_env(args.s3_endpoint)
        if args.s3_endpoint:
            s3 = S3Options.from_env(args.s3_endpoint)
        return open_store(args.ledger, s3)
    if config is None:
        raise CommandError("no --ledger given and no config available")
    return open_store(config.ledger, config.s3)


def _claim_json(c: Claim) -> dict[str, Any]:
    return c.to_json()


def _commit_json(r: CommitRecord | None, source: str) -> dict[str, Any] | None:
    return r.to_json(source) if r is not None else None


def _size(n: int) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{n} B"


def show(led: Ledger, batch: int | None, as_json: bool) -> int:
    if batch is not None:
        claim = led.get_claim(batch)
        rec = led.commit_record(batch)
        if as_json:
            out = {"claim": _claim_json(claim), "commit": _commit_json(rec, led.source)}
            print(json.dumps(out, indent=2))
            return 0
        print(
            f"batch {claim.batch_id} of {claim.source}: partition {claim.partition}, "
            f"created {claim.created_at.isoformat()}, fingerprint v{claim.fingerprint_version}"
        )
        print(f"objects: {len(claim.objects)} ({_size(claim.bytes)})")
        for o in claim.objects:
            print(
                f"  {o.key}  etag={o.etag}  size={o.size}  modified={o.last_modified.isoformat()}"
            )
        if rec is None:
            print("commit: none (pending)")
        else:
            print(
                f"commit: snapshot {rec.snapshot_id}, table version {rec.table_version}, "
                f"rows {rec.rows}, quarantined {rec.quarantined}, bytes {rec.bytes}, "
                f"objects {rec.objects}, at {rec.committed_at.isoformat()}"
                + (", duplicate (already in the table)" if rec.duplicate else "")
            )
        return 0
    s = led.summary()
    if as_json:
        print(
            json.dumps(
                {
                    "source": s.source,
                    "ledger": led.store.uri(),
                    "claims": s.claims,
                    "committed": s.committed,
                    "pending": list(s.pending),
                    "high_water_key": s.high_water_key,
                    "last_compaction": s.last_compaction,
                    "compacted_claimed_objects": s.compacted_claimed_objects,
                    "fingerprint": s.fingerprint.to_json(s.source),
                },
                indent=2,
            )
        )
        return 0
    fp = ", ".join(f"{k}={v}" for k, v in sorted(s.fingerprint.values.items()))
    print(f"source:          {s.source}")
    print(f"ledger:          {led.store.uri()}")
    print(f"fingerprint:     v{s.fingerprint.version} ({fp})")
    print(f"claims:          {s.claims}" + (f" (batches 0..{s.claims - 1})" if s.claims else ""))
    print(f"committed:       {s.committed}")
    shown = ", ".join(str(b) for b in s.pending[:PENDING_SHOWN])
    more = (
        f", ... ({len(s.pending) - PENDING_SHOWN} more)" if len(s.pending) > PENDING_SHOWN else ""
    )
    print(f"pending:         {len(s.pending)}" + (f" ({shown}{more})" if s.pending else ""))
    print(f"high-water key:  {s.high_water_key or '-'}")
    if s.last_compaction is None:
        print("last compaction: none")
    else:
        print(
            f"last compaction: up to batch {s.last_compaction} "
            f"({s.compacted_claimed_objects} claimed objects)"
        )
    return 0


def reset(args: argparse.Namespace, store: ObjectStore, config: Any | None) -> int:
    if config is None:
        raise CommandError("ledger reset needs the config (the new fingerprint comes from it)")
    fingerprint = config.source(args.source).fingerprint()
    current = Ledger.read_fingerprint(store, args.source)
    if current is not None and dict(current.values) == fingerprint:
        print(f"source {args.source!r}: fingerprint unchanged (v{current.version}); nothing to do")
        return _finish_move(args, store, config) if args.yes else 0
    if not args.yes:
        raise CommandError(
            f"source {args.source!r}: would write a new fingerprint {fingerprint} keeping every "
            "claim; re-run with --yes to do it"
        )
    led = Ledger.open(store, args.source, fingerprint, reset=True)
    print(
        f"source {args.source!r}: fingerprint v{led.fingerprint.version} from batch "
        f"{led.fingerprint.from_batch}; every claim kept"
    )
    return _finish_move(args, store, config)


def _finish_move(args: argparse.Namespace, store: ObjectStore, config: Any) -> int:
    """When the latest fingerprint change moved the landing alone: claim what is left in the
    earlier landing (``lockgate.pipelines.move``) and say where its batches are read."""
    from dataclasses import replace

    from lockgate.pipelines.move import drain_earlier_landing
    from lockgate.resources.runtime import Runtime

    rt = replace(Runtime.from_config(config), ledger_store=store)
    report = drain_earlier_landing(rt, config.source(args.source))
    if report is None:
        return 0
    print(
        f"source {args.source!r}: moved from {report.landing}: claimed {report.objects} objects "
        f"left there ({len(report.batches)} batches, under fingerprint v{report.version}). "
        "Batches claimed there run and rebuild from there: keep it until they are committed, "
        "and for as long as you may rebuild their days. Objects landing there from now on are "
        "not listed: run this command again to claim them."
    )
    if report.too_young:
        print(
            f"source {args.source!r}: {report.too_young} objects there are still changing "
            "(min_age): run this command again once they are complete"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """Errors are raised (``LockgateError``; a bad ``--ledger`` URL as ``CommandError``)."""
    try:
        config = None
        if not args.ledger or args.action == "reset":
            config = _load_config(args)
        store = _ledger_store(args, config)
    except LockgateError:
        raise
    except ValueError as e:  # an unparsable --ledger URL
        raise CommandError(str(e)) from None
    if args.action == "reset":
        return reset(args, store, config)
    fp = Ledger.read_fingerprint(store, args.source)
    if fp is None:
        raise CommandError(f"no ledger for source {args.source!r} at {store.uri()}")
    return show(Ledger(store, args.source, fp), args.batch, args.json)
