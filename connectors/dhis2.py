"""DHIS2 Web API payloads -> Vigila's canonical weekly rows, as pure functions (no network).

Inputs: JSON documents exactly as DHIS2 returns them (bytes, str or parsed dicts) and a
`Dhis2Mapping` (the source config's `dhis2:` block):

- `/api/dataValueSets` -> `parse_data_value_sets`: `{"dataValues": [{dataElement, period, orgUnit,
  categoryOptionCombo, attributeOptionCombo, value, storedBy, created, lastUpdated, followup,
  deleted?}]}` (period/orgUnit/attributeOptionCombo may sit on the set instead of each value);
- `/api/analytics` -> `parse_analytics`: `headers` + `rows` with `dx`, `pe`, `ou` (and `co`, `ao`
  when requested) and `value` columns, `metaData` with `items` and `dimensions`;
- paged responses (`pager`: page, pageCount, total, pageSize, nextPage; `metaData.pager` in
  analytics queries) -> `next_page`, `merge_pages`;
- `/api/organisationUnits` -> `org_units_from_hierarchy`: {org unit UID: Vigila geo code}.

Outputs: polars frames. `rows`: one row per accepted value with canonical columns (place,
disease, classification, sex, age_group, week_start, epi_year, epi_week, week_system, cases)
plus the DHIS2 identifiers it came from; `problems`: one row per failed check (row = 1-based
position in `dataValues`/`rows`, column, check, value, severity error | set_aside). A value is
either in `rows` or named in `problems`, never dropped silently.

Periods follow dhis2-core's `DateUnitPeriodTypeParser` on the ISO 8601 system calendar: every
weekly type numbers its weeks like ISO 8601 weeks but starting on its own weekday
(`WeekFields.of(firstDayOfWeek, 4)`): week 1 is the week that holds 4 January, and a week number
past the year's last week does not exist. Hence `Weekly` = ISO weeks and `WeeklySunday` = CDC/MMWR
epi weeks. Instances on another system calendar (Ethiopian, Nepali, ...) are not supported.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import polars as pl
from pydantic import BaseModel

from vigila.config import WEEKLY, Breakdown, Constants, DataElement, Dhis2Mapping, OrgUnitNames, week_system_of  # noqa: F401  (the `dhis2:` block)
from vigila.core.places import admin1_parts, admin1_table, normalise, resolve

_WEEKLY_RE = re.compile(r"(\d{4})(W|WedW|ThuW|FriW|SatW|SunW)(\d{1,2})")
_NOT_WEEKLY = [(re.compile(rx), name) for rx, name in [
    (r"\d{4}BiW\d{1,2}", "BiWeekly"), (r"\d{8}", "Daily"), (r"\d{4}-?\d{2}", "Monthly"), (r"\d{6}B", "BiMonthly"),
    (r"\d{4}Q[1-4]", "Quarterly"), (r"\d{4}Nov(?:ember)?Q[1-4]", "QuarterlyNov"), (r"\d{4}S[12]", "SixMonthly"),
    (r"\d{4}AprilS[12]", "SixMonthlyApril"), (r"\d{4}Nov(?:ember)?S[12]", "SixMonthlyNov"), (r"\d{4}", "Yearly"),
    *((rf"\d{{4}}{m}", f"Financial{m}") for m in ("Feb", "April", "July", "Aug", "Sep", "Oct", "Nov")),
]]
DEFAULTS = Constants().model_dump()   # classification total, sex all, age_group all
PROBLEM_SCHEMA = {"row": pl.Int64, "column": pl.String, "check": pl.String, "value": pl.String, "severity": pl.String}
ROW_SCHEMA = {
    "row": pl.Int64, "place": pl.String, "disease": pl.String, "classification": pl.String, "sex": pl.String,
    "age_group": pl.String, "week_start": pl.Date, "epi_year": pl.Int32, "epi_week": pl.Int32,
    "week_system": pl.String, "cases": pl.Int64, "dataElement": pl.String, "period": pl.String,
    "orgUnit": pl.String, "categoryOptionCombo": pl.String, "attributeOptionCombo": pl.String,
    "lastUpdated": pl.String, "origin": pl.String,   # origin: value (a cell of the response) | reported_zero (see data_set)
}
_IDS = ["dataElement", "period", "orgUnit", "categoryOptionCombo", "attributeOptionCombo"]


class PeriodError(ValueError):
    """A period identifier Vigila cannot take as a week; `check` names it in `problems`."""

    def __init__(self, message: str, check: str = "invalid_period"):
        super().__init__(message)
        self.check = check


class PagingError(ValueError):
    """Pages that cannot be merged without losing or double counting records."""


class Period(NamedTuple):
    week_start: dt.date | None   # None: not a weekly period
    epi_year: int | None         # the DHIS2 week-based year (= ISO / MMWR epi year for W / SunW)
    epi_week: int | None
    system: str                  # iso | mmwr | wednesday | thursday | friday | saturday; else the DHIS2 type (Monthly, ...)

    @property
    def weekly(self) -> bool:
        return self.week_start is not None


def _week1(year: int, weekday: int) -> dt.date:
    jan4 = dt.date(year, 1, 4)
    return jan4 - dt.timedelta(days=(jan4.weekday() - weekday) % 7)


def parse_period(pe: str) -> Period:
    """A DHIS2 ISO period identifier -> (week_start, epi_year, epi_week, system).

    Weekly types (`2024W5`, `2024WedW5`, `2024ThuW5`, `2024FriW5`, `2024SatW5`, `2024SunW5`) give
    their week; other fixed periods (`20240105`, `202401`, `2024Q1`, `2024`, ...) give a "not weekly"
    record (no week, `system` = the DHIS2 period type). `PeriodError` for BiWeekly periods (two
    weeks, never one weekly count), weeks that do not exist (`2021W53`) and unknown identifiers.
    """
    if m := _WEEKLY_RE.fullmatch(pe):
        year, (ptype, weekday, system), week = int(m[1]), WEEKLY[m[2]], int(m[3])
        first, following = _week1(year, weekday), _week1(year + 1, weekday)
        start = first + dt.timedelta(weeks=week - 1)
        if not first <= start < following:
            raise PeriodError(f"{pe}: {ptype} year {year} has weeks 1 to {(following - first).days // 7}, not {week}")
        return Period(start, year, week, system)
    name = next((name for rx, name in _NOT_WEEKLY if rx.fullmatch(pe)), None)
    if name == "BiWeekly":
        raise PeriodError(f"{pe} is a BiWeekly period (two weeks): not a weekly count", "biweekly_period")
    try:
        if name == "Daily":
            dt.datetime.strptime(pe, "%Y%m%d")
        elif name == "Monthly":
            dt.datetime.strptime(pe.replace("-", ""), "%Y%m")
    except ValueError:
        name = None
    if name is None:
        raise PeriodError(f"{pe!r} is not a DHIS2 period identifier")
    return Period(None, None, None, name)


# --------------------------------------------------------------------------- parsing


def _load(doc: dict | bytes | str) -> dict:
    return json.loads(doc) if isinstance(doc, (bytes, bytearray, str)) else doc


def _period_table(periods: pl.Series, mapping: Dhis2Mapping) -> pl.DataFrame:
    """period -> week fields, plus the failed check and its severity (null when the week is fine)."""
    allowed = {s for t, _, s in WEEKLY.values() if mapping.period_types is None or t in mapping.period_types}
    out = []
    for pe in periods.drop_nulls().unique().to_list():
        try:
            p = parse_period(pe)
            check, severity = (None, None) if p.system in allowed else (
                ("temporal_resolution", "set_aside") if not p.weekly else ("unexpected_period_type", "error"))
        except PeriodError as e:
            p, check, severity = Period(None, None, None, None), e.check, "error"
        out.append((pe, p.week_start, p.epi_year, p.epi_week, p.system if p.weekly else None, check, severity))
    schema = {"period": pl.String, "week_start": pl.Date, "epi_year": pl.Int32, "epi_week": pl.Int32,
              "week_system": pl.String, "__period_check": pl.String, "__period_severity": pl.String}
    return pl.DataFrame(out, schema=schema, orient="row")


def _table(key: str, entries: dict[str, BaseModel], prefix: str) -> pl.DataFrame:
    fields = ["disease", *DEFAULTS] if prefix == "de" else list(DEFAULTS)
    rows = [(k, *(getattr(v, f) for f in fields)) for k, v in entries.items()]
    schema = {key: pl.String, **{f"__{prefix}_{f}": pl.String for f in fields}}
    return pl.DataFrame(rows, schema=schema, orient="row").with_columns(pl.lit(True).alias(f"__{prefix}_known"))


PLACE_SCHEMA = {"orgUnit": pl.String, "place": pl.String, "__ou_check": pl.String, "__ou_label": pl.String}


def _uid_places(mapping: Dhis2Mapping) -> pl.DataFrame:
    """orgUnit -> place from `org_units` alone (no check, the UID as the problem value)."""
    return pl.DataFrame([(k, v, None, None) for k, v in mapping.org_units.items()], schema=PLACE_SCHEMA, orient="row")


def _harmonise(values: pl.DataFrame, mapping: Dhis2Mapping, names: dict[str, str],
               places: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`values` (row, the five DHIS2 ids, value, deleted, lastUpdated[, origin]) -> (rows, problems).
    `names`: DHIS2 field -> column name of the response, for `problems`. `places`: orgUnit -> place
    (PLACE_SCHEMA: a null place fails `__ou_check`, unknown_place by default, naming `__ou_label`)."""
    places = _uid_places(mapping) if places is None else places
    if "origin" not in values.columns:
        values = values.with_columns(pl.lit("value").alias("origin"))
    df = (values.join(_period_table(values["period"], mapping), on="period", how="left", maintain_order="left")
          .join(_table("dataElement", mapping.data_elements, "de"), on="dataElement", how="left", maintain_order="left")
          .join(_table("categoryOptionCombo", mapping.category_option_combos, "co"), on="categoryOptionCombo",
                how="left", maintain_order="left")
          .join(places, on="orgUnit", how="left", maintain_order="left"))
    text = pl.col("value").str.strip_chars()
    number = text.cast(pl.Float64, strict=False)
    aocs = mapping.attribute_option_combos
    checks = [  # (DHIS2 field, check, failed, severity)
        ("deleted", "deleted", pl.col("deleted"), "set_aside"),
        ("period", "missing_period", pl.col("period").is_null(), "error"),
        ("dataElement", "unknown_data_element", pl.col("__de_known").is_null(), "error"),
        ("categoryOptionCombo", "unknown_category_option_combo",
         pl.col("categoryOptionCombo").is_not_null() & pl.col("__co_known").is_null(), "error"),
        ("attributeOptionCombo", "unknown_attribute_option_combo",
         pl.lit(aocs is not None) & ~pl.col("attributeOptionCombo").is_in(aocs or []), "error"),  # none given: the default
        ("orgUnit", pl.col("__ou_check").fill_null("unknown_place"), pl.col("place").is_null(), "error"),
        ("value", "missing_cases", text.is_null() | (text == ""), "error"),
        ("value", "type:int64", (text != "") & (number.is_null() | ~number.is_finite() | (number != number.round(0))
                                                | (number.abs() >= 2**53)), "error"),
        ("value", "greater_than_or_equal_to(0)", number < 0, "error"),
    ]
    source = {"deleted": pl.col("deleted").cast(pl.String), "orgUnit": pl.coalesce("__ou_label", "orgUnit")}
    found = [df.filter(failed.fill_null(False)).select(
        "row", pl.lit(names.get(field, field)).alias("column"),
        (check if isinstance(check, pl.Expr) else pl.lit(check)).alias("check"),
        source.get(field, pl.col(field)).alias("value"), pl.lit(severity).alias("severity"))
        for field, check, failed, severity in checks]
    found.append(df.filter(pl.col("__period_check").is_not_null()).select(
        "row", pl.lit(names.get("period", "period")).alias("column"), pl.col("__period_check").alias("check"),
        pl.col("period").alias("value"), pl.col("__period_severity").alias("severity")))
    problems = pl.concat(found).cast(PROBLEM_SCHEMA).sort("row", maintain_order=True)
    rows = df.join(problems.select("row").unique(), on="row", how="anti", maintain_order="left").with_columns(
        pl.col("__de_disease").alias("disease"),
        *(pl.coalesce(f"__co_{f}", f"__de_{f}", pl.lit(d)).alias(f) for f, d in DEFAULTS.items()),
        number.cast(pl.Int64).alias("cases"))
    return rows.select(*ROW_SCHEMA).cast(ROW_SCHEMA), problems


def parse_data_value_sets(doc: dict | bytes | str, mapping: Dhis2Mapping) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A `/api/dataValueSets` JSON response -> (rows, problems); `row` = position in `dataValues`."""
    doc = _load(doc)
    if "dataValues" not in doc:
        raise ValueError(f"not a DHIS2 dataValueSets response (keys: {', '.join(doc) or 'none'})")
    schema = {**{c: pl.String for c in [*_IDS, "value", "lastUpdated"]}, "deleted": pl.Boolean}
    values = pl.from_dicts(doc["dataValues"], schema=schema, strict=False) if doc["dataValues"] else pl.DataFrame(schema=schema)
    values = values.with_columns(  # a data value set may carry period / orgUnit / attributeOptionCombo for all its values
        *(pl.col(c).fill_null(pl.lit(doc.get(c), pl.String)) for c in ("period", "orgUnit", "attributeOptionCombo")),
        pl.col("deleted").fill_null(False),
    ).with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))
    return _harmonise(values, mapping, {})


def org_unit_places(units: dict[str, str | None], mapping: Dhis2Mapping) -> pl.DataFrame:
    """{org unit UID: its name or None} -> one row per org unit: orgUnit, name, place, __ou_check,
    __ou_label (PLACE_SCHEMA + name). A UID listed in `org_units` takes its code; with
    `org_unit_names`, the others are matched by name (minus `strip`) to the country's admin1 table.
    An org unit matching a place another one already holds (two "Vientiane" units, or a name
    match on a place `org_units` maps) is `duplicate_geo_code` (Vigila would count the place twice),
    except org units that are all distinct declared parts of that place (vigila/reference/admin1/parts:
    health areas such as Guatemala's three Petén DAS), whose rows the source sums (`aggregate: sum`);
    no match is `unknown_place`. The problem value names the UID and the name: "W6sNfkJcXGC (01 ...)"."""
    schema = {"orgUnit": pl.String, "name": pl.String}
    frame = pl.DataFrame(list(units.items()), schema=schema, orient="row")
    listed = frame["orgUnit"].is_in(list(mapping.org_units))
    by_uid = frame["orgUnit"].replace_strict(mapping.org_units, default=None, return_dtype=pl.String)
    by_name = pl.Series([None] * frame.height, dtype=pl.String)
    key = pl.Series([None] * frame.height, dtype=pl.String)
    parts: frozenset[str] = frozenset()
    if mapping.org_unit_names is not None:
        cfg = mapping.org_unit_names
        table = admin1_table(cfg.country)
        cleaned = frame["name"].str.replace(cfg.strip, "")
        by_name = resolve(cleaned, table)[table.columns[1]]
        key, parts = pl.Series([None if n is None else normalise(n) for n in cleaned], dtype=pl.String), admin1_parts(cfg.country)
    frame = frame.with_columns(pl.when(listed).then(by_uid).otherwise(by_name).alias("place"), listed.alias("__listed"),
                               key.alias("__key"), (key.is_in(list(parts)) & ~listed).alias("__part"))
    # several org units on one place: a double count, unless all of them are distinct declared parts of it
    # (admin1/parts/<ISO3>.yaml: Guatemala's DAS Petén Norte, Sur Occidental, Sur Oriental make up Petén)
    summed = pl.col("__part").all().over("place") & (pl.col("__key").n_unique().over("place") == pl.len().over("place"))
    taken = pl.col("place").is_not_null() & ~pl.col("__listed") & (
        ((pl.len().over("place") > 1) & ~summed) | pl.col("place").is_in(list(mapping.org_units.values())))
    frame = frame.with_columns(
        pl.when(taken).then(pl.lit("duplicate_geo_code")).when(pl.col("place").is_null()).then(pl.lit("unknown_place"))
        .alias("__ou_check"),
        pl.when(pl.col("name").is_not_null()).then(pl.format("{} ({})", "orgUnit", "name")).alias("__ou_label"))
    return frame.with_columns(pl.when(pl.col("__ou_check").is_null()).then("place").alias("place")).select(
        "orgUnit", "name", "place", "__ou_check", "__ou_label")


def _item_names(*docs: dict | None) -> dict[str, str]:
    return {k: v.get("name") for d in docs if d for k, v in ((d.get("metaData") or {}).get("items") or {}).items()
            if isinstance(v, dict)}


REPORTING_KEY = "reportingRates"     # where the HTTP connector lands the reporting-rate response beside the data
REPORTING_METRICS = ("ACTUAL_REPORTS", "EXPECTED_REPORTS")


def reporting_rate_url(location: str, data_set: str) -> str:
    """The analytics URL of `data_set`'s ACTUAL_REPORTS and EXPECTED_REPORTS over the same periods and
    org units as the data query `location` (its dx items replaced, its co dimension dropped)."""
    parts = urlsplit(location)
    query = parse_qsl(parts.query, keep_blank_values=True)
    dx = f"dx:{';'.join(f'{data_set}.{m}' for m in REPORTING_METRICS)}"
    kept = [(k, dx if k == "dimension" and v.startswith("dx:") else v) for k, v in query
            if not (k == "dimension" and v.split(":")[0] == "co") and not (k == "filter" and v.startswith("dx:"))]
    if not any(k == "dimension" and v.startswith("dx:") for k, v in kept):
        kept.insert(0, ("dimension", dx))
    return urlunsplit(parts._replace(query=urlencode(kept, safe=":;")))


def parse_reporting_rates(doc: dict | bytes | str, data_set: str | None = None) -> pl.DataFrame:
    """An analytics response with `<dataSet>.ACTUAL_REPORTS` / `.EXPECTED_REPORTS` in dx (dimensions
    dx, pe, ou) -> one row per org unit x period: orgUnit, period, actual, expected, reported
    (expected > 0 and actual >= expected: every expected report of that unit and week came)."""
    doc = _load(doc)
    names = [h["name"] for h in doc.get("headers", [])]
    if missing := [n for n in ("dx", "pe", "ou", "value") if n not in names]:
        raise ValueError(f"reporting-rate response without {', '.join(missing)} column(s)")
    raw = pl.DataFrame(doc.get("rows") or [], schema={n: pl.String for n in names}, orient="row", strict=False)
    metric = pl.col("dx").str.extract(r"\.([A-Z_]+)$")
    raw = raw.with_columns(metric.alias("metric"), pl.col("dx").str.replace(r"\.[A-Z_]+$", "").alias("ds"),
                           pl.col("value").cast(pl.Float64, strict=False).alias("number"))
    raw = raw.filter(pl.col("metric").is_in(REPORTING_METRICS) & (pl.lit(data_set is None) | (pl.col("ds") == data_set)))
    out = (raw.group_by(pl.col("ou").alias("orgUnit"), pl.col("pe").alias("period"), maintain_order=True)
           .agg(*(pl.col("number").filter(pl.col("metric") == m).sum().alias(m.split("_")[0].lower()) for m in REPORTING_METRICS)))
    return out.with_columns(((pl.col("expected") > 0) & (pl.col("actual") >= pl.col("expected"))).alias("reported"))


def _reported_zeros(values: pl.DataFrame, doc: dict, rates: pl.DataFrame, places: pl.DataFrame, mapping: Dhis2Mapping,
                    plain: bool) -> pl.DataFrame:
    """Zero values for the cells analytics left out although their org unit x week reported: every
    data item of the query (dx, and co when it is a dimension) that Vigila maps, at a mapped org unit
    and an accepted week. Cells present in the response are never touched."""
    dims = (doc.get("metaData") or {}).get("dimensions") or {}
    dx = dims.get("dx") or values["dataElement"].unique().to_list()
    if plain:
        cos = dims.get("co") or values["categoryOptionCombo"].drop_nulls().unique().to_list()
        items = [(d, c) for d in dx for c in cos]
    else:
        items = [tuple((d.split(".") + [None])[:2]) for d in dx]
    items = [(d, c) for d, c in items if d in mapping.data_elements and (c is None or c in mapping.category_option_combos)]
    item_frame = pl.DataFrame(items, schema={"dataElement": pl.String, "categoryOptionCombo": pl.String}, orient="row")
    ok_places = places.filter(pl.col("place").is_not_null()).select("orgUnit")
    periods = _period_table(rates["period"], mapping).filter(pl.col("__period_check").is_null()).select("period")
    cells = (rates.filter("reported").select("orgUnit", "period")
             .join(ok_places, on="orgUnit").join(periods, on="period").join(item_frame, how="cross"))
    key = ["dataElement", "period", "orgUnit", "categoryOptionCombo"]
    absent = cells.join(values.select(key).unique(), on=key, how="anti", nulls_equal=True)
    n = values.height
    return absent.select(
        pl.int_range(n + 1, n + 1 + pl.len()).cast(pl.Int64).alias("row"), *key,
        pl.lit(None, pl.String).alias("attributeOptionCombo"), pl.lit("0").alias("value"), pl.lit(False).alias("deleted"),
        pl.lit(None, pl.String).alias("lastUpdated"), pl.lit("reported_zero").alias("origin"),
    ).select(values.columns)


def parse_analytics(doc: dict | bytes | str, mapping: Dhis2Mapping) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A `/api/analytics` JSON response (plain data source, not table layout) -> (rows, problems);
    `row` = position in `rows`. Without a `co` column each value is the data element's total,
    unless `dx` holds data element operands (`<dataElement>.<categoryOptionCombo>`).

    Org units: `org_units` UIDs, then (with `org_unit_names`) the names of `metaData.items`. With
    `data_set` and the reporting-rate response under `reportingRates` (the HTTP connector puts it
    there), each org unit x week whose ACTUAL_REPORTS reach its EXPECTED_REPORTS gets an explicit
    zero (origin reported_zero, `row` after the response's rows) for every mapped data item
    analytics omitted: the unit reported and had no case. Without a report a cell stays missing."""
    doc = _load(doc)
    names = [h["name"] for h in doc.get("headers", [])]
    missing = [n for n in ("dx", "pe", "ou", "value") if n not in names]
    if missing:
        raise ValueError(f"analytics response without {', '.join(missing)} column(s): request dx, pe and ou as "
                         f"dimensions (not filters), without tableLayout; headers: {', '.join(names) or 'none'}")
    raw = pl.DataFrame(doc.get("rows") or [], schema={n: pl.String for n in names}, orient="row", strict=False)
    plain = "co" in names    # with a co column dx holds data elements; without, maybe operands DE.COC[.AOC]
    dx = pl.col("dx").str.split_exact(".", 2)
    values = raw.select(
        (pl.col("dx") if plain else dx.struct[0]).alias("dataElement"),
        pl.col("pe").alias("period"), pl.col("ou").alias("orgUnit"),
        (pl.col("co") if plain else dx.struct[1]).alias("categoryOptionCombo"),
        (pl.col("ao") if "ao" in names else pl.lit(None, pl.String) if plain else dx.struct[2]).alias("attributeOptionCombo"),
        "value", pl.lit(False).alias("deleted"), pl.lit(None, pl.String).alias("lastUpdated"),
    ).with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))
    cols = {"dataElement": "dx", "period": "pe", "orgUnit": "ou", "categoryOptionCombo": "co" if plain else "dx",
            "attributeOptionCombo": "ao" if "ao" in names else "dx"}
    values = values.with_columns(pl.lit("value").alias("origin"))
    rates_doc = doc.get(REPORTING_KEY) if mapping.data_set else None
    rates = parse_reporting_rates(rates_doc, mapping.data_set) if rates_doc is not None else None
    units = values["orgUnit"].drop_nulls().unique(maintain_order=True).to_list()
    units += [u for u in (rates["orgUnit"].to_list() if rates is not None else []) if u not in units]
    item_names = _item_names(doc, rates_doc)
    places = org_unit_places({u: item_names.get(u) for u in units}, mapping)
    if rates is not None:
        values = pl.concat([values, _reported_zeros(values, doc, rates, places, mapping, plain)])
    return _harmonise(values, mapping, cols, places.drop("name"))


# --------------------------------------------------------------------------- paging


def _pager(doc: dict) -> dict:
    return doc.get("pager") or (doc.get("metaData") or {}).get("pager") or {}


def next_page(doc: dict | bytes | str) -> int | None:
    """The page to request after `doc`, or None when it is the last (or not paged). Reads the
    `pager` of metadata/tracker responses (page, pageCount, total, pageSize, nextPage) or the
    `metaData.pager` of analytics queries (also the slim form: page, pageSize, isLastPage)."""
    pager = _pager(_load(doc))
    if not pager:
        return None
    page = int(pager.get("page", 1))
    if "isLastPage" in pager:
        return None if pager["isLastPage"] else page + 1
    count = pager.get("pageCount")
    if count is None and pager.get("total") is not None and pager.get("pageSize"):
        count = math.ceil(pager["total"] / pager["pageSize"])
    if count is not None:
        return page + 1 if page < count else None
    return page + 1 if pager.get("nextPage") else None


def _records_key(doc: dict) -> str:
    if "dataValues" in doc:
        return "dataValues"
    if "headers" in doc:
        return "rows"
    lists = [k for k, v in doc.items() if isinstance(v, list)]
    if len(lists) != 1:
        raise PagingError(f"cannot tell the records of this page (list keys: {', '.join(lists) or 'none'})")
    return lists[0]


def _union(lists: Iterable[list]) -> list:
    return list(dict.fromkeys(x for lst in lists for x in lst))


def merge_pages(pages: Iterable[dict | bytes | str]) -> dict:
    """Several pages (or period windows) of one DHIS2 response -> one document of the same shape.

    A page whose records are identical to an earlier one (DHIS2 answers a page past the last with
    the last page again) is dropped, so nothing is counted twice; the page numbers dropped are in
    `merged["pager"]["repeated"]`. `PagingError` when a page number comes twice with different
    records, pages disagree on the total (the collection changed while paging), a page is
    missing, or the records do not add up to the total."""
    docs = [_load(p) for p in pages]
    if not docs:
        raise PagingError("no pages to merge")
    key = _records_key(docs[0])
    kept: dict[int, dict] = {}
    seen: dict[str, int] = {}
    repeated: list[int] = []
    for i, doc in enumerate(docs, start=1):
        if _records_key(doc) != key:
            raise PagingError(f"page {i} holds {_records_key(doc)!r} records, page 1 holds {key!r}")
        if key == "dataValues":  # push set-level attributes down before values of several sets mix
            doc = {**doc, key: [{**{c: doc[c] for c in ("period", "orgUnit", "attributeOptionCombo") if doc.get(c)}, **v}
                                for v in doc[key]]}
        content = json.dumps(doc[key], sort_keys=True)
        number = int(_pager(doc).get("page", i))
        if content in seen:
            repeated.append(number)
            continue
        if number in kept:
            raise PagingError(f"page {number} came twice with different records: refusing to merge (fetch again)")
        seen[content], kept[number] = number, doc
    order = sorted(kept)
    pagers = [_pager(kept[n]) for n in order if _pager(kept[n])]
    totals = {p.get("total") for p in pagers}
    if len(totals) > 1:
        raise PagingError(f"pages report different totals {sorted(t for t in totals if t is not None)}: "
                          "the collection changed while paging")
    counts = {p.get("pageCount") for p in pagers} - {None}
    if counts and (gaps := sorted(set(range(1, max(counts) + 1)) - set(order))):
        raise PagingError(f"page(s) {', '.join(map(str, gaps))} of {max(counts)} missing")
    records = [r for n in order for r in kept[n][key]]
    total = next(iter(totals), None)
    if total is not None and len(records) != total:
        raise PagingError(f"pages hold {len(records)} records, the pager says {total}")
    first = {k: v for k, v in kept[order[0]].items() if k != "pager"}
    merged = {key: records} if key == "dataValues" else {**first, key: records}   # set-level attributes were pushed down
    if key == "rows":
        if any(d["headers"] != merged["headers"] for d in kept.values()):
            raise PagingError("pages have different headers")
        metas = [d.get("metaData") or {} for d in (kept[n] for n in order)]
        dims = _union(m.get("dimensions", {}).keys() for m in metas)
        merged["metaData"] = {k: v for k, v in metas[0].items() if k != "pager"} | {
            "items": {k: v for m in metas for k, v in (m.get("items") or {}).items()},
            "dimensions": {d: _union(m.get("dimensions", {}).get(d, []) for m in metas) for d in dims}}
        merged["height"] = len(records)
    if pagers or repeated:
        merged["pager"] = {"page": 1, "pageCount": 1, "total": len(records), "pageSize": len(records),
                           "merged": order, "repeated": repeated}
    return merged


# --------------------------------------------------------------------------- organisation units


def org_units_from_hierarchy(
    doc: dict | bytes | str, places: pl.DataFrame | dict[str, str], *, level: int | None = None, within: str | None = None,
) -> tuple[dict[str, str], pl.DataFrame]:
    """An `/api/organisationUnits` response (fields id, code, name, level, parent[id], path; pages
    merged) -> ({org unit UID: geo code}, report).

    Each org unit at `level` (and under the org unit UID `within`, by `path`) is matched by its
    code, then its name, case-, accent- and punctuation-insensitively, against `places`: a
    `(key, code, name)` table such as `vigila.core.places.admin1_table("HND")` (with aliases:
    `places.table_from_aliases`) or a {name or code: geo code} dict. The report has one row per
    org unit considered, with `geo_code` and `check`: null (mapped), unknown_place, or
    duplicate_geo_code (two org units match one place: neither is mapped, since Vigila would
    count the place twice)."""
    doc = _load(doc)
    if isinstance(places, dict):
        places = pl.DataFrame([(normalise(k), v, v) for k, v in places.items()], schema=["key", "code", "name"], orient="row")
    schema = {"id": pl.String, "code": pl.String, "name": pl.String, "level": pl.Int64, "path": pl.String}
    found = doc.get("organisationUnits") or []
    units = pl.from_dicts(found, schema=schema, strict=False) if found else pl.DataFrame(schema=schema)
    if level is not None:
        units = units.filter(pl.col("level") == level)
    if within is not None:
        units = units.filter(pl.col("path").str.contains(f"/{within}/", literal=True))
    code = places.columns[1]
    by_code, by_name = resolve(units["code"], places)[code], resolve(units["name"], places)[code]
    units = units.with_columns(pl.coalesce(by_code, by_name).alias("geo_code"))
    dup = pl.col("geo_code").is_not_null() & (pl.len().over("geo_code") > 1)
    report = units.with_columns(pl.when(pl.col("geo_code").is_null()).then(pl.lit("unknown_place"))
                                .when(dup).then(pl.lit("duplicate_geo_code")).alias("check"))
    mapped = report.filter(pl.col("check").is_null())
    return dict(zip(mapped["id"], mapped["geo_code"])), report.drop("path")
