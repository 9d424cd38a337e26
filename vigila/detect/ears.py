"""EARS C1, C2, C3 as R `surveillance::earsC` computes them, vectorised over series.

Input: a long frame with `series_id`, `t` (consecutive 1-based week index per series) and
`cases`[, `week_start`]; output: series_id, t, week_start, observed, expected, upperbound, alarm,
method for each week of `range`. R's rules: C1 uses lags 1..baseline, C2 and C3 lags
3..baseline+2; sample sd (n-1); sigma = max(sd, min_sigma); alarm only when observed >
upperbound. R's C3 is not the textbook C3: its bound is y_t + sigma_t * (z - [max(0, C2(t-1) - 1)
+ max(0, C2(t-2) - 1)]), clipped at 0. Whole-number counts take an exact integer path (window
sums from int64 cumulative sums); others an exact two-pass mean and variance per window.
Work goes in blocks of whole series (~64 k rows, two threads), read in place from the input's chunks;
each block writes its evaluated rows straight into result arrays allocated once (`arrays.empty`).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import polars as pl

from vigila.detect.arrays import RepeatedIds, empty, in_blocks, to_arrays

GUARD = {"C1": 0, "C2": 2, "C3": 2}          # weeks skipped between the current week and the baseline
FIRST = {"C1": 1, "C2": 3, "C3": 5}          # default range starts at baseline + FIRST
TWO_PASS = 2_000_000                         # windows per step on the two-pass (non-integer) path
BLOCK = 65_536                               # rows per block of series (whole series; scratch arrays stay in cache)


def default_alpha(method: str) -> float:
    """R: a control list without alpha gives 0.001 for C1/C2 and 0.025 for C3."""
    return 0.025 if method == "C3" else 0.001


def _window_moments(y: np.ndarray, baseline: int, integral: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample variance of y[j - baseline + 1 .. j] for every j >= baseline - 1 (NaN before)."""
    n = len(y)
    if n < baseline:
        return np.full(n, np.nan), np.full(n, np.nan)
    mean, var = np.empty(n), np.empty(n)             # set below from baseline - 1 on; NaN before
    mean[:baseline - 1], var[:baseline - 1] = np.nan, np.nan
    if (integral or np.all(y == np.round(y))) and np.abs(y).max() < 2**31:
        yi = y.astype(np.int64)
        c = np.zeros(n + 1, np.int64)
        np.cumsum(yi, out=c[1:])
        s1 = c[baseline:] - c[:-baseline]
        np.multiply(yi, yi, out=yi)
        np.cumsum(yi, out=c[1:])
        s2 = c[baseline:] - c[:-baseline]
        np.divide(s1, baseline, out=mean[baseline - 1:])
        s2 *= baseline
        s2 -= s1 * s1                              # exact: baseline * sum(y^2) - sum(y)^2
        np.divide(s2, baseline * (baseline - 1), out=var[baseline - 1:])
        return mean, var
    view = np.lib.stride_tricks.sliding_window_view(y, baseline)
    for a in range(0, len(view), TWO_PASS):
        v = view[a:a + TWO_PASS]
        m = v.mean(axis=1)
        mean[baseline - 1 + a:baseline - 1 + a + len(v)] = m
        var[baseline - 1 + a:baseline - 1 + a + len(v)] = ((v - m[:, None]) ** 2).sum(axis=1) / (baseline - 1)
    return mean, var


def ears(frame: pl.DataFrame | pl.LazyFrame, *, method: str = "C1", baseline: int = 7, alpha: float | None = None,
         min_sigma: float = 0.0, range: tuple[int, int] | None = None) -> pl.DataFrame:
    """EARS C1/C2/C3 on every series of `frame` (columns series_id, t, cases[, week_start])."""
    if method not in GUARD:
        raise ValueError(f"method must be C1, C2 or C3, not {method!r}")
    if baseline < 2:
        raise ValueError(f"baseline must be at least 2 weeks (a standard deviation), not {baseline}")
    alpha = default_alpha(method) if alpha is None else alpha
    z = NormalDist().inv_cdf(1 - alpha)
    s = to_arrays(frame, contiguous=False)
    lo, hi = range if range else (baseline + FIRST[method], None)
    first = max(lo - 1, 0)                              # 0-based position in its series of the first row kept
    last = s.length if hi is None else np.minimum(s.length, hi)
    kept = np.maximum(last - first, 0)                   # rows kept per series
    out_at = np.zeros(len(kept) + 1, np.int64)
    np.cumsum(kept, out=out_at[1:])
    m = int(out_at[-1])
    observed, expected, upper, t = (empty(m, dtype) for dtype in (np.float64,) * 3 + (np.int64,))
    ids = RepeatedIds(s.id_values, m)
    days = empty(m, np.int32) if s.days is not None else None
    dated = "week_start" in s.frame.columns
    source = empty(m, np.int64) if dated and days is None else None        # some week_start null: gather it

    def block(a: int, b: int) -> None:            # series a..b-1: one contiguous block of rows
        r0, r1 = s.start[a], s.start[b - 1] + s.length[b - 1]
        y = s.y[r0:r1]
        e, u = _bounds(y, s.start[a:b] - r0, s.length[a:b], method=method, baseline=baseline, z=z,
                       min_sigma=min_sigma, integral=s.integral)
        o0, o1 = out_at[a], out_at[b]
        rows = np.arange(o1 - o0) - np.repeat(out_at[a:b] - o0 - (s.start[a:b] - r0 + first), kept[a:b])
        np.take(e, rows, out=expected[o0:o1])
        np.take(u, rows, out=upper[o0:o1])
        observed[o0:o1] = y[rows]
        np.take(s.t[r0:r1], rows, out=t[o0:o1])
        ids.fill(a, b, kept[a:b], o0)
        if days is not None:
            days[o0:o1] = s.days[r0:r1][rows]
        if source is not None:
            source[o0:o1] = rows + r0

    in_blocks(s, block, rows=BLOCK)                 # blocks small enough for their scratch arrays to stay in cache
    week = (pl.Series("week_start", days).cast(pl.Date) if days is not None
            else s.frame["week_start"].cast(pl.Date).gather(source) if source is not None
            else pl.lit(None, pl.Date).alias("week_start"))
    return (pl.DataFrame([ids.series("series_id"), pl.Series("t", t)])
            .with_columns(week, pl.Series("observed", observed), pl.Series("expected", expected, nan_to_null=True),
                          pl.Series("upperbound", upper, nan_to_null=True))
            .with_columns((pl.col("observed") > pl.col("upperbound")).alias("alarm"), pl.lit(f"ears_{method}").alias("method")))


def _bounds(y, start, length, *, method, baseline, z, min_sigma, integral):
    """expected and upperbound for every row of a block of whole series (NaN where R gives NA)."""
    n = len(y)
    lag = GUARD[method] + 1
    mean, var = _window_moments(y, baseline, integral)
    expected, sigma = np.empty(n), np.empty(n)
    expected[:lag], sigma[:lag] = np.nan, np.nan
    expected[lag:] = mean[:-lag]
    np.sqrt(var[:-lag], out=sigma[lag:])
    if min_sigma:
        np.maximum(sigma, min_sigma, out=sigma)
    head = _first_rows(start, length, lag + baseline - 1)   # weeks whose baseline would reach into another series
    expected[head], sigma[head] = np.nan, np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "C3":
            excess = np.maximum((y - expected) / sigma - 1, 0)
            prev = np.full(n, np.nan)
            prev[2:] = excess[1:-1] + excess[:-2]
            prev[_first_rows(start, length, 2)] = np.nan
            upper = np.clip(y + sigma * (z - prev), 0, None)
        else:
            upper = sigma
            upper *= z
            upper += expected
    upper[~np.isfinite(upper)] = np.nan
    return expected, upper


def _first_rows(start: np.ndarray, length: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the first k rows of every series."""
    if k <= 0:
        return np.zeros(0, np.int64)
    idx = start[:, None] + np.arange(k)[None, :]
    return idx[np.arange(k)[None, :] < length[:, None]]
