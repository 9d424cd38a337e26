"""The harmonised weekly contract (`cases_weekly`, `cases_revisions`) and the quarantine record.

Input: eager polars frames produced by `vigila.ingest.harmonise`; output: pandera failure cases.
These models are the single source of the data dictionary (`vigila.warehouse.dictionary`).
"""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl

from vigila.core.vocab import AGE_GROUPS, CLASSIFICATIONS, DISEASES, SEXES

SCHEMA_VERSION = "1.2.0"   # 1.2.0: admin1_code, admin1_name (the parent of an admin2/admin3 place); age_band_source (a source age band kept, age_group source_band)

#: columns that identify one published count; a later issue of the same key supersedes it
KEY = ["source_id", "country_iso3", "geo_level", "geo_code", "disease", "classification",
       "sex", "age_group", "age_band_source", "epi_year", "epi_week"]


class CasesWeekly(pa.DataFrameModel):
    """Weekly case counts, one row per source x place x disease x classification x sex x age x week."""

    country_iso3: pl.Utf8 = pa.Field(str_matches=r"^[A-Z]{3}$", description="ISO 3166-1 alpha-3 code of the country")
    geo_level: pl.Utf8 = pa.Field(isin=["admin0", "admin1", "admin2", "admin3"],
                                  description="administrative level of the place: admin0 country, admin1 state/departamento, ...")
    geo_code: pl.Utf8 = pa.Field(str_matches=r"^[A-Z]{3}$|^[A-Z]{2}-[A-Z0-9]{1,3}$|^[A-Z]{3}-[0-9A-Za-z.]+$",
                                 description="place code: ISO3 at admin0, ISO 3166-2 (e.g. PE-LOR) at admin1, ISO3-national code below "
                                 "(the national statistics office's full code, zero-padded: ARG-06371 INDEC department, BRA-3550308 "
                                 "IBGE municipality, COL-05001 DIVIPOLA, PER-1501 UBIGEO province, CHL-13101 CUT comuna)")
    geo_name: pl.Utf8 = pa.Field(description="place name (ISO 3166 or national gazetteer spelling)")
    admin1_code: pl.Utf8 = pa.Field(nullable=True, str_matches=r"^[A-Z]{2}-[A-Z0-9]{1,3}$",
                                    description="ISO 3166-2 code of the admin1 the place lies in: the place itself at admin1, its "
                                    "state/province/departamento below (from the `place_codes` catalogue); null at admin0 and for "
                                    "admin2 places mapped one by one in value_maps.place")
    admin1_name: pl.Utf8 = pa.Field(nullable=True, description="ISO 3166-2 name of admin1_code")
    disease: pl.Utf8 = pa.Field(isin=sorted(DISEASES), description="controlled disease code; see the ICD-10 table in the data dictionary")
    classification: pl.Utf8 = pa.Field(isin=list(CLASSIFICATIONS), description="case classification (controlled vocabulary)")
    sex: pl.Utf8 = pa.Field(isin=list(SEXES), description="female | male | other | unknown | all (not broken down)")
    age_group: pl.Utf8 = pa.Field(isin=list(AGE_GROUPS), description="5-year band '00-04'..'80+', 'unknown', 'all' (not broken "
                                  "down), or 'source_band': the source's own band, which spans two harmonised bands (see age_band_source)")
    age_band_source: pl.Utf8 = pa.Field(nullable=True, str_matches=r"^[0-9.]+(-[0-9.]+|\+)[md]?$",
                                        description="when age_group is 'source_band': the source's band as declared in its "
                                        "age_bands, both ends included ('25-34', '65+'; 'm' months, 'd' days: '13-24m'), never "
                                        "re-banded; null otherwise (bands that nest are published as the harmonised band)")
    epi_year: pl.Int32 = pa.Field(ge=1900, le=2100, description="epidemiological year (derived from the week, never from a calendar 'Year' column)")
    epi_week: pl.Int32 = pa.Field(ge=1, le=53, description="epidemiological week within epi_year")
    week_start: pl.Date = pa.Field(description="first day of the epi week (Sunday for MMWR weeks, Monday for ISO weeks)")
    cases: pl.Int64 = pa.Field(ge=0, description="cases counted in the week")
    deaths: pl.Int64 = pa.Field(ge=0, nullable=True, description="deaths counted in the week; null when not reported")
    source_id: pl.Utf8 = pa.Field(description="source config id that produced the row")
    reporter_type: pl.Utf8 = pa.Field(isin=["ministry", "social_security", "other"], description="kind of institution reporting")
    issue_date: pl.Date = pa.Field(le=dt.date(2100, 1, 1), description="date the report was issued (what was known when)")
    run_id: pl.Utf8 = pa.Field(description="ingest run that published the row")

    class Config:
        strict = True
        coerce = False
        unique = KEY


class CasesRevision(CasesWeekly):
    """Every issue of every weekly count: `cases_weekly` is the latest issue per key."""

    ingested_at: pl.Datetime("us", "UTC") = pa.Field(description="when Vigila published this revision (UTC)")

    class Config:
        strict = True
        unique = [*KEY, "issue_date", "ingested_at"]  # a same-day correction is a later ingest


class QuarantineRecord(pa.DataFrameModel):
    """One failed check on one row of one source file."""

    source_id: pl.Utf8 = pa.Field(description="source config id")
    run_id: pl.Utf8 = pa.Field(description="ingest run")
    file_sha256: pl.Utf8 = pa.Field(str_matches=r"^[0-9a-f]{64}$", description="sha256 of the landed raw file")
    row: pl.Int64 = pa.Field(ge=0, description="1-based data row in the original file (header not counted); 0 for a file-level problem")
    column: pl.Utf8 = pa.Field(nullable=True, description="column of the original file (null when the check spans the row)")
    check: pl.Utf8 = pa.Field(description="name of the failed check, e.g. type:integer, greater_than_or_equal_to(0), unknown_place")
    value: pl.Utf8 = pa.Field(nullable=True, description="the offending value as text")
    severity: pl.Utf8 = pa.Field(isin=["error", "warning", "set_aside"],
                                 description="error: the row is not published; warning: published with the value "
                                 "replaced by 'unknown' (e.g. an impossible age in a line list); "
                                 "set_aside: valid but out of scope (e.g. yearly totals)")
    stage: pl.Utf8 = pa.Field(isin=["parse", "raw", "harmonise", "harmonised"], description="pipeline stage that raised it")
    cases: pl.Int64 = pa.Field(nullable=True, ge=0, description="the row's own cases (its count; 1 for a line-list case); "
                               "null when the count cannot be read. A row under several checks repeats them: count "
                               "cases over distinct (file_sha256, row)")
    deaths: pl.Int64 = pa.Field(nullable=True, ge=0, description="the row's own deaths, when the source maps deaths")

    class Config:
        strict = True


def polars_schema(model: type[pa.DataFrameModel]) -> dict[str, pl.DataType]:
    """Column name -> polars dtype of a model, e.g. to build an empty frame of the contract."""
    return {name: col.dtype.type for name, col in model.to_schema().columns.items()}
