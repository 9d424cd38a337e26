"""Contracts of derived datasets: `alerts` (early detection per series-week and method), `reporting` (completeness).

Input: the eager polars frames `vigila.alerts` and `vigila.completeness` build; output: pandera
validation (raises on a broken contract). The models are also the source of their sections of
the data dictionary.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from vigila.vocab import DISEASES

ALERTS_SCHEMA_VERSION = "1.0.0"


class Alert(pa.DataFrameModel):
    """One evaluated week of one series by one configured detection method."""

    series_id: pl.Utf8 = pa.Field(description="series: geo_code|disease|source_id, e.g. 'PER|dengue|paho_opendengue_national'")
    source_id: pl.Utf8 = pa.Field(description="source whose cases_weekly rows make the series (reporters are never mixed)")
    country_iso3: pl.Utf8 = pa.Field(str_matches=r"^[A-Z]{3}$", description="ISO 3166-1 alpha-3 code of the country")
    geo_level: pl.Utf8 = pa.Field(isin=["admin0", "admin1", "admin2", "admin3"],
                                  description="level of the series: admin0 national, admin1 state/departamento, ...")
    place: pl.Utf8 = pa.Field(nullable=True, description="geo_code of the place below the country (e.g. PE-LOR); null for a national series")
    place_name: pl.Utf8 = pa.Field(nullable=True, description="name of the place; null for a national series")
    disease: pl.Utf8 = pa.Field(isin=sorted(DISEASES), description="controlled disease code")
    t: pl.Int64 = pa.Field(ge=1, description="1-based week index passed to the method: weeks since the start of the series' "
                           "unbroken run (gaps: split) or of the source's reporting period (gaps: zero)")
    week_start: pl.Date = pa.Field(description="first day of the epi week")
    epi_year: pl.Int32 = pa.Field(ge=1900, le=2100, description="epidemiological year")
    epi_week: pl.Int32 = pa.Field(ge=1, le=53, description="epidemiological week within epi_year")
    observed: pl.Int64 = pa.Field(ge=0, description="cases in the week: cases_weekly summed over classification, sex and "
                                   "age group (a source's total row for the week, when it has one, counts alone)")
    imputed: pl.Boolean = pa.Field(description="true when the week had no cases_weekly row and counts 0 cases (gaps: zero)")
    expected: pl.Float64 = pa.Field(nullable=True, description="the method's expected count; null when not evaluable (too little history)")
    upperbound: pl.Float64 = pa.Field(nullable=True, description="the method's alarm threshold; null when not evaluable")
    alarm: pl.Boolean = pa.Field(nullable=True, description="observed > upperbound (CUSUM: cusum >= h); null when not evaluable")
    method: pl.Utf8 = pa.Field(description="name of the configured method run, e.g. ears_C2, farrington_flexible")
    params: pl.Utf8 = pa.Field(description="JSON object of every parameter the method ran with, defaults included "
                               "(the run's settings, e.g. min_history, are in the version's manifest)")
    cases_weekly_version: pl.Utf8 = pa.Field(description="version id of the input dataset read (cases_revisions when as_of is set)")
    as_of: pl.Date = pa.Field(nullable=True, description="counts as known on this date (latest issue on or before it); null: as published")
    run_id: pl.Utf8 = pa.Field(description="detection run that published the row")
    computed_at: pl.Datetime("us", "UTC") = pa.Field(description="when the detection ran (UTC)")

    class Config:
        strict = True
        coerce = False
        unique = ["series_id", "week_start", "method"]


REPORTING_SCHEMA_VERSION = "1.0.0"
REPORTING_STATUSES = ["on_time", "late", "partial", "missing", "pending"]


class Reporting(pa.DataFrameModel):
    """Reporting completeness and timeliness: one row per source x epi week (vigila/completeness.py)."""

    source_id: pl.Utf8 = pa.Field(description="source config id")
    epi_year: pl.Int32 = pa.Field(ge=1900, le=2100, description="epidemiological year (the source's convention: mmwr or iso)")
    epi_week: pl.Int32 = pa.Field(ge=1, le=53, description="epidemiological week within epi_year")
    week_start: pl.Date = pa.Field(description="first day of the epi week")
    expected: pl.Int64 = pa.Field(ge=0, description="reporting units expected for the week: the distinct place x disease pairs "
                                  "the source has ever published (1 per disease for a national reporter)")
    received: pl.Int64 = pa.Field(ge=0, description="expected units with at least one row for the week in cases_revisions")
    received_on_time: pl.Int64 = pa.Field(ge=0, description="units whose first row for the week was published by the deadline")
    completeness: pl.Float64 = pa.Field(ge=0, le=1, description="received / expected")
    first_received_at: pl.Datetime("us", "UTC") = pa.Field(nullable=True, description="when Vigila first published a row of "
                                                           "the week (min ingested_at in cases_revisions, UTC); null: nothing yet")
    last_received_at: pl.Datetime("us", "UTC") = pa.Field(nullable=True, description="when the last unit's first row of the week "
                                                          "was published (UTC): the week was complete from then if received = expected")
    deadline: pl.Datetime("us", "UTC") = pa.Field(description="when the week was due (schedule.deadline in the source's timezone, "
                                                 "as UTC; default: the end of the week after the epi week)")
    status: pl.Utf8 = pa.Field(isin=REPORTING_STATUSES, description="on_time: every expected unit by the deadline; late: every unit, "
                               "some after the deadline; partial: some units missing after the deadline; missing: nothing after "
                               "the deadline; pending: not complete and the deadline has not passed")
    as_of: pl.Datetime("us", "UTC") = pa.Field(description="the time the statuses were evaluated at (UTC)")

    class Config:
        strict = True
        coerce = False
        unique = ["source_id", "epi_year", "epi_week"]


ENDEMIC_SCHEMA_VERSION = "1.0.0"


class EndemicChannel(pa.DataFrameModel):
    """Endemic channel of one series x target epi week x method (vigila/endemic.py)."""

    country_iso3: pl.Utf8 = pa.Field(str_matches=r"^[A-Z]{3}$", description="ISO 3166-1 alpha-3 code of the country")
    geo_level: pl.Utf8 = pa.Field(isin=["admin0", "admin1", "admin2", "admin3"],
                                  description="level of the series: admin0 national, admin1 state/departamento, ...")
    geo_code: pl.Utf8 = pa.Field(description="place of the series: the ISO3 code for a national series, else e.g. PE-LOR")
    disease: pl.Utf8 = pa.Field(isin=sorted(DISEASES), description="controlled disease code")
    epi_year: pl.Int32 = pa.Field(ge=1900, le=2100, description="target epidemiological year (the channel is for this year; "
                                  "its own counts are never in its baseline)")
    epi_week: pl.Int32 = pa.Field(ge=1, le=53, description="epidemiological week within epi_year; week 53 only when the series "
                                  "has a week 53 in epi_year (a baseline year without one contributes its week 52)")
    method: pl.Utf8 = pa.Field(isin=["quartile", "bortman"], description="quartile: Q1/Q2/Q3 of the baseline values (linear "
                               "interpolation, R type 7); bortman: exp(mean(ln(x+1)) -/+ k*sd) - 1 and the geometric mean")
    lower: pl.Float64 = pa.Field(nullable=True, ge=0, description="lower curve: below it is the success zone; null when fewer "
                                 "than min_years baseline values")
    median: pl.Float64 = pa.Field(nullable=True, ge=0, description="central curve (median, or geometric mean for bortman): "
                                  "safety zone from lower up to it, alert zone above it; null as lower")
    upper: pl.Float64 = pa.Field(nullable=True, ge=0, description="upper curve: above it is the epidemic zone; null as lower")
    years_used: pl.Int32 = pa.Field(ge=0, description="baseline values used: earlier years with a value for the week, "
                                    "declared epidemic years left out, at most `years` (vigila/endemic.yaml)")
    baseline_years: pl.Utf8 = pa.Field(str_matches=r"^(\d{4}(,\d{4})*)?$", description="the baseline's epi years, "
                                       "ascending and comma-separated, e.g. '2015,2016,2017,2018,2019'; empty when none")
    per: pl.Int64 = pa.Field(nullable=True, description="null: the channel is in cases; e.g. 100000: in cases per 100,000 "
                             "population")

    class Config:
        strict = True
        coerce = False
        unique = ["country_iso3", "geo_level", "geo_code", "disease", "epi_year", "epi_week", "method", "per"]
