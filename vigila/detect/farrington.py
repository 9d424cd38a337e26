"""Farrington flexible (incl. Noufaily et al. 2013) and classic Farrington, as R `surveillance` 1.20.3.

Input: a long frame (series_id, t, cases[, week_start][, population]); output: one row per
evaluated series-week with observed, expected, upperbound, alarm, method, no_bound_reason (why the
upperbound is null, see NO_BOUND_REASONS; null where there is a bound). Every GLM of every
series-week is fitted at once by batched IRLS that repeats R's `glm.fit` step for step (start
y + 0.1, deviance criterion 1e-8, at most 25 iterations), so convergence and the fallbacks that
depend on it (refit without trend, NA bound) are R's.

Where R stops with an error instead of giving a result, vigila gives that week a null upperbound and
expected and no alarm (alarm false), and goes on with the other weeks (R loses the whole call):
- too little history: farringtonFlexible needs the week b years back (by date for a date-based series)
  and stops without it, or when the window around it starts before the series (week - w < 0); classic
  Farrington stops when none of the b x (2w + 1) reference weeks exists;
- too few reference values for the model: one value (the trend's coefficient is NA, the Anscombe
  residuals are NaN), or as many as parameters (no residual degrees of freedom: NaN dispersion, which
  R's reweighting, classic Farrington's predict(dispersion = phi) and the Noufaily thresholds stop on;
  the trend test stops when b >= 3 and its p-value is NaN);
- a fit racing to a few counts among zeros: an Anscombe residual 0/0 at a hat value of 1 (R's weights
  become NA), or an R factor that predict.glm(se.fit = TRUE) finds singular (qr.solve, tolerance 1e-7);
- a fit that breaks down (non-finite coefficients, where glm.fit stops on NA means).
Other NA results of R (a flexible fit that does not converge: NA bound and NA alarm) stay NA.
Each null bound says why in `no_bound_reason` (NO_BOUND_REASONS: history, reference_values, fit where R
stops; not_converged, limit54 where R gives NA).

Numerically the fits follow R's QR where it matters: hat values by an orthogonal basis, and the batched
normal equations hand a problem to a QR solve when a coefficient's variance inflation passes 1e6. In a
fit racing to a single count among zeros with only a few reference values, whether R stops can still
hang on rounding (a hat value within 1e-14 of 1); there vigila and R may differ (two weeks of 240,547
compared on R's weekly datasets, both classic: measlesDE/Hamburg t = 53, four reference values 1, 0, 0, 0;
measlesWeserEms/03454 t = 82, reference values 9, 0, 0, 0, 0, 0, 0).
"""

from __future__ import annotations

import builtins
import functools
import os
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import special

from vigila.detect.arrays import Series, in_parallel, to_arrays

FREQ = 52
EPS = np.finfo(float).eps
LOG_EPS = np.log(EPS)
CHUNK_CELLS = 500_000            # fits x observations per batch (~4 MB per array): below glibc's largest mmap threshold,
                                 # so the IRLS temporaries reuse heap pages; at 4 M cells (32 MB) every one was a fresh
                                 # mmap the kernel zeroed: flexible on 10 k series x 104 weeks 22.0 -> 17.2 s, 1.7 -> 0.6 GB


NO_BOUND_REASONS = {   # no_bound_reason: why a week's upperbound is null (R's error or NA in brackets)
    "history": "R stops: too little history for b years (flexible: the week b years back is absent or its "
               "window starts before the series -- 'Some reference time points did not exist', 'only 0's may "
               "be mixed with negative subscripts'; classic: no reference week at all -- 'object 'fit' not found')",
    "reference_values": "R stops: too few reference values for the model -- one, or no more than its parameters "
                        "(no residual degrees of freedom: NaN dispersion -- 'NAs are not allowed in subscripted "
                        "assignments'); or a seasonal level the reference weeks lack (flexible, no_periods > 1)",
    "fit": "R stops: the fit degenerates -- it races to a few counts among zeros (an Anscombe residual 0/0 at a "
           "hat value of 1: 'NAs in V(mu)'; an R factor qr.solve finds singular in predict.glm) or breaks down "
           "(non-finite coefficients)",
    "not_converged": "R gives NA: the flexible GLM did not converge (R's fitFun returns NULL), alarm null too",
    "limit54": "R gives NA (flexible): fewer than limit54[0] cases in the last limit54[1] weeks",
    "quantile_overflow": "R gives NA (Noufaily): the mean's quantile exp(eta + z se) (muan) or the mean itself "
                         "(nbPlugin) overflows to Inf -- a fit racing to few counts with a huge standard error",
}
_REASONS = [None, *NO_BOUND_REASONS]           # codes 1.. in the per-week arrays
HISTORY, REFERENCE_VALUES, FIT, NOT_CONVERGED, LIMIT54, OVERFLOW = 1, 2, 3, 4, 5, 6


def _stop_reason(stops, pw, drop) -> np.ndarray:
    """Codes for the weeks where R stops -- no reference value at all, too few for the model (no more than its
    parameters), else a degenerate fit -- and for those with too few reference values whatever else happens
    (R stops on them before its limit54 test; vigila may only see NaN there)."""
    n = (pw > 0).sum(axis=1)
    few = (n <= 1) | (n <= (~drop).sum(axis=1))
    return np.where(stops | few, np.where(n == 0, HISTORY, np.where(few, REFERENCE_VALUES, FIT)), 0)


def _eval_points(s: Series, range: tuple[int, int] | None, default_start: int) -> tuple[np.ndarray, np.ndarray]:
    """(series index, k) for every evaluated week; k is R's 1-based index within the series."""
    lo, hi = range if range else (default_start, None)
    first = max(lo, 1)
    last = s.length if hi is None else np.minimum(s.length, hi)
    count = np.maximum(last - first + 1, 0)
    sid = np.repeat(np.arange(len(s.length)), count)
    within = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    return sid, first + within


def _years_back(days: np.ndarray, years: int) -> np.ndarray:
    """R's seq(date, by = "-1 year"): same month and day; 29 February of a non-leap year -> 1 March."""
    d = days.astype("datetime64[D]")
    y = d.astype("datetime64[Y]")
    m = d.astype("datetime64[M]")
    month = m - y.astype("datetime64[M]")
    dom = (d - m.astype("datetime64[D]")).astype(np.int64)
    back = ((y - years).astype("datetime64[M]") + month).astype("datetime64[D]") + dom
    return back.astype(np.int64)


def _same_weekday(ref: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Nearest date to `ref` on `day`'s weekday (R's algo.farrington.referencetimepoints)."""
    wd = lambda x: (x + 4) % 7                     # 1970-01-01 was a Thursday; R's %w: Sunday = 0
    a = ref - (wd(ref) - wd(day))
    b = a + np.where(a > ref, -7, 7)
    return np.where(np.abs(a - ref) > np.abs(b - ref), b, a)


def _lookup(s: Series, sid: np.ndarray, days: np.ndarray) -> np.ndarray:
    """1-based index of `days` within series `sid`, 0 where the series has no such week."""
    key = s.days.astype(np.int64) + (np.repeat(np.arange(len(s.ids)), s.length) << 32)
    want = days + (sid.astype(np.int64) << 32)
    pos = np.searchsorted(key, want)
    pos = np.minimum(pos, key.size - 1)
    found = key[pos] == want
    return np.where(found, pos - s.start[sid] + 1, 0)


def _reference_weeks(s: Series, sid: np.ndarray, k: np.ndarray, b: int) -> np.ndarray:
    """(E, b+1): index of the current week (column 0) and of the same week 1..b years back; 0 = absent."""
    if s.days is None:
        ref = k[:, None] - FREQ * np.arange(b + 1)[None, :]
        return np.where(ref >= 1, ref, 0)
    day = s.days[s.start[sid] + k - 1]
    cols = [k]
    for i in range(1, b + 1):
        cols.append(_lookup(s, sid, _same_weekday(_years_back(day, i), day)))
    return np.stack(cols, axis=1)


# ---------------------------------------------------------------- batched glm.fit (quasipoisson, log)
@dataclass
class Fit:
    beta: np.ndarray             # (E, P); a dropped column has coefficient 0
    cov: np.ndarray              # (E, P, P) unscaled covariance (X'WX)^-1 of the last iteration
    mu: np.ndarray               # (E, L) fitted values
    w: np.ndarray                # (E, L) working weights of the last iteration
    dispersion: np.ndarray       # summary.glm's Pearson estimate (NaN when no residual df)
    df: np.ndarray
    converged: np.ndarray
    resid: np.ndarray            # working residuals (y - mu) / mu


def _dev(K, pwy, pw, eta, mu):
    """Poisson deviance 2 sum pw (y log(y/mu) - (y - mu)), with K = sum pw (y log y - y) precomputed."""
    return 2 * (K - np.einsum("el,el->e", pwy, np.maximum(eta, LOG_EPS)) + np.einsum("el,el->e", pw, mu))


def _gram(X, w, drop):
    """X'WX per problem; a dropped column (all zero in X) gets 1 on the diagonal so it solves to 0."""
    P = X.shape[0]
    A = np.empty((X.shape[1], P, P))
    for p in range(P):
        wx = w if p == 0 else w * X[p]          # column 0 is the intercept
        for q in range(p, P):
            A[:, p, q] = A[:, q, p] = wx.sum(axis=1) if q == 0 else np.einsum("el,el->e", wx, X[q])
    idx = np.arange(P)
    A[:, idx, idx] += drop
    return A


def _inv(A):
    P = A.shape[1]
    if P == 1:
        return 1.0 / A
    if P == 2:
        a, b, d = A[:, 0, 0], A[:, 0, 1], A[:, 1, 1]
        det = a * d - b * b
        out = np.empty_like(A)
        out[:, 0, 0], out[:, 1, 1], out[:, 0, 1] = d / det, a / det, -b / det
        out[:, 1, 0] = out[:, 0, 1]
        return out
    try:
        return np.linalg.inv(A)
    except np.linalg.LinAlgError:              # some problem is singular: NaN there, the others as usual
        out = np.full_like(A, np.nan)
        for i in np.flatnonzero(np.isfinite(A).all(axis=(1, 2))):
            try:
                out[i] = np.linalg.inv(A[i])
            except np.linalg.LinAlgError:
                pass
        return out


def _xb(X, beta):
    out = np.repeat(beta[:, 0:1], X.shape[2], axis=1)
    for p in range(1, X.shape[0]):
        out += beta[:, p:p + 1] * X[p]
    return out


def _quiet(fn):
    """No floating-point warnings from `fn`: a degenerate problem (no data, a singular design) becomes NaN,
    which the callers read as R stopping or NA."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return fn(*args, **kwargs)
    return wrapper


@_quiet
def irls(X: np.ndarray, y: np.ndarray, pw: np.ndarray, offset: np.ndarray, drop: np.ndarray,
         maxit: int = 25, epsilon: float = 1e-8) -> Fit:
    """R's glm.fit for quasipoisson(log) on E problems at once.

    X (P, E, L) with X[0] the intercept; y/pw/offset (E, L); rows with prior weight 0 are absent;
    `drop` (E, P) marks columns left out of a problem's model (they must be zero in X). A problem
    stops iterating when R's would (deviance change < 1e-8 relative, or 25 iterations).
    """
    P, E, L = X.shape
    common = drop.all(axis=0) if E else np.zeros(P, bool)
    if common.any() and not common[0]:         # a column no problem uses: solve without it
        keep = np.flatnonzero(~common)
        return _expand(irls(X[keep], y, pw, offset, drop[:, keep], maxit, epsilon), keep, P)
    out = Fit(np.zeros((E, P)), np.zeros((E, P, P)), np.zeros((E, L)), np.zeros((E, L)), np.zeros(E),
              (pw > 0).sum(axis=1) - (P - drop.sum(axis=1)), np.zeros(E, bool), np.zeros((E, L)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0)), 0.0)
    K = np.einsum("el,el->e", pw, ylogy - y)
    pwy = pw * y
    has_offset = bool(offset.any())
    if P == 1 and not has_offset:
        return _irls_intercept(out, y, pw, K, pwy, maxit, epsilon)
    if P == 2 and not has_offset and not drop.any():
        return _irls_trend(out, X[1], y, pw, K, pwy, maxit, epsilon)
    idx = np.arange(E)
    Xa, ya, pa, oa, Ka, pya, da = X, y, pw, offset, K, pwy, drop
    eta = np.log(y + 0.1)
    mu = np.maximum(np.exp(eta), EPS)
    devold = _dev(Ka, pya, pa, eta, mu)
    live = np.ones(E, bool)                     # still iterating (rows of the working arrays)
    for it in range(maxit):
        w = pa * mu                             # log link: mu.eta(eta) = mu, variance mu
        wz = w * ((eta - oa) if has_offset else eta) + pya - w   # w * z, z = eta - offset + (y - mu) / mu
        A = _gram(Xa, w, da)
        Ci = _inv(A)
        r = np.stack([np.einsum("el,el->e", wz, Xa[p]) if p else wz.sum(axis=1) for p in range(P)], axis=1)
        beta = np.einsum("epq,eq->ep", Ci, r)
        # the normal equations lose about log10(condition) digits: where a coefficient's variance inflation
        # passes 1e6 (factor levels whose counts are all 0, racing to -inf), solve by QR as glm.fit does
        vif = np.einsum("epp->ep", Ci) * np.einsum("epp->ep", A)
        hard = ~np.isfinite(beta).all(axis=1) | (vif > 1e6).any(axis=1)
        if hard.any():
            beta[hard], Ci[hard] = _wls_qr(Xa[:, hard], w[hard], wz[hard], da[hard])
        eta = _xb(Xa, beta) + oa if has_offset else _xb(Xa, beta)
        mu = np.maximum(np.exp(eta), EPS)
        np.putmask(mu, pa == 0, 1.0)            # see _irls_trend
        dev = _dev(Ka, pya, pa, eta, mu)
        done = live & (np.abs(dev - devold) / (np.abs(dev) + 0.1) < epsilon)
        finish = done | (live if it == maxit - 1 else False)
        if finish.any():
            g = idx[finish]
            out.beta[g], out.cov[g], out.mu[g], out.w[g] = beta[finish], Ci[finish], mu[finish], w[finish]
            out.converged[g] = done[finish]
            live &= ~finish
        devold = dev
        if not live.any():
            break
        if live.mean() < 0.6:                   # drop finished problems from the working arrays
            idx, Xa, ya, pa, oa, Ka, pya, da = idx[live], Xa[:, live], ya[live], pa[live], oa[live], Ka[live], \
                pya[live], da[live]
            eta, mu, devold, live = eta[live], mu[live], devold[live], live[live]
    return _finish(out, y)


def _wls_qr(X, w, wz, drop):
    """Weighted least squares by QR (Gram-Schmidt twice, column by column) for E problems: (beta, (X'WX)^-1).
    X (P, E, L), X[0] the intercept; w the weights, wz = w * z. As glm.fit (tolerance 1e-11), a column whose
    norm falls below 1e-11 of its own once the earlier ones are projected out is aliased: coefficient 0 and
    no variance (R: NA, left out of predictions); a dropped column likewise."""
    P, E, L = X.shape
    sw = np.sqrt(w)
    rhs = np.where(w > 0, wz / np.where(w > 0, sw, 1.0), 0.0)          # sqrt(w) z
    Q = np.zeros((P, E, L))
    R = np.zeros((E, P, P))
    alive = np.zeros((E, P), bool)
    for j in range(P):
        v = sw.copy() if j == 0 else sw * X[j]
        size = np.sqrt(np.einsum("el,el->e", v, v))
        for _ in range(2):
            for i in range(j):
                c = np.einsum("el,el->e", Q[i], v)
                R[:, i, j] += c
                v -= c[:, None] * Q[i]
        norm = np.sqrt(np.einsum("el,el->e", v, v))
        keep = (norm > 1e-11 * size) & (size > 0) & ~drop[:, j]
        R[:, j, j] = np.where(keep, norm, 1.0)
        Q[j] = np.where(keep[:, None], v / np.where(keep, norm, 1.0)[:, None], 0.0)
        alive[:, j] = keep
    qtb = np.einsum("pel,el->ep", Q, rhs)
    Rinv = np.zeros((E, P, P))
    eye = np.eye(P)
    beta = np.zeros((E, P))
    for p in range(P - 1, -1, -1):             # back substitution for beta and R^-1
        beta[:, p] = (qtb[:, p] - np.einsum("eq,eq->e", R[:, p, p + 1:], beta[:, p + 1:])) / R[:, p, p]
        Rinv[:, p, :] = (eye[p] - np.einsum("eq,eqr->er", R[:, p, p + 1:], Rinv[:, p + 1:, :])) / R[:, p, p][:, None]
    beta = np.where(alive, beta, 0.0)
    Rinv = Rinv * alive[:, :, None] * alive[:, None, :]
    return beta, np.einsum("epq,erq->epr", Rinv, Rinv)


def _irls_trend(out: Fit, t, y, pw, K, pwy, maxit, epsilon) -> Fit:
    """Intercept + trend IRLS without offset: glm.fit's steps with the 2x2 normal equations written
    out, so that one step is a few passes over the data and no temporaries for z."""
    idx = np.arange(len(y))
    ta, pa, pya, Ka = t, pw, pwy, K
    pyt = np.einsum("el,el->e", pwy, t)
    Spy = pwy.sum(axis=1)
    eta = np.log(y + 0.1)
    mu = np.maximum(np.exp(eta), EPS)
    devold = _dev(K, pwy, pw, eta, mu)
    live = np.ones(len(y), bool)
    for it in range(maxit):
        w = pa * mu
        wt = w * ta
        s0, s1, s2 = w.sum(axis=1), wt.sum(axis=1), np.einsum("el,el->e", wt, ta)
        r0 = np.einsum("el,el->e", w, eta) + Spy - s0        # sum w z, z = eta + (y - mu) / mu
        r1 = np.einsum("el,el->e", wt, eta) + pyt - s1
        det = s0 * s2 - s1 * s1
        c00, c01, c11 = s2 / det, -s1 / det, s0 / det
        b0, b1 = c00 * r0 + c01 * r1, c01 * r0 + c11 * r1
        # as in irls: a fit racing to a count among zeros (weights ~eps) makes the 2x2 normal equations lose
        # the digits that decide convergence at the 25th step; past a variance inflation of 1e6, solve by QR
        hard = ~(np.isfinite(b0) & np.isfinite(b1)) | (s0 * s2 / det > 1e6) | (det <= 0)
        if hard.any():
            Xh = np.stack([np.ones_like(ta[hard]), ta[hard]])
            wh = w[hard]
            bh, ch = _wls_qr(Xh, wh, wh * eta[hard] + pya[hard] - wh, np.zeros((int(hard.sum()), 2), bool))
            b0, b1, c00, c01, c11 = b0.copy(), b1.copy(), c00.copy(), c01.copy(), c11.copy()
            b0[hard], b1[hard] = bh[:, 0], bh[:, 1]
            c00[hard], c01[hard], c11[hard] = ch[:, 0, 0], ch[:, 0, 1], ch[:, 1, 1]
        eta = b1[:, None] * ta
        eta += b0[:, None]
        mu = np.exp(eta)
        np.maximum(mu, EPS, out=mu)
        # a week outside the model (prior weight 0) has eta = b0, the mean at the current week, which a steep
        # trend can make overflow: its 0 weight times an infinite mean would be NaN
        np.putmask(mu, pa == 0, 1.0)
        lm = eta if eta.min(initial=0.0) > LOG_EPS else np.maximum(eta, LOG_EPS)
        dev = 2 * (Ka - np.einsum("el,el->e", pya, lm) + np.einsum("el,el->e", pa, mu))
        done = live & (np.abs(dev - devold) / (np.abs(dev) + 0.1) < epsilon)
        finish = done | (live if it == maxit - 1 else False)
        if finish.any():
            g = idx[finish]
            out.beta[g, 0], out.beta[g, 1] = b0[finish], b1[finish]
            out.cov[g, 0, 0], out.cov[g, 0, 1], out.cov[g, 1, 1] = c00[finish], c01[finish], c11[finish]
            out.cov[g, 1, 0] = out.cov[g, 0, 1]
            out.mu[g], out.w[g] = mu[finish], w[finish]
            out.converged[g] = done[finish]
            live &= ~finish
        devold = dev
        if not live.any():
            break
        if live.mean() < 0.6:
            idx, ta, pa, pya, Ka, pyt, Spy = idx[live], ta[live], pa[live], pya[live], Ka[live], pyt[live], Spy[live]
            eta, mu, devold, live = eta[live], mu[live], devold[live], live[live]
    return _finish(out, y)


def _expand(sub: Fit, keep: np.ndarray, P: int) -> Fit:
    """A fit on columns `keep` as a fit on all P columns (coefficient 0, variance 1 elsewhere)."""
    E = len(sub.beta)
    beta, cov = np.zeros((E, P)), np.zeros((E, P, P))
    beta[:, keep] = sub.beta
    cov[:, np.arange(P), np.arange(P)] = 1.0
    cov[:, keep[:, None], keep[None, :]] = sub.cov
    sub.beta, sub.cov = beta, cov
    return sub


def _irls_intercept(out: Fit, y, pw, K, pwy, maxit, epsilon) -> Fit:
    """Intercept-only IRLS: after R's first step the linear predictor is one number per problem, so
    every later step (the same arithmetic as glm.fit's) costs O(1): b <- b + sum(pw y) / sum(pw m) - 1."""
    eta0 = np.log(y + 0.1)
    mu0 = np.maximum(np.exp(eta0), EPS)
    w1 = pw * mu0                                   # step 1 weights, from the starting values
    b = (w1 * eta0 + pwy - w1).sum(axis=1) / w1.sum(axis=1)
    Sy, Sw = pwy.sum(axis=1), pw.sum(axis=1)
    devold = _dev(K, pwy, pw, eta0, mu0)
    m_w = np.full(len(b), np.nan)                  # mean behind the last step's weights (NaN: step 1)
    live = np.ones(len(b), bool)
    for it in range(maxit):
        if it:
            m_old = np.maximum(np.exp(b), EPS)
            b = np.where(live, b + Sy / (Sw * m_old) - 1, b)
            m_w = np.where(live, m_old, m_w)
        dev = 2 * (K - Sy * np.maximum(b, LOG_EPS) + Sw * np.maximum(np.exp(b), EPS))
        done = live & (np.abs(dev - devold) / (np.abs(dev) + 0.1) < epsilon)
        out.converged |= done
        live &= ~done
        devold = np.where(live, dev, devold)
        if not live.any():
            break
    first = np.isnan(m_w)
    out.beta[:, 0] = b
    out.w[:] = np.where(first[:, None], w1, pw * m_w[:, None])
    out.cov[:, 0, 0] = 1 / out.w.sum(axis=1)
    out.mu[:] = np.maximum(np.exp(b), EPS)[:, None]
    return _finish(out, y)


def _finish(out: Fit, y) -> Fit:
    out.resid = (y - out.mu) / out.mu
    with np.errstate(divide="ignore", invalid="ignore"):
        out.dispersion = np.where(out.df > 0, (out.w * out.resid**2).sum(axis=1) / out.df, np.nan)
    return out


@_quiet
def _hat(fit: Fit, X) -> np.ndarray:
    """Diagonal of the hat matrix of the last IRLS step, w_i x_i' (X'WX)^-1 x_i, as R's hatvalues: the row
    sums of Q^2 for the QR decomposition of sqrt(W) X (here by Gram-Schmidt, twice, column by column), a
    column whose norm falls below 1e-11 of its own being left out as aliased (glm.fit's tolerance), and
    like lm.influence a value above 1 - 10 eps is 1. The orthogonal basis keeps a hat value near 1 (a fit
    racing to one count among zeros) as accurate as R's, which (X'WX)^-1 would not."""
    hat = sum(q * q for q in _orthogonal(fit, X)[0])
    return np.where(hat > 1 - 10 * EPS, 1.0, hat)


def _orthogonal(fit: Fit, X, shift: np.ndarray | None = None):
    """Gram-Schmidt (twice) on the columns of sqrt(W) X, the trend moved by `shift` (per problem): the
    orthonormal columns (zero for a column glm.fit's tolerance 1e-11 finds aliased) and, per problem and
    column, its norm once the earlier columns are projected out relative to its own norm."""
    sw = np.sqrt(fit.w)
    basis: list[np.ndarray] = []
    ratio = np.zeros((sw.shape[0], X.shape[0]))
    for p in range(X.shape[0]):
        v = sw if p == 0 else sw * (X[p] + shift[:, None] if p == 1 and shift is not None else X[p])
        size = np.sqrt(np.einsum("el,el->e", v, v))
        for _ in range(2):
            for q in basis:
                v = v - np.einsum("el,el->e", q, v)[:, None] * q
        norm = np.sqrt(np.einsum("el,el->e", v, v))
        keep = (norm > 1e-11 * size) & (size > 0)
        basis.append(np.where(keep[:, None], v / np.where(keep, norm, 1.0)[:, None], 0.0))
        ratio[:, p] = np.where(size > 0, norm / np.where(size > 0, size, 1.0), 1.0)
    return basis, ratio


@_quiet
def _se_stops(fit: Fit, X, drop, shift) -> np.ndarray:
    """Where predict.glm(se.fit = TRUE) stops: it inverts the fit's R factor by qr.solve, whose tolerance 1e-7
    finds it singular when a column's norm, once the earlier ones are projected out, is below 1e-7 of its own
    (yet above glm.fit's 1e-11, which would have aliased it) -- a fit racing to a few counts among zeros.
    `shift` moves vigila's trend (weeks from the current week) to R's wtime, whose origin counts here."""
    _, ratio = _orthogonal(fit, X, np.where(drop[:, 1], 0.0, shift))
    return ((ratio < 1e-7) & (ratio >= 1e-11) & ~drop).any(axis=1)


def _reweights(fit: Fit, X, y, pw, phi, threshold):
    """algo.farrington.assign.weights(anscombe.residuals(model, phi), threshold), and where R stops there:
    a residual that is NaN (no residual degrees of freedom, so phi is NaN; or 0/0 at a hat value of 1) makes
    R's weights NA and glm.fit stop.

    A value with hat 1 is fitted exactly, so its residual is 0/0: R's is NaN when its fitted value came out
    equal to the value (typical: a count of 1 after zeros, the trend racing to fit it) and +-Inf when a rounding
    residue is left. Here a fitted value within 1e-9 of the value counts as equal."""
    hat = _hat(fit, X)
    live = pw > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = 1.5 * (y ** (2 / 3) * fit.mu ** (-1 / 6) - fit.mu**0.5) / np.sqrt(phi[:, None] * (1 - hat))
        s = np.where((hat == 1) & (np.abs(y - fit.mu) <= 1e-9 * np.maximum(y, 1)), np.nan, s)
        inv2 = np.where(s > threshold, 1 / s**2, 1.0)
        gamma = live.sum(axis=1) / np.where(live, inv2, 0).sum(axis=1)
    stops = (live & np.isnan(s)).any(axis=1)
    return np.where(live, gamma[:, None] * inv2, 0.0), stops


def _phi(fit: Fit) -> np.ndarray:
    """R's max(summary(model)$dispersion, 1): NaN (not 1) when the dispersion is NaN (no residual df)."""
    return np.where(np.isnan(fit.dispersion), np.nan, np.fmax(fit.dispersion, 1.0))


def fit_glm(X, y, pw, offset, drop, *, reweight: bool, threshold: float, fallback: bool, keep_weights=False):
    """One call of R's fitFun: fit; if not converged and `fallback`, drop the trend (column 1) and
    refit; reweight by Anscombe residuals (convergence of the reweighted fit is not checked, as in R).
    Returns (fit, phi, drop, ok, X, stops): ok is False where R's flexible fitFun returns NULL (no
    convergence); stops is True where R stops with an error (see `_reweights`, and a fit whose
    coefficients are not finite: glm.fit stops on NA means).

    `keep_weights`: R's fitGLM.flexible stores the reweighting weights omega in `model$weights`,
    so every later summary.glm (trend p-value, predict's standard error) computes the dispersion
    from omega instead of the working weights; phi itself is computed before that replacement.
    It also returns NULL before reweighting when the fit did not converge, so that a reweighting
    R never does cannot stop it."""
    fit = irls(X, y, pw, offset, drop)
    drop = drop.copy()
    if fallback:
        bad = ~fit.converged & ~drop[:, 1]
        if bad.any():
            drop[bad, 1] = True
            X = X.copy()
            X[1, bad] = 0.0
            redo = irls(X[:, bad], y[bad], pw[bad], offset[bad], drop[bad])
            _assign(fit, redo, bad)
    ok = fit.converged.copy()
    stops = ~np.isfinite(fit.beta).all(axis=1)
    phi = _phi(fit)
    if reweight:
        omega, undefined = _reweights(fit, X, y, pw, phi, threshold)
        stops |= undefined & (ok if keep_weights else True)
        fit = irls(X, y, omega, offset, drop)
        stops |= ~np.isfinite(fit.beta).all(axis=1)
        phi = _phi(fit)
        if keep_weights:
            with np.errstate(invalid="ignore", divide="ignore"):
                fit.dispersion = np.where(fit.df > 0, (omega * fit.resid**2).sum(axis=1) / fit.df, np.nan)
    return fit, phi, drop, ok, X, stops


def _assign(fit: Fit, sub: Fit, mask: np.ndarray) -> None:
    for name in ("beta", "cov", "mu", "w", "dispersion", "df", "converged", "resid"):
        getattr(fit, name)[mask] = getattr(sub, name)


# ---------------------------------------------------------------- prediction and thresholds
def _predict(fit: Fit, x0: np.ndarray, off0: np.ndarray, dispersion: np.ndarray):
    """Linear predictor and its standard error at x0 (predict.glm, link scale)."""
    eta0 = (fit.beta * x0).sum(axis=1) + off0
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.einsum("ep,epq,eq->e", x0, fit.cov, x0) * dispersion)
    return eta0, se


def _trend_p(fit: Fit) -> np.ndarray:
    """Two-sided t-test p-value of the trend coefficient (summary.glm, quasi family)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        tval = fit.beta[:, 1] / np.sqrt(fit.cov[:, 1, 1] * fit.dispersion)
        return 2 * special.stdtr(np.maximum(fit.df, 1), -np.abs(tval)) + np.where(fit.df > 0, 0, np.nan)


POWER = {"none": 1.0, "1/2": 0.5, "2/3": 2 / 3}


def _power_upper(mu0, se_resp, phi, powertrans, z):
    """algo.farrington.threshold(.farrington): upper end of the transformed normal interval."""
    e = POWER[powertrans]
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = phi + se_resp**2 / mu0
        se = {"none": np.sqrt(mu0 * tau), "1/2": np.sqrt(tau / 4), "2/3": np.sqrt(4 / 9 * mu0 ** (1 / 3) * tau)}[powertrans]
        return (mu0**e + z * se) ** (1 / e)


HUGE = 1e15                      # scipy's discrete quantile search does not return beyond ~1e18


def _noufaily_upper(eta0, se_link, phi, alpha, method, needed):
    """algo.farrington.threshold.noufaily: negative-binomial (phi > 1) or Poisson quantile.

    Computed only where `needed` (limit54 met); a mean beyond 1e15 (R: usually Inf, giving NA)
    uses the normal approximation of the quantile."""
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.exp(eta0) if method == "nbPlugin" else np.exp(eta0 + special.ndtri(1 - alpha) * se_link)
    upper = np.full(q.shape, np.nan)
    finite = needed & np.isfinite(q) & np.isfinite(phi)
    huge = finite & (q > HUGE)
    upper[huge] = np.ceil(q[huge] + special.ndtri(1 - alpha) * np.sqrt(q[huge] * phi[huge]))
    finite &= ~huge
    nb, po = finite & (phi > 1), finite & (phi <= 1)
    upper[nb] = nbinom_ppf(1 - alpha, q[nb] / (phi[nb] - 1), 1 / phi[nb])
    upper[po] = poisson_ppf(1 - alpha, q[po])
    return upper


# scipy.stats' nbinom.ppf and poisson.ppf for 0 < p < 1, from the scipy.special functions they call: importing
# scipy.stats costs a `vigila detect` / `vigila alerts` process about a second, scipy.special a third of that.
# Invalid parameters give NaN, as rv_discrete.ppf does (tests/test_detect_farrington.py compares them).

def nbinom_ppf(p: float, n: np.ndarray, prob: np.ndarray) -> np.ndarray:
    ok = (n > 0) & (prob > 0) & (prob <= 1)
    if not 0 < p < 1:     # rv_discrete.ppf: the support's ends (an alpha below 1.1e-16 makes 1 - alpha 1)
        return np.where(ok, np.inf if p >= 1 else -1.0, np.nan)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(ok, special._ufuncs._nbinom_ppf(p, n, prob), np.nan)


def poisson_ppf(p: float, mu: np.ndarray) -> np.ndarray:
    ok = mu >= 0
    if not 0 < p < 1:
        return np.where(ok, np.inf if p >= 1 else -1.0, np.nan)
    with np.errstate(invalid="ignore"):
        vals = np.ceil(special.pdtrik(p, mu))
        below = np.maximum(vals - 1, 0)
        return np.where(ok, np.where(special.pdtr(below, mu) >= p, below, vals), np.nan)


def _enough_cases(s: Series, sid, k, limit54) -> np.ndarray:
    """limit54: at least limit54[0] cases in the last limit54[1] weeks, current week included."""
    cases, weeks = limit54
    csum = np.concatenate([[0.0], np.cumsum(s.y)])
    end = s.start[sid] + k
    begin = s.start[sid] + np.maximum(k - weeks, 0)
    return csum[end] - csum[begin] >= cases


# ---------------------------------------------------------------- design of each series-week
def _wtime(s: Series, sid, k, pos, flexible: bool, at: np.ndarray | None = None) -> np.ndarray:
    """Trend covariate centred on the current week (predictions are invariant to the centring); `at`: the flat
    index of each position (clipped into its series)."""
    if s.days is not None and flexible:
        return (s.days[at] - s.days[s.start[sid] + k - 1][:, None]) / 7.0
    return (pos - k[:, None]).astype(float)


def _blocks(ref: np.ndarray, pos: np.ndarray, k: np.ndarray, w: int, p: int) -> np.ndarray:
    """R's blocks(): seasonal factor level of each position (p = the current season); 0 = none."""
    level = np.zeros(pos.shape, np.int64)
    level[(pos >= (k - w)[:, None]) & (pos <= k[:, None])] = p
    b = ref.shape[1] - 1
    for i in range(1, b + 1):
        r, later = ref[:, i][:, None], ref[:, i - 1][:, None]
        level[(pos >= r - w) & (pos <= r + w)] = p
        if p == 1:
            continue
        period = later - 2 * w - 1 - r
        size, rest = period // (p - 1), period % (p - 1)
        o = pos - (r + w + 1)
        inside = (o >= 0) & (pos <= later - w - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            j = np.where(o < rest * (size + 1), o // (size + 1), rest + (o - rest * (size + 1)) // np.maximum(size, 1)) + 1
        level[inside] = j[inside]
    return level


def _flexible_design(s: Series, sid, k, ref, *, w, no_periods, pwni, population_offset):
    b = ref.shape[1] - 1
    if no_periods == 1:
        pos = (ref[:, 1:, None] + np.arange(-w, w + 1)[None, None, :]).reshape(len(k), -1)
        if pwni < w:                             # part of the current window is in the baseline
            pos = np.concatenate([pos, k[:, None] - w + np.arange(w - pwni)[None, :]], axis=1)
    else:
        first = ref[:, b] - w
        pos = first[:, None] + np.arange(int((k - first).max()) + 1)[None, :]
    live = (pos >= 1) & (pos < (k - pwni)[:, None])
    if no_periods > 1:
        level = _blocks(ref, pos, k, w, no_periods)
        live &= level > 0
    # flat index of each position, kept inside its series (noPeriods > 1: the rows of a batch have the width of
    # its longest history, so a row's positions can run past its series' last week; they are not live)
    at = s.start[sid][:, None] + np.clip(pos, 1, s.length[sid][:, None]) - 1
    y = np.where(live, s.y[at], 0.0)
    cols = [np.ones(pos.shape), _wtime(s, sid, k, pos, True, at)]
    cols += [(level == j).astype(float) for j in range(2, no_periods + 1)] if no_periods > 1 else []
    X = np.stack(cols) * live[None]
    x0 = np.zeros((len(k), X.shape[0]))
    x0[:, 0] = 1.0
    if no_periods > 1:
        x0[:, -1] = 1.0                          # the current season is level no_periods
    off, off0 = np.zeros_like(y), np.zeros(len(k))
    if population_offset:
        if s.population is None:
            raise ValueError("population_offset=True needs a `population` column")
        popk = s.population[s.start[sid] + k - 1]
        off = np.where(live, np.log(s.population[at]), 0.0)
        off0 = np.log(popk)
    return X, y, live.astype(float), off, x0, off0


def _classic_design(s: Series, sid, k, *, b, w):
    j = np.arange(-w, w + 1)
    if s.days is None:
        pos = (k[:, None, None] - FREQ * np.arange(b, 0, -1)[None, :, None] + j[None, None, :]).reshape(len(k), -1)
        pos = np.where(pos >= 1, pos, 0)
    else:
        day = s.days[s.start[sid] + k - 1]
        pos = np.concatenate([
            np.stack([_lookup(s, sid, _same_weekday(_years_back(day, i), day) + 7 * jj) for jj in j], axis=1)
            for i in range(b, 0, -1)], axis=1)
    live = pos >= 1
    y = np.where(live, s.y[s.start[sid][:, None] + np.clip(pos, 1, None) - 1], 0.0)
    X = np.stack([np.ones(pos.shape), (pos - k[:, None]).astype(float)]) * live[None]
    x0 = np.zeros((len(k), 2))
    x0[:, 0] = 1.0
    return X, y, live.astype(float), np.zeros_like(y), x0, np.zeros(len(k))


# ---------------------------------------------------------------- the two algorithms
def _trend_decision(X, y, pw, off, drop, x0, off0, fit, phi, ok, stops, *, p_threshold, b, refit, decides,
                    se_shift=None):
    """algo.farrington.glm: keep the trend only if significant, b >= 3 and no extrapolation;
    otherwise refit without it.

    R stops here when the trend is aliased (one observation of positive weight: its coefficient is NA
    and summary.glm has no row for it) and when `b >= 3 && significant && noExtrapolation` is NA (a
    NaN p-value, no residual df; or a NaN prediction) rather than FALSE. `decides`: the problems whose
    model reaches the decision (flexible: not those whose fitFun returned NULL). `se_shift` (flexible, whose
    decision predicts with se.fit = TRUE): R's wtime minus vigila's trend, for `_se_stops`.

    Returns (fit, phi, ok, stops, X, drop), X and drop those of each problem's final model."""
    has = ~drop[:, 1] & ~stops & decides
    if se_shift is not None and has.any():
        stops = stops.copy()
        stops[has] |= _se_stops(_subset(fit, has), X[:, has], drop[has], se_shift[has])
        has &= ~stops
    eta0, _ = _predict(fit, x0, off0, fit.dispersion)
    ymax = np.where(pw > 0, y, -np.inf).max(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        p, mu0 = _trend_p(fit), np.maximum(np.exp(eta0), EPS)     # predict(type = "response"): linkinv
        # (an exact fit through equal values predicts the largest value itself: R's comparison then hangs
        # on the last bit of mu0Hat, and so whether it stops)
        significant, extrapolates = p < p_threshold, mu0 > ymax
        keep = has & significant & (b >= 3) & ~extrapolates & ~np.isnan(mu0)
        undecided = (b >= 3) & ~(~np.isnan(p) & ~significant) & ~extrapolates & (np.isnan(p) | np.isnan(mu0))
    aliased = fit.df + (drop.shape[1] - drop.sum(axis=1)) < 2   # observations of positive (prior) weight
    stops = stops | (has & (aliased | undecided))
    redo = has & ~keep & ~stops
    if not redo.any():
        return fit, phi, ok, stops, X, drop
    X2 = X[:, redo].copy()
    X2[1] = 0.0
    d2 = drop[redo].copy()
    d2[:, 1] = True
    sub, phi2, _, ok2, _, stops2 = refit(X2, y[redo], pw[redo], off[redo], d2)
    _assign(fit, sub, redo)
    phi, ok = phi.copy(), ok.copy()
    phi[redo] = phi2
    ok[redo] &= ok2
    stops[redo] |= stops2
    X, drop = X.copy(), drop.copy()
    X[1, redo], drop[redo, 1] = 0.0, True
    return fit, phi, ok, stops, X, drop


def _subset(fit: Fit, mask: np.ndarray) -> Fit:
    return Fit(*(getattr(fit, name)[mask] for name in ("beta", "cov", "mu", "w", "dispersion", "df", "converged",
                                                       "resid")))


def _final_se_stops(fit: Fit, X, drop, shift, stops) -> np.ndarray:
    """stops | `_se_stops` for the models of more than one column (an intercept alone never stops there)."""
    check = ~stops & ((~drop).sum(axis=1) > 1)
    if check.any():
        stops = stops.copy()
        stops[check] |= _se_stops(_subset(fit, check), X[:, check], drop[check], shift[check])
    return stops


def _run_parts(part, n: int, width: int) -> None:
    """Call part(slice) over [0, n) in batches of at most CHUNK_CELLS cells, on all cores."""
    step = max(1, min(CHUNK_CELLS // max(width, 1), -(-n // (os.cpu_count() or 1))))
    in_parallel(part, [slice(a, min(n, a + step)) for a in builtins.range(0, n, step)])


def farrington_flexible(frame: pl.DataFrame | pl.LazyFrame, *, b: int = 5, w: int = 3, reweight: bool = True,
                        weights_threshold: float = 2.58, alpha: float = 0.05, trend: bool = True,
                        p_threshold_trend: float = 0.05, limit54: tuple[int, int] = (5, 4), powertrans: str = "2/3",
                        no_periods: int = 1, past_weeks_not_included: int | None = None,
                        threshold_method: str = "delta", population_offset: bool = False,
                        range: tuple[int, int] | None = None) -> pl.DataFrame:
    """R's farringtonFlexible on every series of `frame`. Noufaily et al. (2013): no_periods=10,
    past_weeks_not_included=26, weights_threshold=2.58, p_threshold_trend=1, threshold_method
    "nbPlugin" or "muan".

    Null upperbound and expected, alarm false, where R stops with an error (see the module docstring):
    weeks lacking b years of history (the week b years back, or in a date-based series any of the
    weeks 1..b years back, is absent; or its window starts before the series), too few reference
    values for the model. A fit that does not converge gives null bound and alarm, as R's NA."""
    _check(b=b, w=w, alpha=alpha, powertrans=powertrans, limit54=limit54)
    if threshold_method not in ("delta", "nbPlugin", "muan"):
        raise ValueError(f"threshold_method must be delta, nbPlugin or muan, not {threshold_method!r}")
    if no_periods < 1:
        raise ValueError("no_periods must be >= 1")
    pwni = w if past_weeks_not_included is None else past_weeks_not_included
    s = to_arrays(frame)
    sid, k = _eval_points(s, range, FREQ * b + w + 1)
    E = len(k)
    expected, upper, alarm = np.full(E, np.nan), np.full(E, np.nan), np.zeros(E)
    reason = np.full(E, HISTORY, np.int8)         # weeks left out below lack b years of history
    enough = _enough_cases(s, sid, k, limit54)

    def refit(X, y, pw, off, drop):
        fit, phi, drop, ok, X, stops = fit_glm(X, y, pw, off, drop, reweight=reweight, threshold=weights_threshold,
                                               fallback=False, keep_weights=True)
        return fit, phi, drop, ok, X, stops | ~ok      # R predicts from the NULL model and stops

    @_quiet                                      # degenerate weeks are NaN, read as R's NA or stop
    def part(sl: slice) -> None:
        ps, pk = sid[sl], k[sl]
        ref = _reference_weeks(s, ps, pk, b)
        # R stops when a reference week is missing, and when the window of the earliest one starts before
        # week 0 (blocks(): x[(ref - w):(ref + w)] mixes negative and positive indices; week 0 is ignored)
        valid = (ref[:, 1:] > 0).all(axis=1) & (ref[:, b] - w >= 0)
        idx, ps, pk, ref = np.arange(sl.start, sl.stop)[valid], ps[valid], pk[valid], ref[valid]
        if len(pk) == 0:
            return
        X, y, pw, off, x0, off0 = _flexible_design(s, ps, pk, ref, w=w, no_periods=no_periods, pwni=pwni,
                                                   population_offset=population_offset)
        drop = np.zeros((len(pk), X.shape[0]), bool)
        if not trend:
            drop[:, 1] = True
            X[1] = 0.0
        if no_periods > 1:                       # R's factor has only the levels the data have
            drop[:, 2:] = ~(X[2:] != 0).any(axis=2).T
            unseen = drop[:, -1].copy()          # predict() at the current season's level stops if the fit has none
            # without level 1 the lowest level present is R's baseline (treatment contrasts)
            no_first = ((X[2:].sum(axis=0) == 1) | (pw == 0)).all(axis=1) & ~drop[:, 2:].all(axis=1)
            first = np.argmax(~drop[:, 2:], axis=1) + 2
            drop[no_first, first[no_first]] = True
            X[first[no_first], no_first] = 0.0
            x0[no_first & (first == X.shape[0] - 1), -1] = 0.0   # the current season is the baseline
        fit, phi, drop, ok, X, stops = fit_glm(X, y, pw, off, drop, reweight=reweight, threshold=weights_threshold,
                                               fallback=trend, keep_weights=True)
        # R's wtime: the week index, or for a date-based series weeks since the earliest week in the model
        shift = pk.astype(float) if s.days is None else -np.where(pw > 0, X[1], np.inf).min(axis=1)
        shift = np.where(np.isfinite(shift), shift, 0.0)
        fit, phi, ok, stops, X, drop = _trend_decision(X, y, pw, off, drop, x0, off0, fit, phi, ok, stops,
                                                       p_threshold=p_threshold_trend, b=b, refit=refit,
                                                       decides=ok, se_shift=shift)
        stops = stops | (ok & _final_se_stops(fit, X, drop, shift, stops | ~ok))    # the final predict.glm
        if no_periods > 1:
            stops |= unseen
        eta0, se = _predict(fit, x0, off0, fit.dispersion)
        obs = s.y[s.start[ps] + pk - 1]
        overflow = np.zeros(len(pk), bool)
        if threshold_method == "delta":
            mu0 = np.maximum(np.exp(eta0), EPS)  # predict(type = "response"): R's log linkinv is pmax(exp(eta), eps)
            up = _power_upper(mu0, se * mu0, phi, powertrans, special.ndtri(1 - alpha))
            centre, mean = mu0, mu0
        else:
            up = _noufaily_upper(eta0, se, phi, alpha, threshold_method, enough[idx])
            centre, mean = eta0, np.exp(eta0)
            with np.errstate(over="ignore", invalid="ignore"):   # R: if (mu0Quantile == Inf), if (phi > 1) on NA
                q = eta0 if threshold_method == "nbPlugin" else eta0 + special.ndtri(1 - alpha) * se
                stops |= ok & (np.isnan(q) | np.isnan(phi))
                overflow = np.exp(q) == np.inf
        up = np.where(ok & ~stops & np.isfinite(up), up, np.nan)
        good = enough[idx] & ~np.isnan(up)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = (obs - centre) / (up - centre)
        upper[idx] = np.where(good, up, np.nan)
        expected[idx] = np.where(good, mean, np.nan)
        alarm[idx] = np.where(ok | stops, good & (score > 1) & (obs != 0), np.nan)
        code = _stop_reason(stops, pw, drop)
        if no_periods > 1:                       # the current season's level absent from the reference weeks
            code = np.where(unseen & (code == FIT), REFERENCE_VALUES, code)
        code = np.where(code > 0, code, np.where(~ok, NOT_CONVERGED, np.where(~enough[idx], LIMIT54,
                                                                          np.where(overflow, OVERFLOW, FIT))))
        reason[idx] = np.where(good, 0, code)

    width = b * (2 * w + 1) + w if no_periods == 1 else FREQ * b + w + 1
    _run_parts(part, E, width * (no_periods + 1))
    return _frame(s, sid, k, expected, upper, alarm, "farrington_flexible", reason)


def farrington(frame: pl.DataFrame | pl.LazyFrame, *, b: int = 5, w: int = 3, reweight: bool = True,
               alpha: float = 0.05, trend: bool = True, limit54: tuple[int, int] = (5, 4), powertrans: str = "2/3",
               range: tuple[int, int] | None = None) -> pl.DataFrame:
    """R's algo.farrington (fitFun algo.farrington.fitGLM.fast): two-sided interval at alpha/2,
    reweighting threshold 1, trend kept when p < 0.05; bound 0 (not NA) when limit54 is not met.

    Reference weeks: t - 52 i +- w for an index-based series; for a date-based one (week_start given)
    the weeks whose dates are i calendar years back +- w weeks, moved to the current week's weekday,
    as R does with an sts of epochAsDate = TRUE (not t - 52 i: five years back is 261 weeks, not 260,
    for most weeks). Reference weeks before the series are left out, as R does with a warning.

    Null upperbound and expected, alarm false, where R stops with an error (see the module docstring):
    no reference week at all (too little history), a single reference value, no residual degrees of
    freedom, a fit racing to a few counts among zeros, a fit that breaks down."""
    _check(b=b, w=w, alpha=alpha, powertrans=powertrans, limit54=limit54)
    s = to_arrays(frame)
    sid, k = _eval_points(s, range, FREQ * b - w)
    E = len(k)
    expected, upper, alarm = np.full(E, np.nan), np.full(E, np.nan), np.zeros(E)
    reason = np.zeros(E, np.int8)
    enough = _enough_cases(s, sid, k, limit54)

    def refit(X, y, pw, off, drop):
        return fit_glm(X, y, pw, off, drop, reweight=reweight, threshold=1.0, fallback=False)

    @_quiet                                      # degenerate weeks are NaN, read as R's NA or stop
    def part(sl: slice) -> None:
        ps, pk = sid[sl], k[sl]
        X, y, pw, off, x0, off0 = _classic_design(s, ps, pk, b=b, w=w)
        drop = np.zeros((len(pk), 2), bool)
        if not trend:
            drop[:, 1] = True
            X[1] = 0.0
        fit, phi, drop, ok, X, stops = fit_glm(X, y, pw, off, drop, reweight=reweight, threshold=1.0,
                                               fallback=trend)
        fit, phi, _, stops, X, drop = _trend_decision(X, y, pw, off, drop, x0, off0, fit, phi, ok, stops,
                                                      p_threshold=0.05, b=b, refit=refit,
                                                      decides=np.ones(len(pk), bool))
        stops |= np.isnan(phi) | (pw.sum(axis=1) == 0)   # predict.glm(dispersion = NaN) stops; no data at all
        stops = _final_se_stops(fit, X, drop, pk.astype(float), stops)     # R's wtime is the week index
        code = _stop_reason(stops, pw, drop)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            eta0, se = _predict(fit, x0, off0, phi)      # algo.farrington predicts with dispersion = phi
            mu0 = np.maximum(np.exp(eta0), EPS)          # R's log linkinv: pmax(exp(eta), eps)
            up = _power_upper(mu0, se * mu0, phi, powertrans, special.ndtri(1 - alpha / 2))
        obs = s.y[s.start[ps] + pk - 1]
        en = enough[sl]
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(en, (obs - mu0) / (up - mu0), 0.0)
        upper[sl] = np.where(stops, np.nan, np.where(en, up, 0.0))
        reason[sl] = np.where(np.isnan(upper[sl]), np.where(code > 0, code, FIT), 0)
        expected[sl] = np.where(stops, np.nan, mu0)
        alarm[sl] = np.where(stops, 0.0, np.where(np.isnan(score), np.nan, score > 1))

    _run_parts(part, E, b * (2 * w + 1) * 2)
    return _frame(s, sid, k, expected, upper, alarm, "farrington", reason)


def _check(*, b, w, alpha, powertrans, limit54):
    if b < 1 or w < 0 or 2 * w + 1 > FREQ:
        raise ValueError(f"need b >= 1 and 0 <= w < 26 (got b={b}, w={w})")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    if powertrans not in POWER:
        raise ValueError(f"powertrans must be one of {', '.join(POWER)}, not {powertrans!r}")
    if len(limit54) != 2 or limit54[0] < 0 or limit54[1] <= 0:
        raise ValueError("limit54 must be (cases >= 0, weeks > 0)")


def _frame(s: Series, sid, k, expected, upper, alarm, method, reason) -> pl.DataFrame:
    pos = s.start[sid] + k - 1
    days = s.days[pos] if s.days is not None else np.full(len(k), None)
    return pl.DataFrame({
        "series_id": s.id_values.gather(sid) if s.id_values is not None else pl.Series(np.asarray(s.ids, dtype=object)[sid].tolist(), dtype=pl.String),
        "t": pl.Series(k, dtype=pl.Int64),
        "week_start": pl.Series(days, dtype=pl.Int64).cast(pl.Date),
        "observed": pl.Series(s.y[pos], dtype=pl.Float64),
        "expected": pl.Series(expected, dtype=pl.Float64).fill_nan(None),
        "upperbound": pl.Series(upper, dtype=pl.Float64).fill_nan(None),
        "alarm": pl.Series(alarm, dtype=pl.Float64).fill_nan(None).cast(pl.Boolean),
        "method": pl.repeat(method, len(k), dtype=pl.String, eager=True),
        "no_bound_reason": pl.Series(_REASONS, dtype=pl.String).gather(reason),
    })
