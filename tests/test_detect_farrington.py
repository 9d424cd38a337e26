"""Farrington flexible (defaults, Noufaily nbPlugin/muan, vignette and help examples) and classic Farrington
equal R surveillance 1.20.3 on every reference file: bundled fixtures always, ../shared when present."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from vigila.detect.farrington import NO_BOUND_REASONS, farrington, farrington_flexible, irls

from conftest import SHARED
from test_detect_ears import BUNDLED, SHARED_REF, assert_rows_match, cases, r_range, reference_frame

CONTROL = {  # R's control names -> vigila's parameters
    "b": "b", "w": "w", "reweight": "reweight", "weightsThreshold": "weights_threshold", "alpha": "alpha",
    "trend": "trend", "pThresholdTrend": "p_threshold_trend", "limit54": "limit54", "powertrans": "powertrans",
    "noPeriods": "no_periods", "pastWeeksNotIncluded": "past_weeks_not_included",
    "thresholdMethod": "threshold_method", "populationOffset": "population_offset",
}


def farrington_cases(root):
    return [p for name in ("farrington", "vignette_con.", "helpexample") for p in cases(root, name)]


def compare(reference, load, entry):
    control = entry["control"]
    params = {CONTROL[k]: tuple(v) if isinstance(v, list) else v for k, v in control.items() if k in CONTROL}
    classic = entry["r_call"].startswith("algo.farrington")
    series = load()
    got = (farrington if classic else farrington_flexible)(
        series.select("series_id", "t", "cases", "week_start"), range=r_range(control["range"]), **params)
    assert (got.height, got["alarm"].sum(), got["upperbound"].null_count()) == (
        entry["n_rows"], entry["n_alarms"], entry.get("n_upperbound_na", 0))
    j = assert_rows_match(reference_frame(reference, series), got, series)
    if "r_expected" in j.columns:     # R's expected: the fitted mean (delta) or exp(eta0) (Noufaily), NA without bound
        e = j.filter(pl.col("r_expected").is_not_null())
        assert j["r_expected"].is_null().equals(j["expected"].is_null())
        assert ((e["expected"] - e["r_expected"]).abs() <= 1e-4 * e["r_expected"].abs()).all()


@pytest.mark.parametrize("reference, load, entry", farrington_cases(BUNDLED))
def test_bundled_reference(reference, load, entry):
    compare(reference, load, entry)


@pytest.mark.parametrize("reference, load, entry", farrington_cases(SHARED_REF))
def test_shared_reference(reference, load, entry):
    compare(reference, load, entry)


def test_every_shared_farrington_file_is_compared():
    if not SHARED_REF.exists():
        pytest.skip(f"{SHARED_REF} not present")
    on_disk = {p.name for p in SHARED_REF.glob("*.csv") if "glr" not in p.name and "ears" not in p.name
               and "cusum" not in p.name}
    assert {p.id for p in farrington_cases(SHARED_REF)} == on_disk


def series_frame(cases_by_series: dict[str, np.ndarray]) -> pl.DataFrame:
    return pl.concat([pl.DataFrame({"series_id": k, "t": np.arange(1, len(v) + 1), "cases": v})
                      for k, v in cases_by_series.items()])


def test_many_series_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(7)
    t = np.arange(1, 313)
    data = {f"s{i}": rng.poisson(np.exp(1 + i * 0.3 + 0.7 * np.sin(2 * np.pi * t / 52))) for i in range(6)}
    for fn, kw in ((farrington_flexible, {}), (farrington_flexible, {"no_periods": 10, "threshold_method": "muan",
                                                                     "past_weeks_not_included": 26}), (farrington, {})):
        both = fn(series_frame(data), range=(270, 312), **kw)
        for k, v in data.items():
            alone = fn(series_frame({k: v}), range=(270, 312), **kw)
            assert both.filter(pl.col("series_id") == k).drop("series_id").equals(alone.drop("series_id"))


def test_too_little_history_gives_null_bounds_not_a_crash():
    short = series_frame({"a": np.full(100, 5)})
    out = farrington_flexible(short, range=(60, 100))
    assert out.height == 41 and out["upperbound"].null_count() == 41 and not out["alarm"].any()
    assert farrington_flexible(short).height == 0            # default range starts after b years


@pytest.mark.parametrize("n, converged, beta", [(10, True, -24.30259), (35, True, -26.30259),
                                                 (100, True, -27.30259), (300, False, -27.30259)])
def test_irls_stops_where_r_stops(n, converged, beta):
    """An all-zero response: R 4.2 glm.fit(matrix(1, n, 1), rep(0, n), family = quasipoisson()) converges
    (deviance criterion 1e-8) for n <= 100 and not within 25 iterations for n = 300; same coefficients."""
    y = np.zeros((1, n))
    for X in (np.ones((1, 1, n)), np.stack([np.ones((1, n)), np.arange(1.0, n + 1)[None]])):
        drop = np.zeros((1, X.shape[0]), bool)
        if X.shape[0] == 2:     # the general path, with a dropped trend column standing in for the intercept-only model
            X = X.copy()
            X[1] = 0.0
            drop[:, 1] = True
        fit = irls(X, y, np.ones_like(y), np.zeros_like(y), drop)
        assert fit.converged.tolist() == [converged]
        assert fit.beta[0, 0] == pytest.approx(beta, abs=1e-5)


def test_trend_fit_racing_to_one_count_converges_as_r():
    """Intercept + trend on the reference values 0 0 0 0 0 0 3 (weeks 230..236): R 4.2 glm.fit converges at its
    25th (last) step (deviance 7.499e-10 -> 2.759e-10) with coefficients (-5616.35937, 23.80279) on wtime =
    230..236. The 2x2 normal equations lose those digits (weights ~eps) and did not converge; QR does."""
    y = np.array([[0, 0, 0, 0, 0, 0, 3.0]])
    t = np.arange(230.0, 237.0)
    fit = irls(np.stack([np.ones((1, 7)), t[None]]), y, np.ones_like(y), np.zeros_like(y), np.zeros((1, 2), bool))
    assert fit.converged.tolist() == [True]
    assert fit.beta[0] == pytest.approx([-5616.35937, 23.80279], rel=1e-6)


def test_where_r_stops_after_a_fit_racing_to_one_count():
    """R farringtonFlexible(b = 1, w = 3, limit54 = c(4, 5), powertrans = "none", pastWeeksNotIncluded = 26) on a
    sparse series stops at t = 285 and 291 ("singular matrix 'a' in solve": the converged fit's R factor is
    singular for predict.glm's qr.solve) and gives NA bounds (limit54) elsewhere in 267..292 (seed 1343009286,
    s11_sparse, of tests/test_detect_r_differential.py). vigila: null bounds, reason fit there, limit54 elsewhere."""
    y = np.zeros(292, np.int64)
    y[[14, 153]] = 2
    y[[27, 44, 89, 150, 180, 249, 250, 263]] = 1
    y[[210, 235]] = 3          # t = 236: the last reference value of t = 285 (weeks 230..236), the first of 291
    out = farrington_flexible(series_frame({"a": y}), b=1, w=3, alpha=0.05, powertrans="none", limit54=(4, 5),
                              weights_threshold=2.58, past_weeks_not_included=26, range=(267, 292))
    assert out["upperbound"].is_null().all() and not out["alarm"].any()
    fit = out.filter(pl.col("no_bound_reason") == "fit")["t"].to_list()
    assert fit == [285, 291]
    assert (out.filter(~pl.col("t").is_in(fit))["no_bound_reason"] == "limit54").all()


@pytest.mark.parametrize("bad", [{"threshold_method": "exact"}, {"powertrans": "3/4"}, {"alpha": 1.5},
                                 {"limit54": (5, 0)}, {"w": 30}])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        farrington_flexible(series_frame({"a": np.ones(300)}), **bad)


# ------------------------------------------------------------ R surveillance's own datasets, bundled (no R needed)
R_DATASETS = BUNDLED / "r_datasets"     # see its README: the series and R's output (benchmarks/r_differential.py)


def r_dataset_cases():
    from test_detect_r_differential import MANIFEST_METHODS

    files = sorted(R_DATASETS.glob("*.r_results.csv.gz"))
    names = [p.name.removesuffix(".r_results.csv.gz") for p in files]
    return [pytest.param(n, m, id=f"{n}-{m.name}") for n in names for m in MANIFEST_METHODS]


def r_dataset(name: str) -> pl.DataFrame:
    data = pl.read_csv(R_DATASETS / f"{name}.csv.gz", schema_overrides={"week_start": pl.Date, "unit": pl.String})
    return data.select(pl.format("{}/{}", "dataset", "unit").alias("series_id"), "t", "cases", "week_start")


ROUNDING_RACES = {   # (series, method, t): R answers, vigila stops -- whether R stops hangs on rounding there
    # four reference values 1, 0, 0, 0: the trend races to fit the 1 (hat value 1); R's fitted value came out
    # 1 - 7e-15, an Anscombe residual x/0 = Inf and weight 0, so R goes on (bound 0); with 0, 0, 0, 1 (Berlin,
    # Lower Saxony, same week) it came out exactly 1, 0/0, and R stops. vigila takes a fitted value within 1e-9
    # of the count as equal (farrington.py _reweights), so it stops at all three.
    ("measlesDE/Hamburg", "farrington_classic", 53),
    # reference values 9, 0, 0, 0, 0, 0, 0: the trend races to fit the 9 and converges at R's 25th step (vigila
    # too since its intercept + trend IRLS solves such fits by QR; before, its 2x2 normal equations did not
    # converge and it refitted without trend, bound 0 by luck). R's fitted value came out 9 - 4e-14 (Inf residual,
    # weight 0, R goes on: bound 0), vigila's 9 - 1e-12, within its 1e-9: it stops.
    ("measlesWeserEms/03454", "farrington_classic", 82),
}


@pytest.mark.parametrize("name, method", r_dataset_cases())
def test_r_dataset_equals_r(name, method):
    """Every manifest method on the bundled weekly datasets of R surveillance (see the fixtures' README:
    stsNewport, salmAllOnset, hepatitisA, measlesDE, measlesWeserEms, shadar and two units of fluBYBW):
    alarms identical, bounds within 1e-4, null bounds with a reason where R stops or gives NA. The series of a
    dataset with the same range run at once, as the command does."""
    from test_detect_r_differential import compare, vigila_rows

    r = pl.read_csv(R_DATASETS / f"{name}.r_results.csv.gz", infer_schema_length=None,
                    schema_overrides={"upperbound": pl.Float64, "alarm": pl.Float64, "expected": pl.Float64,
                                      "t": pl.Int64, "error": pl.String}).filter(pl.col("method") == method.name)
    series = r_dataset(name)
    assert r.height > 0
    races = [(sid, t) for sid, m, t in ROUNDING_RACES if m == method.name and sid.startswith(f"{name}/")]
    ranges = r.group_by("series_id").agg(pl.col("t").min().alias("lo"), pl.col("t").max().alias("hi"))
    for (lo, hi), ids in ranges.group_by("lo", "hi"):
        got = vigila_rows(series.filter(pl.col("series_id").is_in(ids["series_id"].implode())), method, (lo, hi))
        for sid, rows in r.filter(pl.col("series_id").is_in(ids["series_id"].implode())).group_by("series_id"):
            race = [t for s_, t in races if s_ == sid[0]]
            raced = rows.filter(pl.col("t").is_in(race)).join(got, on=["series_id", "t"], suffix="_v")
            assert raced.height == len(race)
            assert (raced["upperbound_v"].is_null() & ~raced["alarm_v"] & (raced["alarm"] == 0)).all()
            assert compare(rows.filter(~pl.col("t").is_in(race)), got.filter(pl.col("series_id") == sid[0]),
                           method) == []


def test_r_datasets_are_bundled():
    assert {p.name for p in R_DATASETS.glob("*.csv.gz")} >= {
        f"{n}{suffix}" for n in ("stsNewport", "salmAllOnset", "hepatitisA", "measlesDE", "measlesWeserEms",
                                 "shadar", "fluBYBW")
        for suffix in (".csv.gz", ".r_results.csv.gz")}


def test_classic_uses_calendar_years_back_for_dated_series():
    """salmAllOnset from R with its dates and without (t - 52 i): R's reference weeks differ (five years back is
    261 weeks for most weeks), so the bounds do; vigila follows the dates when week_start is given."""
    series = r_dataset("salmAllOnset")
    r = (pl.read_csv(R_DATASETS / "salmAllOnset.r_results.csv.gz", schema_overrides={"error": pl.String})
         .filter(pl.col("method") == "farrington_classic"))
    rng = (r["t"].min(), r["t"].max())
    dated = farrington(series, range=rng).join(r, on=["series_id", "t"])
    by_index = farrington(series.drop("week_start"), range=rng).join(r, on=["series_id", "t"])
    assert ((dated["upperbound"] - dated["upperbound_right"]).abs() <= 1e-6 * dated["upperbound_right"]).all()
    off = (by_index["upperbound"] - by_index["upperbound_right"]).abs() > 1e-3 * by_index["upperbound_right"]
    assert off.sum() > 50


def test_where_r_stops_bounds_are_null_and_no_alarm():
    """R stops (farringtonFlexible: too little history; classic: one or no reference value); vigila gives those
    weeks null upperbound and expected and alarm false, and the other weeks their values."""
    y = np.random.default_rng(1).poisson(5, 120)
    x = series_frame({"a": y})
    flex = farrington_flexible(x, b=2, range=(60, 120))        # 2 years back exists from t = 105 + w
    assert flex.filter(pl.col("t") < 104)["upperbound"].is_null().all()
    assert flex.filter(pl.col("t") >= 108)["upperbound"].is_not_null().all()
    assert (flex.filter(pl.col("t") < 104)["no_bound_reason"] == "history").all()      # every null bound says why
    assert flex.filter(pl.col("upperbound").is_not_null())["no_bound_reason"].is_null().all()
    classic = farrington(x, range=(20, 120))                   # R (b = 5, w = 3): no reference week before t = 50,
    assert classic.filter(pl.col("t") <= 51)["upperbound"].is_null().all()     # one at t = 50, two at t = 51
    assert classic.filter(pl.col("t") <= 51)["expected"].is_null().all()
    assert classic.filter(pl.col("t") >= 52)["upperbound"].is_not_null().all()
    assert not classic["alarm"].fill_null(True).filter(classic["upperbound"].is_null()).any()
    one_value = farrington(x, b=1, w=0, range=(60, 120))     # a single reference value: R always stops
    assert one_value["upperbound"].is_null().all() and not one_value["alarm"].any()
    assert (one_value["no_bound_reason"] == "reference_values").all()
    assert set(classic.filter(pl.col("t") <= 51)["no_bound_reason"]) == {"history", "reference_values"}
    assert set(classic["no_bound_reason"].drop_nulls()) <= set(NO_BOUND_REASONS)


def test_seasonal_periods_on_a_dated_series_up_to_its_last_week():
    """no_periods > 1 on a date-based series: the rows of a batch have the width of its longest history, so a
    row's positions could run past its series' last week (an IndexError at the end of the flat arrays)."""
    rng = np.random.default_rng(4)
    n = 319
    x = pl.DataFrame({"series_id": "a", "t": np.arange(1, n + 1), "cases": rng.poisson(300, n),
                      "week_start": pl.date_range(pl.date(2005, 7, 11), pl.date(2005, 7, 11) + pl.duration(weeks=n - 1),
                                                  "1w", eager=True)})
    out = farrington_flexible(x, b=3, w=1, no_periods=10, past_weeks_not_included=1, range=(268, n))
    assert out.height == 52 and out["upperbound"].is_not_null().all()


@pytest.mark.parametrize("name", ["stsNewport", "salmAllOnset"])
def test_detect_command_path_on_r_datasets_equals_r(name):
    """Issue 18's call: `vigila detect --method farrington --range <last 104>` (registry.detect, input rows
    shuffled, t and week_start both given) on the two R datasets equals R's algo.farrington."""
    from vigila.detect import registry

    series = r_dataset(name).sample(fraction=1.0, shuffle=True, seed=3)
    r = (pl.read_csv(R_DATASETS / f"{name}.r_results.csv.gz", schema_overrides={"error": pl.String})
         .filter(pl.col("method") == "farrington_classic"))
    got = registry.detect(series, "farrington", registry.parse_params("farrington", ["b=5", "w=3", "alpha=0.05"]),
                          range=registry.parse_range(f"{r['t'].min()}:{r['t'].max()}"))
    j = got.join(r, on=["series_id", "t"], how="full", coalesce=True)
    assert j.height == got.height == r.height == 104
    assert ((j["upperbound"] - j["upperbound_right"]).abs() <= 1e-6 * j["upperbound_right"].abs() + 1e-9).all()
    assert (j["alarm"] == (j["alarm_right"] == 1)).all()


def test_quantiles_from_scipy_special_are_scipy_stats_own():
    """The Noufaily quantiles and the trend test read scipy.special (scipy.stats costs a second of import): the
    values are scipy.stats' to the bit, NaN for parameters it refuses, over means from 0 to 1e15 and every
    dispersion the fits give (just over 1 to 1e6)."""
    import importlib

    from scipy import special, stats

    module = importlib.import_module("vigila.detect.farrington")
    rng = np.random.default_rng(20261203)
    q = np.concatenate([rng.lognormal(1, 3, 50_000), [0, 1e-300, 1e-10, 0.5, 1, 1e6, 1e12, 1e15, np.nan, np.inf, -1]])
    phi = np.concatenate([1 + rng.lognormal(-1, 2, 50_000), [1 + 1e-7, 1.5, 2, 1 + 1e-9, 3, 100, 1e6, 2, 2, 2, 2]])
    for alpha in (0.001, 0.01, 0.025, 0.05, 0.5, 1e-17, 1 - 1e-17):   # 1 - 1e-17 == 1.0: the support's end
        n, p = q / (phi - 1), 1 / phi
        assert np.array_equal(module.nbinom_ppf(1 - alpha, n, p), stats.nbinom.ppf(1 - alpha, n, p), equal_nan=True)
        assert np.array_equal(module.poisson_ppf(1 - alpha, q), stats.poisson.ppf(1 - alpha, q), equal_nan=True)
        assert special.ndtri(1 - alpha) == stats.norm.ppf(1 - alpha) or np.isinf(stats.norm.ppf(1 - alpha))
    tval, df = rng.normal(0, 5, 50_000), rng.integers(1, 60, 50_000).astype(float)
    assert np.array_equal(2 * special.stdtr(df, -np.abs(tval)), 2 * stats.t.sf(np.abs(tval), df))
