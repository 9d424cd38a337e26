"""`make bench`: what users run, timed as whole processes, each beside its yardstick measured in the same run.

Rows (issue "fast where the user stands"): `vigila --help`; `vigila check` and `vigila ingest` of the demo line
list (171 k rows); `vigila ingest` of a DHIS2 analytics response (the bundled fixture); `vigila ingest` of a
SINAN-shaped line list of each --rows size (default 10 M and 50 M) beside a minimal polars read -> count -> Parquet process;
`vigila detect` farrington_flexible (10 k series x 520 weeks, last 104) and ears C1, C2, C3 (100 k x 520, all weeks, to
Parquet), and `vigila alerts` (the flow's weekly detection over a warehouse of 10 k series: detection.yaml's EARS C2
and Farrington flexible on the last 52 weeks, published to `alerts`), each beside R surveillance on a sample of the
same series, results compared on that sample. Each figure is
the best of --repeat wall-clock times of a fresh process (imports, start-up and writing included); peak MB is
the process's ru_maxrss. No Prefect API is configured (the one-off path). Writes results/commands.md/.json
(--quick: commands_quick.*); the 1-minute load average at start and end goes in the table (a shared machine).

    python benchmarks/bench_commands.py [--quick] [--repeat 3] [--rows 10000000,50000000] [--only startup,big_ingest,detect,alerts]
                                        [--detect farrington_flexible,ears_C1,ears_C2,ears_C3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]
from bench_ingest import code_fingerprint, ensure_csv, launched, machine  # noqa: E402

RESULTS = HERE / "results"
VIGILA = str(ROOT / ".venv" / "bin" / "vigila") if (ROOT / ".venv" / "bin" / "vigila").exists() else "vigila"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
PERU = ROOT / "sources" / "per_minsa_dengue_linelist.yaml"
DHIS2 = ROOT / "tests" / "fixtures" / "dhis2" / "analytics_dengue_weekly.json"


def timed(cmd: list[str], repeat: int, before=None) -> dict:
    """Best and median wall seconds of `repeat` fresh processes, their peak RSS (MB), the last exit code."""
    runs = []
    for _ in range(repeat):
        if before:
            before()
        got, stderr = launched(cmd, ENV)
        runs.append({**got, "err": stderr[-400:]})
    best = min(runs, key=lambda r: r["s"])
    median = sorted(r["s"] for r in runs)[len(runs) // 2]
    return {"seconds": round(best["s"], 2), "median_s": round(median, 2), "peak_mb": round(max(r["mb"] for r in runs)),
            "exit": runs[-1]["exit"], "error": runs[-1]["err"] if runs[-1]["exit"] not in (0, 1) else ""}


def fresh(path: Path):
    return lambda: shutil.rmtree(path, ignore_errors=True)


def row(what: str, got: dict, goal: str, ok: bool | None, yardstick: str = "", ratio: str = "") -> dict:
    return {"what": what, **got, "yardstick": yardstick, "ratio": ratio, "goal": goal, "met": ok}


def bench_startup(work: Path, repeat: int) -> list[dict]:
    help_ = timed([VIGILA, "--help"], repeat)
    check = timed([VIGILA, "check", str(PERU), "--quiet"], repeat)
    wh = work / "wh-peru"
    ingest = timed([VIGILA, "ingest", str(PERU), "--warehouse", str(wh), "--quiet"], repeat, before=fresh(wh))
    dhis2_cfg = work / "dhis2.yaml"
    text = (ROOT / "sources" / "dhis2_country_example.yaml").read_text()
    dhis2_cfg.write_text(text.replace(text.split("location:")[1].split("\n")[0], f" {DHIS2}") +
                         "issue_date: {fixed: 2025-01-10}\nlimits: {max_quarantined_share: 1}\n")
    wh2 = work / "wh-dhis2"
    dhis2 = timed([VIGILA, "ingest", str(dhis2_cfg), "--warehouse", str(wh2), "--quiet"], repeat, before=fresh(wh2))
    n = len(json.loads(DHIS2.read_text())["rows"])
    return [row("`vigila --help`", help_, "≤ 0.5 s", help_["seconds"] <= 0.5),
            row("`vigila check` demo line list (171 k rows)", check, "≤ 2 s", check["seconds"] <= 2),
            row("`vigila ingest` demo line list (171 k rows)", ingest, "≤ 5 s", ingest["seconds"] <= 5),
            row(f"`vigila ingest` DHIS2 analytics response ({n} rows)", dhis2, "≤ 5 s", dhis2["seconds"] <= 5)]


MINIMAL = ("import sys, polars as pl\n"
           "pl.scan_csv(sys.argv[1], truncate_ragged_lines=True).group_by('SG_UF_NOT', 'SEM_NOT').agg(pl.len().alias('cases'))"
           ".sink_parquet(sys.argv[2])")


SAME = ("import sys; sys.path.insert(0, 'benchmarks')\n"     # bench_ingest imports only the standard library
        "from bench_ingest import same_aggregate\n"
        "same_aggregate(sys.argv[1]).sink_parquet(sys.argv[2])")


def bench_big_ingest(work: Path, rows: int, repeat: int) -> list[dict]:
    csv = ensure_csv(Path("/tmp/vigila-bench") / f"linelist_{rows}.csv", rows, 20240101)
    minimal = timed([sys.executable, "-c", MINIMAL, csv["path"], str(work / "minimal.parquet")], repeat)
    same = timed([sys.executable, "-c", SAME, csv["path"], str(work / "same.parquet")], repeat)
    wh = work / "wh-big"
    ingest = timed([VIGILA, "ingest", str(HERE / "source_brazil_sinan.yaml"), "--file", csv["path"], "--warehouse", str(wh),
                    "--quiet"], repeat, before=fresh(wh))
    ratio = ingest["seconds"] / minimal["seconds"]
    load = os.getloadavg()[0]
    return [row(f"`vigila ingest` SINAN-shaped line list, {rows:,} rows ({csv['mb']} MB)", ingest, "≤ 3× yardstick, < 2 GB",
                ratio <= 3 and ingest["peak_mb"] < 2048, f"minimal polars read→count→Parquet process: {minimal['seconds']} s, "
                f"{minimal['peak_mb']} MB; Vigila's aggregate hand-written in polars (no checks) process: {same['seconds']} s "
                f"= {same['seconds'] / minimal['seconds']:.1f}× minimal, ingest {ingest['seconds'] / same['seconds']:.1f}× it; "
                f"load {load:.1f}", f"{ratio:.1f}×")]


DETECT_JOBS = {   # name: (method, --param/--range args, series (full, --quick), R sample (full, quick), R call, weeks R evaluates, goal x R)
    "farrington_flexible": ("farrington_flexible", ["--range", "417:520"], (10_000, 500), (10, 5),
                            "farringtonFlexible(x, control = list(range = 417:520))", 104, 1000),
    **{f"ears_{m}": ("ears", ["--param", f"method={m}"], (100_000, 5_000), (50, 50),
                     f'earsC(x, control = list(method = "{m}"))', 520 - 7 - {"C1": 0, "C2": 2, "C3": 4}[m], 300)
       for m in ("C1", "C2", "C3")},
}


def bench_detect(work: Path, quick: bool, repeat: int, jobs: list[str]) -> list[dict]:
    """`vigila detect` on the benchmark's synthetic series (sorted Parquet, as bench_detect writes it), all results
    to Parquet; R surveillance on the first k series of the same file in the same run, and its upperbound/alarm
    compared with the command's output on those series (rows, nulls, alarms, relative bound difference)."""
    import polars as pl
    from bench_detect import R_SCRIPT, data_file

    out = []
    has_r = shutil.which("Rscript") is not None
    for job in jobs:
        method, args, sizes, samples, r_call, weeks, goal = DETECT_JOBS[job]
        n, k = sizes[quick], samples[quick]
        data = data_file(n)
        result = work / f"{job}.parquet"
        load = os.getloadavg()[0]
        got = timed([VIGILA, "detect", "--input", str(data), "--method", method, *args, "--output", str(result), "--quiet"],
                    repeat, before=fresh(result))
        what = (f"`vigila detect` {method}{' ' + job[-2:] if method == 'ears' else ''}, {n:,} series × 520 weeks"
                f"{', last 104' if method != 'ears' else ', all weeks'} → Parquet")
        goal_text = f"≥ {goal}× R, < 2 GB"
        if got["exit"] != 0:
            out.append(row(what, got, goal_text, False, f"vigila failed (load {load:.1f})"))
            continue
        if not has_r:
            out.append(row(what, got, goal_text, None, f"R not installed here: no same-run yardstick (load {load:.1f})"))
            continue
        ids = pl.scan_parquet(data).select("series_id").unique(maintain_order=True).head(k).collect()["series_id"]
        sample = pl.scan_parquet(data).filter(pl.col("series_id").is_in(ids.implode())).collect()
        mine = (pl.scan_parquet(result).filter(pl.col("series_id").is_in(ids.implode()))
                .select("series_id", "t", "upperbound", "alarm").collect())
        r = r_versus(work, sample, mine, r_call)
        if "error" in r:
            out.append(row(what, got, goal_text, None, f"R failed: {r['error']}"))
            continue
        ratio = n * r["seconds"] / k / got["seconds"]
        out.append(row(what, got, goal_text, ratio >= goal and got["peak_mb"] < 2048 and r["equal"],
                       f"R surveillance on {k} of the series: {r['seconds'] / k * 1000:.1f} ms/series; {r['text']}; "
                       f"load {load:.1f}", f"{ratio:,.0f}× R"))
    return out


def r_versus(work: Path, sample, mine, r_call: str) -> dict:
    """R surveillance's `r_call` on the long frame `sample` (series_id, t, cases[, week_start]): its elapsed seconds,
    and its upperbound/alarm against `mine` (series_id, t, upperbound, alarm) on the same series and weeks. With
    week_start (the warehouse's series) R gets an sts of dates (epochAsDate), as Vigila's methods then count
    reference weeks by date; without, an index-based sts of frequency 52."""
    import polars as pl
    from bench_detect import R_SCRIPT

    dated = "week_start" in sample.columns
    wide = sample.pivot("series_id", index=["t", "week_start"] if dated else "t", values="cases").sort("t").drop("t")
    wide.write_csv(inp := work / "r_in.csv")
    (work / "r.R").write_text(R_SCRIPT)
    p = subprocess.run(["Rscript", str(work / "r.R"), str(inp), str(r_out := work / "r_out.csv"), r_call],
                       capture_output=True, text=True)
    if p.returncode:
        return {"error": p.stderr[-200:]}
    ref = pl.read_csv(r_out, schema_overrides={"r_upperbound": pl.Float64, "r_alarm": pl.Boolean}, null_values="NA")
    j = ref.join(mine, on=["series_id", "t"], how="full", coalesce=True)
    ub, rub = pl.col("upperbound"), pl.col("r_upperbound")
    same = j.select((~pl.col("alarm").eq_missing(pl.col("r_alarm"))).sum().alias("alarms"),
                    (ub.is_null() != rub.is_null()).sum().alias("nulls"),
                    ((ub - rub).abs() / pl.max_horizontal(rub.abs(), pl.lit(1e-12))).max().alias("rel")).row(0, named=True)
    equal = (ref.height == mine.height == j.height and same["alarms"] == 0 and same["nulls"] == 0
             and (same["rel"] or 0) <= 1e-4)
    return {"seconds": float(p.stdout.split()[-4]), "equal": equal, "rows": ref.height,
            "text": f"results equal: {equal} ({ref.height:,} rows, {same['alarms']} alarm and {same['nulls']} null-bound "
                    f"differences, max rel. bound diff {same['rel'] or 0:.1e})"}


ALERTS_SERIES = (10_000, 500)   # full, --quick: synthetic admin2 series x 520 weeks in the warehouse
ALERTS_SAMPLE = 10
ALERTS_R = {"ears_C2": 'earsC(x, control = list(method = "C2", range = 469:520))',   # detection.yaml's methods,
            "farrington_flexible": "farringtonFlexible(x, control = list(range = 469:520))"}   # its last 52 weeks


def bench_alerts(work: Path, quick: bool, repeat: int) -> list[dict]:
    """`vigila alerts` (the flow's weekly detection: detection.yaml's EARS C2 and Farrington flexible on the last 52
    weeks of every series of cases_weekly, published to `alerts`) over a warehouse of synthetic series, beside R
    surveillance running both methods on a sample of them, results compared."""
    import polars as pl
    import yaml
    from dask_load import publish_cases_weekly

    n = ALERTS_SERIES[quick]
    wh = work / "wh-alerts"
    shutil.rmtree(wh, ignore_errors=True)
    publish_cases_weekly(str(wh), n)
    config = work / "alerts.yaml"
    config.write_text(yaml.safe_dump({"levels": ["admin2"]}))   # the synthetic places; methods and weeks: detection.yaml's
    load = os.getloadavg()[0]
    got = timed([VIGILA, "alerts", "--warehouse", str(wh), "--config", str(config), "--force", "--quiet"], repeat)
    what = f"`vigila alerts` (the flow's weekly detection: EARS C2 + Farrington flexible, last 52 weeks), {n:,} series × 520 weeks"
    goal_text = "≥ 1000× R, < 2 GB"
    if got["exit"] != 0 or shutil.which("Rscript") is None:
        return [row(what, got, goal_text, False if got["exit"] else None,
                    f"vigila failed (load {load:.1f})" if got["exit"] else "R not installed here: no same-run yardstick")]
    from vigila.warehouse import read

    published = read.dataset(str(wh), "alerts")
    ids = published.select("series_id").unique().sort("series_id").head(ALERTS_SAMPLE).collect()["series_id"]
    full = (read.cases_weekly(str(wh))     # the sampled series' 520 weeks, t = 1..520 as the command numbers them
            .with_columns(pl.format("{}|{}|{}", "geo_code", "disease", "source_id").alias("series_id"))
            .filter(pl.col("series_id").is_in(ids.implode())).sort("series_id", "week_start")
            .select("series_id", pl.int_range(1, pl.len() + 1).over("series_id").alias("t"), "week_start", "cases").collect())
    r_seconds, texts, equal = 0.0, [], True
    for method, call in ALERTS_R.items():
        mine = (published.filter(pl.col("series_id").is_in(ids.implode()), pl.col("method") == method)
                .select("series_id", "t", "upperbound", "alarm").collect())
        r = r_versus(work, full, mine, call)
        if "error" in r:
            return [row(what, got, goal_text, None, f"R failed ({method}): {r['error']}")]
        r_seconds += r["seconds"]
        equal &= r["equal"]
        texts.append(f"{method} {r['text']}")
    ratio = n * r_seconds / ALERTS_SAMPLE / got["seconds"]
    return [row(what, got, goal_text, ratio >= 1000 and got["peak_mb"] < 2048 and equal,
                f"R surveillance, both methods on {ALERTS_SAMPLE} of the series: {r_seconds / ALERTS_SAMPLE * 1000:.1f} "
                f"ms/series; {'; '.join(texts)}; load {load:.1f}", f"{ratio:,.0f}× R")]


def write(rows: list[dict], meta: dict, stem: str = "commands") -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [f"# Whole commands, as users run them ({meta['when']})", "",
             f"Machine: {meta['machine']['nproc']} cores, {meta['machine']['cpu']}, {meta['machine']['mem_gib']} GiB. "
             f"Code: {meta['code']}. Best of {meta['repeat']} fresh processes (detection rows: of {max(1, meta['repeat'] - 1)}); peak = "
             f"the process's max RSS. No Prefect API configured. Load average (1 min) at start / end: {meta['load'][0]} / "
             f"{meta['load'][1]} on {meta['machine']['nproc']} cores.", "",
             "| what the user runs | seconds (best / median) | peak MB | yardstick in the same run | ratio | goal | met |",
             "|---|---:|---:|---|---:|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
        lines.append(f"| {r['what']}{' (measured ' + r['measured'] + ')' if r.get('measured') else ''} | {r['seconds']} / {r['median_s']} | {r['peak_mb']:,} | {r['yardstick']} | {r['ratio']} | "
                     f"{r['goal']} | {met} |" + (f" exit {r['exit']}: {r['error'][-120:]}" if r["error"] else ""))
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def section(r: dict) -> str:
    return r.get("section") or ("detect" if r["what"].startswith("`vigila detect`") else
                                "alerts" if r["what"].startswith("`vigila alerts`") else
                                "big_ingest" if "SINAN" in r["what"] else "startup")


def keep_earlier(rows: list[dict], only: set[str], stem: str) -> list[dict]:
    """A run of some sections (--only, --detect) keeps the earlier table's other rows, each with the date it was
    measured, in the table's order: startup, big_ingest, detect, alerts."""
    earlier = RESULTS / f"{stem}.json"
    if not earlier.exists():
        return rows
    old = json.loads(earlier.read_text())
    fresh_what = {r["what"] for r in rows}
    kept = [{**r, "measured": r.get("measured") or old.get("when")} for r in old.get("rows", [])
            if (section(r) not in only or (section(r) == "detect" and r["what"] not in fresh_what and
                                           not any(w.split(",")[0] == r["what"].split(",")[0] for w in fresh_what)))]
    order = ["startup", "big_ingest", "detect", "alerts"]
    return sorted(kept + rows, key=lambda r: order.index(section(r)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 M rows, small detection sizes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rows", default=None, help="line-list sizes for the big ingest rows, comma-separated "
                    "(default 10000000,50000000; --quick 1000000)")
    ap.add_argument("--only", default="startup,big_ingest,detect,alerts")
    ap.add_argument("--detect", default=",".join(DETECT_JOBS), help=f"detection rows: {', '.join(DETECT_JOBS)}")
    args = ap.parse_args()
    rows = [int(n) for n in args.rows.split(",")] if args.rows else [1_000_000] if args.quick else [10_000_000, 50_000_000]
    started = os.getloadavg()[0]          # the machine may be shared: its 1-minute load, at start and end, goes in the table
    only = set(args.only.split(","))
    out: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="vigila-bench-cmd-") as tmp:
        work = Path(tmp)
        if "startup" in only:
            out += [{**r, "section": "startup"} for r in bench_startup(work, args.repeat)]
        if "big_ingest" in only:
            for n in rows:
                out += [{**r, "section": "big_ingest"} for r in bench_big_ingest(work, n, args.repeat)]
        if "detect" in only:
            out += [{**r, "section": "detect"} for r in
                    bench_detect(work, args.quick, max(1, args.repeat - 1), args.detect.split(","))]
        if "alerts" in only:
            out += [{**r, "section": "alerts"} for r in bench_alerts(work, args.quick, max(1, args.repeat - 1))]
    out = keep_earlier(out, only, "commands_quick" if args.quick else "commands")
    write(out, {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), "code": code_fingerprint(),
                "repeat": args.repeat, "load": [round(started, 1), round(os.getloadavg()[0], 1)]},
          "commands_quick" if args.quick else "commands")


if __name__ == "__main__":
    main()
