"""The Spark side of ``bench.spark_vs_lockgate``. Runs inside the Spark venv
(``bench/.spark-venv``, ``make bench-spark``), never the project's: stdlib + pyspark only.

``python bench/spark_job.py --input DIR --schema DDL --output DIR --checkpoint DIR [--warm]``

Spark Structured Streaming, ``local[2]``: JSON file source with the given schema -> Parquet
file sink (zstd) with a checkpoint, ``trigger(availableNow=True)``. Prints, flushed:

* ``SESSION_READY <s>``: the SparkSession (JVM) is up, seconds since this script started;
* ``COLD_END`` as soon as the first query finished, then ``COLD_DONE {json}`` (rows, query
  seconds, trigger ms; with ``--verify`` also the rows read back from the sink);
* with ``--warm``: the same query again on a fresh sink and checkpoint in the same (warm)
  JVM, then ``WARM_DONE {json}`` -- the steady-state figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

T0 = time.monotonic()


def run_query(
    spark: object, args: argparse.Namespace, suffix: str, label: str
) -> dict[str, object]:
    t0 = time.monotonic()
    stream = spark.readStream.schema(args.schema)  # type: ignore[attr-defined]
    src = stream.option("maxFilesPerTrigger", args.max_files) if args.max_files else stream
    df = src.json(args.input)
    q = (
        df.writeStream.format("parquet")
        .option("path", args.output + suffix)
        .option("checkpointLocation", args.checkpoint + suffix)
        .trigger(availableNow=True)
        .start()
    )
    q.awaitTermination()
    elapsed = time.monotonic() - t0
    print(f"{label}_END", flush=True)  # the parent's wall time stops here (before --verify)
    progress = [p for p in q.recentProgress if p.get("numInputRows", 0) or p.get("batchId", 0)]
    rows = sum(int(p.get("numInputRows", 0)) for p in progress)
    trigger_ms = sum(int(p.get("durationMs", {}).get("triggerExecution", 0)) for p in progress)
    add_ms = sum(int(p.get("durationMs", {}).get("addBatch", 0)) for p in progress)
    out: dict[str, object] = {
        "rows": rows,
        "query_s": round(elapsed, 3),
        "trigger_ms": trigger_ms,
        "add_batch_ms": add_ms,
        "batches": len(progress),
    }
    if args.verify:
        out["output_rows"] = spark.read.parquet(args.output + suffix).count()  # type: ignore[attr-defined]
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--schema", required=True, help="Spark DDL")
    parser.add_argument("--output", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--max-files", type=int, default=0)
    parser.add_argument("--warm", action="store_true")
    parser.add_argument("--verify", action="store_true", help="count the sink's rows")
    args = parser.parse_args()

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(args.master)
        .appName("lockgate-bench")
        .config("spark.driver.memory", args.driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.sql.streaming.schemaInference", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    print(f"SESSION_READY {time.monotonic() - T0:.3f}", flush=True)
    cold = run_query(spark, args, "", "COLD")
    print("COLD_DONE " + json.dumps(cold), flush=True)
    if args.warm:
        warm = run_query(spark, args, "-warm", "WARM")
        print("WARM_DONE " + json.dumps(warm), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
