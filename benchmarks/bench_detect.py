"""Detection benchmark: vigila.detect on many synthetic weekly series, against R `surveillance` 1.20.3.

Data (seeded numpy, cached in /tmp/vigila-bench/): 520 weeks per series; Poisson or negative binomial counts,
log-uniform mean levels 0.5-200 a week, seasonality, a small trend, a 6-week outbreak in the last two years of
1 series in 10 (low series hit Farrington's limit54: null bounds). Frame: series_id "S00001"..., t, cases.
Each method runs in a fresh subprocess, twice (cold, then warm; peak MB = its ru_maxrss, input included), best of --repeat:
farrington_flexible and farrington on 10,000 series, range (417, 520); ears_C1/C2/C3 (R's default range) and
cusum (range (417, 520)) on 100,000 series. Ratio = vigila series-weeks/s over R's anchor from ../shared/README.md.
When `Rscript` has `surveillance`, R runs here on the first series of the same data: a same-machine ratio, and
R's upperbound/alarm compared to vigila's. Outputs: benchmarks/results/detect.md/.json (--quick: detect_quick.*).

CLI:  python benchmarks/bench_detect.py [--quick] [--repeat 3] [--jobs farrington_flexible,ears_C2] [--no-r]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]
from bench_ingest import code_fingerprint, machine  # noqa: E402

RESULTS, DATA_DIR, WEEKS, SEED = HERE / "results", Path("/tmp/vigila-bench"), 520, 20240101
FF, EARS = dict(series=10_000, quick=500, r_series=20, r_quick=5), dict(series=100_000, quick=5_000, r_series=200, r_quick=50)
# name: (module, function, params, data sizes, R call on sts `x`, R s/series, R weeks/series, target x, rel tol)
JOBS = {
    "farrington_flexible": ("farrington", "farrington_flexible", {"range": (417, 520)}, FF,
                            "farringtonFlexible(x, control = list(range = 417:520))", 0.73, 104, 1000, 1e-4),
    "farrington": ("farrington", "farrington", {"range": (417, 520)}, FF,
                   "farrington(x, control = list(range = 417:520))", 0.39, 104, None, 1e-4),
    **{f"ears_{m}": ("ears", "ears", {"method": m}, EARS, f'earsC(x, control = list(method = "{m}"))',
                     7.2e-3, 513, 500, 1e-6) for m in ("C1", "C2", "C3")},
    "cusum": ("cusum", "cusum", {"range": (417, 520)}, EARS, "cusum(x, control = list(range = 417:520))",
              3.4e-3, 104, None, 1e-6),
    # the issue's yardstick, not a vigila method: "a plain polars rolling-window EARS C2 over 100 k series x 520
    # weeks already reaches ~21 M series-weeks/s (~300x R)" - every row counted, as there; no R check
    "polars_rolling_C2": ("bench", "polars_rolling_c2", {}, EARS, None, 7.2e-3, 513, None, None),
}
PLAIN_ANCHOR = 21e6                 # series-weeks/s the issue measured for polars_rolling_C2 on this machine kind


def polars_rolling_c2(frame: pl.DataFrame) -> pl.DataFrame:
    """EARS C2 as plain polars window expressions (baseline weeks t-9..t-3), every row kept."""
    base = pl.col("cases").shift(3)
    return (frame.with_columns(expected=base.rolling_mean(7).over("series_id"), sd=base.rolling_std(7).over("series_id"))
            .with_columns(upperbound=pl.col("expected") + 3.090232306167813 * pl.col("sd"))
            .with_columns(alarm=pl.col("cases") > pl.col("upperbound")))
TIE_RULE = ("Exact ties: as in R, an alarm needs observed > upperbound (a tie is no alarm); Farrington also needs "
            "observed > 0; CUSUM alarms when its statistic >= h.")


def synthetic(n: int, seed: int = SEED) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(1, WEEKS + 1)
    level = np.exp(rng.uniform(np.log(0.5), np.log(200), n))[:, None]
    season = rng.uniform(0, 1, n)[:, None] * np.cos(2 * np.pi * (t - rng.uniform(0, 52, n)[:, None]) / 52)
    mu = level * np.exp(season + rng.uniform(-0.1, 0.1, n)[:, None] * t / 52)
    size = rng.uniform(2, 20, n)[:, None]                 # half the series negative binomial (gamma-Poisson)
    mu = mu * np.where(rng.random(n)[:, None] < 0.5, rng.gamma(size, 1 / size, mu.shape), 1.0)
    start = rng.integers(417, WEEKS - 6, n)[:, None]
    outbreak = (rng.random(n) < 0.1)[:, None] & (t >= start) & (t < start + 6)
    cases = rng.poisson(mu * np.where(outbreak, 3.0, 1.0))
    ids = pl.DataFrame({"series_id": [f"S{i:0{max(5, len(str(n)))}d}" for i in range(1, n + 1)]})
    return ids.join(pl.DataFrame({"t": t}), how="cross", maintain_order="left_right").with_columns(cases=pl.Series(cases.ravel()))


def data_file(n: int) -> Path:
    version = hashlib.sha256(inspect.getsource(synthetic).encode()).hexdigest()[:8]   # a changed generator: new file
    path = DATA_DIR / f"detect_{n}_{SEED}_{version}.parquet"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        synthetic(n).write_parquet(tmp := path.with_suffix(".tmp"))
        tmp.replace(path)
    return path


def method(job: str):
    mod, fn, params, *_ = JOBS[job]
    return (globals()[fn] if mod == "bench" else getattr(__import__(f"vigila.detect.{mod}", fromlist=[fn]), fn)), params


def run_child(job: str, data: Path, result: Path) -> None:
    import resource

    import psutil

    frame = pl.read_parquet(data)
    fn, params = method(job)
    rss0 = psutil.Process().memory_info().rss

    def timed() -> tuple[pl.DataFrame, float, dict]:
        u0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        out = fn(frame, **params)
        seconds, u1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        return out, seconds, {"cpu_s": round(u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime, 2),
                              "sys_s": round(u1.ru_stime - u0.ru_stime, 2), "page_faults": u1.ru_minflt - u0.ru_minflt}

    out, seconds, usage = timed()                  # cold: the process's first call
    summary = {"rows_out": out.height, "alarms": int(out["alarm"].sum()), "null_bounds": out["upperbound"].null_count()}
    del out
    _, warm, warm_usage = timed()                  # warm: the same call again, as in a worker that has run before
    result.write_text(json.dumps({"seconds": seconds, **usage, "warm_seconds": warm,
                                  **{f"warm_{k}": v for k, v in warm_usage.items()},
                                  "input_mb": round(rss0 / 2**20), **summary, "vigila_code": code_fingerprint()}))


def measure(job: str, data: Path, work: Path) -> dict:
    result = work / f"{job}.json"
    result.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--_job", job, "--_data", str(data), "--_result", str(result)],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if not result.exists():
        return {"ok": False, "error": f"exit {os.waitstatus_to_exitcode(status)}: {err[-2000:]}"}
    return {"ok": True, **json.loads(result.read_text()), "peak_mb": round(usage.ru_maxrss / 1024)}


# a[1]: one column per series; a first column `week_start` makes an sts of dates (epochAsDate: Farrington counts
# reference weeks by date, as Vigila does for series with week_start), else an index-based one of frequency 52
R_SCRIPT = """suppressMessages(library(surveillance)); a <- commandArgs(TRUE)
d <- read.csv(a[1], check.names = FALSE); dated <- names(d)[1] == "week_start"; y <- as.matrix(if (dated) d[-1] else d)
x <- if (dated) sts(observed = y, epoch = as.Date(d[[1]]), epochAsDate = TRUE, frequency = 52) else
  sts(observed = y, start = c(2000, 1), frequency = 52)
el <- system.time(invisible(capture.output(r <- suppressWarnings(eval(parse(text = a[3]))))))[["elapsed"]]
ub <- upperbound(r); ub[!is.finite(ub)] <- NA; n <- nrow(ub)
write.csv(data.frame(series_id = rep(colnames(y), each = n), t = nrow(y) - n + seq_len(n), r_upperbound = as.vector(ub),
                     r_alarm = as.logical(as.vector(alarms(r)))), a[2], row.names = FALSE)
cat(el, as.character(packageVersion("surveillance")), R.version$major, R.version$minor, "\\n")"""


def r_check(job: str, frame: pl.DataFrame, vigila_sw_per_s: float, work: Path) -> dict:
    """R on this sample here: its seconds per series, then its upperbound/alarm against vigila's."""
    *_, r_call, _, _, _, tol = JOBS[job]
    wide = frame.pivot("series_id", index="t", values="cases").sort("t").drop("t")
    wide.write_csv(inp := work / "r_in.csv")
    (work / "r.R").write_text(R_SCRIPT)
    p = subprocess.run(["Rscript", str(work / "r.R"), str(inp), str(out := work / "r_out.csv"), r_call],
                       capture_output=True, text=True)
    if p.returncode:
        return {"ok": False, "error": p.stderr[-1500:]}
    el, pkg, major, minor = p.stdout.split()[-4:]
    n, fn_params = wide.width, method(job)
    got = fn_params[0](frame, **fn_params[1]).select("series_id", "t", "upperbound", "alarm")
    ref = pl.read_csv(out, schema_overrides={"r_upperbound": pl.Float64, "r_alarm": pl.Boolean}, null_values="NA")
    j = ref.join(got, on=["series_id", "t"], how="full", coalesce=True)
    ub, rub = pl.col("upperbound"), pl.col("r_upperbound")
    rel = ((ub - rub).abs() / pl.max_horizontal(rub.abs(), pl.lit(1e-12))).max()
    c = j.select(rel.alias("rel"), (ub.is_null() != rub.is_null()).sum().alias("null_diff"),
                 (~pl.col("alarm").eq_missing(pl.col("r_alarm"))).sum().alias("alarm_diff"),
                 pl.col("r_alarm").sum().alias("r_alarms")).row(0, named=True)
    weeks, el = ref.height // n, float(el)
    res = {"ok": True, "r": f"R {major}.{minor}, surveillance {pkg}", "call": r_call, "series": n, "weeks": weeks,
           "r_seconds": el, "r_s_per_series": el / n, "same_machine_ratio": round(vigila_sw_per_s * el / (n * weeks), 1),
           "rows_r": ref.height, "rows_vigila": got.height, "rows_joined": j.height, "r_alarms": c["r_alarms"],
           "alarm_mismatches": c["alarm_diff"], "null_bound_mismatches": c["null_diff"],
           "max_rel_bound_diff": c["rel"] or 0.0, "tolerance": tol}
    res["agrees"] = (ref.height == got.height == j.height and not c["alarm_diff"] and not c["null_diff"]
                     and res["max_rel_bound_diff"] <= tol)
    return res


def write_results(res: dict, stem: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    m, code = res["machine"], res["vigila_code"]
    lines = [f"# Detection benchmark{' (--quick smoke run)' if res['quick'] else ''} - {res['date']}", "",
             f"Written by `benchmarks/bench_detect.py`. Machine: {m['nproc']} cores ({m['cpu']}), {m['mem_gib']} GiB; "
             f"Python {m['python']}, numpy {m['numpy']}, polars {m['polars']}; vigila code "
             + (code if isinstance(code, str) else f"**changed during the run** ({', '.join(code)})") + ".",
             f"Synthetic data, seed {SEED}, {WEEKS} weeks per series. Seconds = the method call alone, best of "
             f"{res['repeat']} run(s), each in a fresh process; peak MB = the child's max RSS over both calls, input frame included. "
             "Ratio = vigila series-weeks/s over R's anchor (../shared/README.md: R surveillance 1.20.3, 2-core machine). "
             "Every run's seconds are listed; kernel s = the best run's system CPU time in the call (on our VMs mostly "
             "first touches of fresh memory, whose cost varies with the host's state).",
             "Warm = the same call again in the same process right after (a worker that has run before: it finds memory "
             "the process has just freed), best of the runs.",
             "", "| method | series | weeks evaluated | seconds | all runs (s) | kernel s | series-weeks/s | peak MB | R anchor | "
             "ratio | target | met? | warm s (all runs) | warm kernel s | warm ratio | met warm? |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for job, s in res["summary"].items():
        met, target = ("", "") if s.get("target") is None else ("yes" if s["met"] else "**no**", f">= {s['target']}x")
        lines.append(f"| {job} | failed: {s['error'][:100]!r} |||||||||||||||" if not s["ok"] else
                     f"| {job} | {s['series']:,} | {s['weeks']} | {s['seconds']:.2f} | "
                     f"{' / '.join(f'{x:.2f}' for x in s.get('seconds_all', []))} | {s.get('sys_s', '')} | {s['series_weeks_per_s']:,} | "
                     f"{s['peak_mb']:,} | {s['r_anchor_s_per_series'] * 1e3:g} ms/series of {s['r_anchor_weeks']} weeks | "
                     f"{s['ratio']:,.0f}x | {target} | {met} |"
                     + (f" {s['warm_seconds']:.2f} ({' / '.join(f'{x:.2f}' for x in s['warm_seconds_all'])}) | {s['warm_sys_s']} | "
                        f"{s['warm_ratio']:,.0f}x | {'' if s['warm_met'] is None else 'yes' if s['warm_met'] else '**no**'} |"
                        if "warm_seconds" in s else " | | | |"))
    plain, c2 = res["summary"].get("polars_rolling_C2", {}), res["summary"].get("ears_C2", {})
    if plain.get("ok") and c2.get("ok"):
        k = c2["series_weeks_per_s"] / plain["series_weeks_per_s"]
        lines += ["", f"Yardstick: the plain polars rolling-window EARS C2 (`polars_rolling_C2`, every row counted as in the "
                  f"issue) ran at {plain['series_weeks_per_s'] / 1e6:.1f} M series-weeks/s in this run, against the ~21 M "
                  f"the issue measured on this machine kind: this run's machine state was {PLAIN_ANCHOR / plain['series_weeks_per_s']:.1f}x "
                  f"slower for it. vigila's ears_C2 was {k:.1f}x the yardstick's speed here; at the issue's yardstick speed "
                  f"that is ~{k * PLAIN_ANCHOR * 7.2e-3 / 513:,.0f}x R's anchor (context, not the measured ratio above)."]
    lines += ["", TIE_RULE, ""]
    if "skipped" in res["r_check"]:
        lines += [f"R cross-check skipped: {res['r_check']['skipped']}.", ""]
    elif res["r_check"]:
        rv = next((c["r"] for c in res["r_check"].values() if c["ok"]), "R")
        lines += [f"## {rv} on this machine, same data (the first series of each data set)", "",
                  "| method | R call | series | R s/series | same-machine ratio | R alarms | alarm mismatches | "
                  "null-bound mismatches | max rel bound diff | tolerance | agrees? |", "|---|---|" + "---:|" * 8 + "---|"]
        lines += [f"| {job} | R check failed: {c['error'][:100]!r} ||||||||||" if not c["ok"] else
                  f"| {job} | `{c['call']}` | {c['series']} | {c['r_s_per_series']:.4g} | {c['same_machine_ratio']:,}x | "
                  f"{c['r_alarms']} | {c['alarm_mismatches']} | {c['null_bound_mismatches']} | "
                  f"{c['max_rel_bound_diff']:.1e} | {c['tolerance']:g} | {'yes' if c['agrees'] else '**no**'} |"
                  for job, c in res["r_check"].items()]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


def run_job(job: str, quick: bool, repeat: int, has_r: bool, work: Path) -> tuple[dict, dict | None]:
    """`repeat` fresh-process runs of one method; then, with R, R's run on a sample of the same data."""
    *_, sizes, _, anchor_s, anchor_weeks, target, _ = JOBS[job]
    n = sizes["quick" if quick else "series"]
    runs = [measure(job, data := data_file(n), work) for _ in range(repeat)]
    if not (ok := [r for r in runs if r["ok"]]):
        print(f"{job:20s} FAILED {runs[-1]['error']}", flush=True)
        return {"ok": False, "error": runs[-1]["error"]}, None
    best = min(ok, key=lambda r: r["seconds"])
    sw = best["rows_out"] / best["seconds"]
    ratio = sw * anchor_s / anchor_weeks
    warm = min(ok, key=lambda r: r["warm_seconds"])
    warm_sw = warm["rows_out"] / warm["warm_seconds"]
    s = {"ok": True, "series": n, "weeks": best["rows_out"] // n, "seconds": round(best["seconds"], 3),
         "series_weeks_per_s": round(sw), "peak_mb": max(r["peak_mb"] for r in ok), "ratio": round(ratio, 1),
         "r_anchor_s_per_series": anchor_s, "r_anchor_weeks": anchor_weeks, "target": target,
         "met": None if target is None else ratio >= target, "seconds_all": [round(r["seconds"], 3) for r in ok],
         "warm_seconds": round(warm["warm_seconds"], 3), "warm_seconds_all": [round(r["warm_seconds"], 3) for r in ok],
         "warm_sys_s": warm["warm_sys_s"], "warm_ratio": round(warm_sw * anchor_s / anchor_weeks, 1),
         "warm_met": None if target is None else warm_sw * anchor_s / anchor_weeks >= target,
         **{k: best.get(k) for k in ("input_mb", "cpu_s", "sys_s", "page_faults", "alarms", "null_bounds", "vigila_code")}}
    print(f"{job:20s} {n:>7,} series x {s['weeks']} wk  {s['seconds']:8.3f} s  {sw:>12,.0f} series-weeks/s  "
          f"peak {s['peak_mb']:>6,} MB  {ratio:8,.0f}x R anchor; warm {s['warm_seconds']:.3f} s {s['warm_ratio']:,.0f}x", flush=True)
    if not has_r or JOBS[job][4] is None:
        return s, None
    try:                                    # the first series of the same data, in the parent process
        c = r_check(job, pl.read_parquet(data, n_rows=sizes["r_quick" if quick else "r_series"] * WEEKS), sw, work)
    except Exception as e:  # recorded: the other methods still run
        c = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(f"{'':20s} R here: {c['r_s_per_series'] * 1e3:.1f} ms/series ({c['series']} series), "
          f"{c['same_machine_ratio']:,}x; {c['alarm_mismatches']} alarm mismatches, max rel bound diff "
          f"{c['max_rel_bound_diff']:.1e}: {'agrees' if c['agrees'] else 'DIFFERS'}" if c["ok"]
          else f"{'':20s} R check failed: {c['error']}", flush=True)
    return s, c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (500 / 5,000 series, 1 repeat)")
    ap.add_argument("--repeat", type=int, help="fresh processes per method, best kept (default 3; 1 with --quick)")
    ap.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated subset of {','.join(JOBS)}")
    ap.add_argument("--no-r", action="store_true", help="skip the R cross-check")
    for hidden in ("--_job", "--_data", "--_result"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._job:
        return run_child(a._job, Path(a._data), Path(a._result))
    if bad := set(jobs := [j for j in a.jobs.split(",") if j]) - set(JOBS):
        ap.error(f"unknown jobs {sorted(bad)}")
    repeat = a.repeat or (1 if a.quick else 3)
    has_r = not a.no_r and bool(shutil.which("Rscript")) and subprocess.run(
        ["Rscript", "-e", "suppressMessages(library(surveillance))"], capture_output=True).returncode == 0
    work = Path(tempfile.mkdtemp(prefix="vigila-detect-"))
    try:
        done = {job: run_job(job, a.quick, repeat, has_r, work) for job in jobs}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary, r_results = {j: s for j, (s, _) in done.items()}, {j: c for j, (_, c) in done.items() if c is not None}
    codes = sorted({s["vigila_code"] for s in summary.values() if s["ok"]} | {code_fingerprint()})
    res = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "quick": a.quick, "repeat": repeat,
           "machine": machine(), "vigila_code": codes[0] if len(codes) == 1 else codes, "seed": SEED,
           "weeks_per_series": WEEKS, "tie_rule": TIE_RULE, "summary": summary,
           "r_check": r_results if has_r else {"skipped": "--no-r" if a.no_r else "no Rscript with surveillance"}}
    write_results(res, stem := "detect_quick" if a.quick else "detect")
    print(f"wrote {RESULTS / stem}.md and .json")


if __name__ == "__main__":
    main()
