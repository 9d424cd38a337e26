"""Epidemiological weeks for whole columns: dates or (year, week) pairs -> epi_year, epi_week, week_start.

Input: polars columns; output: the same rows with the week fields. The `epiweeks` package does
the calendar arithmetic once per distinct value (a few thousand at most), joined back in polars.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from epiweeks import Week

SYSTEMS = {"mmwr": "cdc", "iso": "iso"}
WEEK_SCHEMA = {"epi_year": pl.Int32, "epi_week": pl.Int32, "week_start": pl.Date}


def weeks_of_dates(dates: pl.Series, convention: str) -> pl.DataFrame:
    """Lookup table: date -> epi_year, epi_week, week_start for each distinct non-null date."""
    system = SYSTEMS[convention]
    rows = []
    for d in dates.drop_nulls().unique().to_list():
        w = Week.fromdate(d, system=system)
        rows.append((d, w.year, w.week, w.startdate()))
    return pl.DataFrame(rows, schema={"date": pl.Date, **WEEK_SCHEMA}, orient="row")


def week_starts(pairs: pl.DataFrame, convention: str) -> pl.DataFrame:
    """Lookup table: (epi_year, epi_week) -> week_start; null where the week does not exist
    in that year (week 53 of a 52-week year, week 0 or 54)."""
    system = SYSTEMS[convention]
    rows = []
    for year, week in pairs.select("epi_year", "epi_week").drop_nulls().unique().iter_rows():
        try:
            start: dt.date | None = Week(year, week, system=system).startdate()
        except ValueError:
            start = None
        rows.append((year, week, start))
    return pl.DataFrame(rows, schema=WEEK_SCHEMA, orient="row")


def add_weeks_from_dates(df: pl.DataFrame, column: str, convention: str) -> pl.DataFrame:
    """Add epi_year, epi_week, week_start for the week containing `column`'s date."""
    table = weeks_of_dates(df[column], convention).rename({"date": "__date"})
    out = df.drop([c for c in WEEK_SCHEMA if c in df.columns and c != column])
    out = out.join(table, left_on=column, right_on="__date", how="left", maintain_order="left", suffix="__new")
    if column in WEEK_SCHEMA:  # a reported week start is replaced by the convention's week start
        out = out.drop(column).rename({f"{column}__new": column})
    return out.drop("__date", strict=False)


def add_week_start(df: pl.DataFrame, convention: str) -> pl.DataFrame:
    """Add week_start for reported (epi_year, epi_week); null where that week does not exist."""
    return df.join(week_starts(df, convention), on=["epi_year", "epi_week"], how="left", maintain_order="left")
