"""Contracts of derived datasets: `alerts` (early detection per series-week and method), `reporting` (completeness),
`cases_reconciled` and `discrepancies` (reconciliation across reporters of one country).

Input: the eager polars frames `vigila.detect.alerts`, `vigila.ingest.completeness` and `vigila.regional.reconcile` build; output: pandera
validation (raises on a broken contract). The models are also the source of their sections of
the data dictionary.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from vigila.core.vocab import DISEASES

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
    """Reporting completeness and timeliness: one row per source x epi week (vigila/ingest/completeness.py)."""

    source_id: pl.Utf8 = pa.Field(description="source config id")
    epi_year: pl.Int32 = pa.Field(ge=1900, le=2100, description="epidemiological year (the source's convention: mmwr or iso)")
    epi_week: pl.Int32 = pa.Field(ge=1, le=53, description="epidemiological week within epi_year")
    week_start: pl.Date = pa.Field(description="first day of the epi week")
    expected: pl.Int64 = pa.Field(ge=0, description="reporting units expected for the week: the distinct place x disease pairs "
                                  "the source has ever published (1 per disease for a national reporter); 1 (the report) for a source that has "
                                  "published nothing yet and declares schedule.expected_from")
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
    """Endemic channel of one series x target epi week x method (vigila/regional/endemic.py)."""

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
                                    "declared epidemic years left out, at most `years` (vigila/regional/endemic.yaml)")
    baseline_years: pl.Utf8 = pa.Field(str_matches=r"^(\d{4}(,\d{4})*)?$", description="the baseline's epi years, "
                                       "ascending and comma-separated, e.g. '2015,2016,2017,2018,2019'; empty when none")
    per: pl.Int64 = pa.Field(nullable=True, description="null: the channel is in cases; e.g. 100000: in cases per 100,000 "
                             "population")

    class Config:
        strict = True
        coerce = False
        unique = ["country_iso3", "geo_level", "geo_code", "disease", "epi_year", "epi_week", "method", "per"]


RECONCILED_SCHEMA_VERSION = "1.0.0"
RECONCILED_BASES = ["authoritative", "fallback", "sum", "single"]


class CasesReconciled(pa.DataFrameModel):
    """One weekly count per country x place x disease x epi week, reconciled across the country's reporters
    (vigila/regional/reconcile.py, rules in vigila/regional/reconciliation.yaml)."""

    country_iso3: pl.Utf8 = pa.Field(str_matches=r"^[A-Z]{3}$", description="ISO 3166-1 alpha-3 code of the country")
    geo_level: pl.Utf8 = pa.Field(isin=["admin0", "admin1"], description="admin0 national, admin1 state/departamento")
    geo_code: pl.Utf8 = pa.Field(description="the country's ISO3 code (admin0) or the place's code, e.g. PE-LOR (admin1)")
    geo_name: pl.Utf8 = pa.Field(description="place name as published (admin0 without a published name: the ISO 3166 name)")
    disease: pl.Utf8 = pa.Field(isin=sorted(DISEASES), description="controlled disease code")
    epi_year: pl.Int32 = pa.Field(ge=1900, le=2100, description="epidemiological year (the used reporter's label; reporters are matched on the "
                                  "calendar week: an ISO week pairs with the MMWR week starting the day before)")
    epi_week: pl.Int32 = pa.Field(ge=1, le=53, description="epidemiological week within epi_year")
    week_start: pl.Date = pa.Field(description="first day of the week in the convention of the first reporter in `sources` "
                                   "(Sunday for MMWR weeks, Monday for ISO weeks), or of the place's first-ranked reporter "
                                   "when a label had to be changed to stay unique (problem week_relabelled)")
    cases: pl.Int64 = pa.Field(ge=0, description="cases in the week: the used reporter's weekly total (summed over classification, "
                               "sex and age group as for detection), or the sum of the reporters' totals (basis sum); a "
                               "reporter declared national_from: admin1 counts the sum of its admin1 rows nationally")
    basis: pl.Utf8 = pa.Field(isin=RECONCILED_BASES, description="authoritative: the first configured reporter covering the place "
                              "had the week; fallback: a lower-priority reporter filled a week the higher ones lack; sum: "
                              "complementary reporters summed; single: the only reporter of the place (country without a rule)")
    sources: pl.Utf8 = pa.Field(description="source_ids whose counts make `cases`, comma-joined in configured priority order")
    cross_checks: pl.Utf8 = pa.Field(nullable=True, description="other reporters with a count for the place-week, kept for "
                                     "comparison only (comma-joined, priority order; see `discrepancies`); null: none")
    run_id: pl.Utf8 = pa.Field(description="reconciliation run that published the row")
    computed_at: pl.Datetime("us", "UTC") = pa.Field(description="when the reconciliation ran (UTC)")

    class Config:
        strict = True
        coerce = False
        unique = ["country_iso3", "geo_level", "geo_code", "disease", "epi_year", "epi_week"]


DISCREPANCIES_SCHEMA_VERSION = "1.0.0"


class Discrepancy(pa.DataFrameModel):
    """Two reporters of the same population counting the same place-week (vigila/regional/reconcile.py)."""

    country_iso3: pl.Utf8 = pa.Field(str_matches=r"^[A-Z]{3}$", description="ISO 3166-1 alpha-3 code of the country")
    geo_level: pl.Utf8 = pa.Field(isin=["admin0", "admin1"], description="admin0 national, admin1 state/departamento")
    geo_code: pl.Utf8 = pa.Field(description="the country's ISO3 code (admin0) or the place's code (admin1)")
    disease: pl.Utf8 = pa.Field(isin=sorted(DISEASES), description="controlled disease code")
    epi_year: pl.Int32 = pa.Field(ge=1900, le=2100, description="source_a's epidemiological year (reporters are matched on the calendar week)")
    epi_week: pl.Int32 = pa.Field(ge=1, le=53, description="epidemiological week within epi_year")
    week_start: pl.Date = pa.Field(description="first day of the week in source_a's convention")
    source_a: pl.Utf8 = pa.Field(description="the higher-priority reporter (configured order; alphabetical for a country without a rule)")
    cases_a: pl.Int64 = pa.Field(ge=0, description="source_a's weekly total (its national figure as its rule declares)")
    source_b: pl.Utf8 = pa.Field(description="the lower-priority reporter")
    cases_b: pl.Int64 = pa.Field(ge=0, description="source_b's weekly total")
    difference: pl.Int64 = pa.Field(description="cases_b - cases_a")
    relative_difference: pl.Float64 = pa.Field(nullable=True, description="difference / max(cases_a, cases_b), in -1..1; "
                                               "null when both are 0")
    tolerance: pl.Float64 = pa.Field(ge=0, description="the configured relative tolerance for the country and disease")
    min_difference: pl.Int64 = pa.Field(ge=0, description="the configured absolute floor in cases (1 vs 2 cases is not a discrepancy)")
    exceeds: pl.Boolean = pa.Field(description="|difference| > min_difference and |relative_difference| > tolerance")
    run_id: pl.Utf8 = pa.Field(description="reconciliation run that published the row")

    class Config:
        strict = True
        coerce = False
        unique = ["country_iso3", "geo_level", "geo_code", "disease", "epi_year", "epi_week", "source_a", "source_b"]


SUMMARY_SCHEMA_VERSION = "1.0.0"

ZONES = ["success", "safety", "alert", "epidemic"]


class WeeklySummary(pa.DataFrameModel):
    """The regional weekly summary: one row per disease x place x epi week (vigila/regional/summary.py)."""

    disease: pl.Utf8 = pa.Field(isin=sorted(DISEASES), description="controlled disease code")
    country_iso3: pl.Utf8 = pa.Field(str_matches=r"^[A-Z]{3}$", description="ISO 3166-1 alpha-3 code of the country")
    country_name: pl.Utf8 = pa.Field(description="the country's common name (ISO 3166, via pycountry)")
    geo_level: pl.Utf8 = pa.Field(isin=["admin0", "admin1", "admin2", "admin3"],
                                  description="admin0 national, admin1 state/departamento")
    geo_code: pl.Utf8 = pa.Field(description="the country's ISO3 code (admin0) or the place's code (admin1, e.g. PE-LOR)")
    geo_name: pl.Utf8 = pa.Field(nullable=True, description="place name")
    epi_year: pl.Int32 = pa.Field(ge=1900, le=2100, description="epidemiological year (the reporter's convention: MMWR weeks "
                                  "start on Sunday, ISO weeks on Monday)")
    epi_week: pl.Int32 = pa.Field(ge=1, le=53, description="epidemiological week within epi_year")
    week_start: pl.Date = pa.Field(description="first day of the epi week")
    cases: pl.Int64 = pa.Field(ge=0, nullable=True, description="reconciled weekly cases (cases_reconciled); null: nobody "
                               "reported the week (it lies between the series' first report and the region's latest week)")
    sources: pl.Utf8 = pa.Field(nullable=True, description="reporters whose counts make `cases` (comma-joined source ids); for a "
                                "week not reported, the reporters of the series' last reported week")
    basis: pl.Utf8 = pa.Field(nullable=True, description="how `cases` was reconciled: authoritative | fallback | sum | single")
    population: pl.Int64 = pa.Field(ge=0, nullable=True, description="population of the place (latest configured year not after "
                                    "epi_year); null when none is configured")
    incidence_100k: pl.Float64 = pa.Field(ge=0, nullable=True, description="cases per 100,000 population in the week")
    prev4_mean: pl.Float64 = pa.Field(ge=0, nullable=True, description="mean weekly cases of the previous change_weeks (default 4) "
                                      "weeks; null when any of them was not reported")
    change_prev4: pl.Float64 = pa.Field(nullable=True, description="cases / prev4_mean - 1 (0.5 = 50 % more); null when "
                                        "prev4_mean is 0 or null")
    ytd_cases: pl.Int64 = pa.Field(ge=0, description="cases of epi_year up to and including this week (weeks not reported count 0)")
    ytd_previous_mean: pl.Float64 = pa.Field(ge=0, nullable=True, description="mean of ytd_cases at the same epi week over the "
                                             "previous ytd_years (default 5) years whose weeks 1..w were all reported (a year "
                                             "without week 53 lends its week-52 total to week 53)")
    ytd_ratio: pl.Float64 = pa.Field(ge=0, nullable=True, description="ytd_cases / ytd_previous_mean; null when a week "
                                   "1..w of this year was not reported (it would count as 0)")
    endemic_method: pl.Utf8 = pa.Field(nullable=True, description="the endemic channel giving the zone: bortman | quartile")
    endemic_lower: pl.Float64 = pa.Field(nullable=True, description="lower line of the endemic channel for the week")
    endemic_median: pl.Float64 = pa.Field(nullable=True, description="central line of the endemic channel for the week")
    endemic_upper: pl.Float64 = pa.Field(nullable=True, description="upper line of the endemic channel (the epidemic threshold)")
    endemic_zone: pl.Utf8 = pa.Field(isin=ZONES, nullable=True, description="success: cases < lower; safety: lower <= cases <= "
                                     "median; alert: median < cases <= upper; epidemic: cases > upper; null without a channel")
    threshold: pl.Float64 = pa.Field(nullable=True, description="upper bound of the detection method threshold_method for the week, "
                                     "computed on this series' own (reconciled) counts; null when the method gave none")
    threshold_method: pl.Utf8 = pa.Field(nullable=True, description="the detection method label whose bound is `threshold`, e.g. ears_C2")
    alarm: pl.Boolean = pa.Field(nullable=True, description="any configured detection method (vigila/detect/detection.yaml) alarmed on "
                                 "this series' reconciled count this week; null when no method evaluated the week")
    alarm_methods: pl.Utf8 = pa.Field(nullable=True, description="methods that alarmed (comma-joined), null when none")
    reporting_status: pl.Utf8 = pa.Field(isin=REPORTING_STATUSES, nullable=True, description="the worst reporting status "
                                         "(dataset `reporting`) of the week's reporters, when they report for this country "
                                         "alone; null for a regional compilation (its status is about all its countries)")
    completeness: pl.Float64 = pa.Field(ge=0, le=1, nullable=True, description="the lowest reporting completeness of the week's "
                                       "reporters (one-country reporters only, as reporting_status)")
    signal: pl.Boolean = pa.Field(description="the week is a signal: an alarm, or a zone listed in summary.yaml signal.zones")
    signal_note: pl.Utf8 = pa.Field(nullable=True, description="why the numbers need care: 'not reported this week', 'reporting "
                                    "late: counts may be incomplete', 'fallback reporter ...'")
    run_id: pl.Utf8 = pa.Field(description="summary run that published the row")

    class Config:
        strict = True
        coerce = False
        unique = ["disease", "country_iso3", "geo_level", "geo_code", "epi_year", "epi_week"]
