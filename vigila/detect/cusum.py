"""CUSUM as R `surveillance::algo.cusum` computes it, vectorised over series.

Input: a long frame with `series_id`, `t` (consecutive 1-based week index per series), `cases`
[, `week_start`]; output: series_id, t[, week_start], observed, expected (= m), upperbound,
alarm (R: cusum >= h), cusum, method for each week of `range`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

Expr = pl.Expr

# standardised observation z_t (R's `standObs`) from x = observed, m = expected, a = alpha
STANDARDISE = {
    "standard": lambda x, m, a: (x - m) / m.sqrt(),
    "rossi": lambda x, m, a: (x - 3 * m + 2 * (x * m).sqrt()) / (2 * m.sqrt()),
    "anscombe": lambda x, m, a: 3 / 2 * (x ** (2 / 3) - m ** (2 / 3)) / m ** (1 / 6),
    "anscombe2nd": lambda x, m, a: ((x ** (2 / 3) - (m ** (2 / 3) - np.divide(m ** (-1 / 3), 9)))
                                    / (2 / 3 * m ** (1 / 6))),
    "pearsonNegBin": lambda x, m, a: (x - m) / (m + a * m**2).sqrt(),
    "none": lambda x, m, a: x,
}


def _power_bound(v: Expr) -> Expr:
    """R: ifelse(v < 0, 0, v^(3/2))."""
    return pl.when(v < 0).then(0.0).otherwise(v ** (3 / 2))


# Bit-for-bit R: polars divides a column by a constant as a product with its reciprocal, so the
# divisions by 9 go through numpy and m is joined per series (never a constant column); polars
# computes `** 0.5` as sqrt, which can differ in the last bit from R's x^(1/2) = C pow(x, 0.5).
HALF = pl.repeat(0.5, pl.len())

# R's upperbound from m, h, k, the previous cusum c (Ctm1), the current cusum s and alpha a.
# Quirk kept from R: anscombe2nd's bound uses m^(1/3)/9 where its standardisation uses m^(-1/3)/9.
BOUND = {
    "standard": lambda m, h, k, c, s, a: (m.sqrt() * ((h + k) - c) + m).ceil(),
    "rossi": lambda m, h, k, c, s, a: (2 * h * m**HALF + 2 * k * m**HALF - 2 * c * m**HALF + 5 * m
                                       - 2 * (4 * m**2 + 2 * m**1.5 * h + 2 * m**1.5 * k - 2 * m**1.5 * c) ** HALF),
    "anscombe": lambda m, h, k, c, s, a: _power_bound(2 / 3 * m ** (1 / 6) * ((h + k) - c) + m ** (2 / 3)),
    "anscombe2nd": lambda m, h, k, c, s, a: _power_bound(
        2 / 3 * m ** (1 / 6) * ((h + k) - c) + (m ** (2 / 3) - np.divide(m ** (1 / 3), 9))),
    "pearsonNegBin": lambda m, h, k, c, s, a: (m + a * m**2).sqrt() * ((h + k) - c) + m,
    "none": lambda m, h, k, c, s, a: h - s,
}


def cusum(frame: pl.DataFrame | pl.LazyFrame, *, k: float = 1.04, h: float = 2.26, m: float | None = None,
          trans: str = "standard", alpha: float | None = None,
          range: tuple[int, int | None] | None = None) -> pl.DataFrame:
    """R's `algo.cusum` on every series of `frame` (columns series_id, t, cases[, week_start]).

    `range` = (start, end), R's 1-based t, inclusive (end None: each series' last week). It is
    required: R's default `range = range` is the base function and fails, and no default is
    neutral (the baseline is everything before `start`). `m` None = per series, the mean of
    cases at t < start (R's m = NULL); a number = that mean for every series. `alpha` (None ->
    0.1) only enters the negative-binomial transform. The CUSUM S_t = max(0, S_{t-1} + z_t - k),
    S_0 = 0, starts at `start` and never resets after an alarm. No loop over weeks: the closed
    form (Lindley) S_t = C_t - min(0, min_{s<=t} C_s), C the running sum of z - k, finds the
    weeks where S_t = 0; S is the running sum of z - k since the last such week, which adds in
    R's order; a rounding tie at a reset is corrected by another pass, so the doubles are R's.
    Returns one row per series and week of `range`: series_id, t[, week_start], observed,
    expected (= m), upperbound (R: NA/NaN and negative bounds become 0), alarm (cusum >= h; null
    where cusum is NaN), cusum, method = "cusum".
    """
    if trans == "anscombeNegBin":
        raise NotImplementedError("trans='anscombeNegBin' (R's hypergeometric anscombeNB) is not implemented")
    if trans not in STANDARDISE:
        raise ValueError(f"invalid trans {trans!r}: one of {', '.join(STANDARDISE)}")
    if range is None:
        raise ValueError("cusum needs range=(start, end) in R's 1-based t: R's algo.cusum has no usable default "
                         "and m=None takes its baseline mean from t < start")
    if isinstance(m, str):
        raise NotImplementedError(f"m={m!r}: only m=None (baseline mean) or a number are implemented")
    lo, hi = range
    if m is None and lo < 2:
        raise ValueError("m=None needs range start >= 2: the baseline mean is taken over t < start")
    a = 0.1 if alpha is None else alpha
    x = pl.col("cases").cast(pl.Float64)
    expected = pl.col("expected")
    lf = frame.lazy()
    baseline = (lf.filter(pl.col("t") < lo).group_by("series_id").agg(x.mean().alias("expected")) if m is None
                else lf.group_by("series_id").agg(pl.lit(float(m)).alias("expected")))
    in_range = pl.col("t") >= lo if hi is None else pl.col("t").is_between(lo, hi)
    d = pl.col("_d")
    out = (lf.filter(in_range).join(baseline, on="series_id", how="left").sort("series_id", "t")
           .with_columns((STANDARDISE[trans](x, expected, a) - k).alias("_d")).collect())
    c = d.cum_sum().over("series_id")
    reset = c - pl.min_horizontal(c.cum_min().over("series_id"), 0.0) == 0      # Lindley: S_t = 0
    since_reset = pl.when("_reset").then(0.0).otherwise(d).cum_sum().over("series_id", "_run")
    prev = pl.col("cusum").shift(1, fill_value=0.0).over("series_id")
    while True:                      # until the resets are R's: S_t = 0 iff S_{t-1} + d_t <= 0 (1-2 passes)
        out = out.with_columns(reset.alias("_reset")).with_columns(
            pl.col("_reset").cum_sum().over("series_id").alias("_run")).with_columns(since_reset.alias("cusum"))
        reset = prev + d <= 0
        if out.select((reset == pl.col("_reset")).all()).item():
            break
    bound = BOUND[trans](expected, h, k, prev, pl.col("cusum"), a)
    week = ["week_start"] if "week_start" in out.columns else []
    return out.select(
        "series_id", "t", *week, x.alias("observed"), "expected",
        pl.when(bound.is_nan() | (bound < 0)).then(0.0).otherwise(bound).fill_null(0.0).alias("upperbound"),
        pl.when(~pl.col("cusum").is_nan()).then(pl.col("cusum") >= h).alias("alarm"),
        "cusum", pl.lit("cusum").alias("method"),
    )
