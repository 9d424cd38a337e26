"""Health areas that are parts of one admin1 (vigila/reference/admin1/parts): the real names and rule of
OpenDengue's geo-matching script (tests/fixtures/real/lac_health_areas_opendengue) resolve to the ISO code of
the department OpenDengue names; DHIS2 org units named by such parts are summed into their department, never
counted twice; names OpenDengue places where ISO 3166-2 cannot follow stay unknown_place."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from connectors.dhis2 import Dhis2Mapping, org_unit_places, parse_analytics
from vigila.core import places
from vigila.ingest import pipeline
from vigila.warehouse import read
from vigila.config import source_from_dict

from conftest import FIXTURES

EXTRACT = FIXTURES / "real" / "lac_health_areas_opendengue" / "geomatch_health_areas_extract.R"
COUNTRY = {"GUATEMALA": "GTM", "PERU": "PER"}
# what Vigila does not take from OpenDengue's rule, and why (README.md of the fixture)
NOT_TAKEN = {("PER", "CHANKA"), ("PER", "LIMA CIUDAD"), ("PER", "LIMA ESTE"), ("PER", "LIMA NORTE"), ("PER", "LIMA SUR")}
TYPOS = {"CAJAMARACA": "CAJAMARCA"}          # OpenDengue's own spelling slip (CHOTA -> "CAJAMARACA")
STRIP = r"^\s*(DAS|Área de Salud)\s+"


def rules() -> list[tuple[str, str, str]]:
    """(ISO3, source name, GAUL department) for every rule line of the real extract."""
    text = EXTRACT.read_text(encoding="utf-8")
    out = [(COUNTRY[c], a, d) for c, a, d in
           re.findall(r'description == "(GUATEMALA|PERU), ([^"]+)"\] = "([^"]+)"', text)]
    out += [("NIC", a, d) for a, d in re.findall(r'NAME_A1 == "([^"]+)"\] = "([^"]+)"', text)]
    return out


def test_the_extract_holds_the_rules_it_is_read_for():
    got = rules()
    assert len(got) == 14 + 3 + 10
    assert ("GTM", "PETEN SUR ORIENTAL", "PETEN") in got and ("NIC", "BILWI", "ATLANTICO NORTE") in got


@pytest.mark.parametrize("iso3,area,department", rules())
def test_each_health_area_resolves_to_the_department_opendengue_names_or_stays_unknown(iso3, area, department):
    table = places.admin1_table(iso3)
    [want] = places.resolve([TYPOS.get(department, department)], table)["geo_code"].to_list()
    [got] = places.resolve([area], table)["geo_code"].to_list()
    if (iso3, area) in NOT_TAKEN:
        assert got is None                                   # never guessed
    else:
        assert want is not None and got == want


def test_the_accented_spellings_of_the_master_file_resolve_once_repaired_as_the_script_repairs_them():
    """The script's pattern_list: names whose accent arrived as U+FFFD, repaired with the list's letter."""
    text = EXTRACT.read_text(encoding="utf-8")
    repaired = {letter: [n.replace("\ufffd", {"E": "é", "A": "á"}[letter]) for n in re.findall(r'"([^"]*)"', body)]
                for letter, body in re.findall(r'^(E|A) = c\((.*?)\)', text, flags=re.S | re.M)}
    names = [n for n in repaired["E"] + repaired["A"] if n[:1].isupper() and n[1:2].islower()]   # Guatemala's
    assert "Petén Norte" in names and "Ixcán" in names and "El Quiché" in names
    got = dict(zip(names, places.resolve(names, places.admin1_table("GTM"))["geo_code"]))
    assert got == {"Petén Norte": "GT-17", "Petén Sur Occidental": "GT-17", "Petén Suroccidental": "GT-17",
                   "Petén Sur Oriental": "GT-17", "El Quiché": "GT-14", "Sacatepéquez": "GT-03",
                   "Petén Suroriental": "GT-17", "Ixcán": "GT-14", "Totonicapán": "GT-08", "Sololá": "GT-07"}


def test_every_guatemala_department_stays_reachable_and_the_parts_are_declared_as_such():
    table = places.admin1_table("GTM")
    codes = [f"GT-{i:02d}" for i in range(1, 23)]
    assert set(table["geo_code"]) == set(codes)
    parts = places.admin1_parts("GTM")
    assert {"PETEN NORTE", "IXCAN", "IXIL", "EL QUICHE", "GUATEMALA SUR"} <= parts
    assert "PETEN" not in parts and "QUICHE" not in parts and "GUATEMALA" not in parts   # the departments themselves


# --------------------------------------------------------------------------- DHIS2 org units by name


def mapping(**over) -> Dhis2Mapping:
    return Dhis2Mapping.model_validate({"data_elements": {"DENGUEde001": {"disease": "dengue"}},
                                        "org_unit_names": {"country": "GTM", "strip": STRIP}, **over})


def test_dhis2_units_named_by_parts_share_their_department_and_a_whole_beside_a_part_is_a_double_count():
    units = {"u1": "DAS Petén Norte", "u2": "DAS Petén Sur Occidental", "u3": "DAS Petén Sur Oriental",
             "u4": "DAS Guatemala Central", "u5": "DAS Guatemala Sur", "u6": "DAS Escuintla",
             "u7": "Área de Salud Quiché", "u8": "DAS Ixcán"}
    got = {r["orgUnit"]: (r["place"], r["__ou_check"]) for r in org_unit_places(units, mapping()).iter_rows(named=True)}
    assert got["u1"] == got["u2"] == got["u3"] == ("GT-17", None)
    assert got["u4"] == got["u5"] == ("GT-01", None) and got["u6"] == ("GT-05", None)
    # "Quiché" names the department, not its remainder area ("El Quiché"): with Ixcán it would count Ixcán twice
    assert got["u7"] == got["u8"] == (None, "duplicate_geo_code")
    twice = org_unit_places({"a": "DAS Petén Norte", "b": "Petén Norte"}, mapping())       # the same part twice
    assert set(twice["__ou_check"]) == {"duplicate_geo_code"}


def analytics() -> dict:
    """SYNTHETIC (no public DHIS2 recording of a Guatemalan instance was found): an analytics answer in the
    shape of tests/fixtures/dhis2/lao, whose org units are named by the real DAS names of the fixture."""
    units = {"ouPetenNor1": "DAS Petén Norte", "ouPetenSOc1": "DAS Petén Sur Occidental",
             "ouPetenSOr1": "DAS Petén Sur Oriental", "ouEscuintl1": "DAS Escuintla"}
    rows = [["DENGUEde001", "2024W10", "ouPetenNor1", "3.0"], ["DENGUEde001", "2024W10", "ouPetenSOc1", "4.0"],
            ["DENGUEde001", "2024W10", "ouPetenSOr1", "5.0"], ["DENGUEde001", "2024W10", "ouEscuintl1", "7.0"],
            ["DENGUEde001", "2024W11", "ouPetenNor1", "1.0"]]
    headers = [{"name": n, "column": n, "valueType": "TEXT", "type": "java.lang.String", "hidden": False, "meta": True}
               for n in ("dx", "pe", "ou", "value")]
    return {"headers": headers, "rows": rows, "height": len(rows), "width": 4,
            "metaData": {"items": {u: {"name": n} for u, n in units.items()},
                         "dimensions": {"dx": ["DENGUEde001"], "pe": ["2024W10", "2024W11"], "ou": list(units)}}}


def config(**over) -> dict:
    return {"id": "gtm_das_dengue_example", "country": "GTM", "format": "dhis2", "shape": "weekly_counts",
            "epiweek": "iso", "geo_level": "admin1", "diseases": ["dengue"],
            "columns": {k: k for k in ("place", "epi_year", "epi_week", "cases", "classification", "sex", "age_group")},
            "reporter": {"institution": "MSPAS DHIS2 (example)", "type": "ministry"},
            "dhis2": mapping().model_dump(exclude_none=True), **over}


def test_parts_are_summed_into_the_department_and_every_case_is_accounted(tmp_path):
    rows, problems = parse_analytics(analytics(), mapping())
    assert problems.is_empty() and set(rows["place"]) == {"GT-17", "GT-05"}
    path = tmp_path / "analytics.json"
    path.write_text(json.dumps(analytics()))
    wh = tmp_path / "warehouse"
    report = pipeline.ingest(source_from_dict(config(aggregate="sum")), path, wh, issue_date=dt.date(2024, 3, 20))
    for what in ("rows", "cases"):
        c = report[what]
        assert c["read"] == c["published"] + c["quarantined"] + c["set_aside"], (what, c)
    assert report["cases"] == {**report["cases"], "read": 20, "published": 20, "quarantined": 0}
    weekly = read.cases_weekly(wh).collect().sort("geo_code", "epi_week")
    assert weekly.select("geo_code", "epi_week", "cases").rows() == [("GT-05", 10, 7), ("GT-17", 10, 12), ("GT-17", 11, 1)]


def test_without_aggregate_sum_the_parts_are_refused_with_the_fix_not_silently_summed(tmp_path):
    path = tmp_path / "analytics.json"
    path.write_text(json.dumps(analytics()))
    with pytest.raises(pipeline.UndeclaredSubRows, match=r"3 rows share 1 place-weeks.*orgUnit.*`aggregate: sum`"):
        pipeline.check(source_from_dict(config()), path)
