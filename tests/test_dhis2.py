"""DHIS2 connector: periods, dataValueSets, analytics, paging and org units on payloads shaped as
DHIS2 documents them (tests/fixtures/dhis2/README.md says where each shape comes from)."""

from __future__ import annotations

import copy
import datetime as dt
import json

import polars as pl
import pytest
import yaml
from epiweeks import Week, Year
from pydantic import ValidationError

from connectors.dhis2 import (
    Dhis2Mapping,
    PagingError,
    Period,
    PeriodError,
    merge_pages,
    next_page,
    org_units_from_hierarchy,
    parse_analytics,
    parse_data_value_sets,
    parse_period,
)
from vigila.core import places
from vigila.config import source_from_dict

from conftest import FIXTURES, SOURCES

D = FIXTURES / "dhis2"
EXAMPLE = SOURCES / "dhis2_country_example.yaml"
ATL, CR, FM, CEIBA = "zFiq4qivV7i", "cUT83rXIYYE", "lu3Nq1Y8Irh", "AMja3gbXnho"
DSSA, DG = "kKvOMQ1hfSS", "tyMweLFKk36"
F0004, M0004 = "C4K1vZ2U7ZK", "NSrywOrssoK"
KEY = ["place", "disease", "classification", "sex", "age_group", "epi_year", "epi_week", "week_system"]


def load(name: str) -> dict:
    return json.loads((D / name).read_text(encoding="utf-8"))


def org_pages() -> list[dict]:
    return [load(f"organisation_units_page{n}.json") for n in (1, 2, 3)]


@pytest.fixture(scope="module")
def mapping() -> Dhis2Mapping:
    return Dhis2Mapping.model_validate(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["dhis2"])


def problems_of(problems: pl.DataFrame) -> list[tuple]:
    return problems.select("row", "column", "check", "value", "severity").rows()


# --------------------------------------------------------------------------- periods


@pytest.mark.parametrize("pe, start, year, week, system", [
    ("2024W1", dt.date(2024, 1, 1), 2024, 1, "iso"),
    ("2024W05", dt.date(2024, 1, 29), 2024, 5, "iso"),            # DHIS2 accepts 1-2 digits
    ("2020W53", dt.date(2020, 12, 28), 2020, 53, "iso"),
    ("2024SunW1", dt.date(2023, 12, 31), 2024, 1, "mmwr"),
    ("2014SunW1", dt.date(2013, 12, 29), 2014, 1, "mmwr"),        # multi-calendar-dates: 2013-12-29 - 2014-01-04
    ("2014SunW53", dt.date(2014, 12, 28), 2014, 53, "mmwr"),      # ... 2014-12-28 - 2015-01-03 (ISO 2014 has 52)
    ("2025SunW53", dt.date(2025, 12, 28), 2025, 53, "mmwr"),
    ("2024WedW1", dt.date(2024, 1, 3), 2024, 1, "wednesday"),
    ("2024WedW5", dt.date(2024, 1, 31), 2024, 5, "wednesday"),
    ("2024ThuW1", dt.date(2024, 1, 4), 2024, 1, "thursday"),
    ("2024FriW1", dt.date(2023, 12, 29), 2024, 1, "friday"),
    ("2024SatW1", dt.date(2023, 12, 30), 2024, 1, "saturday"),
    ("2026ThuW1", dt.date(2026, 1, 1), 2026, 1, "thursday"),
])
def test_weekly_periods_start_on_known_dates(pe, start, year, week, system):
    p = parse_period(pe)
    assert p == Period(start, year, week, system) and p.weekly
    assert start.isoweekday() == {"iso": 1, "wednesday": 3, "thursday": 4, "friday": 5, "saturday": 6, "mmwr": 7}[system]


@pytest.mark.parametrize("day, pe", [
    # dhis2/multi-calendar-dates fixed-periods.gregorian.spec.ts (getPeriodByDate, gregory calendar)
    ("2022-01-01", "2021W52"), ("2022-01-03", "2022W1"), ("2019-01-01", "2018WedW52"), ("2022-01-01", "2022WedW1"),
    ("2019-01-01", "2018ThuW52"), ("2022-01-01", "2022ThuW1"), ("2021-01-01", "2020SatW52"), ("2022-01-01", "2022SatW1"),
    ("2021-01-01", "2020SunW53"), ("2023-01-01", "2023SunW1"),
    # dhis2-core WeeklySundayPeriodTypeTest
    ("2017-05-01", "2017SunW18"), ("2017-01-08", "2017SunW2"), ("2017-01-01", "2017SunW1"),
])
def test_dhis2_own_test_vectors(day, pe):
    start = parse_period(pe).week_start
    assert start <= dt.date.fromisoformat(day) <= start + dt.timedelta(days=6)


def test_sunday_weeks_are_mmwr_and_weekly_weeks_are_iso():
    for year in range(1990, 2041):
        for prefix, system in (("SunW", "cdc"), ("W", "iso")):
            n = Year(year, system=system).totalweeks()
            for week in range(1, n + 1):
                p = parse_period(f"{year}{prefix}{week}")
                assert p.week_start == Week(year, week, system=system).startdate(), (year, prefix, week)
            with pytest.raises(PeriodError, match=f"has weeks 1 to {n}, not {n + 1}"):
                parse_period(f"{year}{prefix}{n + 1}")


@pytest.mark.parametrize("prefix, weekday", [("WedW", 3), ("ThuW", 4), ("FriW", 5), ("SatW", 6)])
def test_other_weekly_types_tile_the_calendar_with_week_1_holding_4_january(prefix, weekday):
    previous_end = None
    for year in range(2000, 2031):
        first = parse_period(f"{year}{prefix}1").week_start
        assert first <= dt.date(year, 1, 4) <= first + dt.timedelta(days=6)
        week = 1
        while True:
            try:
                p = parse_period(f"{year}{prefix}{week}")
            except PeriodError:
                break
            assert p.week_start.isoweekday() == weekday and p.epi_year == year and p.epi_week == week
            assert previous_end is None or p.week_start == previous_end + dt.timedelta(days=1)
            previous_end, week = p.week_start + dt.timedelta(days=6), week + 1
        assert week - 1 in (52, 53)


@pytest.mark.parametrize("pe, kind", [
    ("202401", "Monthly"), ("2024-01", "Monthly"), ("2024", "Yearly"), ("20240105", "Daily"), ("2024Q1", "Quarterly"),
    ("202401B", "BiMonthly"), ("2024S2", "SixMonthly"), ("2024AprilS1", "SixMonthlyApril"),
    ("2022NovemberQ1", "QuarterlyNov"), ("2024April", "FinancialApril"), ("2024Oct", "FinancialOct"),
])
def test_non_weekly_periods_are_reported_as_not_weekly(pe, kind):
    p = parse_period(pe)
    assert p == Period(None, None, None, kind) and not p.weekly


@pytest.mark.parametrize("pe, check, words", [
    ("2024BiW3", "biweekly_period", "BiWeekly period (two weeks)"),
    ("2021W53", "invalid_period", "Weekly year 2021 has weeks 1 to 52, not 53"),     # ISO 2021 has 52 weeks (2020 had 53)
    ("2024SunW53", "invalid_period", "WeeklySunday year 2024 has weeks 1 to 52"),
    ("2024W0", "invalid_period", "not 0"),
    ("202413", "invalid_period", "not a DHIS2 period"),
    ("20240230", "invalid_period", "not a DHIS2 period"),
    ("2024W1 ", "invalid_period", "not a DHIS2 period"),
    ("LAST_12_WEEKS", "invalid_period", "not a DHIS2 period"),                       # relative periods never reach data
])
def test_rejected_periods_name_the_reason(pe, check, words):
    with pytest.raises(PeriodError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
        parse_period(pe)
    assert e.value.check == check


# --------------------------------------------------------------------------- dataValueSets


def test_data_value_sets_rows(mapping):
    rows, _ = parse_data_value_sets(load("data_value_sets_dengue.json"), mapping)
    assert rows["row"].to_list() == [*range(1, 12), 16, 20, 21]
    first = rows.row(0, named=True)
    assert {k: first[k] for k in [*KEY, "week_start", "cases", "period", "orgUnit"]} == {
        "place": "HN-AT", "disease": "dengue", "classification": "without_warning_signs", "sex": "female",
        "age_group": "00-04", "epi_year": 2024, "epi_week": 1, "week_system": "mmwr",
        "week_start": dt.date(2023, 12, 31), "cases": 3, "period": "2024SunW1", "orgUnit": ATL}
    assert rows["cases"].sum() == 3 + 5 + 2 + 4 + 7 + 6 + 1 + 2 + 1 + 12 + 4 + 11 + 0 + 1
    by_row = {r["row"]: r for r in rows.iter_rows(named=True)}
    assert (by_row[9]["classification"], by_row[9]["place"], by_row[9]["sex"]) == ("severe", "HN-FM", "male")
    assert by_row[20]["cases"] == 0 and by_row[20]["classification"] == "with_warning_signs"
    assert by_row[21]["week_start"] == dt.date(2024, 1, 7) and by_row[21]["lastUpdated"] == "2024-01-15T10:02:51.904"
    assert rows.select(KEY).is_duplicated().sum() == 0
    assert rows.schema["cases"] == pl.Int64 and rows.schema["week_start"] == pl.Date


def test_data_value_sets_problems_are_structured_and_nothing_is_dropped(mapping):
    doc = load("data_value_sets_dengue.json")
    rows, problems = parse_data_value_sets(doc, mapping)
    assert problems_of(problems) == [
        (12, "value", "type:int64", "N/D", "error"),
        (13, "value", "type:int64", "2.5", "error"),
        (14, "value", "greater_than_or_equal_to(0)", "-1", "error"),
        (15, "deleted", "deleted", "true", "set_aside"),
        (17, "orgUnit", "unknown_place", CEIBA, "error"),
        (18, "dataElement", "unknown_data_element", "ETXoWBzL2z4", "error"),
        (19, "categoryOptionCombo", "unknown_category_option_combo", "DCJ3AG25a8n", "error"),
    ]
    assert set(rows["row"]).isdisjoint(problems["row"])
    assert set(rows["row"]) | set(problems["row"]) == set(range(1, len(doc["dataValues"]) + 1))


def test_bytes_and_set_level_attributes(mapping):
    """The documented single-set form: period and orgUnit once on the set, not on each value."""
    doc = {"dataSet": "mqba4z6GsJP", "completeDate": "2024-01-22", "period": "2024SunW3", "orgUnit": ATL,
           "dataValues": [{"dataElement": DSSA, "categoryOptionCombo": F0004, "value": "6"},
                          {"dataElement": DSSA, "categoryOptionCombo": M0004, "value": " 3 "},
                          {"dataElement": DSSA, "categoryOptionCombo": M0004, "orgUnit": CR, "value": "1e1"}]}
    rows, problems = parse_data_value_sets(json.dumps(doc).encode(), mapping)
    assert problems.is_empty()
    assert rows.select("place", "epi_week", "sex", "cases").rows() == [
        ("HN-AT", 3, "female", 6), ("HN-AT", 3, "male", 3), ("HN-CR", 3, "male", 10)]


def test_missing_values_unknown_attribute_combos_and_empty_sets(mapping):
    doc = {"dataValues": [
        {"dataElement": DSSA, "period": "2024SunW1", "orgUnit": ATL, "categoryOptionCombo": F0004, "comment": "sin dato"},
        {"dataElement": DSSA, "period": "2024SunW1", "orgUnit": ATL, "categoryOptionCombo": M0004,
         "attributeOptionCombo": "pRiVaDo0001", "value": "2"},
        {"dataElement": DSSA, "orgUnit": ATL, "categoryOptionCombo": M0004, "value": "2"}]}
    rows, problems = parse_data_value_sets(doc, mapping)
    assert rows.is_empty()
    assert problems_of(problems) == [
        (1, "value", "missing_cases", None, "error"),
        (2, "attributeOptionCombo", "unknown_attribute_option_combo", "pRiVaDo0001", "error"),
        (3, "period", "missing_period", None, "error")]
    rows, problems = parse_data_value_sets({"dataValues": []}, mapping)
    assert rows.is_empty() and problems.is_empty() and rows.columns[0] == "row"
    with pytest.raises(ValueError, match="not a DHIS2 dataValueSets response"):
        parse_data_value_sets({"httpStatus": "Conflict", "httpStatusCode": 409}, mapping)


def test_every_period_type_in_one_export(mapping):
    doc = load("data_value_sets_period_types.json")
    rows, problems = parse_data_value_sets(doc, mapping.model_copy(update={"period_types": None}))
    assert rows.select("period", "week_system", "week_start", "epi_year", "epi_week").rows() == [
        ("2024W5", "iso", dt.date(2024, 1, 29), 2024, 5),
        ("2024WedW5", "wednesday", dt.date(2024, 1, 31), 2024, 5),
        ("2024ThuW5", "thursday", dt.date(2024, 2, 1), 2024, 5),
        ("2024FriW5", "friday", dt.date(2024, 1, 26), 2024, 5),
        ("2024SatW5", "saturday", dt.date(2024, 1, 27), 2024, 5),
        ("2024SunW5", "mmwr", dt.date(2024, 1, 28), 2024, 5),
        ("2020W53", "iso", dt.date(2020, 12, 28), 2020, 53)]
    assert problems_of(problems) == [
        (8, "period", "biweekly_period", "2024BiW3", "error"),
        (9, "period", "temporal_resolution", "202401", "set_aside"),
        (10, "period", "temporal_resolution", "2024", "set_aside"),
        (11, "period", "temporal_resolution", "20240105", "set_aside"),
        (12, "period", "temporal_resolution", "2024Q1", "set_aside")]
    # the example source takes WeeklySunday only: the other weekly types are errors
    rows, problems = parse_data_value_sets(doc, mapping)
    assert rows["period"].to_list() == ["2024SunW5"]
    unexpected = problems.filter(pl.col("check") == "unexpected_period_type")
    assert unexpected["value"].to_list() == ["2024W5", "2024WedW5", "2024ThuW5", "2024FriW5", "2024SatW5", "2020W53"]


# --------------------------------------------------------------------------- analytics


def test_analytics_gives_the_same_counts_as_the_data_values(mapping):
    rows, problems = parse_analytics(load("analytics_dengue_weekly.json"), mapping)
    expected, _ = parse_data_value_sets(load("data_value_sets_dengue.json"), mapping)
    assert sorted(rows.select(*KEY, "cases").rows()) == sorted(expected.select(*KEY, "cases").rows())
    assert problems_of(problems) == [(13, "dx", "unknown_data_element", "ETXoWBzL2z4", "error")]


def test_analytics_operands_and_totals(mapping):
    rows, problems = parse_analytics(load("analytics_dengue_operands.json"), mapping)
    assert problems.is_empty()
    assert rows.select("place", "classification", "sex", "age_group", "cases", "categoryOptionCombo").rows() == [
        ("HN-AT", "without_warning_signs", "female", "00-04", 3, F0004),
        ("HN-AT", "without_warning_signs", "male", "00-04", 5, M0004),
        ("HN-CR", "without_warning_signs", "female", "00-04", 7, F0004),
        ("HN-CR", "without_warning_signs", "male", "00-04", 6, M0004),
        ("HN-FM", "severe", "all", "all", 1, None)]          # a data element alone: its total over combos


def test_analytics_bad_values_and_shapes(mapping):
    doc = load("analytics_dengue_operands.json")
    doc["rows"][0][3], doc["rows"][1][3] = "2.5", "NaN"
    doc["rows"][2][0] = f"{DSSA}.unknownCoc1"
    _, problems = parse_analytics(doc, mapping)
    assert problems_of(problems) == [
        (1, "value", "type:int64", "2.5", "error"), (2, "value", "type:int64", "NaN", "error"),
        (3, "dx", "unknown_category_option_combo", "unknownCoc1", "error")]
    doc["headers"] = [h for h in doc["headers"] if h["name"] != "ou"]
    with pytest.raises(ValueError, match="without ou column.*dimensions \\(not filters\\)"):
        parse_analytics(doc, mapping)


# --------------------------------------------------------------------------- paging


def test_next_page_from_documented_pagers():
    pages = org_pages()
    assert [next_page(p) for p in pages] == [2, 3, None]
    assert next_page(json.dumps(pages[0]).encode()) == 2
    assert next_page({"metaData": {"pager": {"page": 2, "total": 163, "pageSize": 4, "pageCount": 41}}}) == 3
    assert next_page({"metaData": {"pager": {"page": 41, "total": 163, "pageSize": 4, "pageCount": 41}}}) is None
    assert next_page({"metaData": {"pager": {"page": 3, "pageSize": 50, "isLastPage": False}}}) == 4
    assert next_page({"metaData": {"pager": {"page": 3, "pageSize": 50, "isLastPage": True}}}) is None
    assert next_page({"pager": {"page": 1, "total": 101, "pageSize": 50}}) == 2
    assert next_page({"pager": {"page": 1, "nextPage": "https://x/api/dataElements?page=2"}}) == 2
    assert next_page(load("data_value_sets_dengue.json")) is None


def test_merge_pages_drops_a_repeated_page():
    """Asking for page 4 of 3 gets page 3 again (dhis2-core Pager clamps the page): not counted twice."""
    pages = org_pages()
    merged = merge_pages([pages[0], pages[1], pages[2], copy.deepcopy(pages[2])])
    assert len(merged["organisationUnits"]) == 25 == pages[0]["pager"]["total"]
    assert len({u["id"] for u in merged["organisationUnits"]}) == 25
    assert merged["pager"] == {"page": 1, "pageCount": 1, "total": 25, "pageSize": 25, "merged": [1, 2, 3], "repeated": [3]}
    assert next_page(merged) is None
    assert merge_pages([pages[2], pages[0], pages[1]])["organisationUnits"] == merged["organisationUnits"]


def test_merge_pages_refuses_what_it_cannot_repair():
    p1, p2, p3 = org_pages()
    changed = copy.deepcopy(p2)
    changed["organisationUnits"][0]["name"] = "Choluteca (renombrado)"
    with pytest.raises(PagingError, match="page 2 came twice with different records"):
        merge_pages([p1, p2, changed, p3])
    with pytest.raises(PagingError, match=r"page\(s\) 2 of 3 missing"):
        merge_pages([p1, p3])
    shifted = copy.deepcopy(p3)
    shifted["pager"]["total"] = 26
    with pytest.raises(PagingError, match="different totals"):
        merge_pages([p1, p2, shifted])
    short = copy.deepcopy(p3)
    short["organisationUnits"].pop()
    with pytest.raises(PagingError, match="pages hold 24 records, the pager says 25"):
        merge_pages([p1, p2, short])
    with pytest.raises(PagingError, match="no pages"):
        merge_pages([])


def test_merge_data_value_set_windows(mapping):
    main, week3 = load("data_value_sets_dengue.json"), load("data_value_sets_dengue_week3.json")
    merged = merge_pages([main, week3, week3])
    assert len(merged["dataValues"]) == 23 and merged["pager"]["repeated"] == [3]
    assert all(v["period"] and v["orgUnit"] for v in merged["dataValues"])
    rows, problems = parse_data_value_sets(merged, mapping)
    assert len(rows) == 16 and len(problems) == 7
    assert rows.filter(pl.col("epi_week") == 3).select("place", "sex", "cases").rows() == [
        ("HN-AT", "female", 6), ("HN-AT", "male", 3)]
    # the set-level period of a window is pushed down to its values before windows mix
    bare = {"period": "2024SunW4", "orgUnit": CR, "dataValues": [{"dataElement": DSSA, "categoryOptionCombo": F0004, "value": "2"}]}
    rows, _ = parse_data_value_sets(merge_pages([week3, bare]), mapping)
    assert rows.select("place", "epi_week").rows() == [("HN-AT", 3), ("HN-AT", 3), ("HN-CR", 4)]


def test_merge_analytics_pages(mapping):
    whole = load("analytics_dengue_weekly.json")
    pages = []
    for n, chunk in enumerate((whole["rows"][:8], whole["rows"][8:]), start=1):
        page = copy.deepcopy(whole)
        page["rows"], page["height"] = chunk, len(chunk)
        page["metaData"]["pager"] = {"page": n, "total": len(whole["rows"]), "pageSize": 8, "pageCount": 2}
        pages.append(page)
    merged = merge_pages([pages[0], pages[1], pages[1]])
    assert merged["rows"] == whole["rows"] and merged["height"] == whole["height"]
    assert merged["metaData"]["dimensions"] == whole["metaData"]["dimensions"]
    assert "pager" not in merged["metaData"] and merged["pager"]["repeated"] == [2]
    assert parse_analytics(merged, mapping)[0].equals(parse_analytics(whole, mapping)[0])


# --------------------------------------------------------------------------- organisation units


def test_org_unit_map_from_the_hierarchy_is_the_example_config(mapping):
    table, report = org_units_from_hierarchy(merge_pages(org_pages()), places.admin1_table("HND"), level=2)
    assert table == mapping.org_units                        # codes HN_DEP_nn are national: matched by name
    assert report.filter(pl.col("check").is_not_null()).select("name", "check").rows() == [
        ("Región Metropolitana de San Pedro Sula", "unknown_place"),
        ("Región Metropolitana del Distrito Central", "unknown_place")]
    assert report.columns == ["id", "code", "name", "level", "geo_code", "check"]


def test_org_units_matching_one_place_twice_are_not_mapped():
    doc = merge_pages(org_pages())
    table, report = org_units_from_hierarchy(doc, places.admin1_table("HND"))      # every level
    checks = dict(report.select("name", "check").filter(pl.col("check").is_not_null()).iter_rows())
    assert checks["Honduras"] == "unknown_place" and checks["San Pedro Sula"] == "unknown_place"
    dup = report.filter(pl.col("check") == "duplicate_geo_code").select("level", "name", "geo_code").rows()
    assert dup == [(2, "Choluteca", "HN-CH"), (3, "Choluteca", "HN-CH")]
    assert "HN-CH" not in table.values() and len(table) == 17
    aliases = {"Región Metropolitana del Distrito Central": "HN-FM", "Región Metropolitana de San Pedro Sula": "HN-CR"}
    table, report = org_units_from_hierarchy(doc, places.table_from_aliases(aliases, places.admin1_table("HND")), level=2)
    assert sorted(report.filter(pl.col("check") == "duplicate_geo_code")["geo_code"]) == ["HN-CR", "HN-CR", "HN-FM", "HN-FM"]
    assert len(table) == 16
    table, _ = org_units_from_hierarchy(doc, {"HN_DEP_01": "HN-AT", "la ceiba": "HN-AT"}, within=ATL)
    assert table == {CEIBA: "HN-AT"}                        # only org units below Atlántida; a plain dict table


# --------------------------------------------------------------------------- the mapping and the example config


@pytest.mark.parametrize("change, words", [
    ({"data_elements": {DSSA: {"disease": "dengeu"}}}, "unknown disease 'dengeu'"),
    ({"category_option_combos": {F0004: {"sex": "female", "age_group": "15+"}}}, "age_group '15+' is not one of"),
    ({"category_option_combos": {F0004: {"disease": "dengue"}}}, "Extra inputs are not permitted"),
    ({"period_types": ["BiWeekly"]}, "'BiWeekly' is not a weekly DHIS2 period type"),
    ({"data_elements": {}}, "at least 1 item"),
])
def test_mapping_is_validated(mapping, change, words):
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace("+", r"\+")):
        Dhis2Mapping.model_validate({**mapping.model_dump(), **change})


def test_example_config_is_a_valid_source_apart_from_its_dhis2_block():
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    cfg = source_from_dict({k: v for k, v in data.items() if k != "dhis2"})
    assert cfg.id == EXAMPLE.stem and cfg.epiweek == "mmwr" and cfg.geo_level == "admin1"
    assert set(cfg.mapped) <= {*KEY, "cases"} and all(k == v for k, v in cfg.mapped.items())
    assert Dhis2Mapping.model_validate(data["dhis2"]).period_types == ["WeeklySunday"]
