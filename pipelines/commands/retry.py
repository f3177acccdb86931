"""``lockgate retry --source S --batch N [--component NAME]``: ask the sensor to request a
stuck batch again (under a new run key mapped to the same batch; it still commits at most
once). The printed run key is the one the sensor uses: ``<NAME>__S:N:retryK`` for the source
of a named Lockgate component (``--component NAME``), ``S:N:retryK`` otherwise.

A batch claimed under another format or table than the current declaration is refused
(``ClaimFingerprintChanged``, exit 5, saying what to restore): its run could only refuse it.
A batch claimed before the source's landing moved is requested as usual: its run reads it in
the landing it was claimed in, never its key in the new landing."""

from __future__ import annotations

import argparse

from lockgate.pipelines.batch import ClaimFingerprintChanged
from lockgate.pipelines.commands.common import add_component_argument, namespace, runtime
from lockgate.resources.fingerprint import blocking
from lockgate.sensors.retries import request_retry, run_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="source name from lockgate.yaml")
    parser.add_argument("--batch", required=True, type=int, help="batch id")
    parser.add_argument("--reason", default="", help="why (kept with the request)")
    add_component_argument(parser)


def run(args: argparse.Namespace) -> int:
    ns = namespace(args)
    rt = runtime(args)
    source = rt.source(args.source)
    ledger = rt.ledger(source)
    claim = ledger.get_claim(args.batch)  # UnknownBatch (a usage error) if there is none
    if ledger.commit_record(args.batch) is not None:
        print(f"{source.name}: batch {args.batch} is already committed; nothing to retry")
        return 0
    changes = blocking(ledger.fingerprint_changes(claim))
    if changes:  # its run would refuse it: say what to do instead of requesting a doomed run
        raise ClaimFingerprintChanged(source.name, claim, changes)
    n = request_retry(rt.ledger_store.child(source.name), args.batch, args.reason)
    print(
        f"{source.name}: batch {args.batch} will be requested as run key "
        f"{run_key(ns.label(source.name), args.batch, n)} at the sensor's next tick "
        f"(or run `lockgate ingest --source {source.name}` to execute it here)"
    )
    return 0
