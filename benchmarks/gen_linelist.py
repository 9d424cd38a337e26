"""Deterministic generator of a synthetic national dengue line list shaped like Brazil's SINAN.

Input: an output path, a row count, a seed.
Output: a UTF-8, comma-separated CSV with a header and one row per notified case, written in
chunks of `--chunk-rows` (bounded memory: ~400 MB peak RSS with the default 1 M-row chunks, whatever
`--rows` is; the same seed, rows and chunk size give a byte-identical file).

Columns (names and codes as in SINAN's DENGON exports; values are synthetic):

    TP_NOT      2 (individual notification)
    ID_AGRAVO   A90 (dengue)
    DT_NOTIFIC  notification date, ISO (YYYY-MM-DD)
    SEM_NOT     epi week of notification as YYYYWW (MMWR weeks, Sunday-Saturday, as SINAN)
    NU_ANO      year of notification
    DT_SIN_PRI  date of first symptoms (0-10 days before notification)
    SEM_PRI     epi week of first symptoms, YYYYWW
    SG_UF_NOT   2-letter state of notification (AC ... TO; ISO 3166-2 suffix BR-XX)
    ID_MUNICIP  6-digit IBGE municipality code (first 2 digits: the state's IBGE code)
    NU_IDADE_N  age in years (real SINAN encodes unit+value, e.g. 4025 = 25 years; see README)
    CS_SEXO     M / F / I (ignorado)
    CLASSI_FIN  10 dengue, 11 with warning signs, 12 severe, 5 discarded, 8 inconclusive, blank
    CRITERIO    1 laboratory, 2 clinical-epidemiological, 3 under investigation
    EVOLUCAO    1 cure, 2 death by dengue, 3 other death, 4 death under investigation, 9 ignored, blank

Shape: notification dates span 2024-01-01 .. 2025-06-30 (78 weeks) with a seasonal peak around
epi week 13 each year (2024 the larger season) and fewer notifications at weekends; states are
weighted like the 2024 season (SP, MG, PR, GO, DF, SC, RS, RJ heaviest).

Deliberately bad values so that quarantine is exercised (rates per row, all tiny):
non-numeric age (~3e-5), unknown state (~3e-5), week 54 in SEM_NOT (~2e-5; Vigila derives the
week from DT_NOTIFIC, so this one only bites a hand-written pipeline that trusts SEM_NOT),
impossible notification date such as 2024-02-30 (~2e-5), a row with one extra field (~1e-6).
Discarded (5), inconclusive (8) and blank CLASSI_FIN rows are kept few by default
(`--discarded-share`, 0.2 %); real SINAN exports hold ~30-40 % discarded notifications.

CLI:  python benchmarks/gen_linelist.py OUT.csv --rows 10000000 [--seed 20240101]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from epiweeks import Week

HEADER = ["TP_NOT", "ID_AGRAVO", "DT_NOTIFIC", "SEM_NOT", "NU_ANO", "DT_SIN_PRI", "SEM_PRI", "SG_UF_NOT",
          "ID_MUNICIP", "NU_IDADE_N", "CS_SEXO", "CLASSI_FIN", "CRITERIO", "EVOLUCAO"]

START, END = dt.date(2024, 1, 1), dt.date(2025, 6, 30)
ONSET_LAG_MAX = 10

# state -> (IBGE state code, relative weight ~ 2024 probable dengue cases in thousands, capital's IBGE code)
STATES: dict[str, tuple[int, float, int]] = {
    "SP": (35, 2150, 355030), "MG": (31, 1700, 310620), "PR": (41, 660, 410690), "GO": (52, 370, 520870),
    "DF": (53, 280, 530010), "SC": (42, 210, 420540), "RS": (43, 210, 431490), "RJ": (33, 300, 330455),
    "BA": (29, 160, 292740), "ES": (32, 110, 320530), "MT": (51, 60, 510340), "MS": (50, 60, 500270),
    "PE": (26, 50, 261160), "CE": (23, 30, 230440), "TO": (17, 25, 172100), "PB": (25, 25, 250750),
    "AL": (27, 20, 270430), "RN": (24, 20, 240810), "PI": (22, 18, 221100), "MA": (21, 15, 211130),
    "PA": (15, 15, 150140), "SE": (28, 12, 280030), "AM": (13, 12, 130260), "RO": (11, 10, 110020),
    "AC": (12, 8, 120040), "AP": (16, 5, 160030), "RR": (14, 4, 140010),
}
# municipalities per state in the synthetic pool (Zipf-weighted, the capital first)
MUNICIPALITIES_PER_STATE = 120

SEX = (["F", "M", "I"], [0.543, 0.452, 0.005])
CRITERIO = (["1", "2", "3"], [0.30, 0.66, 0.04])
EVOLUCAO = (["1", "", "9", "3", "2", "4"], [0.80, 0.14, 0.055, 0.003, 0.001, 0.001])
CLASSIFIED = (["10", "11", "12"], [0.935, 0.060, 0.005])

BAD_AGE = ["IGN", "2O", "3a", "?"]
BAD_UF = ["XX", "EX", "ZZ"]
BAD_DATES = ["2024-02-30", "2024-13-05", "2025-04-31", "2024-00-10"]
RATE_BAD_AGE, RATE_BAD_UF, RATE_WEEK54, RATE_BAD_DATE, RATE_RAGGED = 3e-5, 3e-5, 2e-5, 2e-5, 1e-6


def _day_weights() -> np.ndarray:
    """Relative notifications per day: seasonal peak near epi week 13, quieter weekends."""
    days = np.arange((END - START).days + 1)
    dates = [START + dt.timedelta(int(d)) for d in days]
    w = np.empty(len(days))
    for i, d in enumerate(dates):
        doy = d.timetuple().tm_yday
        peak, height = (85, 1.0) if d.year == 2024 else (95, 0.45)
        season = height * np.exp(-0.5 * ((doy - peak) / 28.0) ** 2)
        w[i] = (0.03 + season) * (0.45 if d.weekday() >= 5 else 1.0)
    return w / w.sum()


def _calendar() -> tuple[list[str], list[str], list[str]]:
    """Per day index from START - ONSET_LAG_MAX: ISO date, SINAN week YYYYWW, year."""
    first = START - dt.timedelta(ONSET_LAG_MAX)
    iso, week, year = [], [], []
    for i in range((END - first).days + 1):
        d = first + dt.timedelta(i)
        w = Week.fromdate(d, system="cdc")
        iso.append(d.isoformat())
        week.append(f"{w.year}{w.week:02d}")
        year.append(str(d.year))
    return iso, week, year


def _municipality_pool(rng: np.random.Generator) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Flat list of 6-digit IBGE codes, the start offset of each state's block, Zipf weights in a block."""
    codes: list[str] = []
    offsets = []
    for uf, (ibge, _, capital) in STATES.items():
        offsets.append(len(codes))
        others = rng.choice(np.arange(1, 9999), size=MUNICIPALITIES_PER_STATE * 2, replace=False)
        block = [capital] + [ibge * 10000 + int(o) for o in others if ibge * 10000 + int(o) != capital]
        codes += [f"{c:06d}" for c in block[:MUNICIPALITIES_PER_STATE]]
    zipf = 1.0 / np.arange(1, MUNICIPALITIES_PER_STATE + 1) ** 1.1
    return codes, np.array(offsets), zipf / zipf.sum()


def _pick(rng: np.random.Generator, values_probs: tuple[list[str], list[float]], n: int) -> pl.Series:
    values, probs = values_probs
    idx = rng.choice(len(values), size=n, p=np.array(probs) / sum(probs))
    return pl.Series(values, dtype=pl.Utf8).gather(idx)


def _sprinkle(rng: np.random.Generator, s: pl.Series, rate: float, bad: list[str]) -> pl.Series:
    """Replace a `rate` fraction of `s` (at random rows) by values from `bad`."""
    hit = np.flatnonzero(rng.random(len(s)) < rate)
    if hit.size == 0:
        return s
    vals = pl.Series([bad[int(i)] for i in rng.integers(0, len(bad), hit.size)], dtype=pl.Utf8)
    return s.scatter(hit, vals)


def make_chunk(n: int, chunk_no: int, seed: int, ctx: dict, discarded_share: float) -> pl.DataFrame:
    """One chunk of `n` rows; depends only on (seed, chunk_no, n), so files are reproducible."""
    rng = np.random.default_rng([seed, chunk_no])
    lag = ONSET_LAG_MAX
    day = rng.choice(len(ctx["day_w"]), size=n, p=ctx["day_w"]) + lag          # index into the calendar
    onset = day - np.minimum(rng.geometric(0.35, size=n) - 1, lag)
    iso, week, year = ctx["iso"], ctx["week"], ctx["year"]

    uf_idx = rng.choice(len(STATES), size=n, p=ctx["uf_w"])
    mun_idx = ctx["mun_off"][uf_idx] + rng.choice(MUNICIPALITIES_PER_STATE, size=n, p=ctx["mun_w"])
    age = np.clip(np.rint(rng.gamma(2.6, 13.5, size=n)), 0, 99).astype(np.int64)
    age_s = pl.Series(age).cast(pl.Utf8)
    age_s = age_s.scatter(np.flatnonzero(rng.random(n) < 0.001), None)          # blank age
    age_s = _sprinkle(rng, age_s, RATE_BAD_AGE, BAD_AGE)

    classi = _pick(rng, CLASSIFIED, n)
    u = rng.random(n)
    # discarded : inconclusive : blank (under investigation) = 2 : 1 : 1 of `discarded_share`
    for lo, hi, code in ((0.0, 0.5, "5"), (0.5, 0.75, "8"), (0.75, 1.0, None)):
        hit = np.flatnonzero((u >= lo * discarded_share) & (u < hi * discarded_share))
        if hit.size:
            classi = classi.scatter(hit, code)

    uf_s = pl.Series(list(STATES), dtype=pl.Utf8).gather(uf_idx)
    sem = pl.Series(week, dtype=pl.Utf8).gather(day)
    df = pl.DataFrame({
        "TP_NOT": pl.Series(["2"] * n, dtype=pl.Utf8),
        "ID_AGRAVO": pl.Series(["A90"] * n, dtype=pl.Utf8),
        "DT_NOTIFIC": _sprinkle(rng, pl.Series(iso, dtype=pl.Utf8).gather(day), RATE_BAD_DATE, BAD_DATES),
        "SEM_NOT": sem,
        "NU_ANO": pl.Series(year, dtype=pl.Utf8).gather(day),
        "DT_SIN_PRI": pl.Series(iso, dtype=pl.Utf8).gather(onset),
        "SEM_PRI": pl.Series(week, dtype=pl.Utf8).gather(onset),
        "SG_UF_NOT": _sprinkle(rng, uf_s, RATE_BAD_UF, BAD_UF),
        "ID_MUNICIP": pl.Series(ctx["mun"], dtype=pl.Utf8).gather(mun_idx),
        "NU_IDADE_N": age_s,
        "CS_SEXO": _pick(rng, SEX, n),
        "CLASSI_FIN": classi,
        "CRITERIO": _pick(rng, CRITERIO, n),
        "EVOLUCAO": _pick(rng, EVOLUCAO, n),
    })
    # week 54 does not exist: keep the year, break the week
    w54 = np.flatnonzero(rng.random(n) < RATE_WEEK54)
    if w54.size:
        df = df.with_columns(df["SEM_NOT"].scatter(w54, df["SEM_NOT"].gather(w54).str.slice(0, 4) + "54"))
    # a ragged row: one extra field (an unquoted comma slipped into the last field)
    rag = np.flatnonzero(rng.random(n) < RATE_RAGGED)
    if rag.size:
        df = df.with_columns(df["EVOLUCAO"].scatter(rag, df["EVOLUCAO"].gather(rag) + ",1"))
    return df


def generate(out: Path, rows: int, *, seed: int = 20240101, chunk_rows: int = 1_000_000,
             discarded_share: float = 0.002, quiet: bool = False) -> Path:
    """Write `rows` rows to `out` (atomically: a temp file renamed at the end)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    iso, week, year = _calendar()
    mun, mun_off, mun_w = _municipality_pool(np.random.default_rng([seed, 999_999]))
    uf_w = np.array([w for _, w, _ in STATES.values()])
    ctx = {"iso": iso, "week": week, "year": year, "day_w": _day_weights(), "uf_w": uf_w / uf_w.sum(),
           "mun": mun, "mun_off": mun_off, "mun_w": mun_w}
    tmp = out.with_name(f".{out.name}.partial")
    t0 = time.perf_counter()
    with tmp.open("wb") as f:
        f.write((",".join(HEADER) + "\n").encode())
        done = 0
        for chunk_no, start in enumerate(range(0, rows, chunk_rows)):
            n = min(chunk_rows, rows - start)
            # quote_style="never": SINAN exports are unquoted; the ragged rows keep their extra comma
            make_chunk(n, chunk_no, seed, ctx, discarded_share).write_csv(
                f, include_header=False, quote_style="never", null_value="")
            done += n
            if not quiet:
                print(f"\r{done:,}/{rows:,} rows  {time.perf_counter() - t0:5.1f}s", end="", file=sys.stderr)
    tmp.replace(out)
    if not quiet:
        print(f"\nwrote {out} ({out.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--chunk-rows", type=int, default=1_000_000)
    ap.add_argument("--discarded-share", type=float, default=0.002,
                    help="share of rows with CLASSI_FIN 5 / 8 / blank (2:1:1); real SINAN: ~0.35")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    generate(a.out, a.rows, seed=a.seed, chunk_rows=a.chunk_rows, discarded_share=a.discarded_share, quiet=a.quiet)


if __name__ == "__main__":
    main()
