"""Endemic channels: per series x target epi year x epi week, a baseline band from the same week of earlier years.

Input: weekly counts (series keys, epi_year, epi_week, cases[, population]) and the settings of
vigila/regional/endemic.yaml; output: one row per series x epi_year x epi_week x method with lower, median,
upper (schemas.outputs.EndemicChannel), and `zone`, a polars expression placing a count in the channel.
No Prefect here, and no Python loop per series or week: every series is computed in one polars query.

Baseline: for target year T and week w, the value of week w in each of the `years` most recent
earlier years (< T) that have a value for that week and are not declared epidemic years of the
series; when an excluded or missing year is skipped, the window reaches further back, as far as
the history goes. Week 53 of a baseline year that has no week 53 is that year's week 52.

Methods (per series x T x w, over the n baseline values x_1..x_n):
  quartile  lower = Q1, median = Q2, upper = Q3 of x, quantiles by linear interpolation between
            order statistics: Q(p) = x_(k) + (h - k)(x_(k+1) - x_(k)), h = 1 + (n - 1)p, k = floor(h)
            (R's quantile type 7, the default of R and numpy, = polars interpolation "linear").
  bortman   on y = ln(x + 1): m = mean(y), s = sd(y) (n - 1 denominator);
            median = exp(m) - 1 (the geometric mean of x + 1, minus 1),
            lower = max(0, exp(m - k s) - 1), upper = exp(m + k s) - 1, k = `multiplier` (default 1.96: +/- 1.96 SD).
With `per` set, x is the incidence rate cases / population * per instead of the count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import Field, field_validator

from vigila.config import Strict, load_layered

CONFIG_PATH = Path(__file__).with_name("endemic.yaml")
METHODS = ("quartile", "bortman")
KEYS = ["country_iso3", "geo_level", "geo_code", "disease"]
Method = Literal["quartile", "bortman"]


class EndemicInputError(ValueError):
    """A problem in the weekly input: `problems` holds records (check, column, row, value); the
    message names the first one."""

    def __init__(self, problems: list[dict]):
        self.problems = problems
        p = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{p['check']}: column {p['column']!r}, row {p['row']}, value {p['value']!r}{more}")


# --------------------------------------------------------------------------- config


class EndemicConfig(Strict):
    years: int = Field(default=5, ge=1)
    methods: list[Method] = Field(default_factory=lambda: list(METHODS), min_length=1)
    multiplier: float = Field(default=1.96, gt=0)
    min_years: int = Field(default=3, ge=1)
    per: int | None = Field(default=None, gt=0)
    exclude: dict[str, dict[str, list[int]]] = Field(default_factory=dict)

    @field_validator("exclude")
    @classmethod
    def _known_diseases(cls, v: dict[str, dict[str, list[int]]]) -> dict[str, dict[str, list[int]]]:
        from vigila.core.vocab import DISEASES, require_known

        require_known(list(v), DISEASES, "disease")
        for disease, places in v.items():
            for place, years in places.items():
                if bad := [y for y in years if not 1900 <= y <= 2100]:
                    raise ValueError(f"exclude.{disease}.{place}: {bad[0]} is not an epi year (1900-2100)")
        return v

    def exclusions(self) -> pl.DataFrame:
        """`exclude` as rows disease, country_iso3, geo_code, epi_year for `channel(exclude_years=...)`:
        place "*" -> every place (both null), a 3-letter code -> every place of that country,
        anything else -> that geo_code."""
        rows = []
        for disease, places in self.exclude.items():
            for place, years in places.items():
                country = place if re.fullmatch(r"[A-Z]{3}", place) else None
                geo = None if place == "*" or country else place
                rows += [(disease, country, geo, y) for y in years]
        return pl.DataFrame(rows, schema={"disease": pl.Utf8, "country_iso3": pl.Utf8, "geo_code": pl.Utf8,
                                          "epi_year": pl.Int32}, orient="row")


def load_config(path: str | Path | None = None) -> EndemicConfig:
    """vigila/regional/endemic.yaml with the YAML at `path` (if given) layered over it; `ConfigError`
    naming the file, line and key on any problem."""
    return load_layered(path, CONFIG_PATH, EndemicConfig, what="endemic-channel config")


# --------------------------------------------------------------------------- input


def _check_input(df: pl.DataFrame, keys: list[str], per: int | None) -> pl.DataFrame:
    """Columns present, weeks 1..53, cases >= 0, population > 0, one row per series-week; else
    `EndemicInputError` with every failing row. Returns keys, epi_year, epi_week, x (the value:
    count or rate; null when cases or population is null, i.e. the week is not in any baseline)."""
    need = [*keys, "epi_year", "epi_week", "cases", *(["population"] if per is not None else [])]
    if missing := [c for c in need if c not in df.columns]:
        raise EndemicInputError([{"check": "column_present", "column": c, "row": None, "value": None} for c in missing])
    df = df.with_row_index("_row").with_columns(pl.col("epi_year", "epi_week").cast(pl.Int32, strict=False),
                                                pl.col("cases").cast(pl.Float64, strict=False))
    checks = [("epi_year_present", "epi_year", pl.col("epi_year").is_null()),
              ("epi_week_in_range", "epi_week", ~pl.col("epi_week").is_between(1, 53).fill_null(False)),
              ("cases_non_negative", "cases", pl.col("cases") < 0),
              ("unique_series_week", "epi_week", pl.struct(*keys, "epi_year", "epi_week").is_duplicated())]
    if per is not None:
        df = df.with_columns(pl.col("population").cast(pl.Float64, strict=False))
        checks.append(("population_positive", "population", pl.col("population") <= 0))
    problems = []
    for check, column, bad in checks:
        hit = df.filter(bad.fill_null(False)).select("_row", pl.col(column).cast(pl.Utf8).alias("value"))
        problems += [{"check": check, "column": column, "row": r, "value": v} for r, v in hit.iter_rows()]
    if problems:
        raise EndemicInputError(sorted(problems, key=lambda p: p["row"]))
    x = pl.col("cases") if per is None else pl.col("cases") / pl.col("population") * per
    return df.select(*keys, "epi_year", "epi_week", x.alias("x"))


def _excluded(series: pl.DataFrame, exclude: pl.DataFrame | Sequence[int] | None, keys: list[str]) -> pl.DataFrame:
    """(keys, epi_year) pairs whose year is not used in baselines. `exclude`: years for every
    series, or rows of key columns (a subset of `keys`; null = any value) plus epi_year."""
    if exclude is None:
        return series.head(0).with_columns(pl.lit(None, pl.Int32).alias("epi_year"))
    if not isinstance(exclude, pl.DataFrame):
        exclude = pl.DataFrame({"epi_year": list(exclude)}, schema={"epi_year": pl.Int32})
    cols = [c for c in exclude.columns if c != "epi_year"]
    unknown = [c for c in cols if c not in keys and exclude[c].is_not_null().any()]
    if unknown or "epi_year" not in exclude.columns:
        raise ValueError(f"exclude_years: columns must be series keys ({', '.join(keys)}) and epi_year; got {exclude.columns}")
    cols = [c for c in cols if c in keys]
    ex = exclude.select(*(pl.col(c).cast(series.schema[c]).alias(f"_x_{c}") for c in cols), pl.col("epi_year").cast(pl.Int32))
    match = pl.all_horizontal(pl.lit(True), *((pl.col(f"_x_{c}").is_null() | (pl.col(f"_x_{c}") == pl.col(c))).fill_null(False)
                                              for c in cols))
    return series.join(ex, how="cross").filter(match).select(*keys, "epi_year").unique()


# --------------------------------------------------------------------------- channel


def channel(weekly: pl.DataFrame | pl.LazyFrame, *, keys: list[str] | None = None, years: int = 5,
            method: Method | Sequence[Method] = "quartile", exclude_years: pl.DataFrame | Sequence[int] | None = None,
            target_years: Sequence[int] | None = None, min_years: int = 3, multiplier: float = 1.96,
            per: int | None = None) -> pl.DataFrame:
    """Endemic channel of every series in `weekly` (one row per keys x epi_year x epi_week).

    Output: keys, epi_year (target), epi_week, method, lower, median, upper, years_used,
    baseline_years ("2015,2016,...", ascending), per — for every target year of a series, weeks
    1..52, plus 53 when that series has a week-53 row in the target year. `target_years` None:
    every year in which the series has a row. Fewer than `min_years` baseline values: null
    lower/median/upper (years_used and baseline_years still say what there was). Null `cases`
    (or `population` with `per`) mean "no value": such a week is in no baseline. Rows come in the
    order series first appear in `weekly`, then method, epi_year, epi_week.
    """
    keys = list(KEYS if keys is None else keys)
    methods = [method] if isinstance(method, str) else list(method)
    if bad := [m for m in methods if m not in METHODS]:
        raise ValueError(f"unknown endemic-channel method {bad[0]!r}; valid: {', '.join(METHODS)}")
    if years < 1 or min_years < 1:
        raise ValueError("years and min_years must be >= 1")
    data = _check_input(weekly.lazy().collect() if isinstance(weekly, pl.LazyFrame) else weekly, keys, per)
    series = data.select(keys).unique(maintain_order=True).with_row_index("_sid")  # work on one integer id per series
    excluded = _excluded(series.drop("_sid"), exclude_years, keys).join(series, on=keys, nulls_equal=True).select("_sid", "epi_year")
    data = data.join(series, on=keys, nulls_equal=True).select("_sid", "epi_year", "epi_week", "x").lazy()  # one query from here

    # candidate baseline values: (series, year, week) with a value, not an excluded year; week 53 of
    # a year without one (no week-53 row) is its week 52
    values = data.filter(pl.col("x").is_not_null())
    has53 = data.filter(pl.col("epi_week") == 53).select("_sid", "epi_year").unique()
    wk53 = (values.filter(pl.col("epi_week") == 52).join(has53, on=["_sid", "epi_year"], how="anti")
            .with_columns(pl.lit(53, pl.Int32).alias("epi_week")))
    cand = pl.concat([values, wk53]).join(excluded.lazy(), on=["_sid", "epi_year"], how="anti").with_columns(pl.lit(False).alias("_target"))

    # targets: series x target year x week 1..52, and 53 where the series has a week 53 that year
    if target_years is None:
        tyears = data.select("_sid", "epi_year").unique()
    else:
        tyears = series.lazy().select("_sid").join(pl.LazyFrame({"epi_year": list(target_years)}, schema={"epi_year": pl.Int32}),
                                                   how="cross")
    weeks = pl.LazyFrame({"epi_week": list(range(1, 53))}, schema={"epi_week": pl.Int32})
    targets = pl.concat([tyears.join(weeks, how="cross"),
                         tyears.join(has53, on=["_sid", "epi_year"], how="semi").with_columns(pl.lit(53, pl.Int32).alias("epi_week"))])
    targets = targets.select("_sid", "epi_year", "epi_week", pl.lit(None, pl.Float64).alias("x"), pl.lit(True).alias("_target"))

    # one sort over candidates and targets: a target sorts before its own year's candidate, so the
    # running count of candidates before it is the number k of earlier years with a value; its
    # baseline is candidate k-1 of its series-week and the `years`-1 candidates before that one,
    # carried as lag columns _x{j}/_y{j} (j = 0: the most recent; null past the start of the history)
    group = ["_sid", "epi_week"]
    is_cand = pl.col("_target").not_().cast(pl.Int64)
    both = (pl.concat([cand.select(targets.collect_schema().names()), targets]).sort([*group, "epi_year", pl.col("_target").not_()])
            .with_columns((is_cand.cum_sum().over(group) - 1).alias("_idx")))  # a candidate: its 0-based index; a target: k - 1
    lags = both.filter(~pl.col("_target")).select(
        *group, "_idx", *(pl.col("x").shift(j).over(group).alias(f"_x{j}") for j in range(years)),
        *(pl.col("epi_year").shift(j).over(group).alias(f"_y{j}") for j in range(years)))
    base = both.filter("_target").select(*group, "epi_year", "_idx").join(lags, on=[*group, "_idx"], how="left")

    # every statistic row-wise over the lag columns (no per-group aggregation, no lists), in steps
    # so that each intermediate column is computed once: n, the sorted values _s{j}, ln(x + 1), their mean
    xs = [pl.col(f"_x{j}") for j in range(years)]
    base = _sorted(base.with_columns(pl.sum_horizontal(x.is_not_null() for x in xs).alias("_n"),
                                     *((x + 1).log().alias(f"_l{j}") for j, x in enumerate(xs)),
                                     *(x.fill_null(float("inf")).alias(f"_s{j}") for j, x in enumerate(xs))), years)
    n, logs = pl.col("_n"), [pl.col(f"_l{j}") for j in range(years)]
    base = base.with_columns(pl.mean_horizontal(logs).alias("_m"))
    m = pl.col("_m")
    base = base.with_columns(pl.when(n > 1).then((pl.sum_horizontal((lg - m) ** 2 for lg in logs) / (n - 1)).sqrt()).alias("_sd"))
    sd, k = pl.col("_sd"), multiplier
    stats = {"quartile": tuple(_quantile([pl.col(f"_s{j}") for j in range(years)], n, p) for p in (0.25, 0.5, 0.75)),
             "bortman": (((m - k * sd).exp() - 1).clip(lower_bound=0), m.exp() - 1, (m + k * sd).exp() - 1)}
    enough = n >= min_years
    common = [n.cast(pl.Int32).alias("years_used"),
              pl.concat_str([pl.col(f"_y{j}") for j in reversed(range(years))], separator=",", ignore_nulls=True)
              .fill_null("").alias("baseline_years"), pl.lit(per, pl.Int64).alias("per")]
    out = [base.select("_sid", "epi_year", "epi_week", pl.lit(meth).alias("method"),
                       *(pl.when(enough).then(e.cast(pl.Float64)).alias(c) for e, c in zip(stats[meth], ("lower", "median", "upper"))),
                       *common) for meth in methods]
    return (pl.concat(out).join(series.lazy(), on="_sid").sort("_sid", "method", "epi_year", "epi_week")
            .select(*keys, "epi_year", "epi_week", "method", "lower", "median", "upper", "years_used", "baseline_years", "per").collect())


def _sorted(frame: pl.LazyFrame, width: int) -> pl.LazyFrame:
    """Columns _s0.._s{width-1} sorted row-wise (ascending; nulls must be +inf) by an odd-even
    transposition network: `width` rounds of min/max over neighbouring pairs, one projection per
    round (so the expressions stay linear in size)."""
    for r in range(width):
        pairs = [(f"_s{i}", f"_s{i + 1}") for i in range(r % 2, width - 1, 2)]
        frame = frame.with_columns(*(e for a, b in pairs for e in (pl.min_horizontal(a, b).alias(a), pl.max_horizontal(a, b).alias(b))))
    return frame


def _quantile(s: list[pl.Expr], n: pl.Expr, p: float) -> pl.Expr:
    """Quantile p of the first n of the row-wise sorted columns `s`: R type 7,
    Q = s[lo] + (h - lo)(s[lo+1] - s[lo]) with h = (n - 1)p, lo = floor(h) (0-based)."""
    out = pl.lit(None, pl.Float64)
    for count in range(len(s), 0, -1):
        h = (count - 1) * p
        lo = int(h)
        value = s[lo] if h == lo else s[lo] + (h - lo) * (s[lo + 1] - s[lo])
        out = pl.when(n == count).then(value).otherwise(out)
    return out


def channel_from_config(weekly: pl.DataFrame | pl.LazyFrame, config: EndemicConfig, *, keys: list[str] | None = None,
                        target_years: Sequence[int] | None = None) -> pl.DataFrame:
    """`channel` with every method and setting of `config`, its `exclude` applied (on the
    disease, country_iso3 and geo_code keys)."""
    ex = config.exclusions()
    keys = list(KEYS if keys is None else keys)
    ex = ex.select([c for c in ex.columns if c in keys or c == "epi_year"])
    return channel(weekly, keys=keys, years=config.years, method=config.methods, exclude_years=ex,
                   target_years=target_years, min_years=config.min_years, multiplier=config.multiplier,
                   per=config.per)


def zone(cases: str | pl.Expr = "cases", lower: str | pl.Expr = "lower", median: str | pl.Expr = "median",
         upper: str | pl.Expr = "upper") -> pl.Expr:
    """Zone of `cases` in the channel (a Utf8 expression): success: cases < lower; safety:
    lower <= cases <= median; alert: median < cases <= upper; epidemic: cases > upper; null when
    cases or any bound is null. Compare like with like: rates with a channel computed with `per`."""
    c, lo, md, up = (pl.col(e) if isinstance(e, str) else e for e in (cases, lower, median, upper))
    known = c.is_not_null() & lo.is_not_null() & md.is_not_null() & up.is_not_null()
    return (pl.when(~known).then(pl.lit(None, pl.Utf8))
            .when(c < lo).then(pl.lit("success"))
            .when(c <= md).then(pl.lit("safety"))
            .when(c <= up).then(pl.lit("alert"))
            .otherwise(pl.lit("epidemic")).alias("zone"))
