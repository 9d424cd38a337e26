"""Source configuration: a source YAML layered over `defaults.yaml` -> a validated `SourceConfig`.

Errors a user can make (typo, unknown key, bad value) raise `ConfigError` with one line naming
the file, the line and the key.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import zoneinfo
from pathlib import Path
from typing import Any, Literal

import pycountry
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")

Shape = Literal["weekly_counts", "cumulative_counts", "line_list"]
Format = Literal["auto", "csv", "xlsx", "json", "parquet", "dhis2", "fhir", "dbc", "dbf"]   # dbc: DATASUS/SINAN .dbc


class ConfigError(ValueError):
    """A source config problem, already phrased as one line for the user."""


class Strict(BaseModel):
    """Config models: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Reporter(Strict):
    institution: str = Field(description="who publishes the report, e.g. 'MINSA Peru - CDC'")
    type: Literal["ministry", "social_security", "other"] = "other"


class ParseOptions(Strict):
    encoding: str = "auto"
    delimiter: str = "auto"
    decimal: Literal[".", ","] = "."
    thousands: str | None = None
    date_format: str = "auto"
    na_values: list[str] = Field(default_factory=list)
    sheet: str | None = None
    json_records_path: str | None = None

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        if v != "auto":
            import codecs

            try:
                codecs.lookup(v)
            except LookupError:
                raise ValueError(f"unknown encoding {v!r}") from None
        return v


class Limits(Strict):
    max_bytes: int = Field(gt=0)
    max_decompressed_bytes: int = Field(default=8 * 2**30, gt=0)      # gzip / XLSX content expanded beyond this is refused
    max_compression_ratio: float = Field(default=100.0, gt=1)        # expanded / compressed beyond this: a bomb, refused
    max_rows: int = Field(default=500_000_000, gt=0)                  # more data rows than this: refused while reading
    max_value_chars: int = Field(default=200, ge=20)                  # longer values are cut in reports and messages
    future_weeks: int = Field(default=1, ge=0)                        # weeks starting this many weeks after the issue date are implausible
    min_epi_year: int = Field(default=1900, ge=1800)                  # earlier epi years are implausible
    max_quarantined_share: float = Field(default=0.05, ge=0, le=1)   # a run quarantining more of its rows or cases is rejected
    min_published_rows: int = Field(default=1, ge=0)                 # a run publishing fewer rows is rejected (0: allowed)


class HttpAuth(Strict):
    """How an HTTP source authenticates. Secrets are never in the config: only the names of the
    environment variables (or of the Prefect Secret block) that hold them."""

    type: Literal["none", "basic", "bearer", "api_key"] = "none"
    username_env: str | None = None     # basic: env var holding the user name
    password_env: str | None = None     # basic: env var holding the password
    token_env: str | None = None        # bearer / api_key: env var holding the token or key
    header: str = "X-API-Key"           # api_key: request header carrying the key
    query_param: str | None = None      # api_key: send the key as this query parameter instead of a header
    secret_block: str | None = None     # name of a Prefect Secret block holding the password / token (instead of *_env)

    @model_validator(mode="after")
    def _secrets_named(self) -> HttpAuth:
        if self.type == "basic" and not (self.username_env and (self.password_env or self.secret_block)):
            raise ValueError("http.auth basic needs username_env and password_env (or secret_block)")
        if self.type in ("bearer", "api_key") and not (self.token_env or self.secret_block):
            raise ValueError(f"http.auth {self.type} needs token_env (or secret_block)")
        return self


class Pagination(Strict):
    type: Literal["none", "next_link", "offset_limit"] = "none"
    next_link: str = "header"           # next_link: "header" (HTTP `Link: <url>; rel="next"`) or a dotted JSON path, e.g. "result._links.next"
    records: str | None = None          # dotted JSON path to each page's records; null: csv.json_records_path
    limit: int = Field(default=1000, gt=0)        # offset_limit: page size
    limit_param: str = "limit"          # offset_limit: query parameter of the page size
    offset_param: str = "offset"        # offset_limit: query parameter of the offset
    max_pages: int = Field(default=10000, gt=0)   # more pages than this fails the fetch (never a silent cut)


class HttpOptions(Strict):
    """Fetching `http://` / `https://` locations (connectors/http.py)."""

    auth: HttpAuth = Field(default_factory=HttpAuth)
    pagination: Pagination = Field(default_factory=Pagination)
    headers: dict[str, str] = Field(default_factory=dict)   # extra request headers (no secrets: use auth)
    timeout_seconds: float = Field(default=30.0, gt=0)       # connect / read timeout of each request
    retries: int = Field(default=3, ge=0)                    # retries of one request on 5xx, 429, 408, timeouts, dropped connections
    backoff_seconds: float = Field(default=1.0, ge=0)        # wait before retry n: backoff_seconds * 2**(n-1), unless Retry-After says
    max_wait_seconds: float = Field(default=60.0, ge=0)      # longest single wait; a longer Retry-After fails the fetch
    conditional: bool = True                                 # send If-None-Match / If-Modified-Since (unpaginated reports)


class IssueDate(Strict):
    column: str | None = None
    fixed: dt.date | None = None


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def parse_deadline(text: str) -> tuple[int, int, int]:
    """'tue 12:00' -> (weekday 0=Monday, hour, minute); ValueError unless '<weekday> HH:MM'."""
    m = re.fullmatch(r"\s*([A-Za-z]+)\s+(\d{1,2}):(\d{2})\s*", text or "")
    word = m.group(1).lower() if m else ""
    day = WEEKDAYS.index(word) if word in WEEKDAYS else WEEKDAY_NAMES.index(word) if word in WEEKDAY_NAMES else None
    if day is None or int(m.group(2)) > 23 or int(m.group(3)) > 59:
        raise ValueError(f"deadline {text!r} must be '<weekday> HH:MM', e.g. 'tue 12:00' (weekday: mon..sun)")
    return day, int(m.group(2)), int(m.group(3))


class Schedule(Strict):
    cron: str | None = None
    timezone: str = "UTC"
    deadline: str | None = None         # when week W's report is due: '<weekday> HH:MM' in the week after W, in `timezone`
    expected_from: dt.date | None = None  # the first week a report is owed for (any date in it): until the source
                                        # publishes, its weeks from there on are missing and it can be overdue

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, v: str | None) -> str | None:
        if v is not None:
            day, hour, minute = parse_deadline(v)
            return f"{WEEKDAYS[day]} {hour:02d}:{minute:02d}"
        return v

    @field_validator("timezone")
    @classmethod
    def _known_tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown IANA timezone {v!r}") from None
        return v

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, v: str | None) -> str | None:
        if v is not None and len(v.split()) != 5:
            raise ValueError(f"cron {v!r} must have 5 fields (minute hour day month weekday)")
        return v


class Columns(Strict):
    """Canonical field -> column name in the file. Unset fields are absent from the file."""

    country: str | None = None          # country name or ISO code (multi-country files)
    place: str | None = None            # place name or code at `geo_level` (a national code with `place_codes`)
    place_parent: str | None = None     # with place_codes at admin2/admin3: the column of the parent's code or name, when
                                        # `place` holds a code unique only within its parent (Argentine department '371' of province '06')
    date: str | None = None             # any date inside the week (onset, notification, report)
    week_start: str | None = None       # first day of the epi week
    epi_year: str | None = None         # epidemiological year (with epi_week)
    epi_week: str | None = None         # epidemiological week 1..53 (with epi_year)
    epi_yearweek: str | None = None     # epi year and week in one value, YYYYWW (e.g. SINAN SEM_NOT / SEM_PRI: 202407)
    cases: str | None = None            # count (weekly or cumulative by shape); absent for line lists
    deaths: str | None = None           # count of deaths, optional
    disease: str | None = None          # disease name when a file holds several
    classification: str | None = None   # case classification
    sex: str | None = None              # sex of the case or the count (M/F/... and value_maps.sex)
    age: str | None = None              # age (line lists): in years, or in the unit of `age_unit`, or coded (`age_coding`)
    age_unit: str | None = None         # unit of each row's age: years / months / days / hours (value_maps.age_unit)
    age_group: str | None = None        # an already-banded age group
    resolution: str | None = None       # temporal resolution of the row (Week, Year, ...)
    issue_date: str | None = None       # report issue date per row, optional


class ValueMaps(Strict):
    """Raw value -> controlled value; compared case- and accent-insensitively."""

    classification: dict[str, str] = Field(default_factory=dict)   # raw classification -> suspected / probable / confirmed / ...
    sex: dict[str, str] = Field(default_factory=dict)              # raw sex -> female / male / other / unknown / all
    age_group: dict[str, str] = Field(default_factory=dict)        # raw age band -> a harmonised band ('00-04'...'80+', unknown, all)
    disease: dict[str, str] = Field(default_factory=dict)          # raw disease name -> a controlled disease code
    place: dict[str, str] = Field(default_factory=dict)      # place name -> geo code
    deaths: dict[str, Literal["yes", "no"]] = Field(default_factory=dict)   # line lists: raw death flag -> yes / no
    age_unit: dict[str, Literal["years", "months", "days", "hours", "minutes"]] = Field(default_factory=dict)  # raw unit -> unit
    country: dict[str, str] = Field(default_factory=dict)    # country name -> ISO3


class Constants(Strict):
    """Values of harmonised fields that the file does not carry."""

    classification: str = "total"      # the classification of every row when the file maps none
    sex: str = "all"                   # the sex of every row when the file maps none (all: not broken down)
    age_group: str = "all"             # the age group of every row when the file maps none


FOOTERS = ("Fonte:", "Fuente:", "Source:", "Notas:", "Nota:", "Notes:")   # usual first words of a table's footnotes


class RowLevel(Strict):
    """Cross-tab rows: a regex on the row label naming one level of the table (a Total row, subtotal rows, leaves)."""

    level: str = Field(pattern=r"^[a-z][a-z0-9_]*$")   # the level's name, e.g. total, region, municipality
    pattern: str                       # regex searched in the row label; named groups become columns of it and of the rows under it


class PeriodColumn(Strict):
    """Cross-tab columns: a regex on the header text saying what the column's cells are."""

    kind: Literal["week", "total", "other"]   # week: counts (published); total: the row's Total (set aside, compared); other: months... (set aside)
    pattern: str                       # regex searched in the header text; named groups (e.g. year, week) become columns


class Layout(Strict):
    """Cross-tab (`kind: crosstab`, e.g. Brazil's TabNet exports, bulletin tables in XLSX): row labels down, one column
    per week (and Totals) across, title lines above, footnotes below. Each cell becomes a row with the columns: the
    label columns (under their header texts), the named groups of the `rows`, `columns` and `title_fields` patterns,
    `header` (the cell's column header) and `value` (the cell text, zero markers read as 0); map them in `columns:` as
    for any weekly_counts file. Cells of levels other than `publish` (a Total row, subtotal rows) and of `total` /
    `other` columns are set aside (reported, never added to the weeks); quarantine and report rows are the file's
    own lines (XLSX: sheet rows) and columns its header texts. `csv.na_values` does not apply to the cells: say what
    a marker means with `zero_markers` / `missing_markers` (an empty cell, unless declared, is a missing count)."""

    kind: Literal["crosstab"] = "crosstab"   # crosstab: row labels down, week (and Total) columns across; the only kind yet
    header_line: int | None = Field(default=None, ge=1)   # line (XLSX: sheet row) of the first header row; null: the first with a week header
    header_rows: int = Field(default=1, ge=1, le=5)   # header rows: a column's texts joined with " | ", merged cells filled first
    label_columns: int = Field(default=1, ge=1)   # leading columns holding row labels (kept under their header texts)
    rows: list[RowLevel] = Field(min_length=1)   # row levels, outermost first; a row matching none is quarantined.
    publish: str                       # the level whose cells are published; other levels' cells are set aside
    total_level: str | None = None     # the level of the table's Total row: compared with the published rows (report note)
    columns: list[PeriodColumn] = Field(min_length=1)   # header patterns, first match wins; an unmatched column refuses the file.
    title_fields: list[str] = Field(default_factory=list)   # regexes on the lines above the header; named groups become columns of every cell
    footer: list[str] = Field(default_factory=lambda: list(FOOTERS))   # a line whose first cell starts with one of these ends the table
    zero_markers: list[str] = Field(default_factory=list)    # cell texts meaning zero (TabNet: "-")
    missing_markers: list[str] = Field(default_factory=list)  # cell texts meaning not reported: quarantined (`not_reported`)

    @model_validator(mode="after")
    def _coherent(self) -> Layout:
        levels = [r.level for r in self.rows]
        for name in (self.publish, self.total_level):
            if name is not None and name not in levels:
                raise ValueError(f"layout level {name!r} is not one of rows: {', '.join(levels)}")
        if "week" not in {c.kind for c in self.columns}:
            raise ValueError("layout.columns needs a `week` column pattern")
        for text in [*(r.pattern for r in self.rows), *(c.pattern for c in self.columns), *self.title_fields]:
            try:
                re.compile(text)
            except re.error as e:
                raise ValueError(f"layout pattern {text!r}: {e}") from None
        return self


# --------------------------------------------------------------------------- API mappings
# The `dhis2:` and `fhir:` blocks of a source config. Defined here so that the config never imports
# connectors/ (connectors/dhis2.py and connectors/fhir.py import these models and parse with them).


# ISO infix -> (DHIS2 period type, first weekday (Monday = 0), Vigila week system)
WEEKLY: dict[str, tuple[str, int, str]] = {
    "W": ("Weekly", 0, "iso"),
    "WedW": ("WeeklyWednesday", 2, "wednesday"),
    "ThuW": ("WeeklyThursday", 3, "thursday"),
    "FriW": ("WeeklyFriday", 4, "friday"),
    "SatW": ("WeeklySaturday", 5, "saturday"),
    "SunW": ("WeeklySunday", 6, "mmwr"),
}


def week_system_of(period_type: str) -> str:
    """Vigila's week system of a weekly DHIS2 period type: Weekly -> iso, WeeklySunday -> mmwr, ..."""
    return next(system for t, _, system in WEEKLY.values() if t == period_type)


class Breakdown(Strict):
    """What a category option combo says about its values; unset fields say nothing."""

    classification: str | None = None
    sex: str | None = None
    age_group: str | None = None

    @model_validator(mode="after")
    def _controlled(self) -> Breakdown:
        from vigila.core.vocab import AGE_GROUPS, CLASSIFICATIONS, SEXES

        for field, allowed in (("classification", CLASSIFICATIONS), ("sex", SEXES), ("age_group", AGE_GROUPS)):
            v = getattr(self, field)
            if v is not None and v not in allowed:
                raise ValueError(f"{field} {v!r} is not one of {', '.join(allowed)}")
        return self


class DataElement(Breakdown):
    """What a data element counts: its disease, and any breakdown it fixes for all its values."""

    disease: str

    @field_validator("disease")
    @classmethod
    def _known(cls, v: str) -> str:
        from vigila.core.vocab import DISEASES, require_known

        require_known([v], DISEASES, "disease")
        return v


class OrgUnitNames(Strict):
    """`dhis2.org_unit_names`: org units matched by name (case, accents, punctuation ignored) to the
    admin1 place table of `country` (ISO 3166-2 names plus vigila/reference/admin1/<ISO3>.yaml aliases, and
    the health areas of vigila/reference/admin1/parts/<ISO3>.yaml, e.g. Guatemala's DAS Petén Norte: parts
    of one admin1 are summed into it with `aggregate: sum`)."""

    country: str                             # ISO 3166-1 alpha-3 whose admin1 names and aliases name the org units, e.g. LAO
    strip: str = r"^\s*\d+[\s.)_-]+"         # regex removed from a name before matching: the unit numbers of "01 Vientiane Capital"

    @field_validator("country")
    @classmethod
    def _country(cls, v: str) -> str:
        from vigila.core.places import admin1_table

        admin1_table(v.upper())              # ValueError for an unknown code
        return v.upper()

    @field_validator("strip")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"strip {v!r} is not a regular expression ({e})") from None
        return v


class Dhis2Mapping(Strict):
    """The `dhis2:` block of a source config: DHIS2 identifiers -> Vigila vocabulary.

    Keys are what the response carries: UIDs by default, codes with `idScheme=CODE`. A field
    set by the category option combo wins over the data element's; unset fields take the
    defaults (classification total, sex all, age_group all)."""

    data_elements: dict[str, DataElement] = Field(min_length=1)   # data element (UID or code) -> {disease, classification...}
    category_option_combos: dict[str, Breakdown] = Field(default_factory=dict)   # combo -> {sex, age_group, classification}
    org_units: dict[str, str] = Field(default_factory=dict)          # org unit -> geo code at the source's geo_level
    attribute_option_combos: list[str] | None = None                 # accepted ones; null: any
    period_types: list[str] | None = None                            # accepted weekly types, e.g. [WeeklySunday]; null: any
    org_unit_names: OrgUnitNames | None = None   # {country: LAO[, strip: regex]}: org units not in org_units matched by their metaData.items names to that country's admin1 names and aliases: no UID list
    data_set: str | None = None   # data set UID: its ACTUAL_REPORTS / EXPECTED_REPORTS are fetched with the data; an absent cell of a reported org unit x week is a published zero

    @field_validator("period_types")
    @classmethod
    def _weekly_types(cls, v: list[str] | None) -> list[str] | None:
        known = [t for t, _, _ in WEEKLY.values()]
        bad = [t for t in v or [] if t not in known]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a weekly DHIS2 period type ({', '.join(known)})")
        return v


def fhir_key(text: Any) -> str:
    """Mapping keys and FHIR codes are compared trimmed and case-insensitively."""
    return str(text).strip().casefold()


def fhir_keyed(table: dict[str, str]) -> dict[str, str]:
    return {fhir_key(k): v for k, v in table.items()}


class CountRule(Strict):
    """A population whose count is a number of cases, and the classification it means."""

    population: str                 # population.code: "system|code", "code" or code.text, e.g. initial-population
    classification: str = "total"   # vigila.core.vocab.CLASSIFICATIONS
    group: str | None = None        # only in the group with this group.code (same forms); null: any group

    @field_validator("classification")
    @classmethod
    def _known(cls, v: str) -> str:
        from vigila.core.vocab import CLASSIFICATIONS, require_known

        require_known([v], CLASSIFICATIONS, "classification")
        return v

    @field_validator("population", "group")
    @classmethod
    def _norm(cls, v: str | None) -> str | None:
        return None if v is None else fhir_key(v)


class StratifierRule(Strict):
    """A stratifier (stratifier.code, or a component's code) and what its stratum values mean."""

    code: str                                           # "system|code", "code" or code.text
    dimension: Literal["sex", "age_group", "place"]
    values: dict[str, str] = Field(default_factory=dict)  # stratum value ("system|code", code or text) -> canonical value

    @field_validator("code")
    @classmethod
    def _norm(cls, v: str) -> str:
        return fhir_key(v)

    @field_validator("values")
    @classmethod
    def _canonical(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        from vigila.core.vocab import AGE_GROUPS, SEXES

        allowed = {"sex": SEXES, "age_group": AGE_GROUPS}.get(info.data.get("dimension"))
        bad = [x for x in v.values() if allowed and x not in allowed]
        if bad:
            raise ValueError(f"{info.data['dimension']} value {bad[0]!r} is not one of {', '.join(allowed)}")
        return fhir_keyed(v)


class PlaceRule(Strict):
    """Where a report's place comes from: its `subject` (R4: a Location or Group) or its `reporter`
    (Organization, Location, ...), matched by reference ("Location/loreto", also the end of an
    absolute URL), identifier ("system|value" or value) or display; "none" for national reports."""

    source: Literal["subject", "reporter", "none"] = "subject"   # which reference names the place; none: national reports
    codes: dict[str, str] = Field(default_factory=dict)   # reference / identifier / display -> geo code

    @field_validator("codes")
    @classmethod
    def _norm(cls, v: dict[str, str]) -> dict[str, str]:
        return fhir_keyed(v)

    @model_validator(mode="after")
    def _table(self) -> PlaceRule:
        if self.source != "none" and not self.codes:
            raise ValueError(f"place.source {self.source} needs place.codes (reference or identifier -> geo code)")
        return self


class FhirMapping(Strict):
    """How a reporter's MeasureReports become Vigila rows (the source's `fhir:` block)."""

    measures: dict[str, str] = Field(min_length=1)   # Measure canonical URL (any |version) -> disease code
    counts: list[CountRule] = Field(min_length=1)    # which population counts are cases, of which classification
    stratifiers: list[StratifierRule] = Field(default_factory=list)   # stratifier code -> sex / age / place breakdown
    place: PlaceRule = Field(default_factory=PlaceRule)
    epiweek: Literal["mmwr", "iso"] = "mmwr"          # period.start must open an epi week of this system, 7 days long
    country: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")   # ISO3 of every row, when one country
    report_types: list[Literal["individual", "subject-list", "summary", "data-collection"]] = ["summary", "subject-list"]  # MeasureReport.type accepted
    ignore_populations: list[str] = Field(default_factory=list)   # population codes out of scope (set aside), e.g. denominator
    ignore_stratifiers: list[str] = Field(default_factory=list)   # stratifier codes out of scope (set aside)

    @field_validator("measures")
    @classmethod
    def _diseases(cls, v: dict[str, str]) -> dict[str, str]:
        from vigila.core.vocab import DISEASES, require_known

        require_known(v.values(), DISEASES, "disease")
        return {fhir_key(url.split("|")[0]): d for url, d in v.items()}

    @field_validator("ignore_populations", "ignore_stratifiers")
    @classmethod
    def _norm(cls, v: list[str]) -> list[str]:
        return [fhir_key(x) for x in v]

    @model_validator(mode="after")
    def _unique(self) -> FhirMapping:
        codes = [s.code for s in self.stratifiers]
        if len(set(codes)) != len(codes):
            raise ValueError("stratifiers: each code once")
        return self


class SourceConfig(Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")   # unique source id: a lower-case letter, then letters, digits, _ (2-63)
    description: str = ""              # one line for people: what the report is
    location: str | None = None        # where reports arrive: path, glob or drop folder (relative to the YAML), or an http(s):// URL
    country: str | None = None         # ISO 3166-1 alpha-3 of every row (a one-country report); else map columns.country
    reporter: Reporter
    diseases: list[str] = Field(min_length=1)   # controlled disease codes the report carries (vigila.core.vocab.DISEASES)
    format: Format = "auto"
    shape: Shape = "weekly_counts"
    epiweek: Literal["mmwr", "iso"] = "mmwr"
    geo_level: Literal["admin0", "admin1", "admin2", "admin3"] = "admin0"
    place_codes: str | None = None     # national code catalogue of columns.place (vigila/reference/catalogues: indec, snvs, ibge,
                                       # divipola, ubigeo, cut, inegi, inec_ec, ine_gt), instead of value_maps.place lines
    columns: Columns
    value_maps: ValueMaps = Field(default_factory=ValueMaps)
    constants: Constants = Field(default_factory=Constants)
    exclude: dict[str, list[str]] = Field(default_factory=dict)   # field -> raw values that are out of scope
    include: dict[str, list[str]] = Field(default_factory=dict)   # field -> the only raw values in scope (others set aside)
    aggregate: Literal["none", "sum"] = "none"   # several rows per place-week: sum them (sub-areas, age bands...)
    row_key: list[str] = Field(default_factory=list)   # file columns identifying one row; same key + other values = conflict
    identical_rows: Literal["count", "drop"] = "count"  # whole lines repeated: count each (warning) or keep the first
    age_coding: Literal["none", "sinan"] = "none"      # sinan: NU_IDADE_N style codes (4025 = 25 years, 3006 = 6 months)
    age_bands: dict[str, list] = Field(default_factory=dict)   # columns.age_group label -> [from, to] or [from, to, unit]
                                       # (both ends included; to null: open-ended; unit years|months|days): a band inside
                                       # one harmonised band is that band, any other is kept (age_band_source)
    csv: ParseOptions = Field(default_factory=ParseOptions)
    layout: Layout | None = None       # a file that is not one record per line (a cross-tab): how its cells become rows
    limits: Limits
    http: HttpOptions = Field(default_factory=HttpOptions)
    dhis2: Any = None                  # Dhis2Mapping: DHIS2 ids -> geo codes, disease, breakdowns
    fhir: Any = None                   # FhirMapping: MeasureReport measures/strata -> the contract
    weekly_resolution_values: list[str] = Field(default_factory=list)
    issue_date: IssueDate = Field(default_factory=IssueDate)
    schedule: Schedule = Field(default_factory=Schedule)
    licence: str = ""                  # licence / attribution of the data, shown in the catalog

    @field_validator("dhis2", "fhir", mode="before")
    @classmethod
    def _api_mapping(cls, v: Any, info: ValidationInfo) -> Any:
        """Validated by its mapping model (above; connectors/ parse with the same models)."""
        if v is None:
            return None
        model = Dhis2Mapping if info.field_name == "dhis2" else FhirMapping
        return v if isinstance(v, model) else model.model_validate(v)

    @field_validator("age_bands")
    @classmethod
    def _age_bands(cls, v: dict[str, list]) -> dict[str, list]:
        from vigila.core.places import normalise

        seen: dict[str, str] = {}
        for label, band in v.items():
            ok = isinstance(band, list) and len(band) in (2, 3) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in band[:1]) and (
                band[1] is None or (isinstance(band[1], (int, float)) and not isinstance(band[1], bool) and band[1] >= band[0]))
            if not ok or band[0] < 0 or (len(band) == 3 and band[2] not in ("years", "months", "days")):
                raise ValueError(f"age_bands[{label!r}]: {band!r} must be [from, to] or [from, to, unit] with 0 <= from <= to "
                                 "(to null: open-ended; unit: years, months or days), e.g. [25, 34] or [29, 365, days]")
            key = normalise(label)
            if key in seen and v[seen[key]] != band:
                raise ValueError(f"age_bands: {seen[key]!r} and {label!r} are the same label once case, accents and "
                                 "punctuation are ignored, with different bands")
            seen[key] = label
        return v

    @field_validator("country")
    @classmethod
    def _iso3(cls, v: str | None) -> str | None:
        if v is not None and pycountry.countries.get(alpha_3=v.upper()) is None:
            raise ValueError(f"{v!r} is not an ISO 3166-1 alpha-3 country code")
        return v.upper() if v else v

    @field_validator("diseases")
    @classmethod
    def _known_diseases(cls, v: list[str]) -> list[str]:
        from vigila.core.vocab import DISEASES, require_known

        require_known(v, DISEASES, "disease")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> SourceConfig:
        c = self.columns
        if self.country is None and c.country is None:
            raise ValueError("set `country` (ISO3) or map `columns.country`")
        if not (c.date or c.week_start or (c.epi_year and c.epi_week) or c.epi_yearweek):
            raise ValueError("map a time column: columns.date, columns.week_start, columns.epi_year + columns.epi_week, "
                             "or columns.epi_yearweek")
        if c.epi_yearweek and (c.epi_year or c.epi_week):
            raise ValueError("columns.epi_yearweek carries the epi year and week: remove columns.epi_year / epi_week")
        if bool(c.epi_year) != bool(c.epi_week):
            raise ValueError("columns.epi_year and columns.epi_week go together")
        if self.shape == "line_list" and c.cases:
            raise ValueError("a line_list has one row per case: remove columns.cases")
        if self.shape != "line_list" and not c.cases:
            raise ValueError(f"shape {self.shape} needs columns.cases")
        if self.geo_level != "admin0" and not c.place:
            raise ValueError(f"geo_level {self.geo_level} needs columns.place")
        self._place_codes()
        for key in ("exclude", "include"):
            unmapped = sorted(set(getattr(self, key)) - set(self.mapped))
            if unmapped:
                raise ValueError(f"{key}.{unmapped[0]}: the field is not mapped in columns")
        both = sorted(set(self.exclude) & set(self.include))
        if both:
            raise ValueError(f"include.{both[0]} and exclude.{both[0]}: use one of them for a field")
        if self.shape == "line_list" and (self.aggregate != "none" or self.row_key):
            raise ValueError("a line_list counts its rows: aggregate and row_key are for weekly or cumulative counts")
        if self.aggregate != "none" and self.row_key:
            raise ValueError("set aggregate: sum or row_key, not both (row_key already sums rows of different keys)")
        if c.age_unit and not c.age:
            raise ValueError("columns.age_unit needs columns.age")
        if self.age_bands and not c.age_group:
            raise ValueError("age_bands label the values of columns.age_group: map columns.age_group")
        if "source_band" in self.value_maps.age_group.values():
            raise ValueError("value_maps.age_group cannot map to source_band: declare the band in age_bands")
        if (c.age_unit or self.age_coding != "none") and self.shape != "line_list":
            raise ValueError("columns.age_unit and age_coding are for line lists (ages of cases)")
        if c.age_unit and self.age_coding != "none":
            raise ValueError("age_coding sinan carries its own unit: remove columns.age_unit")
        self._api_week_system()
        if len(self.diseases) > 1 and not c.disease:
            raise ValueError("several diseases need columns.disease to tell rows apart")
        page = self.http.pagination
        if page.type != "none" and self.format not in ("csv", "json", "dhis2", "fhir"):
            raise ValueError(f"http.pagination {page.type} needs format: csv, json, dhis2 or fhir")
        if page.type == "next_link" and page.next_link != "header" and self.format not in ("json", "dhis2", "fhir"):
            raise ValueError("http.pagination.next_link as a JSON path needs format: json (or next_link: header)")
        return self

    def _place_codes(self) -> None:
        """`place_codes` names a catalogue of the source's country; `columns.place_parent` needs one, below admin1."""
        if self.place_codes is not None:
            from vigila.core import catalogues

            owner = catalogues.country_of(self.place_codes)
            if self.country != owner:
                raise ValueError(f"place_codes {self.place_codes} is a catalogue of {owner}: set `country: {owner}` "
                                 "(a catalogue names the places of one country)")
            if self.geo_level == "admin0":
                raise ValueError("place_codes needs geo_level admin1, admin2 or admin3")
            if self.value_maps.place and self.geo_level != "admin1":
                raise ValueError("value_maps.place is not read with place_codes below admin1: the catalogue names the places "
                                 "(fix the file's codes, or name another catalogue)")
        if self.columns.place_parent and (self.place_codes is None or self.geo_level in ("admin0", "admin1")):
            raise ValueError("columns.place_parent needs place_codes and geo_level admin2 or admin3 (at admin1 map "
                             "columns.place to the admin1 column alone)")

    def _api_week_system(self) -> None:
        """A DHIS2 / FHIR mapping whose weeks are of another system than `epiweek` would shift every week."""
        if self.fhir is not None and self.fhir.epiweek != self.epiweek:
            raise ValueError(f"fhir.epiweek {self.fhir.epiweek} contradicts epiweek {self.epiweek}: set both to the "
                             "reporter's week system (mmwr: Sunday-Saturday, iso: Monday-Sunday)")
        if self.dhis2 is not None and self.dhis2.period_types:
            systems = sorted({week_system_of(t) for t in self.dhis2.period_types})
            if systems != [self.epiweek]:
                raise ValueError(f"dhis2.period_types {self.dhis2.period_types} are {'/'.join(systems)} weeks but epiweek is "
                                 f"{self.epiweek}: list only {self.epiweek} weeks (Weekly = iso, WeeklySunday = mmwr) "
                                 "and set epiweek to that system")

    @property
    def mapped(self) -> dict[str, str]:
        """Canonical field -> file column, for the fields this source maps (a YYYYWW column is both the
        epi_year and the epi_week field; `vigila.ingest.cast.select_fields` splits it)."""
        out = {k: v for k, v in self.columns.model_dump().items() if v}
        if "epi_yearweek" in out:
            column = out.pop("epi_yearweek")
            out.update(epi_year=column, epi_week=column)
        return out


# --------------------------------------------------------------------------- loading


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _defaults() -> dict:
    return yaml.safe_load(DEFAULTS_PATH.read_text())


def load_layered(path: str | Path | None, defaults: Path, model: type[BaseModel], *, what: str) -> Any:
    """The defaults YAML with the YAML at `path` (if given) layered over it (mappings merge key by key,
    lists and scalars replace), validated by `model`; `ConfigError` naming file, line and key."""
    where = Path(path) if path is not None else defaults
    try:
        text = where.read_text(encoding="utf-8")
        node, data = yaml.compose(text), yaml.safe_load(text) or {}
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {_one_line(getattr(e, 'problem', None) or e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a {what} must be a YAML mapping of keys")
    if path is not None:
        data = deep_merge(yaml.safe_load(defaults.read_text(encoding="utf-8")) or {}, data)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}:{_line_of(node, loc) or 1}: {'.'.join(map(str, loc)) or '(top level)'}: {msg}") from None


def _one_line(message: object, most: int = 300) -> str:
    return " ".join(str(message).split())[:most]


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at `loc` (keys/indices), or of its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _describe(err: dict[str, Any]) -> tuple[tuple, str]:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent, name = loc[:-1], loc[-1]
        allowed = _allowed_keys(parent)
        hint = difflib.get_close_matches(str(name), allowed, n=1)
        msg = f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else f"; allowed: {', '.join(allowed)}")
    elif err["type"] == "missing":
        msg = f"missing key {key!r}"
    else:
        text = re.sub(r"^Value error, ", "", err["msg"])
        msg = f"{key}: {text}" if loc else text
    return loc, msg


def _allowed_keys(parent: tuple) -> list[str]:
    model: Any = SourceConfig
    for p in parent:
        field = model.model_fields.get(p) if isinstance(p, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return sorted(model.model_fields)


SOURCE_SUFFIXES = ("*.yaml", "*.yml")   # what counts as a source config in a folder


def source_paths(path: str | Path) -> list[Path]:
    """The source configs of PATH: a folder's `*.yaml` and `*.yml`, sorted by name; a file is itself.
    The one rule for `vigila status`, `check_overdue` and the deployments."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    return sorted((p for pattern in SOURCE_SUFFIXES for p in path.glob(pattern) if p.is_file()), key=lambda p: p.name)


DATA_ROOTS_ENV = "VIGILA_DATA_ROOTS"     # more folders a source's `location` may read from (os.pathsep-separated)
BUNDLED_DATA = Path(__file__).resolve().parents[1] / "data"


def allowed_roots(config_path: Path) -> list[Path]:
    """Where a config's local `location` may point: the config's folder, the working directory, the project's
    bundled data/ folder, and the folders listed in $VIGILA_DATA_ROOTS."""
    extra = [Path(p).expanduser() for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [r.resolve() for r in (config_path.resolve().parent, Path.cwd(), BUNDLED_DATA, *extra)]


def confine(location: str, config_path: Path) -> None:
    """`ConfigError` unless LOCATION (a file, folder or glob; symlinks followed) lies under `allowed_roots`:
    a config cannot make Vigila read, land and echo any file of the host (`../../etc/passwd`)."""
    fixed = Path(location).expanduser()
    parts = fixed.parts
    stem = Path(*parts[: next((i for i, part in enumerate(parts) if any(ch in part for ch in "*?[")), len(parts))])
    real = stem.resolve()
    if not real.exists():        # nothing there to read (fetching it fails with "no such file")
        return
    roots = allowed_roots(config_path)
    if not any(real == r or real.is_relative_to(r) for r in roots):
        raise ConfigError(f"{config_path}: location {location[:200]!r} is outside the folders a source may read "
                          f"({', '.join(str(r) for r in roots[:3])}, and ${DATA_ROOTS_ENV}): move the file or add its folder "
                          f"to {DATA_ROOTS_ENV}")


def load_source(path: str | Path) -> SourceConfig:
    """Read a source YAML, layer it over the defaults, validate; `ConfigError` on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such source config") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise ConfigError(f"{path}: cannot read as a UTF-8 YAML file ({e.__class__.__name__})") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {_one_line(getattr(e, 'problem', None) or e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a source config must be a YAML mapping of keys")
    loc = data.get("location")
    if isinstance(loc, str) and "://" not in loc:
        if not Path(loc).expanduser().is_absolute():
            loc = data["location"] = str((path.parent / loc).resolve())
        confine(loc, path)
    try:
        return SourceConfig.model_validate(deep_merge(_defaults(), data))
    except ValidationError as e:
        loc, msg = _describe(e.errors()[0])
        line = _line_of(node, loc)
        more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ConfigError(f"{path}:{line or 1}: {msg}{more}") from None


def source_from_dict(data: dict) -> SourceConfig:
    """Validate an in-memory config (tests, benchmarks) over the defaults."""
    return SourceConfig.model_validate(deep_merge(_defaults(), data))
