"""CUSUM equals R surveillance::algo.cusum on every cusum reference (bundled fixtures always, ../shared when
present), plus the properties of the vectorised recursion."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from vigila.detect.cusum import cusum

from test_detect_ears import (BUNDLED, SHARED_REF, assert_manifest_counts, assert_rows_match, cases, r_range,
                              reference_frame)


def r_digits(values: pl.Series) -> pl.Series:
    """The 15 significant digits R's write.csv keeps."""
    return pl.Series([None if v is None else float(f"{v:.15g}") for v in values])


def compare(reference, load, entry: dict) -> None:
    control = entry["control"]
    series = load()
    got = cusum(series.select("series_id", "t", "cases", "week_start"), k=control["k"], h=control["h"],
                m=control["m"], trans=control["trans"], alpha=control.get("alpha"), range=r_range(control["range"]))
    assert got["method"].unique().to_list() == ["cusum"]
    assert_manifest_counts(got, entry)
    j = assert_rows_match(reference_frame(reference, series), got, series)
    assert r_digits(j["cusum"]).equals(j["r_cusum"], check_names=False)     # the recursion adds in R's order
    assert r_digits(j["expected"]).equals(j["r_m"], check_names=False)
    if "m_used" in entry:
        assert (r_digits(j["expected"]) == entry["m_used"]).all()


@pytest.mark.parametrize("reference, load, entry", cases(BUNDLED, "cusum"))
def test_bundled_reference(reference, load, entry):
    compare(reference, load, entry)


@pytest.mark.parametrize("reference, load, entry", cases(SHARED_REF, "cusum"))
def test_shared_reference(reference, load, entry):
    compare(reference, load, entry)


def test_every_shared_cusum_file_is_compared(shared):
    assert {p.id for p in cases(SHARED_REF, "cusum")} == {p.name for p in SHARED_REF.glob("*cusum*.csv")}


def agona() -> pl.DataFrame:
    return pl.read_csv(BUNDLED / "salmonella_agona.csv").select(pl.lit("a").alias("series_id"), "t", "cases")


@pytest.mark.parametrize("trans", ["standard", "rossi", "anscombe", "anscombe2nd", "pearsonNegBin", "none"])
def test_many_series_at_once_equal_one_at_a_time(trans):
    one = agona()
    others = [one.with_columns(pl.lit(s).alias("series_id"), pl.col("cases") * f) for s, f in (("b", 3), ("c", 7))]
    kw = {"trans": trans, "range": (200, 312), "h": 5 if trans == "none" else 2.26}
    both = cusum(pl.concat([*others, one]).sample(fraction=1, shuffle=True, seed=1), **kw)
    for frame in (one, *others):
        alone = cusum(frame, **kw)
        assert both.filter(pl.col("series_id") == alone["series_id"][0]).equals(alone)


def test_recursion_resets_at_zero_and_not_after_an_alarm():
    x = pl.DataFrame({"series_id": "x", "t": range(1, 11), "cases": [4, 4, 4, 4, 20, 0, 0, 0, 0, 9]})
    out = cusum(x, m=4.0, k=1.0, h=2.0, range=(1, 10))       # z - k = (cases - 4) / 2 - 1
    assert out["cusum"].to_list() == [0, 0, 0, 0, 7, 4, 1, 0, 0, 1.5]
    assert out["alarm"].to_list() == [False] * 4 + [True, True] + [False] * 4
    # R: ceiling(sqrt(m) * (h + k - S_{t-1}) + m), negative -> 0
    assert out["upperbound"].to_list() == [10, 10, 10, 10, 10, 0, 2, 8, 10, 10]


def test_equals_r_loop_bit_for_bit_even_at_rounding_ties():
    cases = np.random.default_rng(3).poisson(0.3, 2000)
    x = pl.DataFrame({"series_id": "x", "t": range(1, 2001), "cases": cases})
    s, loop = 0.0, []
    for v in cases:                    # R's loop; here sums of -0.3 and 0.7 hit 0 within rounding
        s = max(0.0, s + (float(v) - 0.3))
        loop.append(s)
    c = np.cumsum(cases - 0.3)
    assert ((c - np.minimum(np.minimum.accumulate(c), 0) == 0) != (np.array(loop) == 0)).any()  # Lindley alone misses
    assert cusum(x, trans="none", k=0.3, h=1.0, m=1.0, range=(1, 2000))["cusum"].to_list() == loop


def test_zero_baseline_gives_r_inf_then_nan():
    x = pl.DataFrame({"series_id": "x", "t": range(1, 8), "cases": [0, 0, 0, 0, 2, 0, 1]})
    out = cusum(x, range=(5, 7))       # R: (2 - 0) / 0 = Inf, then Inf + NaN; NA alarms, bounds 0
    assert out["cusum"].to_list()[0] == float("inf") and out["cusum"].is_nan().to_list() == [False, True, True]
    assert out["alarm"].to_list() == [True, None, None] and out["upperbound"].to_list() == [0, 0, 0]


def test_baseline_mean_is_per_series_and_before_range():
    x = pl.DataFrame({"series_id": ["a"] * 4 + ["b"] * 4, "t": [1, 2, 3, 4] * 2, "cases": [1, 3, 9, 9, 10, 20, 0, 0]})
    assert cusum(x, range=(3, 4))["expected"].to_list() == [2, 2, 15, 15]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="trans"):
        cusum(agona(), trans="log", range=(10, 20))
    with pytest.raises(ValueError, match="range"):
        cusum(agona())
    with pytest.raises(ValueError, match="start"):
        cusum(agona(), range=(1, 20))
    with pytest.raises(NotImplementedError):
        cusum(agona(), trans="anscombeNegBin", range=(10, 20))
