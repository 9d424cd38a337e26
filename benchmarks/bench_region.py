"""Region scale on a real Dask cluster (issue 16.3): 300,000 series x 520 weeks, EARS C1-C3 on every week and
Farrington flexible on the last 4, and 50 sources ingested at once; time and peak RSS per worker.

Cluster: `dask scheduler` + 2 `dask worker` processes on 127.0.0.1 (--nthreads 1 --memory-limit 2GiB, as
bench_dask.py starts them), restarted before each load so a worker's peak RSS (ru_maxrss, read on the worker) is
that load's. Input: a local warehouse whose `cases_weekly` holds the synthetic admin2 series of dask_load.py
(built in chunks of --chunk series, each committed as one more file per partition, so no process holds the
region). Work: the flows' task bodies (`scale.plan_detection` on the client, `scale.detect_block` per block on
the workers, `scale.publish_blocks` when every block ran), submitted with a plain distributed Client (no
Prefect); with --linelist, one large line list (gen_linelist.py) ingested as one task on a worker.
Outputs: benchmarks/results/dask_region.md and .json.

CLI:  python benchmarks/bench_region.py [--series 300000] [--sources 50] [--block-series 500] [--chunk 25000]
                                        [--sample K] [--reuse] [--linelist CSV [--linelist-only]] [--from-json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import dask_load  # noqa: E402
from bench_dask import EARS, FARRINGTON, ISSUED, LocalProcesses, ingest_on  # noqa: E402
from bench_ingest import data_roots_env  # noqa: E402

RESULTS, WORK = HERE / "results", Path("/tmp/vigila-bench-region")


def build(warehouse: Path, series: int, chunk: int) -> dict:
    """cases_weekly of `series` synthetic series, committed `chunk` series at a time (append: one file per
    partition per chunk; a local commit hard-links the files it carries)."""
    from schemas.harmonised import SCHEMA_VERSION
    from vigila.ingest import pipeline
    from vigila.warehouse import publish
    from vigila.warehouse.storage import Storage

    storage, t0, rows = Storage.open(str(warehouse)), time.perf_counter(), 0
    for first in range(0, series, chunk):
        frame = dask_load.synthetic_cases_weekly(min(chunk, series - first), 520, first=first)
        rows += frame.height
        parts = {k: v for k, v in frame.partition_by(pipeline.PARTITION_BY, as_dict=True).items()}
        publish.commit(storage, "cases_weekly", partition_by=pipeline.PARTITION_BY, append=parts, run_id="synthetic",
                       schema_version=SCHEMA_VERSION, keep=2, grace_seconds=0)
        del frame, parts
        print(f"built {first + chunk:,} series", flush=True)
    return {"seconds": round(time.perf_counter() - t0, 1), "rows": rows}


def detect(cluster: LocalProcesses, warehouse: str, config_path: Path, block_series: int, publish: bool,
           sample: int | None = None) -> dict:
    from vigila.detect import alerts, scale

    config = alerts.load_config(config_path)
    cluster.fresh()
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    plan = scale.plan_detection(warehouse, config, force=True, block_series=block_series)
    t_plan = time.perf_counter() - t0
    run_id, n = f"region-{time.time_ns()}", len(plan["blocks"])
    # every block when `sample` is None, else `sample` blocks spread evenly over the plan (every partition's kind)
    run = list(range(n)) if not sample or sample >= n else [round(i * (n - 1) / (sample - 1)) for i in range(sample)]
    t1 = time.perf_counter()
    futures = cluster.client.map(scale.detect_block, [warehouse] * len(run), [config] * len(run), [plan] * len(run), run,
                                 [run_id] * len(run), pure=False)
    blocks = cluster.client.gather(futures)
    t_blocks = time.perf_counter() - t1
    out = {"series": plan["series"], "blocks": n, "blocks_run": len(run), "series_run": sum(b["series"] for b in blocks),
           "plan_s": round(t_plan, 1), "blocks_s": round(t_blocks, 1),
           "rows": sum(b["rows"] for b in blocks), "alarms": sum(b["alarms"] for b in blocks),
           "peak_mb_per_worker": cluster.peaks_mb(), "load_start": round(load0, 2)}
    out["projected_all_blocks_s"] = round(t_plan + t_blocks * n / len(run), 1)
    if publish and len(run) == n:
        summary = scale.publish_blocks(warehouse, config, plan, blocks, run_id=run_id)
        out["with_publish_s"] = round(time.perf_counter() - t0, 1)
        out["published_rows"] = summary["rows"]
    else:
        from vigila.warehouse.storage import Storage

        Storage.open(warehouse).delete_prefix(f"{scale.STAGING}/{run_id}")
    out["load_end"] = round(os.getloadavg()[0], 2)
    out["client_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(out, flush=True)
    return out


LINELIST_ISSUED = dt.date(2025, 7, 7)   # after gen_linelist's last notification (2025-06-30): every week is past


def linelist(cluster: LocalProcesses, csv: Path, warehouse: Path, issued: dt.date = LINELIST_ISSUED) -> dict:
    """One large line list ingested as one task on a worker (the flow's per-source task): the worker streams the
    file in batches, so its peak follows the batch, not the file. Issued before the file's last weeks (ISSUED),
    ~31 % of its rows are in the future: quarantined, spilled to disk batch by batch and the run rejected."""
    from vigila import oneoff
    from vigila.ingest.pipeline import RunRejected

    shutil.rmtree(warehouse, ignore_errors=True)
    cluster.fresh()
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    try:
        future = cluster.client.submit(oneoff.ingest_source, str(HERE / "source_brazil_sinan.yaml"), str(warehouse),
                                       str(csv), issued, True, pure=False)
        try:
            (report,) = cluster.client.gather(future)
        except RunRejected as e:
            report = {**e.report, "status": "rejected"}
    finally:
        shutil.rmtree(warehouse, ignore_errors=True)
    out = {"seconds": round(time.perf_counter() - t0, 1), "peak_mb_per_worker": cluster.peaks_mb(),
           "file_mb": round(csv.stat().st_size / 2**20), "status": report["status"], "rows": report["rows"],
           "cases": report["cases"], "issued": str(issued), "load_start": round(load0, 2),
           "load_end": round(os.getloadavg()[0], 2)}
    print(out, flush=True)
    return out


def linelist_loads(cluster: LocalProcesses, csv: Path) -> dict:
    """The line list issued after its last week (published), then before (31 % quarantined, rejected)."""
    return {"linelist": linelist(cluster, csv.resolve(), WORK / "wh-linelist"),
            "linelist_quarantined": linelist(cluster, csv.resolve(), WORK / "wh-linelist", ISSUED)}


def linelist_lines(d: dict | None, q: dict | None = None) -> list[str]:
    if not d:
        return []
    out = []
    for x, what in ((d, "every week past"), (q, "issued before its last weeks: ~31 % of the rows in the future")):
        if not x:
            continue
        r, c = x["rows"], x["cases"]
        out += [f"One line list of {r['read']:,} rows ({x['file_mb']:,} MB CSV, `benchmarks/gen_linelist.py`) ingested as one "
                f"task on the cluster (`oneoff.ingest_source`, the flow's per-source task), issue date {x.get('issued', '2025-01-10')} "
                f"({what}): {x['seconds']} s, status `{x['status']}`, worker peaks {', '.join(map(str, x['peak_mb_per_worker']))} MB "
                f"(load {x['load_start']} / {x['load_end']}). Rows: {r['read']:,} read = {r['published']:,} "
                f"{'published' if x['status'] == 'published' else 'that passed (none published: the run was rejected)'} + "
                f"{r['quarantined']:,} quarantined + {r['set_aside']:,} set aside; cases: "
                f"{c['read']:,} = {c['published']:,} + {c['quarantined']:,} + {c['set_aside']:,}.", ""]
    return out + ["The worker streams the file in batches of 2 M rows and writes each batch's error records to disk as they "
                  "come; the quarantine is staged and published from those files in batches: no process holds the file or "
                  "its quarantine.", ""]


def write(res: dict, args) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dask_region.json").write_text(json.dumps(res, indent=2, default=str))
    e, f, i = res["ears"], res["farrington"], res["ingest"]
    limit = 2048
    over = [p for load in (e, f, i) for p in load["peak_mb_per_worker"] if p >= limit]
    lines = [
        "# Region scale on a real Dask cluster (issue 16.3)", "",
        f"{res['when']}, {res['machine']}. Scheduler + 2 `dask worker` processes on this machine (`--nthreads 1 "
        f"--memory-limit 2GiB`), restarted before each load; the machine was shared with other jobs (load average per row).",
        f"Input: {e['series']:,} synthetic admin2 series x 520 weeks ({res['build']['rows']:,} `cases_weekly` rows, local "
        f"warehouse, built in {b if isinstance(b := res['build']['seconds'], str) else f'{b} s'}), blocks of {args.block_series} series.", "",
        "| load | blocks run / planned (series run) | plan s (all 300 k series) | blocks s on 2 workers | all blocks s (projected when sampled) | rows out (blocks run) | peak MB per worker | 1-min load start / end |",
        "|---|---:|---:|---:|---:|---:|---|---|",
        *(f"| {label} | {d['blocks_run']} / {d['blocks']} ({d['series_run']:,}) | {d['plan_s']} | {d['blocks_s']} | "
          f"{d['projected_all_blocks_s']} | {d['rows']:,} | {', '.join(map(str, d['peak_mb_per_worker']))} | "
          f"{d['load_start']} / {d['load_end']} |"
          for label, d in (("EARS C1, C2, C3 on all 520 weeks", e), ("Farrington flexible, last 4 weeks", f))),
        f"| ingest of {i['sources']} sources at once (520 weekly rows each) | {i['sources']} tasks |  | {i['seconds']} |  | "
        f"{i['rows']:,} read, {i['published']} published | {', '.join(map(str, i['peak_mb_per_worker']))} | "
        f"{i['load_start']} / {i['load_end']} |", "",
        f"Each worker under 2 GB: {'yes' if not over else 'NO (' + ', '.join(map(str, over)) + ' MB)'} "
        f"(largest {max(p for load in (e, f, i) for p in load['peak_mb_per_worker'])} MB; a block's memory depends on its "
        f"{args.block_series} series, not on the region, and the blocks run are spread over every partition of the plan). "
        f"Client (plan of all 300 k series + gather) peak: {max(e['client_peak_mb'], f['client_peak_mb'])} MB.",
        f"Per series, measured: {2 * e['blocks_s'] / e['series_run'] * 1000:.2f} worker-ms for EARS C1-C3 x 520 weeks, "
        f"{2 * f['blocks_s'] / f['series_run'] * 1000:.2f} worker-ms for Farrington flexible x 4 weeks (blocks wall x 2 "
        "workers / series run). 'projected' = plan + blocks wall x planned / run blocks: an extrapolation, not a "
        "measurement, at this run's load.", "",
        *published_lines(e, f), *linelist_lines(res.get("linelist"), res.get("linelist_quarantined"))]
    lines += [*res.get("notes", []), ""] if res.get("notes") else []
    (RESULTS / "dask_region.md").write_text("\n".join(lines))
    print("\n".join(lines))


def published_lines(e: dict, f: dict) -> list[str]:
    """The region publish: measured when every block ran, else said not run."""
    done = [(label, d) for label, d in (("EARS C1-C3", e), ("Farrington flexible", f)) if "published_rows" in d]
    if not done:
        return [f"Not run here: the `alerts` publish of the whole region ({e['blocks_run']} of {e['blocks']} blocks ran; "
                "EARS on all 520 weeks of 300 k series gives ~468 M rows). `scale.publish_blocks` streams: it reads one "
                "staged block at a time (sorted, validated, counted) and appends it to the method partitions' Parquet "
                "files, so its memory follows one block, not the region (measured on 20 M staged rows: "
                "results/publish_blocks.md).", ""]
    rows = [f"| {label} | {d['published_rows']:,} | {d['blocks_s']} | {d['with_publish_s']} | "
            f"{round(d['with_publish_s'] - d['plan_s'] - d['blocks_s'], 1)} | {d.get('client_peak_mb', '')} |"
            for label, d in done]
    return ["Every block ran, and the whole region was published to `alerts` (`scale.publish_blocks` on the client, "
            "one staged block at a time: read, sorted, validated, counted, appended to the method partitions' files):", "",
            "| load | alerts rows published | blocks s | plan + blocks + publish s (measured, end to end) | publish s | "
            "client peak MB (whole bench process so far) |", "|---|---:|---:|---:|---:|---:|", *rows, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=300_000)
    ap.add_argument("--sources", type=int, default=50)
    ap.add_argument("--block-series", type=int, default=500)
    ap.add_argument("--chunk", type=int, default=25_000)
    ap.add_argument("--sample", type=int, default=None, help="run only this many blocks, spread over the plan")
    ap.add_argument("--reuse", action="store_true", help="keep the warehouse built by an earlier run")
    ap.add_argument("--from-json", action="store_true", help="only rewrite dask_region.md from dask_region.json")
    ap.add_argument("--linelist", type=Path, default=None,
                    help="also ingest this line list (gen_linelist.py output, e.g. 50 M rows) as one task on a worker")
    ap.add_argument("--linelist-only", action="store_true", help="run only the --linelist load; merge into the json")
    args = ap.parse_args()
    if args.from_json:
        write(json.loads((RESULTS / "dask_region.json").read_text()), args)
        return
    if args.linelist:    # the source config's data root (a location outside it is refused)
        os.environ.update(data_roots_env(args.linelist.resolve().parent))
    if args.linelist_only:
        res = json.loads((RESULTS / "dask_region.json").read_text())
        cluster = LocalProcesses(2, WORK / "logs")
        try:
            res.update(linelist_loads(cluster, args.linelist))
        finally:
            cluster.close()
        write(res, argparse.Namespace(**res["args"]))
        return
    wh = WORK / "wh"
    built = WORK / "build.json"
    if not (args.reuse and built.exists()):
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
        built.write_text(json.dumps(build(wh, args.series, args.chunk)))
    shutil.rmtree(WORK / "wh-ingest", ignore_errors=True)
    res = {"when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "args": vars(args), "build": json.loads(built.read_text())}
    sources = dask_load.write_sources(WORK / "sources", args.sources, rows=520)
    configs = {"ears": dask_load.detection_config(WORK / "ears.yaml", EARS, weeks=520),
               "farrington": dask_load.detection_config(WORK / "farrington.yaml", FARRINGTON, weeks=4)}
    cluster = LocalProcesses(2, WORK / "logs")
    try:
        res["farrington"] = detect(cluster, str(wh), configs["farrington"], args.block_series, publish=True,
                                   sample=args.sample)
        res["ears"] = detect(cluster, str(wh), configs["ears"], args.block_series, publish=True, sample=args.sample)
        cluster.fresh()
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        reports = ingest_on(cluster.client, sources, str(WORK / "wh-ingest"))
        res["ingest"] = {"seconds": round(time.perf_counter() - t0, 1), "peak_mb_per_worker": cluster.peaks_mb(),
                         "sources": len(sources), "rows": sum(r["rows"]["read"] for r in reports),
                         "published": sum(r["status"] == "published" for r in reports), "load_start": round(load0, 2),
                         "load_end": round(os.getloadavg()[0], 2)}
        print(res["ingest"], flush=True)
        if args.linelist:
            res.update(linelist_loads(cluster, args.linelist))
    finally:
        cluster.close()
    write(res, args)


if __name__ == "__main__":
    main()
