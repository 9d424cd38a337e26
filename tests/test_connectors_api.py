"""DHIS2 and FHIR reports fetched over real HTTP (127.0.0.1) and ingested into the published datasets.

The payloads are the documented-shape fixtures of tests/fixtures/dhis2 and tests/fixtures/fhir; the
configs are the example sources of sources/, with `location` pointed at the local server. What the
parsers could not place reaches the quarantine with its check; everything else is published.
"""

from __future__ import annotations

import base64
import json

import polars as pl
import pytest

from connectors import dhis2, fhir
from vigila.ingest import pipeline
from vigila.warehouse import read
from vigila.config import deep_merge, load_source, source_from_dict

from conftest import FIXTURES, SOURCES
from test_connector_http import FAST, Reply, nothing_published, server  # noqa: F401  (fixture)

DHIS2_DOC = FIXTURES / "dhis2" / "data_value_sets_dengue.json"
PAGES = [FIXTURES / "fhir" / "searchset_page1.json", FIXTURES / "fhir" / "searchset_page2.json"]


def source(name: str, location: str, **over):
    raw = load_source(SOURCES / name).model_dump(mode="json", exclude_none=False)
    return source_from_dict(deep_merge(raw, {"location": location, "http": FAST, **over}))


def quarantine(wh) -> pl.DataFrame:
    return read.dataset(wh, "quarantine").collect()


def test_dhis2_data_value_sets_end_to_end(server, warehouse, monkeypatch):
    monkeypatch.setenv("VIGILA_DHIS2_HND_USER", "vigila")
    monkeypatch.setenv("VIGILA_DHIS2_HND_PASSWORD", "district")
    body = DHIS2_DOC.read_bytes()
    want = "Basic " + base64.b64encode(b"vigila:district").decode()
    server.route("/api/dataValueSets.json",
                 lambda q, h: Reply(body=body, headers={"Content-Type": "application/json"}) if h.get("authorization") == want
                 else Reply(401, b"{}"))
    src = source("dhis2_country_example.yaml", server.url("/api/dataValueSets.json?dataSet=mqba4z6GsJP"))
    with pytest.raises(pipeline.RunRejected) as rejected:     # the fixture's 6 broken values of 21: over 5 %
        pipeline.fetch_and_ingest(src, warehouse)
    assert rejected.value.report["rows"]["quarantined"] == 6 and not (warehouse / "datasets" / "cases_weekly").exists()
    src = source("dhis2_country_example.yaml", server.url("/api/dataValueSets.json?dataSet=mqba4z6GsJP"),
                 limits={"max_quarantined_share": 0.5})
    [report] = pipeline.fetch_and_ingest(src, warehouse, force=True)
    c = report["rows"]
    assert c["read"] == c["published"] + c["quarantined"] + c["set_aside"] and report["cases"]["unaccounted"] == 0
    rows, problems = dhis2.parse_data_value_sets(body, src.dhis2)
    got = read.cases_weekly(warehouse).collect()
    assert got["cases"].sum() == rows["cases"].sum() > 0
    assert got.height == rows.height
    q = quarantine(warehouse)
    assert sorted(q["row"].to_list()) == sorted(problems["row"].to_list())      # each, at its dataValues position
    assert set(q["check"]) == set(problems["check"])
    errors = problems.filter(pl.col("severity") == "error")
    assert report["rows_quarantined"] == errors["row"].n_unique() > 0
    assert set(q.filter(pl.col("severity") == "set_aside")["check"]) == {"deleted"}   # a deleted value: set aside


def test_dhis2_without_credentials_fails_with_nothing_published(server, warehouse, monkeypatch):
    monkeypatch.setenv("VIGILA_DHIS2_HND_USER", "vigila")
    monkeypatch.setenv("VIGILA_DHIS2_HND_PASSWORD", "wrong")
    server.route("/api/dataValueSets.json", Reply(401, b"{}"))
    src = source("dhis2_country_example.yaml", server.url("/api/dataValueSets.json"))
    with pytest.raises(Exception, match=r"dhis2_country_example: GET http://127\.0\.0\.1:\d+/api/dataValueSets\.json: HTTP 401"):
        pipeline.fetch_and_ingest(src, warehouse)
    assert nothing_published(warehouse)


def fhir_pages(server) -> list[bytes]:
    """The two searchset pages, page 1's next link pointing at the local server."""
    one, two = (json.loads(p.read_text()) for p in PAGES)
    for link in one["link"]:
        if link["relation"] == "next":
            link["url"] = server.url("/r4/page2")
    return [json.dumps(one).encode(), json.dumps(two).encode()]


def test_fhir_searchset_pages_end_to_end(server, warehouse):
    one, two = fhir_pages(server)
    server.route("/r4/MeasureReport", Reply(body=one, headers={"Content-Type": "application/fhir+json"}))
    server.route("/r4/page2", Reply(body=two, headers={"Content-Type": "application/fhir+json"}))
    src = source("fhir_reporter_example.yaml", server.url("/r4/MeasureReport?_count=4"))
    pipeline.fetch_and_ingest(src, warehouse)
    resources, page_problems = fhir.read_bundle_pages([json.loads(one), json.loads(two)])
    rows, problems = fhir.parse_measure_reports(resources, src.fhir)
    got = read.cases_weekly(warehouse).collect()
    assert got["cases"].sum() == rows["cases"].sum() > 0 and got.height == rows.height
    q = quarantine(warehouse)
    assert set(q["check"]) == set(pl.concat([page_problems, problems], how="diagonal_relaxed")["check"])


def test_fhir_page_repeated_by_the_server_is_not_counted_twice(server, warehouse):
    one, two = fhir_pages(server)
    repeated = json.loads(one)
    for link in repeated["link"]:                  # page 1 leads to a copy of itself, then to page 2
        if link["relation"] == "next":
            link["url"] = server.url("/r4/again")
    again = json.loads(one)
    server.route("/r4/MeasureReport", Reply(body=json.dumps(repeated).encode()))
    server.route("/r4/again", Reply(body=one))
    server.route("/r4/page2", Reply(body=two))
    src = source("fhir_reporter_example.yaml", server.url("/r4/MeasureReport"))
    pipeline.fetch_and_ingest(src, warehouse)
    resources, _ = fhir.read_bundle_pages([again, json.loads(two)])
    rows, _ = fhir.parse_measure_reports(resources, src.fhir)
    assert read.cases_weekly(warehouse).collect()["cases"].sum() == rows["cases"].sum()


def test_fhir_server_error_then_success_is_retried(server, warehouse):
    one, two = fhir_pages(server)
    server.route("/r4/MeasureReport", Reply(503, b"busy", headers={"Retry-After": "0"}), Reply(body=one))
    server.route("/r4/page2", Reply(body=two))
    pipeline.fetch_and_ingest(source("fhir_reporter_example.yaml", server.url("/r4/MeasureReport")), warehouse)
    assert len(server.hits("/r4/MeasureReport")) == 2 and read.cases_weekly(warehouse).collect().height > 0


@pytest.mark.parametrize("broken", [b'{"resourceType": "Bundle", "entry": [', b""])
def test_a_broken_fhir_page_fails_with_nothing_published(server, warehouse, broken):
    one, _ = fhir_pages(server)
    server.route("/r4/MeasureReport", Reply(body=one))
    server.route("/r4/page2", Reply(body=broken))
    with pytest.raises(Exception, match=r"fhir_reporter_example: .*127\.0\.0\.1:\d+/r4/page2"):
        pipeline.fetch_and_ingest(source("fhir_reporter_example.yaml", server.url("/r4/MeasureReport")), warehouse)
    assert nothing_published(warehouse)


def test_dhis2_org_unit_pages_follow_the_pager(server):
    """DHIS2 metadata pages carry pager.nextPage: the HTTP connector's next_link follows it."""
    import connectors

    pages = [json.loads((FIXTURES / "dhis2" / f"organisation_units_page{i}.json").read_text()) for i in (1, 2, 3)]
    for i, p in enumerate(pages):
        if "nextPage" in p.get("pager", {}):
            p["pager"]["nextPage"] = server.url(f"/api/organisationUnits/{i + 2}")
    server.route("/api/organisationUnits", Reply(body=json.dumps(pages[0]).encode()))
    for i in (2, 3):
        server.route(f"/api/organisationUnits/{i}", Reply(body=json.dumps(pages[i - 1]).encode()))
    src = source("dhis2_country_example.yaml", server.url("/api/organisationUnits"), format="json",
                 csv={"json_records_path": "organisationUnits"},
                 http={"auth": {"type": "none"}, "pagination": {"type": "next_link", "next_link": "pager.nextPage"}})
    [got] = connectors.fetch(src.location, source=src, state={})
    units = json.loads(got.path.read_text())["organisationUnits"]
    assert len(units) == sum(len(p["organisationUnits"]) for p in pages)
