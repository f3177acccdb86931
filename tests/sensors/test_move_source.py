"""Moving a source to a new landing prefix while objects keep arriving (issue 19, item 1), through
Dagster definitions loaded once (the code location is never reloaded) on moto over HTTP.

What is shown: a tick after the config edit but before ``lockgate ledger reset`` fails with
what to do, while the pending batch of the old landing still runs (read where it was claimed);
the reset claims the straggler left in the old landing; the sensor then lists the new landing
without a reload and requests the old landing's batch as usual (its run reads the old
landing); a copy of an ingested object into the new landing is not ingested again; rebuilding
earlier days reads the old landing; every landed record is in the table exactly once and
``verify`` is green.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from lockgate.pipelines.cli import main as lockgate_main
from lockgate.pipelines.rebuild import rebuild
from lockgate.resources.config import load_config
from lockgate.resources.runtime import Runtime
from tests.conftest import create_bucket
from tests.platform_helpers import (
    Lander,
    landing_store,
    s3_config,
    source_spec,
    table_ids,
    verify,
    write_config,
)
from tests.sensors.platform_harness import Harness

pytestmark = pytest.mark.s3

NAME = "moves"


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def _run_all(h: Harness, result: object) -> int:
    requests = list(getattr(result, "run_requests", None) or [])
    for rr in requests:
        h.run(rr)
    return len(requests)


def test_source_moved_while_objects_keep_arriving_is_exactly_once(
    tmp_path: Path, moto_server: str, instance: dg.DagsterInstance
) -> None:
    bucket = create_bucket(moto_server)
    path = tmp_path / "lockgate.yaml"
    cfg = s3_config(path, moto_server, bucket, [NAME], max_runs_per_tick=10)
    h = Harness(cfg, NAME, instance)  # the code location, loaded once for the whole test
    old = Lander(landing_store(cfg, NAME))
    old.land("2026-05-01/a.jsonl")
    old.land("2026-05-01/b.jsonl")
    assert _run_all(h, h.tick()) == 1
    old.land("2026-05-02/c.jsonl")
    pending = h.tick().run_requests  # c is claimed in the old landing; its run waits
    assert len(pending) == 1

    # producers switch to the new prefix; one more object still lands in the old one
    new_landing = f"s3://{bucket}/moved/{NAME}"
    old.land("2026-05-02/d.jsonl")  # never listed by a tick before the move
    # the operator edits lockgate.yaml (no reload of the definitions)
    write_config(
        path,
        warehouse=f"s3://{bucket}/warehouse",
        ledger=f"s3://{bucket}/ledger",
        endpoint=moto_server,
        sources={NAME: source_spec(NAME, new_landing)},
        dagster={"max_runs_per_tick": 10},
    )
    moved = load_config(str(path))
    new = Lander(landing_store(moved, NAME), start=old.next_id)
    new.land("2026-05-02/e.jsonl")
    # the operator also copies an ingested object over: same key, same bytes, same etag
    copied = "2026-05-01/a.jsonl"
    new.store.put(copied, old.store.get(copied))

    with pytest.raises(Exception) as err:  # the sensor sees the edit and says what to do
        h.tick()
    assert "lockgate ledger reset --source moves" in str(err.value)
    assert new_landing in str(err.value)
    h.run(pending[0])  # the pending batch runs meanwhile, read in the old landing

    assert lockgate_main(["--config", str(path), "ledger", "reset", "--source", NAME]) == 2
    assert lockgate_main(["--config", str(path), "ledger", "reset", "--source", NAME, "--yes"]) == 0

    rt = Runtime.from_config(moved)
    source = rt.source(NAME)
    ledger = rt.ledger(source)
    by_version = Counter(ledger.get_claim(c.batch_id).fingerprint_version for c in ledger.pending())
    assert by_version == {0: 1}  # d, claimed by the reset under the old landing's version

    # the sensor keeps going on the new landing, and requests the old landing's batch too
    for _ in range(3):
        _run_all(h, h.tick())
    new.land("2026-05-03/f.jsonl")
    assert _run_all(h, h.tick()) == 1
    assert h.tick().skip_message

    # earlier days rebuild from the old landing (where their batches were claimed)
    out = rebuild(rt, source, [date(2026, 5, 1), date(2026, 5, 2)])
    assert out.rows == sum(old.landed.values()) + 3  # a, b, c, d from the old landing; e

    landed = old.landed + new.landed
    assert table_ids(rt, NAME) == landed
    report = verify(rt, NAME)
    assert report.ok, report.violations
    assert report.rows == sum(landed.values())
    assert not rt.ledger(source).pending()
