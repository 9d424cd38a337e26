"""connectors/fhir.py: FHIR R4 Bundle pages and MeasureReports -> canonical weekly rows + problems.

Fixtures (tests/fixtures/fhir/README.md): a 2-page searchset of weekly dengue MeasureReports from
two reporters (Loreto, Piura) for MMWR weeks 2023-52, 2024-01 and 2024-02, with sex and age
stratifiers, one `pending` report and one unknown stratum value; a collection Bundle of broken
reports; a bare MeasureReport. The mapping is the `fhir:` block of the example source config.
"""

from __future__ import annotations

import copy
import datetime as dt
import json

import polars as pl
import pytest
import yaml
from pydantic import ValidationError

from conftest import FIXTURES, SOURCES
from connectors.fhir import (
    PROBLEM_SCHEMA,
    ROW_SCHEMA,
    FhirMapping,
    next_link,
    parse_measure_reports,
    read_bundle_pages,
)
from vigila.config import source_from_dict

FHIR = FIXTURES / "fhir"
EXAMPLE = SOURCES / "fhir_reporter_example.yaml"


def load(name: str) -> dict:
    return json.loads((FHIR / name).read_text())


@pytest.fixture(scope="module")
def mapping() -> FhirMapping:
    return FhirMapping.model_validate(yaml.safe_load(EXAMPLE.read_text())["fhir"])


@pytest.fixture(scope="module")
def pages() -> list[dict]:
    return [load("searchset_page1.json"), load("searchset_page2.json")]


def checks(problems: pl.DataFrame) -> list[tuple]:
    return problems.select("resource_id", "check", "severity").rows()


# --------------------------------------------------------------------------- Bundle pages


def test_next_link_follows_the_searchset_pages(pages):
    assert next_link(pages[0]) == next(l["url"] for l in pages[1]["link"] if l["relation"] == "self")
    assert next_link(pages[1]) is None            # the last page has "previous", no "next"
    assert next_link({"resourceType": "Bundle", "type": "searchset"}) is None


def test_two_pages_give_every_report_once_and_the_outcome_as_a_problem(pages):
    resources, problems = read_bundle_pages(pages)
    assert [r["id"] for r in resources] == ["lor-2023-52", "lor-2024-01", "lor-2024-02", "piu-2023-52",
                                            "piu-2024-01", "piu-2024-02"]
    assert problems.schema == pl.Schema(PROBLEM_SCHEMA)
    assert problems.rows(named=True) == [{
        "row": 1, "resource_id": pages[0]["id"], "column": "entry[4]", "check": "operation_outcome",
        "value": "_count capped at 4 for MeasureReport searches", "severity": "warning"}]


@pytest.mark.parametrize("new_id", [False, True], ids=["same_bundle", "same_entries_new_bundle_id"])
def test_a_repeated_page_is_skipped_and_reported(pages, mapping, new_id):
    again = copy.deepcopy(pages[1])
    if new_id:
        again["id"] = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
    resources, problems = read_bundle_pages([pages[0], pages[1], again])
    assert len(resources) == 6
    assert problems.filter(pl.col("check") == "repeated_page").select("row", "severity").rows() == [(3, "warning")]
    once, _ = parse_measure_reports(read_bundle_pages(pages)[0], mapping)
    rows, _ = parse_measure_reports(resources, mapping)
    assert rows.equals(once)                       # no double counting


def test_a_page_overlapping_an_earlier_one_keeps_each_resource_once(pages):
    overlap = copy.deepcopy(pages[1])
    overlap["id"] = "page-3"
    overlap["entry"].insert(0, copy.deepcopy(pages[0]["entry"][0]))       # lor-2023-52 served again
    changed = copy.deepcopy(pages[0]["entry"][1])
    changed["resource"]["group"][0]["population"][0]["count"] = 56        # lor-2024-01, edited in between
    overlap["entry"].append(changed)
    resources, problems = read_bundle_pages([pages[0], overlap])
    assert len(resources) == 6
    assert next(r for r in resources if r["id"] == "lor-2024-01")["group"][0]["population"][0]["count"] == 55
    assert problems.filter(pl.col("row") == 2).select("column", "check", "value", "severity").rows() == [
        ("entry[0]", "duplicate_resource", "MeasureReport/lor-2023-52", "warning"),
        ("entry[3]", "conflicting_duplicate", "MeasureReport/lor-2024-01", "error"),
    ]


def test_a_reused_bundle_id_with_new_entries_is_read_and_flagged(pages):
    second = copy.deepcopy(pages[1])
    second["id"] = pages[0]["id"]
    resources, problems = read_bundle_pages([pages[0], second])
    assert len(resources) == 6
    assert ("reused_bundle_id", "warning") in problems.select("check", "severity").rows()


def test_a_read_cut_before_the_last_page_is_reported(pages):
    resources, problems = read_bundle_pages(pages[:1])
    assert len(resources) == 4
    assert problems.filter(pl.col("check") != "operation_outcome").select("row", "check", "value", "severity").rows() == [
        (0, "total_mismatch", "4 matches read, Bundle.total 6", "warning"),
        (1, "incomplete_paging", next_link(pages[0]), "error"),
    ]


def test_collection_bundle_bare_resource_and_other_bundle_types():
    collection = load("collection_edge_cases.json")
    resources, problems = read_bundle_pages([collection])
    assert [r["resourceType"] for r in resources] == ["MeasureReport"] * 7 + ["Location"]
    assert problems.is_empty()
    bare = load("measurereport_piu_2024_02.json")
    resources, problems = read_bundle_pages([bare])
    assert resources == [bare] and problems.is_empty()
    history = {"resourceType": "Bundle", "id": "h", "type": "history", "entry": []}
    resources, problems = read_bundle_pages([history, {"not": "fhir"}])
    assert resources == []
    assert problems.select("row", "check", "value").rows() == [(1, "bundle_type", "history"),
                                                              (2, "not_fhir", '{"not": "fhir"}')]


# --------------------------------------------------------------------------- MeasureReports


@pytest.fixture(scope="module")
def parsed(pages, mapping):
    return parse_measure_reports(read_bundle_pages(pages)[0], mapping)


def test_rows_have_the_canonical_schema_and_mmwr_weeks(parsed):
    rows, _ = parsed
    assert rows.schema == pl.Schema(ROW_SCHEMA)
    weeks = rows.select("report_id", "place", "week_start", "epi_year", "epi_week").unique().sort("report_id").rows()
    assert weeks == [
        ("lor-2023-52", "PE-LOR", dt.date(2023, 12, 24), 2023, 52),
        ("lor-2024-01", "PE-LOR", dt.date(2023, 12, 31), 2024, 1),   # MMWR week 1 of 2024 starts in December
        ("lor-2024-02", "PE-LOR", dt.date(2024, 1, 7), 2024, 2),     # measure URL with a |version
        ("piu-2023-52", "PE-PIU", dt.date(2023, 12, 24), 2023, 52),
        ("piu-2024-01", "PE-PIU", dt.date(2023, 12, 31), 2024, 1),
    ]
    assert rows["country"].unique().to_list() == ["PER"] and rows["disease"].unique().to_list() == ["dengue"]


def test_totals_and_strata_are_separate_breakdowns(parsed):
    rows, _ = parsed
    # 5 complete reports x 2 populations (initial-population -> total, numerator -> confirmed):
    # a total row each, plus sex strata (2 mapped each) and age strata (4 in Loreto, 3 in Piura)
    assert rows.height == 5 * 2 + 5 * 2 * 2 + (3 * 4 + 2 * 3) * 2 == 66
    totals = rows.filter(pl.col("breakdown") == "total")
    assert totals.select(pl.col("sex").unique(), pl.col("age_group").unique()).rows() == [("all", "all")]
    by = rows.group_by("breakdown", "classification").agg(pl.col("cases").sum()).sort(pl.all()).rows()
    assert by == [
        ("age_group", "confirmed", 72), ("age_group", "total", 185),    # the age strata partition the totals
        ("sex", "confirmed", 72), ("sex", "total", 184),               # 1 case of an unmapped sex is not published
        ("total", "confirmed", 72), ("total", "total", 185),
    ]
    sexes = rows.filter(pl.col("breakdown") == "sex")
    assert set(sexes["sex"]) == {"female", "male"} and set(sexes["age_group"]) == {"all"}
    ages = rows.filter(pl.col("breakdown") == "age_group", pl.col("report_id") == "lor-2023-52", pl.col("classification") == "total")
    assert ages.select("age_group", "cases").rows() == [("00-04", 5), ("05-09", 9), ("20-24", 12), ("35-39", 16)]


def test_pending_report_and_unknown_stratum_value_are_problems(parsed):
    _, problems = parsed
    assert problems.select("row", "resource_id", "column", "check", "value", "severity").rows() == [
        (2, "lor-2024-01", "group[0].stratifier[0].stratum[2].value", "unknown_stratum_value",
         "sex: https://fhir.example.org/CodeSystem/sexo|I", "error"),
        (6, "piu-2024-02", "status", "report_status", "pending", "set_aside"),
    ]


def test_place_from_the_reporter_identifier(pages, mapping):
    by_reporter = FhirMapping.model_validate({**mapping.model_dump(), "place": {
        "source": "reporter",
        "codes": {"https://fhir.example.org/sid/reporting-unit|DIRESA-LOR": "PE-LOR", "DIRESA-PIU": "PE-PIU"}}})
    resources = read_bundle_pages(pages)[0]
    assert parse_measure_reports(resources, by_reporter)[0].equals(parse_measure_reports(resources, mapping)[0])


def test_broken_reports_are_each_reported(mapping):
    resources, _ = read_bundle_pages([load("collection_edge_cases.json")])
    rows, problems = parse_measure_reports(resources, mapping)
    assert rows["report_id"].unique().to_list() == ["lor-2024-03"]
    assert rows.select("classification", "sex", "age_group", "cases", "breakdown").rows() == [
        ("total", "all", "all", 8, "total"),
        ("severe", "all", "all", 1, "total"),
        ("total", "female", "00-04", 3, "sex+age_group"),     # a stratifier with components
        ("severe", "female", "00-04", 1, "sex+age_group"),
        ("total", "male", "20-24", 4, "sex+age_group"),
        ("severe", "male", "20-24", 0, "sex+age_group"),
    ]
    assert problems.select("resource_id", "column", "check", "value", "severity").rows() == [
        ("lor-2024-03", "group[0].population[2].code", "ignored_population",
         "http://terminology.hl7.org/CodeSystem/measure-population|denominator", "set_aside"),
        ("lor-2024-03", "group[0].stratifier[0]", "strata_sum_differs_from_total", "total: strata 7, total 8", "warning"),
        ("lor-2024-03", "group[0].stratifier[1].code", "unknown_stratifier", "ethnicity", "error"),
        ("piu-2024-03", "status", "report_status", "error", "error"),
        ("lor-2024-m01", "period", "period_not_weekly", "2024-01-01/2024-01-31", "error"),
        ("lor-2024-03-iso", "period", "period_not_epi_week", "2024-01-15/2024-01-21", "error"),   # a Monday
        ("lor-2024-03-zika", "measure", "unknown_measure", "https://fhir.example.org/Measure/zika-weekly-cases", "error"),
        ("piu-2024-03-counts", "group[0].population[0].count", "type:integer", '"15"', "error"),
        ("piu-2024-03-counts", "group[0].population[1].count", "missing_count", None, "error"),
        ("piu-2024-03-counts", "group[0].stratifier[0].stratum[0].population[0].count", "type:integer", "7.5", "error"),
        ("piu-2024-03-counts", "group[0].stratifier[0].stratum[1].population[0].count", "greater_than_or_equal_to(0)", "-1", "error"),
        ("tum-2024-03", "subject", "unknown_place", "Location/tumbes", "error"),
        ("loreto", "resourceType", "not_a_measure_report", "Location", "set_aside"),
    ]
    assert problems["row"].to_list() == [1, 1, 1, 2, 3, 4, 5, 6, 6, 6, 6, 7, 8]   # resource positions


def test_iso_weeks(mapping):
    iso = mapping.model_copy(update={"epiweek": "iso"})
    report = next(e["resource"] for e in load("collection_edge_cases.json")["entry"] if e["resource"]["id"] == "lor-2024-03-iso")
    rows, problems = parse_measure_reports([report], iso)
    assert problems.is_empty()
    assert rows.select("week_start", "epi_year", "epi_week").unique().rows() == [(dt.date(2024, 1, 15), 2024, 3)]


@pytest.mark.parametrize(("start", "end", "check"), [
    ("2024-01-07T00:00:00-05:00", "2024-01-13T23:59:59-05:00", None),   # dateTimes: the dates as written
    ("2024-01-07", "2024-01-14", "period_not_weekly"),                  # 8 days
    ("2024-01", "2024-01", "period_not_weekly"),                        # partial dates
    (None, "2024-01-13", "period_not_weekly"),
    ("2024-01-08", "2024-01-14", "period_not_epi_week"),                # a Monday under MMWR
])
def test_periods(mapping, start, end, check):
    report = copy.deepcopy(load("measurereport_piu_2024_02.json"))
    report["period"] = {k: v for k, v in {"start": start, "end": end}.items() if v is not None}
    rows, problems = parse_measure_reports([report], mapping)
    assert problems["check"].to_list() == ([check] if check else [])
    assert rows.height == (0 if check else 2)


def test_bare_report_totals_only(mapping):
    rows, problems = parse_measure_reports(read_bundle_pages([load("measurereport_piu_2024_02.json")])[0], mapping)
    assert problems.is_empty()
    assert rows.select("place", "epi_week", "classification", "cases", "breakdown").rows() == [
        ("PE-PIU", 2, "total", 18, "total"), ("PE-PIU", 2, "confirmed", 7, "total")]


def test_national_report_stratified_by_region(mapping):
    national = FhirMapping.model_validate({**mapping.model_dump(), "place": {"source": "none"}, "stratifiers": [
        {"code": "region", "dimension": "place", "values": {"urn:iso:std:iso:3166:-2|PE-TUM": "PE-TUM"}}]})
    report = copy.deepcopy(load("measurereport_piu_2024_02.json"))
    ip, num = report["group"][0]["population"]         # initial-population 18, numerator 7
    report["group"][0]["stratifier"] = [{"code": [{"text": "region"}], "stratum": [
        {"value": {"coding": [{"system": "urn:iso:std:iso:3166:-2", "code": "PE-TUM"}]},
         "population": [{**ip, "count": 10}, {**num, "count": 4}]},
        {"value": {"text": "Piura"}, "population": [{**ip, "count": 8}, {**num, "count": 3}]}]}]
    rows, problems = parse_measure_reports([report], national)
    assert rows.select("place", "classification", "cases", "breakdown").rows() == [
        (None, "total", 18, "total"), (None, "confirmed", 7, "total"),          # national: no place
        ("PE-TUM", "total", 10, "place"), ("PE-TUM", "confirmed", 4, "place")]
    assert problems.select("column", "check", "value").rows() == [   # "Piura" is in neither values nor place.codes
        ("group[0].stratifier[0].stratum[1].value", "unknown_stratum_value", "place: Piura")]
    with_codes = FhirMapping.model_validate({**national.model_dump(), "place": {"source": "none", "codes": {"piura": "PE-PIU"}}})
    rows, problems = parse_measure_reports([report], with_codes)   # a place value falls back to place.codes
    assert problems.is_empty() and rows.filter(pl.col("place") == "PE-PIU")["cases"].to_list() == [8, 3]


def test_unknown_population_and_report_type(mapping):
    report = copy.deepcopy(load("measurereport_piu_2024_02.json"))
    report["group"][0]["population"].append({"code": {"text": "hospitalised"}, "count": 3})
    individual = {**copy.deepcopy(report), "id": "one-patient", "type": "individual"}
    rows, problems = parse_measure_reports([report, individual], mapping)
    assert rows.height == 2
    assert problems.select("row", "check", "value").rows() == [
        (1, "unknown_population", "hospitalised"), (2, "report_type", "individual")]


# --------------------------------------------------------------------------- the `fhir:` block


def test_example_source_config_validates(mapping):
    data = yaml.safe_load(EXAMPLE.read_text())
    cfg = source_from_dict(data)
    assert cfg.fhir == mapping
    assert cfg.id == EXAMPLE.stem and cfg.epiweek == mapping.epiweek
    assert mapping.measures == {"https://fhir.example.org/measure/dengue-weekly-cases": "dengue"}


@pytest.mark.parametrize(("change", "message"), [
    ({"measures": {"https://x/Measure/m": "dengy"}}, "unknown disease 'dengy'"),
    ({"counts": [{"population": "numerator", "classification": "lab"}]}, "unknown classification 'lab'"),
    ({"stratifiers": [{"code": "sex", "dimension": "sex", "values": {"F": "woman"}}]}, "sex value 'woman' is not one of"),
    ({"stratifiers": [{"code": "age", "dimension": "age_group", "values": {"0-14": "00-14"}}]}, "age_group value '00-14'"),
    ({"stratifiers": [{"code": "sex", "dimension": "sex"}, {"code": "SEX", "dimension": "sex"}]}, "each code once"),
    ({"place": {"source": "reporter"}}, "place.source reporter needs place.codes"),
    ({"counts": []}, "at least 1 item"),
    ({"country": "Peru"}, "should match pattern"),
    ({"placee": {}}, "Extra inputs are not permitted"),
])
def test_mapping_mistakes_are_rejected(mapping, change, message):
    with pytest.raises(ValidationError, match=message):
        FhirMapping.model_validate({**mapping.model_dump(), **change})
