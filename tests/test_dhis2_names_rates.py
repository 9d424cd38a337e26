"""DHIS2 org units by name and completeness from reporting rates, on a real analytics response of the
Lao DHIS2 (HMIS) demo: 18 provinces x 52 ISO weeks of suspected dengue, empty cells omitted as
analytics omits them (tests/fixtures/dhis2/lao/README.md). The reporting-rate companion is
synthetic (no public recording of that data set's reporting rates was found): every province
reported every week except Houaphan before 2023W44 and Vientiane Capital in 2023W33."""

from __future__ import annotations

import copy
import datetime as dt
import json
from urllib.parse import parse_qsl, urlsplit

import polars as pl
import pytest

from connectors.dhis2 import (
    Dhis2Mapping,
    org_unit_places,
    parse_analytics,
    parse_reporting_rates,
    reporting_rate_url,
)
from vigila.ingest import completeness as cp
from vigila.ingest import pipeline
from vigila.core import places
from vigila.warehouse import read
from vigila.config import source_from_dict

from conftest import FIXTURES
from test_connector_http import FAST, Reply, server  # noqa: F401  (fixture)

LAO = FIXTURES / "dhis2" / "lao"
DATA = LAO / "analytics_dengue_provinces_52_weeks.json"
RATES = LAO / "reporting_rates_synthetic.json"
DENGUE, DS = "wryMP8p8k1C", "SyntheticDS"
HOUAPHAN, CAPITAL = "hdeC7uX9Cko", "W6sNfkJcXGC"
TODAY = dt.date(2024, 4, 21)   # a Sunday: weeks 2023W16-2024W15 owed, nothing later


def load(path=DATA) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def combined() -> dict:
    """The document the HTTP connector lands: the analytics response plus its reporting rates."""
    return {**load(), "reportingRates": load(RATES)}


def mapping(**over) -> Dhis2Mapping:
    return Dhis2Mapping.model_validate({
        "data_elements": {DENGUE: {"disease": "dengue", "classification": "suspected"}},
        "org_unit_names": {"country": "LAO"}, "period_types": ["Weekly"], **over})


def config(**dhis2) -> dict:
    return {"id": "lao_hmis_dengue_example", "country": "LAO", "format": "dhis2", "shape": "weekly_counts",
            "epiweek": "iso", "geo_level": "admin1", "diseases": ["dengue"],
            "columns": {k: k for k in ("place", "epi_year", "epi_week", "cases", "classification", "sex", "age_group")},
            "schedule": {"timezone": "Asia/Vientiane"}, "reporter": {"institution": "Lao DHIS2 HMIS demo (example)", "type": "ministry"},
            "dhis2": mapping(**dhis2).model_dump(exclude_none=True)}


# --------------------------------------------------------------------------- names


def test_every_lao_province_of_the_real_response_maps_to_its_own_iso_code():
    doc = load()
    items = doc["metaData"]["items"]
    units = {u: items[u]["name"] for u in doc["metaData"]["dimensions"]["ou"]}
    table = org_unit_places(units, mapping())
    assert table.height == 18 and table["__ou_check"].null_count() == 18
    got = dict(zip(table["name"], table["place"]))
    assert got["01 Vientiane Capital"] == "LA-VT" and got["10 Vientiane"] == "LA-VI"
    assert (got["03 Louangnamtha"], got["08 Xainyabouli"]) == ("LA-LM", "LA-XA")
    lao = places.admin1_table("LAO")
    assert sorted(got.values()) == sorted(lao["geo_code"].unique())          # all 18 ISO codes, each once
    names = dict(zip(lao["geo_code"], lao["geo_name"]))
    assert (names["LA-VT"], names["LA-VI"]) == ("Vientiane Capital", "Vientiane")   # no longer both "Viangchan"
    assert places.resolve(["Viangchan"], lao)["geo_code"].to_list() == [None]     # ambiguous: picks neither


def test_analytics_by_name_needs_no_uid_list():
    rows, problems = parse_analytics(load(), mapping())
    assert problems.is_empty() and rows.height == 707
    assert rows["place"].n_unique() == 18 and set(rows["origin"]) == {"value"}
    assert rows["cases"].sum() == sum(int(r[3]) for r in load()["rows"])
    assert rows.select("epi_year", "epi_week").unique().height == 52 and set(rows["week_system"]) == {"iso"}


def test_unmapped_and_doubled_org_units_are_row_level_problems_naming_uid_and_name():
    doc = load()
    doc["metaData"]["items"][HOUAPHAN]["name"] = "07 Atlantis"
    doc["metaData"]["items"]["hRQsZhmvqgS"]["name"] = "17 Bokeo"            # Attapu renamed like Bokeo
    rows, problems = parse_analytics(doc, mapping())
    n_houaphan = sum(r[2] == HOUAPHAN for r in doc["rows"])
    unknown = problems.filter(pl.col("check") == "unknown_place")
    assert unknown.height == n_houaphan and set(unknown["value"]) == {f"{HOUAPHAN} (07 Atlantis)"}
    assert set(unknown["column"]) == {"ou"} and set(unknown["severity"]) == {"error"}
    dup = problems.filter(pl.col("check") == "duplicate_geo_code")
    assert set(dup["value"]) == {"FRmrFTE63D0 (05 Bokeo)", "hRQsZhmvqgS (17 Bokeo)"}
    assert rows.height + problems["row"].n_unique() == 707                  # every cell in rows or in problems
    # an org unit listed by UID wins over its name; a name match on a place the UID list holds is a duplicate
    rows, problems = parse_analytics(load(), mapping(org_units={HOUAPHAN: "LA-HO", CAPITAL: "LA-VI"}))
    assert set(problems.filter(pl.col("check") == "duplicate_geo_code")["value"]) == {"quFXhkOJGB4 (10 Vientiane)"}


def test_without_names_or_uids_every_cell_is_unknown_place():
    m = Dhis2Mapping.model_validate({"data_elements": {DENGUE: {"disease": "dengue"}}})
    rows, problems = parse_analytics(load(), m)
    assert rows.is_empty() and problems.height == 707 and set(problems["check"]) == {"unknown_place"}
    assert problems["value"][0] == "c4HrGRJoarj (12 Khammouan)"


# --------------------------------------------------------------------------- reporting rates


def expected_rates() -> dict[tuple[str, str], bool]:
    doc = load()
    return {(pe, ou): not ((ou == HOUAPHAN and (int(pe[:4]), int(pe[5:])) < (2023, 44)) or (ou == CAPITAL and pe == "2023W33"))
            for pe in doc["metaData"]["dimensions"]["pe"] for ou in doc["metaData"]["dimensions"]["ou"]}


def test_reporting_rates_parse_to_reported_units_and_weeks():
    rates = parse_reporting_rates(load(RATES), DS)
    assert rates.height == 18 * 52 and rates["expected"].sum() == 936
    got = {(r["period"], r["orgUnit"]): r["reported"] for r in rates.iter_rows(named=True)}
    assert got == expected_rates()
    assert parse_reporting_rates(load(RATES), "otherDataSt").is_empty()


def test_an_absent_cell_of_a_reported_week_is_a_published_zero_and_unreported_stays_missing():
    doc = combined()
    rows, problems = parse_analytics(doc, mapping(data_set=DS))
    assert problems.is_empty()
    present = {(r[1], r[2]) for r in doc["rows"]}
    want_zero = {k for k, rep in expected_rates().items() if rep and k not in present}
    zeros = rows.filter(pl.col("origin") == "reported_zero")
    assert set(zip(zeros["period"], zeros["orgUnit"])) == want_zero and len(want_zero) == 936 - 707 - 29
    assert set(zeros["cases"]) == {0} and zeros["row"].to_list() == list(range(708, 708 + len(want_zero)))
    assert rows["cases"].sum() == sum(int(r[3]) for r in doc["rows"])           # zeros add rows, never cases
    assert ("2023W33", CAPITAL) not in present | want_zero                      # no report: still missing
    assert rows.filter(pl.col("orgUnit") == HOUAPHAN).height == 24              # nor filled before its first report
    # without data_set, the rates beside the data are ignored: nothing is filled
    assert parse_analytics(doc, mapping())[0].height == 707


def test_partly_reported_units_and_unmapped_items_get_no_zero():
    doc = combined()
    for r in doc["reportingRates"]["rows"]:      # Bokeo expects two reports a week but sends one
        if r[2] == "FRmrFTE63D0" and r[0].endswith("EXPECTED_REPORTS"):
            r[3] = "2.0"
    doc["metaData"]["dimensions"]["dx"].append("unmappedDE1")
    rows, problems = parse_analytics(doc, mapping(data_set=DS))
    assert problems.is_empty()
    zeros = rows.filter(pl.col("origin") == "reported_zero")
    assert "FRmrFTE63D0" not in set(zeros["orgUnit"]) and set(zeros["dataElement"]) == {DENGUE}


def test_reporting_rate_url_asks_the_same_periods_and_org_units():
    loc = ("https://hmis.example.la/api/analytics.json?dimension=dx:wryMP8p8k1C&dimension=co"
           "&dimension=pe:LAST_52_WEEKS&dimension=ou:LEVEL-qpXLDdXT3po&displayProperty=NAME")
    url = reporting_rate_url(loc, DS)
    assert urlsplit(url).path == "/api/analytics.json"
    assert parse_qsl(urlsplit(url).query) == [
        ("dimension", f"dx:{DS}.ACTUAL_REPORTS;{DS}.EXPECTED_REPORTS"), ("dimension", "pe:LAST_52_WEEKS"),
        ("dimension", "ou:LEVEL-qpXLDdXT3po"), ("displayProperty", "NAME")]
    bare = reporting_rate_url("https://x/api/analytics?dimension=pe:2024W1&filter=dx:abc&dimension=ou:USER_ORGUNIT", DS)
    assert parse_qsl(urlsplit(bare).query)[0] == ("dimension", f"dx:{DS}.ACTUAL_REPORTS;{DS}.EXPECTED_REPORTS")
    assert ("filter", "dx:abc") not in parse_qsl(urlsplit(bare).query)


# --------------------------------------------------------------------------- completeness, end to end


def statuses(wh, cfg) -> pl.DataFrame:
    return cp.completeness(wh, [cfg], today=TODAY).sort("week_start")


def ingest(tmp_path, doc: dict, **dhis2):
    cfg = source_from_dict(config(**dhis2))
    path = tmp_path / "analytics.json"
    path.write_text(json.dumps(doc))
    wh = tmp_path / "warehouse"
    report = pipeline.ingest(cfg, path, wh, issue_date=dt.date(2024, 4, 20))
    for what in ("rows", "cases"):
        c = report[what]
        assert c["read"] == c["published"] + c["quarantined"] + c["set_aside"], (what, c)
    return wh, cfg, report


def test_without_reporting_rates_the_omitted_cells_make_weeks_partial(tmp_path):
    wh, cfg, report = ingest(tmp_path, load())
    assert report["rows"] == {**report["rows"], "read": 707, "published": 707, "quarantined": 0}
    got = statuses(wh, cfg)
    assert got.height == 52 and got.group_by("status").len().sort("status").rows() == [("late", 26), ("partial", 26)]


def test_with_reporting_rates_every_reported_week_is_complete(tmp_path):
    wh, cfg, report = ingest(tmp_path, combined(), data_set=DS)
    zeros = 936 - 707 - 29
    assert report["rows"]["read"] == report["rows"]["published"] == 707 + zeros
    assert report["cases"]["published"] == sum(int(r[3]) for r in load()["rows"])
    published = read.cases_weekly(wh).collect()
    assert published.height == 707 + zeros and (published["cases"] == 0).sum() == zeros
    got = statuses(wh, cfg)
    by_week = dict(zip(got["epi_year"].cast(str) + "W" + got["epi_week"].cast(str), got["status"]))
    assert len(by_week) == 52 and by_week.pop("2023W33") == "partial"         # Vientiane Capital sent no report
    assert set(by_week.values()) == {"late"}                                    # ingested after every deadline
    w33 = got.filter((pl.col("epi_year") == 2023) & (pl.col("epi_week") == 33)).row(0, named=True)
    assert (w33["received"], w33["expected"]) == (16, 17)                       # Houaphan not expected yet


# --------------------------------------------------------------------------- over HTTP


def test_the_http_connector_asks_the_reporting_rates_and_lands_them_with_the_data(server, tmp_path):
    data, rates = DATA.read_bytes(), RATES.read_bytes()

    def answer(query, headers):
        dx = query.get("dimension", "")           # the data query puts dx last (the server keeps the last value)
        return Reply(body=rates if dx.startswith(f"dx:{DS}.") else data, headers={"Content-Type": "application/json"})

    server.route("/api/analytics.json", answer)
    location = server.url("/api/analytics.json?dimension=pe:LAST_52_WEEKS&dimension=ou:LEVEL-qpXLDdXT3po"
                          f"&dimension=dx:{DENGUE}")
    cfg = source_from_dict({**config(data_set=DS), "location": location, "http": FAST})
    wh = tmp_path / "warehouse"
    [report] = pipeline.fetch_and_ingest(cfg, wh)
    asked = [r.query.get("dimension") for r in server.hits("/api/analytics.json")]
    assert asked == [f"dx:{DENGUE}", f"dx:{DS}.ACTUAL_REPORTS;{DS}.EXPECTED_REPORTS"]
    assert report["rows"]["published"] == 936 - 29 and report["rows"]["quarantined"] == 0
    [raw] = [p for p in (wh / "raw" / cfg.id).iterdir() if p.name.endswith(".report.json")]   # <sha256>.json: provenance
    landed = json.loads(raw.read_bytes())                # one raw file (<sha256>.report.json): data + reporting rates
    assert landed["rows"] == load()["rows"] and landed["reportingRates"] == load(RATES)
    assert statuses(wh, cfg)["status"].value_counts().sort("status").rows() == [("late", 51), ("partial", 1)]


def test_a_data_set_on_a_data_value_sets_location_is_refused(server, tmp_path):
    server.route("/api/dataValueSets.json", Reply(body=b'{"dataValues": []}'))
    cfg = source_from_dict({**config(data_set=DS), "location": server.url("/api/dataValueSets.json"), "http": FAST})
    with pytest.raises(Exception, match="dhis2.data_set needs an /api/analytics location"):
        pipeline.fetch_and_ingest(cfg, tmp_path / "warehouse")


def test_unknown_country_or_bad_strip_is_a_config_error():
    with pytest.raises(ValueError, match="unknown ISO 3166-1 alpha-3"):
        mapping(org_unit_names={"country": "XXX"})
    with pytest.raises(ValueError):
        mapping(org_unit_names={"country": "LAO", "strip": "("})
    assert copy.deepcopy(mapping()).org_unit_names.strip.startswith("^")
