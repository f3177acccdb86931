"""``shared`` trials: configs that put two sources on one table must be refused.

After a normal first round (sources ``ev`` and ``cs`` ingested, killed at crash points as in
``crash`` trials), the trial adds a third source ``B`` (a random name that appears nowhere
else in the config: not in a path, not in a table name) in each of three ways, one after
the other in random order:

* ``same_table``: ``B`` has its own landing folder and writes ``ev``'s table ``tt.ev``;
* ``nested``: ``B``'s landing is a folder inside ``ev``'s landing (its own table);
* ``quarantine_table``: ``B`` writes ``tt.ev__quarantine``, ``ev``'s quarantine table;

lands objects for ``B`` (``nested``: inside ``ev``'s landing, so they are ``ev``'s objects once
the config is valid again), and runs ``lockgate ingest`` and one of ``verify`` / ``status``.
Each must be refused: exit code neither 0 nor a kill, an error that names both ``B`` and
``ev``, no Python traceback, and **nothing written**: every file of the trial's storage
(warehouse, ledger, landing; local: path, size and mtime; S3: key and etag) is the same
before and after. Then the valid config is restored and the trial ends as every trial does
(final ingest, ``verify``, the independent readers: ``B``'s objects outside ``ev``'s landing
never appear, the nested ones count as ``ev``'s).
"""

from __future__ import annotations

import os
import random
import re
from typing import TYPE_CHECKING

from lockgate.resources.stores import open_store

if TYPE_CHECKING:
    from tests.torture.trial import SourceData, Trial, TrialEnv, Writer

VARIANTS = ("same_table", "nested", "quarantine_table")
EV_NAMED = re.compile(r"(?<![\w./-])ev(?![\w/.-])")


def snapshot(env: TrialEnv) -> dict[str, str]:
    """Every file of the trial's storage except the config: name -> size/mtime or etag."""
    out: dict[str, str] = {}
    if env.ctx.backend == "s3":
        import boto3

        s3 = boto3.client("s3", endpoint_url=env.ctx.moto, region_name="us-east-1")
        kw: dict[str, str] = {"Bucket": env.bucket}
        while True:
            page = s3.list_objects_v2(**kw)
            out.update({o["Key"]: str(o["ETag"]) for o in page.get("Contents", [])})
            if not page.get("IsTruncated"):
                return out
            kw["ContinuationToken"] = page["NextContinuationToken"]
    for dirpath, _dirs, files in os.walk(env.work):
        for name in files:
            path = os.path.join(dirpath, name)
            if path == str(env.config):
                continue
            st = os.lstat(path)
            out[os.path.relpath(path, env.work)] = f"{st.st_size}-{st.st_mtime_ns}"
    return out


def shared_round(trial: Trial, env: TrialEnv, writer: Writer, data: dict[str, SourceData]) -> None:
    """Every variant, in random order: write the sharing config, check that Lockgate refuses
    it and writes nothing, restore the valid config."""
    variants = list(VARIANTS)
    trial.rng.shuffle(variants)
    for variant in variants:
        _one_variant(trial, env, writer, data, variant)


def _one_variant(
    trial: Trial, env: TrialEnv, writer: Writer, data: dict[str, SourceData], variant: str
) -> None:
    rng: random.Random = trial.rng
    res = trial.result
    b = f"mirror{rng.randrange(10**4)}"
    lane = f"lane{rng.randrange(10**4)}"
    base = env.landing_url["ev"].rsplit("/", 1)[0]
    ev = data["ev"]
    if variant == "nested":
        landing, table = f"{env.landing_url['ev']}/sub", f"tt.inner{rng.randrange(10**4)}"
        desc = f"source {b} landing inside ev's landing"
    else:
        landing = f"{base}/{lane}"
        table = "tt.ev" if variant == "same_table" else "tt.ev__quarantine"
        desc = f"sources ev and {b} both on table {table}"
    part = "partition: {pattern: 'dt=(\\d{4}-\\d{2}-\\d{2})', start: 2024-01-01}"
    extra = (
        f"  {b}:\n    landing: {landing}\n    format: jsonl\n    table: {table}\n    {part}\n"
        "    schema: {id: string, v: long, note: string}\n"
    )
    # B's objects: an accepting Lockgate would ingest (write) them
    from tests.torture.trial import DAYS

    for _ in range(rng.randint(1, 2)):
        day = rng.choice(DAYS)
        name = f"dt={day}/p1-{rng.randrange(10**5):05d}.jsonl"
        if variant == "nested":
            key = f"sub/{name}"
            if key not in ev.versions:
                writer.put(ev, key)
                ev.expected[key] = 0
        else:
            good, _bad = writer.records(ev)
            open_store(landing, env.s3).put(name, writer.body(ev, good, []))  # never expected
    env.write_config(**trial.cfg, extra_sources=extra)
    res.data[f"shared_{variant}"] += 1
    for argv in (["ingest"], rng.choice([["verify"], ["status"]])):
        before = snapshot(env)
        proc = env.start(argv)
        log = env.logs / f"run{env.nlog:02d}-{argv[0]}-none.log"
        rec = trial._finish(env, proc, f"refused-{argv[0]}", None, 1, log)
        after = snapshot(env)
        text = log.read_text(errors="replace") if log.exists() else ""
        what = f"{variant}: `lockgate {argv[0]}` with {desc}"
        if rec.rc == 0:
            res.violate("shared-accepted", f"{what}: exit 0, the config was not refused")
        elif rec.rc in (None, -9):
            res.violate("shared-accepted", f"{what}: hung or killed (rc {rec.rc})")
        else:
            if b not in text or not EV_NAMED.search(text):
                res.violate(
                    "shared-unnamed",
                    f"{what}: exit {rec.rc}, the error does not name both sources: {text[-300:]!r}",
                )
            if "Traceback" in text:
                res.violate("shared-traceback", f"{what}: exit {rec.rc} with a traceback")
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if changed:
            res.violate(
                "shared-wrote", f"{what}: {len(changed)} files written or changed: {changed[:4]}"
            )
    env.write_config(**trial.cfg)
