"""EARS C1, C2, C3 as R `surveillance::earsC` computes them, vectorised over series.

Input: a long frame with `series_id`, `t` (consecutive 1-based week index per series) and
`cases`; output: series_id, t, observed, expected, upperbound, alarm, method for each week of
`range`. R's rules: C1 uses lags 1..baseline, C2 and C3 lags 3..baseline+2; sample sd (n-1);
sigma = max(sd, min_sigma); alarm only when observed > upperbound. R's C3 is not the textbook
C3: its bound is y_t + sigma_t * (z - [max(0, C2(t-1) - 1) + max(0, C2(t-2) - 1)]).
"""

from __future__ import annotations

from statistics import NormalDist

import polars as pl

GUARD = {"C1": 0, "C2": 2, "C3": 2}          # weeks skipped between the current week and the baseline
FIRST = {"C1": 1, "C2": 3, "C3": 5}          # default range starts at baseline + FIRST


def default_alpha(method: str) -> float:
    """R: a control list without alpha gives 0.001 for C1/C2 and 0.025 for C3."""
    return 0.025 if method == "C3" else 0.001


def ears(frame: pl.DataFrame | pl.LazyFrame, *, method: str = "C1", baseline: int = 7, alpha: float | None = None,
         min_sigma: float = 0.0, range: tuple[int, int] | None = None) -> pl.DataFrame:
    """EARS C1/C2/C3 on every series of `frame` (columns series_id, t, cases)."""
    if method not in GUARD:
        raise ValueError(f"method must be C1, C2 or C3, not {method!r}")
    alpha = default_alpha(method) if alpha is None else alpha
    z = NormalDist().inv_cdf(1 - alpha)
    lag = GUARD[method] + 1
    lf = frame.lazy().sort("series_id", "t")
    y = pl.col("cases").cast(pl.Float64)
    past = y.shift(lag).over("series_id")
    mu = past.rolling_mean(baseline).over("series_id")
    sd = past.rolling_std(baseline, ddof=1).over("series_id")
    sigma = pl.max_horizontal(sd, pl.lit(min_sigma, pl.Float64))
    out = lf.with_columns(mu.alias("expected"), sigma.alias("sigma"))
    if method == "C3":
        c2 = (y - pl.col("expected")) / pl.col("sigma")
        excess = (c2 - 1).clip(lower_bound=0)
        out = out.with_columns(c2.alias("_c2")).with_columns(
            (excess.shift(1).over("series_id") + excess.shift(2).over("series_id")).alias("_prev"))
        out = out.with_columns((y + pl.col("sigma") * (z - pl.col("_prev"))).clip(lower_bound=0).alias("upperbound"))
    else:
        out = out.with_columns((pl.col("expected") + z * pl.col("sigma")).alias("upperbound"))
    start = baseline + FIRST[method]
    lo, hi = range if range else (start, None)
    out = out.filter(pl.col("t") >= lo)
    if hi is not None:
        out = out.filter(pl.col("t") <= hi)
    bound = pl.col("upperbound")
    finite = bound.is_not_null() & bound.is_finite()
    return out.select(
        "series_id", "t", *(["week_start"] if "week_start" in frame.lazy().collect_schema().names() else []),
        y.alias("observed"), pl.col("expected"),
        pl.when(finite).then(bound).alias("upperbound"),
        pl.when(finite).then(y > bound).alias("alarm"),
        pl.lit(f"ears_{method}").alias("method"),
    ).collect()
