"""Turn user input into the detection contract of `vigila.detect`, or fail with one clear line.

Input: rows of cases with `week_start` (Date or ISO string) and/or `t`, optional `series_id` and
`population`, in any order; output: series_id, t, cases[, week_start][, population] sorted by series, week.
"""

from __future__ import annotations

import datetime as dt
import difflib

import polars as pl

GAPS = ("error", "zero", "consecutive")


class DetectInputError(ValueError):
    """A user error in a detection input: one line naming the series, week and row."""


def _missing(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f"; columns are: {', '.join(columns)}"


def _first(df: pl.DataFrame, bad: pl.Expr, problem) -> None:
    """Raise for the first row (in the frame's current order) where `bad` holds."""
    hit = df.filter(bad.fill_null(False))
    if hit.height:
        r = hit.row(0, named=True)
        raise DetectInputError(f"series {r['series_id']!r}, week {r['_week']}, row {r['_row']}: {problem(r)}")


def _number(df: pl.DataFrame, name: str, what: str) -> pl.DataFrame:
    """Cast column `name` to Float64, failing on nulls, text that is no number and non-whole values."""
    raw = pl.col(name)
    x = raw.cast(pl.Float64, strict=False)
    _first(df, raw.is_null(), lambda r: f"{name} is missing (null)")
    _first(df, x.is_null(), lambda r: f"{name} {r[name]!r} is not a number")
    _first(df, ~x.is_finite() | (x != x.floor()), lambda r: f"{name} {r[name]} is not {what}")
    return df.with_columns(x)


def _dates(df: pl.DataFrame) -> pl.DataFrame:
    dtype = df.schema["week_start"]
    if dtype == pl.String:
        parsed = pl.col("week_start").str.strip_chars().str.to_date("%Y-%m-%d", strict=False)
    elif isinstance(dtype, pl.Datetime):
        parsed = pl.col("week_start").dt.date()
    elif dtype == pl.Date:
        parsed = pl.col("week_start")
    else:
        raise DetectInputError(f"week_start must be a date or an ISO date string (YYYY-MM-DD), not {dtype}")
    _first(df, pl.col("week_start").is_null(), lambda r: "week_start is missing (null)")
    _first(df, parsed.is_null(), lambda r: f"week_start {r['week_start']!r} is not an ISO date (YYYY-MM-DD)")
    return df.with_columns(parsed)


def prepare(frame: pl.DataFrame | pl.LazyFrame, *, gaps: str = "error") -> pl.DataFrame:
    """Validate `frame` and return the method contract; input row order does not matter.

    `week_start` defines the weeks when present (t = 1-based position in the series unless `t` is
    also given, and then both must agree); otherwise `t` does. A missing week inside a series is an
    error by default, since R's `surveillance` reads rows as consecutive weeks and a gap silently
    shifts last year's baseline; gaps="zero" adds the missing weeks with 0 cases (population carried
    forward), gaps="consecutive" does what R does (rows are consecutive weeks, t renumbered 1..n).
    A series too short for a method's history is fine: the method gives null bounds.
    """
    if gaps not in GAPS:
        raise DetectInputError(f"gaps must be one of {', '.join(GAPS)}, not {gaps!r}")
    df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    cols = df.columns
    if "cases" not in cols:
        raise DetectInputError(f"missing column 'cases'{_missing('cases', cols)}")
    if "week_start" not in cols and "t" not in cols:
        hint = difflib.get_close_matches("week_start", cols, 1, 0.6) or difflib.get_close_matches("t", cols, 1, 0.6)
        raise DetectInputError("missing column 'week_start' (dates) or 't' (1-based week index)"
                               + (f" (did you mean {hint[0]!r}?)" if hint else f"; columns are: {', '.join(cols)}"))
    if df.height == 0:
        raise DetectInputError("the input has no rows")
    has_w, has_t, has_p = "week_start" in cols, "t" in cols, "population" in cols
    df = df.with_row_index("_row", offset=1).select(
        "_row",
        (pl.col("series_id").cast(pl.String) if "series_id" in cols else pl.lit("1")).alias("series_id"),
        "cases", *(["week_start"] if has_w else []), *(["t"] if has_t else []), *(["population"] if has_p else []),
        (pl.col("week_start").cast(pl.String) if has_w else pl.format("t={}", pl.col("t"))).alias("_week"),
    )
    _first(df, pl.col("series_id").is_null(), lambda r: "series_id is missing (null)")
    df = _number(df, "cases", "a whole number")
    _first(df, pl.col("cases") < 0, lambda r: f"cases {r['cases']:g} is negative")
    if has_t:
        df = _number(df, "t", "a whole number")
        _first(df, pl.col("t") < 1, lambda r: f"t {r['t']:g} is below 1 (t is R's 1-based week index)")
        df = df.with_columns(pl.col("t").cast(pl.Int64))
        df = df if has_w else df.with_columns(pl.format("t={}", "t").alias("_week"))
    if has_w:
        df = _dates(df).with_columns(pl.col("week_start").cast(pl.String).alias("_week"))
    key = "week_start" if has_w else "t"
    df = df.with_columns(pl.col("cases").cast(pl.Int64)).sort("series_id", key, "_row")

    first_row = pl.col("_row").min().over("series_id", key)
    _first(df, pl.col("_row") != first_row, lambda r: "this week appears more than once in the series "
           f"(also at row {df.filter(pl.col('series_id') == r['series_id'], pl.col(key) == r[key])['_row'].min()})")
    if has_w:
        days = (pl.col("week_start") - pl.col("week_start").first().over("series_id")).dt.total_days()
        _first(df, days % 7 != 0, lambda r: "week_start is not on the series' 7-day grid (its first week starts "
               f"{df.filter(pl.col('series_id') == r['series_id'])['week_start'][0]}); all weeks must start on the same weekday")
        df = df.with_columns((days // 7).alias("_pos"))
    else:
        df = df.with_columns((pl.col("t") - pl.col("t").first().over("series_id")).alias("_pos"))
    prev = lambda c: pl.col(c).shift(1).over("series_id")  # noqa: E731
    df = df.with_columns(prev("_week").alias("_prev_week"), (pl.col("_pos") - prev("_pos")).alias("_step"))
    if has_w and has_t:
        df = df.with_columns(prev("t").alias("_prev_t"))
        t_step = pl.col("t") - pl.col("_prev_t")  # 1 across a date gap is R's rows-as-weeks numbering
        _first(df, (t_step < 1) | ((t_step != pl.col("_step")) & (t_step != 1)), lambda r: "t and week_start "
               f"disagree: week {r['_prev_week']} has t={r['_prev_t']} and week {r['_week']}, {r['_step']} week(s) "
               f"later, has t={r['t']}; drop one of the two columns")

    if gaps == "error":
        def gap(r):
            n = r["_step"] - 1
            if has_w:
                start = dt.date.fromisoformat(r["_prev_week"]) + dt.timedelta(days=7)
                span = f"{start} to {dt.date.fromisoformat(r['_week']) - dt.timedelta(days=7)}"
            else:
                span = f"t={r['t'] - n} to t={r['t'] - 1}"
            return (f"gap: no row for the {n} week(s) {span} after week {r['_prev_week']}. R's surveillance reads "
                    "rows as consecutive weeks, which would silently shift last year's baseline; choose gaps "
                    "'zero' (missing weeks count 0 cases) or 'consecutive' (R's behaviour)")
        _first(df, pl.col("_step") > 1, gap)
    elif gaps == "zero":
        grid = (df.group_by("series_id").agg(pl.int_ranges(0, pl.col("_pos").max() + 1).alias("_pos"),
                                             *([pl.col("t").first()] if has_t else []),
                                             *([pl.col("week_start").first()] if has_w else []))
                .explode("_pos"))
        grid = grid.with_columns(*([pl.col("t") + pl.col("_pos")] if has_t else []),
                                 *([pl.col("week_start") + pl.duration(weeks=pl.col("_pos"))] if has_w else []))
        df = (grid.join(df.drop(*(c for c in ("t", "week_start") if c in grid.columns)), on=["series_id", "_pos"], how="left")
              .sort("series_id", "_pos").with_columns(pl.col("cases").fill_null(0)))
        if has_p:
            df = df.with_columns(pl.col("population").forward_fill().over("series_id"))
    if gaps == "consecutive" or not has_t:
        df = df.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("series_id").alias("t"))
    return df.select("series_id", pl.col("t").cast(pl.Int64), "cases", *(["week_start"] if has_w else []),
                     *(["population"] if has_p else [])).sort("series_id", "t")
