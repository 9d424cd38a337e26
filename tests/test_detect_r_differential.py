"""Differential test: vigila equals R `surveillance` on random series of varied shapes, for every method.

Each run draws a fresh seed, prints it, generates series of varied shapes (low counts with many zeros, high
counts, trends, past outbreaks, short histories, nearly all zeros; dated and index-based) and runs R
(benchmarks/r_differential.R) and vigila on them with every method and parameter set of ../shared's manifest
(EARS C1/C2/C3, classic Farrington, Farrington flexible with defaults and with the Noufaily settings, CUSUM),
plus a few randomly drawn parameter sets. Alarms must be identical (NA included) and bounds within 1e-4.

Where R stops with an error (farringtonFlexible without b years of history), R is asked again week by week:
the weeks where it stops must be null bounds and no alarm in vigila, the others equal.

- Needs `Rscript` with the `surveillance` package (Debian/Ubuntu: `apt-get install r-cran-surveillance`;
  CI installs it). Without it the tests are skipped with a warning saying so; with VIGILA_REQUIRE_R=1 (set it
  in CI where R is installed) they fail instead.
- Replay a failing seed: `VIGILA_R_SEED=<seed> pytest tests/test_detect_r_differential.py`; a seed that found a
  bug goes into REGRESSION_SEEDS, which run every time.
- VIGILA_R_SERIES sets the number of random series of the fresh seed (default 12: about 40 s on 2 cores).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import pytest

from vigila.detect import cusum, ears, farrington, farrington_flexible

ROOT = Path(__file__).resolve().parents[1]
R_SCRIPT = ROOT / "benchmarks" / "r_differential.R"
REGRESSION_SEEDS = [  # seeds that found a difference, replayed on every run (8 series, or (seed, n series))
    1628210663,
    20260518,
    (1343009286, 12),   # s11_sparse flexible b=1 w=3: a trend fit racing to 0 x6, 3 converges at R's 25th step by QR
]
# What they (and seed 4) found was drawn by earlier versions of this file's draws, which no longer produce the
# same sets; each finding is also a deterministic test:
# 1628210663 -- flexible b=1, w=2 on low counts: R's predict.glm(se.fit = TRUE) stops (qr.solve finds the fit's
#   R factor singular), vigila gave a bound (test_where_r_stops: flexible_five_values);
# 20260518 -- farringtonFlexible with noPeriods > 1 on a dated series crashed at its last week (IndexError):
#   test_detect_farrington.py::test_seasonal_periods_on_a_dated_series_up_to_its_last_week;
# 4 -- flexible gave no bound where R gives one, the earliest reference window starting at week 0
#   (test_where_r_stops: flexible_short_history); classic gave a bound (0) where R stops on the three
#   reference values 0, 0, 1 (b = 1, w = 1: such degenerate sets are no longer drawn, see random_methods).
# 1343009286 -- flexible, s11_sparse t=285/291: vigila's 2x2 normal equations lost the digits that make R's fit of
#   0 0 0 0 0 0 3 (with trend) converge at its 25th step, so vigila refitted without trend (limit54) where R stops
#   in predict.glm ('singular matrix 'a' in solve'): test_detect_farrington.py::test_where_r_stops_after_a_fit_racing_*.
STOP_REASONS = ["history", "reference_values", "fit"]     # no_bound_reason where R stops with an error
NA_REASONS = ["not_converged", "limit54", "quantile_overflow"]           # ... where R gives an NA bound (see NO_BOUND_REASONS)
TOLERANCE = 1e-4     # |vigila - R| <= TOLERANCE * max(1, |R|) for bounds and expected values


# ---------------------------------------------------------------------------------------------- R
@cache
def r_status() -> str | None:
    """None when Rscript and surveillance are usable, else why not."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return "Rscript is not on PATH"
    try:
        run = subprocess.run([rscript, "-e", 'quit(status = !requireNamespace("surveillance", quietly = TRUE))'],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"Rscript does not run ({e})"
    return None if run.returncode == 0 else "the R package surveillance is not installed"


def require_r() -> None:
    why = r_status()
    if why is not None:
        message = (f"R DIFFERENTIAL TEST SKIPPED: {why}. vigila was NOT compared with R surveillance on random "
                   "series; install it (apt-get install r-cran-surveillance) to run this test.")
        if os.environ.get("VIGILA_REQUIRE_R"):       # CI that installs R: a missing R is a failure, not a skip
            pytest.fail(message)
        warnings.warn(message, stacklevel=2)
        pytest.skip(message)


R_SCHEMA = {"upperbound": pl.Float64, "alarm": pl.Float64, "expected": pl.Float64, "t": pl.Int64, "error": pl.String}


def run_r(series: pl.DataFrame, calls: list[tuple[str, str, tuple[int, int], str]], workdir: Path,
          jobs: int | None = None, reuse: bool = False, timeout: float | None = 900) -> pl.DataFrame:
    """R's results for calls (call_id, series_id, (lo, hi), R expression) on `series`
    (series_id, t, cases, week_start, start_year, start_week): call_id, series_id, t, upperbound, alarm,
    expected, error. The calls are shared among `jobs` Rscript processes (default: one per core, at most 4).
    `reuse`: read R's output of an earlier run in `workdir` instead (benchmarks/r_differential.py --reuse)."""
    if reuse:
        return pl.concat([pl.read_csv(p, infer_schema_length=None, schema_overrides=R_SCHEMA)
                          for p in sorted(workdir.glob("r_out*.csv"))])
    workdir.mkdir(parents=True, exist_ok=True)
    (series.with_columns(pl.col("week_start").cast(pl.String).fill_null(""))
     .write_csv(workdir / "series.csv"))
    jobs = max(1, min(jobs or os.cpu_count() or 1, 4, len(calls)))
    procs = []
    for j in range(jobs):
        (workdir / f"calls{j}.tsv").write_text("".join(f"{c}\t{s}\t{lo}:{hi}\t{expr}\n"
                                                       for c, s, (lo, hi), expr in calls[j::jobs]))
        procs.append(subprocess.Popen(["Rscript", str(R_SCRIPT), str(workdir / "series.csv"),
                                       str(workdir / f"calls{j}.tsv"), str(workdir / f"r_out{j}.csv")],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"Rscript failed:\n{err[-3000:]}")
    return pl.concat([pl.read_csv(workdir / f"r_out{j}.csv", infer_schema_length=None, schema_overrides=R_SCHEMA)
                      for j in range(jobs)])


# -------------------------------------------------------------------------------------- the methods
@dataclass(frozen=True)
class Method:
    """One parameter set of one method: vigila's call and R's (an expression of `x` and `range`)."""
    name: str
    fn: Callable[..., pl.DataFrame]
    kwargs: dict[str, Any]
    r_call: str
    first: Callable[[int], int] = lambda n: 1       # first week R can evaluate (series length n)
    compare_expected: bool = False


def r_value(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        return f"c({', '.join(r_value(x) for x in v)})"
    return repr(v)


def classic(name: str, **kw) -> Method:
    control = {"b": 5, "w": 3, "reweight": True, "alpha": 0.05, "trend": True, "limit54": (5, 4), "powertrans": "2/3",
               **kw}
    text = ", ".join(f"{k} = {r_value(v)}" for k, v in control.items())
    return Method(name, farrington, control,
                  f'algo.farrington(sts2disProg(x), control = list(range = range, {text}, '
                  f'fitFun = "algo.farrington.fitGLM.fast"))', first=lambda n: 5)


FLEX_R = {"b": "b", "w": "w", "reweight": "reweight", "weights_threshold": "weightsThreshold", "alpha": "alpha",
          "trend": "trend", "p_threshold_trend": "pThresholdTrend", "limit54": "limit54", "powertrans": "powertrans",
          "no_periods": "noPeriods", "past_weeks_not_included": "pastWeeksNotIncluded",
          "threshold_method": "thresholdMethod"}


def flexible(name: str, **kw) -> Method:
    text = "".join(f", {FLEX_R[k]} = {r_value(v)}" for k, v in kw.items())
    return Method(name, farrington_flexible, kw, f"farringtonFlexible(x, control = list(range = range{text}))",
                  first=lambda n: 5, compare_expected=True)


def earsc(name: str, method: str, alpha: float | None = 0.001, baseline: int = 7) -> Method:
    lag = {"C1": 1, "C2": 3, "C3": 5}[method]
    a = "" if alpha is None else f", alpha = {alpha!r}"
    return Method(name, ears, {"method": method, "baseline": baseline, "alpha": alpha},
                  f'earsC(x, control = list(range = range, method = "{method}", baseline = {baseline}{a}))',
                  first=lambda n: baseline + lag)


NOUFAILY = {"b": 5, "w": 3, "no_periods": 10, "weights_threshold": 2.58, "past_weeks_not_included": 26,
            "p_threshold_trend": 1.0, "alpha": 0.05}
MANIFEST_METHODS = [   # every method and parameter set of ../shared/reference/surveillance/manifest.json
    earsc("ears_C1", "C1"), earsc("ears_C2", "C2"), earsc("ears_C3", "C3"),
    earsc("ears_C3_alphaNULL", "C3", alpha=None),
    classic("farrington_classic"),
    flexible("farringtonFlexible_default"),
    flexible("noufaily_nbPlugin", **NOUFAILY, threshold_method="nbPlugin"),
    flexible("noufaily_muan", **NOUFAILY, threshold_method="muan"),
    Method("cusum_standard", cusum, {"k": 1.04, "h": 2.26, "m": None, "trans": "standard"},
           'algo.cusum(sts2disProg(x), control = list(range = range, k = 1.04, h = 2.26, m = NULL, trans = "standard"))',
           first=lambda n: 2),
]

MANIFEST_EXAMPLES = [  # the manifest's calls of the package vignette and of example(farringtonFlexible)
    flexible("vignette_con.farrington", no_periods=1, b=4, w=3, weights_threshold=1.0, past_weeks_not_included=3,
             p_threshold_trend=0.05, threshold_method="delta", limit54=(0, 50)),
    flexible("vignette_con.noufaily", no_periods=10, b=4, w=3, weights_threshold=2.58, past_weeks_not_included=26,
             p_threshold_trend=1.0, threshold_method="nbPlugin", limit54=(0, 50)),
    earsc("vignette_earsC_C1_alpha0.05", "C1", alpha=0.05),
    flexible("helpexample_control1", no_periods=1, b=4, w=3, weights_threshold=1.0, past_weeks_not_included=3,
             p_threshold_trend=0.05, alpha=0.1),
    flexible("helpexample_control2", no_periods=10, b=4, w=3, weights_threshold=2.58, past_weeks_not_included=26,
             p_threshold_trend=1.0, alpha=0.1),
]


def random_methods(rng: np.random.Generator) -> list[Method]:
    """Parameter sets beyond the manifest's, drawn from the seed. Not degenerate ones: with fewer than 6
    reference values a year (b (2w + 1)) or w = 0 (flexible: a seasonal level of one week), counts of 0 and 1
    make the fit race to a single count, and whether R stops then hangs on rounding (an Anscombe residual
    0/0 or x/0 at a hat value within 1e-14 of 1); test_where_r_stops covers the sets where R always stops."""
    b, w = int(rng.integers(1, 6)), int(rng.integers(0, 4))
    while b * (2 * w + 1) < 6:
        b, w = int(rng.integers(1, 6)), int(rng.integers(0, 4))
    alpha = float(rng.choice([0.01, 0.05, 0.1]))
    power = str(rng.choice(["2/3", "1/2", "none"]))
    limit = (int(rng.integers(0, 6)), int(rng.integers(1, 6)))
    fb, fw = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    while fb * (2 * fw + 1) < 6:
        fb, fw = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    flex = dict(b=fb, w=fw, alpha=float(rng.choice([0.01, 0.05, 0.1])),
                powertrans=str(rng.choice(["2/3", "1/2", "none"])),
                limit54=(int(rng.integers(0, 6)), int(rng.integers(1, 6))),
                weights_threshold=float(rng.choice([1.0, 2.58])), reweight=bool(rng.random() < 0.8),
                trend=bool(rng.random() < 0.8), no_periods=int(rng.choice([1, 1, 4, 10])))
    flex["past_weeks_not_included"] = int(rng.choice([flex["w"], 26]))
    return [
        classic("farrington_classic_random", b=b, w=w, alpha=alpha, powertrans=power, limit54=limit,
                reweight=bool(rng.random() < 0.8), trend=bool(rng.random() < 0.8)),
        flexible("farringtonFlexible_random", **flex),
        earsc("ears_random", str(rng.choice(["C1", "C2", "C3"])), alpha=float(rng.choice([0.001, 0.01, 0.05])),
              baseline=int(rng.integers(3, 12))),
    ]


# -------------------------------------------------------------------------------------- the series
SHAPES = ("low", "high", "trend", "outbreaks", "short", "sparse")


def seasonal(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n)
    phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.8)
    return amp * np.sin(2 * np.pi * t / 52.18 + phase)


def random_series(rng: np.random.Generator, i: int) -> dict[str, Any]:
    """One random weekly series: id, cases, dated (start Monday/any weekday) or index-based (start year, week)."""
    shape = SHAPES[i % len(SHAPES)]
    n = int(rng.integers(5 * 52 + 30, 10 * 52)) if shape != "short" else int(rng.integers(40, 5 * 52 + 10))
    season = seasonal(rng, n)
    disp = float(rng.choice([1.0, 1.5, 3.0]))
    if shape == "low":
        mean = rng.uniform(0.1, 1.5) * np.exp(season)
    elif shape == "high":
        mean = rng.uniform(150, 2500) * np.exp(season)
    elif shape == "trend":
        slope = rng.uniform(0.002, 0.008) * rng.choice([-1, 1])
        mean = rng.uniform(3, 60) * np.exp(season + slope * (np.arange(n) - n / 2))
    elif shape == "outbreaks":
        mean = rng.uniform(1, 25) * np.exp(season)
        for _ in range(int(rng.integers(2, 7))):
            at, length = int(rng.integers(0, n)), int(rng.integers(2, 10))
            mean[at:at + length] *= rng.uniform(3, 12)
    elif shape == "short":
        mean = rng.uniform(0.5, 40) * np.exp(season)
    else:
        mean = np.full(n, rng.uniform(0.01, 0.08))
    y = rng.poisson(mean) if disp == 1 else rng.poisson(rng.gamma(mean / (disp - 1), disp - 1))
    out = {"series_id": f"s{i:02d}_{shape}", "cases": y.astype(np.int64), "dated": bool(rng.random() < 0.5)}
    if out["dated"]:
        first = dt.date(1995, 1, 2) + dt.timedelta(days=int(rng.integers(0, 20 * 365)))
        if rng.random() < 0.7:                                   # mostly Mondays, sometimes another weekday
            first -= dt.timedelta(days=first.weekday())
        out["week_start"] = [first + dt.timedelta(weeks=k) for k in range(n)]
    else:
        out["start"] = (int(rng.integers(1990, 2015)), int(rng.integers(1, 53)))
    return out


def series_frame(generated: list[dict[str, Any]]) -> pl.DataFrame:
    """The long frame both sides read: series_id, t, cases, week_start (null: index-based), start_year, start_week."""
    parts = []
    for g in generated:
        n = len(g["cases"])
        start = g.get("start", (None, None))
        parts.append(pl.DataFrame({
            "series_id": [g["series_id"]] * n, "t": np.arange(1, n + 1), "cases": g["cases"],
            "week_start": pl.Series(g.get("week_start", [None] * n), dtype=pl.Date),
            "start_year": pl.Series([start[0]] * n, dtype=pl.Int64),
            "start_week": pl.Series([start[1]] * n, dtype=pl.Int64)}))
    return pl.concat(parts)


# ------------------------------------------------------------------------------------ comparison
def evaluation_range(n: int, method: Method, weeks: int) -> tuple[int, int] | None:
    lo = max(method.first(n), n - weeks + 1)
    return (lo, n) if lo <= n else None


def vigila_rows(series: pl.DataFrame, method: Method, rng: tuple[int, int]) -> pl.DataFrame:
    one = series.select("series_id", "t", "cases", *(["week_start"] if series["week_start"].null_count() == 0 else []))
    return method.fn(one, range=rng, **method.kwargs)


def close(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    both_inf = a.is_infinite() & b.is_infinite() & (a == b)
    return both_inf | ((a - b).abs() <= TOLERANCE * pl.max_horizontal(b.abs(), pl.lit(1.0)))


def compare(r: pl.DataFrame, got: pl.DataFrame, method: Method) -> list[str]:
    """Differences between R's rows of one (series, method) and vigila's, as readable lines (empty: equal)."""
    sid = r["series_id"][0]
    if r["t"].null_count():                       # the whole call stopped in R and was not retried
        return [f"{sid} {method.name}: R stopped: {r['error'][0]}"]
    stopped = r.filter(pl.col("error").fill_null("") != "")
    ok = r.filter(pl.col("error").fill_null("") == "")
    problems = []
    j = ok.join(got, on=["series_id", "t"], how="left", suffix="_v")
    missing = j.filter(pl.col("observed").is_null())
    if missing.height:
        problems.append(f"{sid} {method.name}: vigila has no row for t={missing['t'].to_list()[:10]}")
    j = j.filter(pl.col("observed").is_not_null())
    bad = j.filter(~(pl.col("upperbound").is_null() & pl.col("upperbound_v").is_null()
                     | close(pl.col("upperbound_v"), pl.col("upperbound")).fill_null(False))
                   | ~pl.col("alarm").cast(pl.Boolean).eq_missing(pl.col("alarm_v")))
    if method.compare_expected:
        expected_differs = ~(pl.col("expected").is_null() & pl.col("expected_v").is_null()
                             | close(pl.col("expected_v"), pl.col("expected")).fill_null(False))
        bad = pl.concat([bad, j.filter(pl.col("upperbound").is_not_null(), expected_differs)]).unique("t")
    for row in bad.sort("t").head(5).iter_rows(named=True):
        problems.append(f"{sid} {method.name} t={row['t']}: R upperbound={row['upperbound']} alarm={row['alarm']} "
                        f"expected={row['expected']} | vigila upperbound={row['upperbound_v']} alarm={row['alarm_v']} "
                        f"expected={row['expected_v']}")
    if bad.height > 5:
        problems.append(f"{sid} {method.name}: ... {bad.height} weeks differ in all")
    if stopped.height:                            # R stops there: vigila gives no bound and no alarm
        s = stopped.join(got, on=["series_id", "t"], how="left", suffix="_v")
        wrong = s.filter(pl.col("upperbound_v").is_not_null() | pl.col("alarm_v").fill_null(False))
        if wrong.height:
            problems.append(f"{sid} {method.name}: R stops at t={wrong['t'].to_list()[:10]} "
                            f"({stopped['error'][0]}) but vigila gives bounds {wrong['upperbound_v'].to_list()[:5]}")
    if "no_bound_reason" in got.columns:          # every null bound says why: R stops, or R's NA
        s = r.join(got, on=["series_id", "t"], suffix="_v").filter(pl.col("upperbound_v").is_null())
        stop = pl.col("error").fill_null("") != ""
        wrong = s.filter(stop & ~pl.col("no_bound_reason").is_in(STOP_REASONS)
                         | ~stop & ~pl.col("no_bound_reason").is_in(NA_REASONS))
        if wrong.height:
            row = wrong.row(0, named=True)
            problems.append(f"{sid} {method.name}: {wrong.height} null bounds with a wrong reason, e.g. "
                            f"t={row['t']}: {row['no_bound_reason']} where R "
                            f"{row['error'] or 'gives ' + str(row['upperbound'] if row['upperbound'] is not None else 'NA')}")
    return problems


def week_counts(r: pl.DataFrame, got: pl.DataFrame) -> dict[str, int]:
    """Per week of one (series, method): bounds_differ (R answered; bounds not both null nor within
    TOLERANCE), alarms_differ (R answered and vigila's alarm is not R's; or R stops and vigila alarms),
    stopped_null (R stops and vigila gives a null bound and no alarm, as it should)."""
    j = r.join(got, on=["series_id", "t"], how="left", suffix="_v")
    answered = pl.col("error").fill_null("") == ""
    same_bound = (pl.col("upperbound").is_null() & pl.col("upperbound_v").is_null()
                  | close(pl.col("upperbound_v"), pl.col("upperbound")).fill_null(False))
    same_alarm = pl.col("alarm").cast(pl.Boolean).eq_missing(pl.col("alarm_v"))
    counts = j.select((answered & ~same_bound).sum().alias("bounds_differ"),
                      (answered & ~same_alarm | ~answered & pl.col("alarm_v").fill_null(False)).sum()
                      .alias("alarms_differ"),
                      (~answered & pl.col("upperbound_v").is_null() & ~pl.col("alarm_v").fill_null(False)).sum()
                      .alias("stopped_null"))
    return {k: int(v[0]) for k, v in counts.to_dict(as_series=False).items()}


@dataclass
class Outcome:
    compared: int = 0                 # (series, method) pairs
    weeks: int = 0                    # weeks with an R result compared
    stopped: int = 0                  # weeks where R stops with an error
    max_rel: float = 0.0              # largest |vigila - R| / max(1, |R|) of a bound
    problems: list[str] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)     # the same, per (series, method)
    reasons: list[pl.DataFrame] = field(default_factory=list)      # (method, R's error, no_bound_reason, weeks)


def differential(series: pl.DataFrame, methods: list[Method], workdir: Path, weeks: int = 26,
                 reuse: bool = False, timeout: float | None = 900) -> Outcome:
    """Run every method on every series of `series` (the last `weeks` weeks of each) in R and in vigila and
    compare."""
    lengths = dict(series.group_by("series_id").agg(pl.len()).iter_rows())
    calls, plan = [], {}
    for sid, n in sorted(lengths.items()):
        for m in methods:
            rng = evaluation_range(n, m, weeks)
            if rng is None:
                continue
            cid = f"{m.name}|{sid}"
            calls.append((m.name, sid, rng, m.r_call))
            plan[cid] = (sid, m, rng)
    r = run_r(series, calls, workdir, reuse=reuse, timeout=timeout)
    r = r.filter(pl.concat_str("call_id", pl.lit("|"), "series_id").is_in(list(plan)))   # reuse: other runs' calls
    out = Outcome()
    for (name, sid), rows in r.group_by("call_id", "series_id", maintain_order=True):
        _, m, rng = plan[f"{name}|{sid}"]
        got = vigila_rows(series.filter(pl.col("series_id") == sid), m, rng)
        problems = compare(rows, got, m)
        answered = rows.filter(pl.col("error").fill_null("") == "")
        j = (answered.filter(pl.col("upperbound").is_finite()).join(got, on=["series_id", "t"], suffix="_v")
             .filter(pl.col("upperbound_v").is_finite()))
        rel = float(((j["upperbound_v"] - j["upperbound"]).abs() / j["upperbound"].abs().clip(1.0, None)).max()
                    if j.height else 0.0)
        out.compared += 1
        out.weeks += answered.height
        out.stopped += rows.height - answered.height
        out.max_rel = max(out.max_rel, rel)
        out.problems += problems
        if "no_bound_reason" in got.columns:
            nulls = (rows.join(got, on=["series_id", "t"], suffix="_v")
                     .filter(pl.col("upperbound").is_null() | pl.col("upperbound_v").is_null()))
            r_said = (pl.when(pl.col("error").fill_null("") != "").then(pl.col("error").str.slice(0, 48))
                      .when(pl.col("upperbound").is_null()).then(pl.lit("(NA)")).otherwise(pl.lit("(a bound)")))
            out.reasons.append(nulls.group_by(r_said.alias("r_error"), "no_bound_reason")
                               .agg(pl.len().alias("weeks")).with_columns(pl.lit(name).alias("method")))
        out.pairs.append({"series_id": sid, "method": name, "weeks": answered.height,
                          "stopped": rows.height - answered.height, "bounds": j.height, "max_rel": rel,
                          "alarms_r": int(answered["alarm"].fill_null(0).sum()), "differences": len(problems),
                          **week_counts(rows, got), "error": rows["error"].fill_null("").max()})
    return out


def seeded_run(seed: int, workdir: Path, n_series: int) -> Outcome:
    """The parameter sets, then the series (the first n of a seed's series do not depend on n)."""
    rng = np.random.default_rng(seed)
    methods = MANIFEST_METHODS + random_methods(rng)
    generated = [random_series(rng, i) for i in range(n_series)]
    return differential(series_frame(generated), methods, workdir)


def check(seed: int, tmp_path: Path, n_series: int) -> None:
    out = seeded_run(seed, tmp_path, n_series)
    print(f"R differential seed {seed}: {out.compared} (series, method) pairs, {out.weeks} weeks compared, "
          f"{out.stopped} weeks where R stops, max relative bound difference {out.max_rel:.3g}")
    assert not out.problems, (f"vigila differs from R with seed {seed} (replay: VIGILA_R_SEED={seed} pytest "
                              f"tests/test_detect_r_differential.py):\n" + "\n".join(out.problems[:40]))


def fresh_seed() -> int:
    return int(os.environ.get("VIGILA_R_SEED") or secrets.randbelow(2**31))


@pytest.mark.parametrize("seed", REGRESSION_SEEDS)
def test_regression_seeds(seed, tmp_path):
    require_r()
    seed, n_series = seed if isinstance(seed, tuple) else (seed, 8)
    check(seed, tmp_path, n_series)


def test_fresh_seed(tmp_path):
    require_r()
    seed = fresh_seed()
    print(f"\nR differential: seed {seed} (replay with VIGILA_R_SEED={seed})")
    check(seed, tmp_path, int(os.environ.get("VIGILA_R_SERIES", "12")))


EDGE_METHODS = [   # R stops on some or all weeks of these
    classic("classic_short_history"),                              # no or one reference week for t < 52
    classic("classic_one_value", b=1, w=0),
    classic("classic_one_value_plain", b=1, w=0, reweight=False, trend=False),
    classic("classic_two_values_plain", b=2, w=0, reweight=False),
    flexible("flexible_short_history", b=2),
    flexible("flexible_one_value", b=1, w=0),
    flexible("flexible_one_value_plain", b=1, w=0, reweight=False),
    flexible("noufaily_short_history", **{**NOUFAILY, "b": 2}, threshold_method="muan"),
    flexible("flexible_five_values", b=1, w=2, past_weeks_not_included=26),   # sparse: a singular R factor
]


def edge_series() -> pl.DataFrame:
    rng = np.random.default_rng(1)
    y = rng.poisson(5, 120)
    sparse = np.zeros(120, np.int64)
    sparse[[40, 97, 115]] = 1
    monday = dt.date(2003, 1, 6)
    return series_frame([
        {"series_id": "index", "cases": y, "dated": False, "start": (2001, 1)},
        {"series_id": "dated", "cases": y, "dated": True,
         "week_start": [monday + dt.timedelta(weeks=k) for k in range(120)]},
        {"series_id": "sparse", "cases": sparse, "dated": False, "start": (2001, 1)},
    ])


def test_where_r_stops(tmp_path):
    """Short histories and one or two reference values: weeks where R stops are null bounds without alarm in
    vigila, the others equal R."""
    require_r()
    out = differential(edge_series(), EDGE_METHODS, tmp_path, weeks=72)     # t = 49..120
    print(f"R edge cases: {out.weeks} weeks compared, {out.stopped} weeks where R stops")
    assert out.stopped > 500 and out.weeks > 300
    assert not out.problems, "\n".join(out.problems[:40])
