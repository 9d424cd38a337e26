"""Raw contracts: the canonical fields of a source file after column mapping and casting.

Input: the distinct typed values of a field (`vigila.ingest.plan` validates each distinct value once,
with that field's column schema); output: pandera failure cases, which become quarantine
records. Optional fields are only checked when the source maps them.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

import pandera.polars as pa
import polars as pl

YEAR_MIN, YEAR_MAX = 1900, 2100


class RawRecord(pa.DataFrameModel):
    """Fields every shape may carry."""

    epi_year: Optional[pl.Int32] = pa.Field(nullable=True, ge=YEAR_MIN, le=YEAR_MAX,
                                            description="epidemiological year as reported")
    epi_week: Optional[pl.Int32] = pa.Field(nullable=True, ge=1, le=53,
                                            description="epidemiological week as reported (1..53)")
    date: Optional[pl.Date] = pa.Field(nullable=True, ge=dt.date(YEAR_MIN, 1, 1), le=dt.date(YEAR_MAX, 12, 31),
                                       description="a date inside the week (onset, notification)")
    week_start: Optional[pl.Date] = pa.Field(nullable=True, ge=dt.date(YEAR_MIN, 1, 1), le=dt.date(YEAR_MAX, 12, 31),
                                             description="first day of the reported week")
    issue_date: Optional[pl.Date] = pa.Field(nullable=True, description="issue date of the report")
    deaths: Optional[pl.Int64] = pa.Field(nullable=True, ge=0, description="deaths, never negative")

    class Config:
        strict = False   # unmapped file columns are carried along, not rejected
        coerce = False   # vigila.ingest.cast casts every value itself and reports each failure by row


class RawCounts(RawRecord):
    """Weekly counts: one row per place x week (x classification, sex, age group)."""

    cases: pl.Int64 = pa.Field(nullable=False, ge=0, description="cases in the week, never negative")


class RawCumulative(RawRecord):
    """Cumulative counts to date within the epi year; weekly counts are their differences."""

    cases: pl.Int64 = pa.Field(nullable=False, ge=0, description="cumulative cases to date")


class RawLineList(RawRecord):
    """A line list: one row per case."""

    age: Optional[pl.Float64] = pa.Field(nullable=True, ge=0, le=120, description="age in years")


RAW_MODELS: dict[str, type[RawRecord]] = {
    "weekly_counts": RawCounts,
    "cumulative_counts": RawCumulative,
    "line_list": RawLineList,
}
