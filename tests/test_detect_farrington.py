"""Farrington flexible (defaults, Noufaily nbPlugin/muan, vignette and help examples) and classic Farrington
equal R surveillance 1.20.3 on every reference file: bundled fixtures always, ../shared when present."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from vigila.detect.farrington import farrington, farrington_flexible, irls

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


@pytest.mark.parametrize("bad", [{"threshold_method": "exact"}, {"powertrans": "3/4"}, {"alpha": 1.5},
                                 {"limit54": (5, 0)}, {"w": 30}])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        farrington_flexible(series_frame({"a": np.ones(300)}), **bad)
