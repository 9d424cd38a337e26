"""Peak memory of the distributed detection publish (issue 16.3): `scale.publish_blocks` streaming staged blocks
into one `alerts` version, against the whole-frame publish it replaced (main until 2026-12-03, copied below as
`whole_frame_publish`), on the same staged blocks, each in a fresh process (peak RSS = ru_maxrss of that process).

Input: synthetic staged blocks as `scale.detect_block` writes them (500 series x 520 weeks x EARS C1, C2, C3 =
780,000 rows a block, like the region load's blocks), --rows in all, in a local warehouse. Yardstick, same run:
a process that imports the same modules and reads one block (what any publish must at least hold).
Outputs: benchmarks/results/publish_blocks.md and .json.

CLI:  python benchmarks/bench_publish_blocks.py [--rows 20000000] [--block-series 500] [--work /tmp/vigila-bench-publish]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

RESULTS = HERE / "results"
SERIES, WEEKS, METHODS = 500, 520, ("ears_C1", "ears_C2", "ears_C3")
RUN = "bench"


def staged_block(index: int):
    """One block's staged rows (the columns `detect_block` writes that `publish_blocks` keeps)."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(index)
    n = SERIES * WEEKS
    first = dt.date(2015, 1, 4)
    series = np.repeat(np.arange(index * SERIES, (index + 1) * SERIES), WEEKS)
    week = np.tile(np.arange(WEEKS), SERIES)
    observed = rng.poisson(20, n)
    expected = rng.gamma(20, 1, n)
    upper = expected * 1.8
    base = pl.DataFrame({"s": series, "w": week, "observed": observed, "expected": expected, "upperbound": upper}).with_columns(
        pl.format("ARG-{}|dengue|arg_synthetic", pl.col("s").cast(pl.String).str.zfill(6)).alias("series_id"),
        pl.lit("arg_synthetic").alias("source_id"), pl.lit("ARG").alias("country_iso3"), pl.lit("admin2").alias("geo_level"),
        pl.format("ARG-{}", pl.col("s").cast(pl.String).str.zfill(6)).alias("place"), pl.format("place {}", "s").alias("place_name"),
        pl.lit("dengue").alias("disease"), (pl.col("w") + 1).cast(pl.Int64).alias("t"),
        (pl.lit(first) + pl.duration(weeks=pl.col("w"))).alias("week_start"),
        (2015 + pl.col("w") // 52).cast(pl.Int32).alias("epi_year"), (1 + pl.col("w") % 52).cast(pl.Int32).alias("epi_week"),
        pl.lit(False).alias("imputed"))
    base = base.with_columns(*(pl.when(pl.col("t") > 10).then(c).alias(c) for c in ("expected", "upperbound")))
    base = base.with_columns((pl.col("observed") > pl.col("upperbound")).alias("alarm"))
    return pl.concat([base.with_columns(pl.lit(m).alias("method"), pl.lit(json.dumps({"method": m[-2:]})).alias("params"))
                      for m in METHODS]).drop("s", "w")


def generate(work: Path, rows: int) -> dict:
    from vigila.detect import scale
    from vigila.warehouse.storage import Storage

    storage = Storage.open(work / "staged")
    blocks, total, i = [], 0, 0
    while total < rows:
        frame = staged_block(i)
        storage.write_parquet(scale.block_key(RUN, i), frame)
        blocks.append({"key": scale.block_key(RUN, i), "rows": frame.height})
        total, i = total + frame.height, i + 1
    plan = {"status": "planned", "input": "cases_weekly", "version": "v000001-bench", "fingerprint": "bench",
            "as_of": None, "series": i * SERIES, "blocks": [{"series": SERIES} for _ in blocks]}
    (work / "plan.json").write_text(json.dumps({"plan": plan, "blocks": blocks}))
    return {"blocks": len(blocks), "rows": total}


def whole_frame_publish(warehouse, config, plan, blocks, *, run_id):
    """`scale.publish_blocks` as it was on main before the streaming publish (for the 'before' measurement)."""
    import polars as pl

    from vigila.detect import alerts, scale
    from vigila.warehouse import publish
    from vigila.warehouse.storage import Storage

    storage = Storage.open(warehouse)
    keys = [b["key"] for b in blocks if b.get("key")]
    opts = storage.storage_options()
    result = pl.concat([pl.scan_parquet(storage.uri(k), storage_options=opts) for k in keys], how="vertical_relaxed")
    computed_at = dt.datetime.now(dt.UTC)
    frame = result.with_columns(
        pl.lit(plan["version"]).alias("cases_weekly_version"), pl.lit(scale._as_of(plan), pl.Date).alias("as_of"),
        pl.lit(run_id).alias("run_id"), pl.lit(computed_at).cast(pl.Datetime("us", "UTC")).alias("computed_at"),
    ).select(alerts.ALERT_COLUMNS).sort("method", "series_id", "week_start").collect()
    alerts.Alert.validate(frame)
    manifest = publish.commit(storage, alerts.DATASET, partition_by=alerts.PARTITION_BY, replace_all=frame, run_id=run_id,
                              schema_version=alerts.ALERTS_SCHEMA_VERSION,
                              extra={"fingerprint": plan["fingerprint"], "input": plan["version"], "as_of": plan.get("as_of"),
                                     "config": config.model_dump(mode="json"), "blocks": len(plan["blocks"])})
    publish.write_catalog(storage)
    storage.delete_prefix(f"{scale.STAGING}/{run_id}")
    return alerts.summarise(frame, status="published", version=manifest.version, cases_weekly_version=plan["version"])


def child(work: Path, how: str) -> None:
    """One measurement in this (fresh) process: prints a JSON line."""
    import polars as pl

    from vigila.detect import alerts, scale
    from vigila.warehouse.storage import Storage

    saved = json.loads((work / "plan.json").read_text())
    warehouse = work / how
    shutil.rmtree(warehouse, ignore_errors=True)
    shutil.copytree(work / "staged", warehouse, copy_function=os.link)   # publish deletes the staging: hard links
    config = alerts.load_config(None)
    t0, c0 = time.perf_counter(), time.process_time()
    if how == "yardstick":
        rows = pl.read_parquet(Storage.open(warehouse).uri(saved["blocks"][0]["key"])).height
        summary = {"rows": rows}
    else:
        publish = scale.publish_blocks if how == "streaming" else whole_frame_publish
        summary = publish(str(warehouse), config, saved["plan"], saved["blocks"], run_id=RUN)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    shutil.rmtree(warehouse, ignore_errors=True)
    print(json.dumps({"how": how, "rows": summary["rows"], "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                      "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main() -> None:
    global SERIES
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20_000_000)
    p.add_argument("--work", type=Path, default=Path("/tmp/vigila-bench-publish"))
    p.add_argument("--block-series", type=int, default=SERIES, help="series a block (500 x 520 weeks x 3 = 780 k rows)")
    p.add_argument("--child", choices=["yardstick", "streaming", "whole"])
    args = p.parse_args()
    SERIES = args.block_series
    if args.child:
        return child(args.work, args.child)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    made = generate(args.work, args.rows)
    runs = []
    for how in ("yardstick", "streaming", "whole"):
        load = os.getloadavg()[0]
        out = subprocess.run([sys.executable, __file__, "--child", how, "--work", str(args.work)], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        runs.append({**json.loads(out), "load_start": round(load, 2), "load_end": round(os.getloadavg()[0], 2)})
        print(runs[-1], flush=True)
    shutil.rmtree(args.work, ignore_errors=True)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    result = {"when": when, "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              **made, "runs": runs}
    (RESULTS / "publish_blocks.json").write_text(json.dumps(result, indent=2) + "\n")
    names = {"yardstick": "yardstick: import + read one staged block", "streaming": "`publish_blocks` (streaming)",
             "whole": "whole-frame publish (main before 2026-12-03)"}
    lines = [f"# Distributed alerts publish: peak memory (issue 16.3)", "",
             f"{when}, {result['machine']}. {made['blocks']} staged blocks of {SERIES} series x {WEEKS} weeks x "
             f"EARS C1-C3 ({made['rows']:,} rows), local warehouse; each line a fresh process (peak = ru_maxrss).", "",
             "| publish | rows | wall s | CPU s | peak MB | 1-min load start / end |", "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {names[r['how']]} | {r['rows']:,} | {r['wall_s']} | {r['cpu_s']} | {r['peak_mb']} | "
              f"{r['load_start']} / {r['load_end']} |" for r in runs]
    (RESULTS / "publish_blocks.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
