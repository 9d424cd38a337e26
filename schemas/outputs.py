"""Contracts of derived datasets: `alerts` (early-detection results per series-week and method).

Input: the eager polars frame `vigila.alerts` builds; output: pandera validation (raises on a
broken contract). The model is also the source of the alerts section of the data dictionary.
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
