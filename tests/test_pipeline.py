"""End to end on real data: land -> process -> publish, revisions, quarantine, readers agree."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as pads
import pytest

from vigila.ingest import pipeline
from vigila.warehouse import publish, read
from vigila.config import load_source, source_from_dict
from vigila.warehouse.storage import Storage

from conftest import DEMO, SOURCES
from test_storage import s3_settings, store  # noqa: F401  (fixtures: a folder and a real S3 server)

PERU = SOURCES / "per_minsa_dengue_linelist.yaml"
PAHO = SOURCES / "paho_opendengue_national.yaml"
ISO = {"AMAZONAS": "PE-AMA", "ANCASH": "PE-ANC", "APURIMAC": "PE-APU", "AREQUIPA": "PE-ARE", "AYACUCHO": "PE-AYA",
       "CAJAMARCA": "PE-CAJ", "CALLAO": "PE-CAL", "CUSCO": "PE-CUS", "HUANCAVELICA": "PE-HUV", "HUANUCO": "PE-HUC",
       "ICA": "PE-ICA", "JUNIN": "PE-JUN", "LA LIBERTAD": "PE-LAL", "LAMBAYEQUE": "PE-LAM", "LIMA": "PE-LIM",
       "LORETO": "PE-LOR", "MADRE DE DIOS": "PE-MDD", "MOQUEGUA": "PE-MOQ", "PASCO": "PE-PAS", "PIURA": "PE-PIU",
       "PUNO": "PE-PUN", "SAN MARTIN": "PE-SAM", "TACNA": "PE-TAC", "TUMBES": "PE-TUM", "UCAYALI": "PE-UCA"}


@pytest.fixture(scope="module")
def demo_wh(tmp_path_factory):
    wh = tmp_path_factory.mktemp("demo") / "warehouse"
    reports = {}
    for path in (PAHO, PERU):
        cfg = load_source(path)
        reports[cfg.id] = pipeline.ingest(cfg, cfg.location, wh, issue_date=dt.date(2025, 1, 10))
    return wh, reports


def test_peru_weekly_counts_equal_an_independent_count_of_the_line_list(demo_wh):
    wh, reports = demo_wh
    raw = pl.read_csv(gzip.decompress((DEMO / "peru_dengue_linelist_2019_2022.csv.gz").read_bytes()),
                      infer_schema=False)
    expected = (raw.filter(pl.col("departamento") != r"\N")
                .group_by(geo_code=pl.col("departamento").replace_strict(ISO),
                          epi_year=pl.col("ano").cast(pl.Int32), epi_week=pl.col("semana").cast(pl.Int32))
                .agg(pl.len().cast(pl.Int64).alias("cases")).sort("geo_code", "epi_year", "epi_week"))
    published = (read.cases_weekly(wh).filter(pl.col("source_id") == "per_minsa_dengue_linelist")
                 .group_by("geo_code", "epi_year", "epi_week").agg(pl.col("cases").sum())
                 .sort("geo_code", "epi_year", "epi_week").collect())
    assert published.equals(expected)
    report = reports["per_minsa_dengue_linelist"]
    # the rows without a departamento are reported, not silently dropped
    assert report["rows_read"] == raw.height == published["cases"].sum() + report["rows_quarantined"]
    unknown = [c for c in report["by_check"] if c["check"] == "unknown_place"]
    assert unknown[0]["rows"] == 57 and unknown[0]["column"] == "departamento"


def test_opendengue_weekly_national_counts_round_trip(demo_wh):
    wh, reports = demo_wh
    raw = pl.read_csv(gzip.decompress((DEMO / "opendengue_paho_national_v1_3.csv.gz").read_bytes()), infer_schema=False,
                      null_values="NA")
    weekly = raw.filter(pl.col("T_res") == "Week").select(
        pl.col("ISO_A0").alias("country_iso3"), pl.col("calendar_start_date").str.to_date().alias("week_start"),
        pl.col("dengue_total").cast(pl.Float64).cast(pl.Int64).alias("cases")).sort("country_iso3", "week_start")
    published = (read.cases_weekly(wh).filter(pl.col("source_id") == "paho_opendengue_national")
                 .select("country_iso3", "week_start", "cases").sort("country_iso3", "week_start").collect())
    assert published.equals(weekly)
    assert reports["paho_opendengue_national"]["rows_set_aside"] == raw.filter(pl.col("T_res") != "Week").height
    # the epi year comes from the week, not from the calendar `Year` column
    bra = read.cases_weekly(wh).filter(pl.col("country_iso3") == "BRA", pl.col("week_start") == dt.date(2022, 1, 2)).collect()
    assert bra.select("epi_year", "epi_week").row(0) == (2022, 1)


def test_analysts_read_the_same_totals_with_duckdb_pandas_polars_pyarrow(demo_wh):
    wh, _ = demo_wh
    uri = publish.current_uri(Storage.open(wh), "cases_weekly")
    pl_total = pl.scan_parquet(f"{uri}/**/*.parquet", hive_partitioning=True).select(pl.col("cases").sum()).collect().item()
    duck = duckdb.sql(f"select sum(cases), count(*) from read_parquet('{uri}/**/*.parquet', hive_partitioning=true)").fetchall()[0]
    pdf = pd.read_parquet(uri)
    arrow = pads.dataset(uri, format="parquet", partitioning="hive").to_table()
    assert pl_total == duck[0] == int(pdf["cases"].sum()) == sum(arrow["cases"].to_pylist())
    assert duck[1] == len(pdf) == arrow.num_rows
    assert set(pdf["country_iso3"].astype(str)) >= {"PER", "BRA", "MEX"}


def test_catalog_and_data_dictionary_are_in_the_warehouse(demo_wh):
    wh, _ = demo_wh
    catalog = json.loads((wh / "catalog.json").read_text())
    names = {d["name"]: d for d in catalog["datasets"]}
    assert {"cases_weekly", "cases_revisions", "quarantine"} <= set(names)
    assert names["cases_weekly"]["rows"] == read.cases_weekly(wh).select(pl.len()).collect().item()
    assert names["cases_weekly"]["schema_version"] == "1.2.0"
    assert "epi_week" in (wh / "docs" / "data_dictionary.md").read_text()


def test_quarantine_dataset_has_row_level_records(demo_wh):
    wh, _ = demo_wh
    q = read.dataset(wh, "quarantine").filter(pl.col("source_id") == "per_minsa_dengue_linelist").collect()
    missing_place = q.filter(pl.col("check") == "unknown_place")
    assert missing_place.height == 57 and missing_place["row"].min() > 0
    age = q.filter(pl.col("column") == "edad").to_dicts()
    assert age[0]["severity"] == "warning" and age[0]["value"].startswith("35109")


# --------------------------------------------------------------------------- small files


def weekly_source(**over) -> dict:
    cfg = {"id": "mex_dgepi_weekly", "country": "MEX", "reporter": {"institution": "DGE", "type": "ministry"},
           "diseases": ["dengue"], "geo_level": "admin1",
           "columns": {"place": "estado", "epi_year": "anio", "epi_week": "semana", "cases": "casos", "deaths": "defunciones"}}
    cfg.update(over)
    return cfg


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


HEADER = "estado,anio,semana,casos,defunciones\n"


def test_bad_rows_are_quarantined_and_no_valid_row_is_lost(tmp_path):
    text = HEADER + "\n".join([
        "Jalisco,2024,1,10,0",         # 1 ok
        "Jalisco,2024,2,-3,0",         # 2 negative count
        "Jalisco,2024,54,4,0",         # 3 week 54
        "Jalisco,2023,53,4,0",         # 4 2023 has 52 MMWR weeks
        "Narnia,2024,3,4,0",           # 5 unknown place
        "Yucatán,2024,3,abc,0",        # 6 not a number
        "Yucatan,2024,4,5,",           # 7 ok (deaths missing)
        "Oaxaca,2024,5,6,1",           # 8 the same whole line twice: both counted, with a warning
        "Oaxaca,2024,5,6,1",           # 9
    ]) + "\n"
    report, q = pipeline.check(source_from_dict(weekly_source()), write(tmp_path, "mx.csv", text))
    errors = {(r["row"], r["check"]) for r in q.filter(pl.col("severity") == "error").to_dicts()}
    assert errors == {(2, "greater_than_or_equal_to(0)"), (3, "less_than_or_equal_to(53)"), (4, "week_not_in_year"),
                      (5, "unknown_place"), (6, "type:int64")}
    assert q.filter(pl.col("severity") == "warning").select("row", "check", "value").rows() == [
        (9, "identical_rows", "same whole line as row 8")]
    assert q.filter(pl.col("row") == 6)["value"].to_list() == ["abc"]
    assert q.filter(pl.col("row") == 6)["column"].to_list() == ["casos"]
    assert report["harmonised_rows"] == 3 and report["cases_published"] == 10 + 5 + 6 + 6
    # every row and case accounted for: the negative count and "abc" are rows without a readable count
    assert report["rows"] == {"read": 9, "published": 4, "quarantined": 5, "set_aside": 0}
    assert report["cases"] == {"read": 10 + 4 + 4 + 4 + 5 + 6 + 6, "published": 27, "quarantined": 12, "set_aside": 0,
                               "unaccounted": 0}
    assert report["rows_without_count"] == 2
    assert q.filter(pl.col("severity") == "error").unique("row")["cases"].sum() == 12
    # 5 of 9 rows lost: this run would not publish
    assert report["status"] == "rejected" and len(report["rejected_because"]) == 2


def test_reingest_is_idempotent_and_a_later_issue_supersedes(tmp_path, warehouse):
    cfg = source_from_dict(weekly_source())
    first = write(tmp_path, "w1.csv", HEADER + "Jalisco,2024,1,10,0\nJalisco,2024,2,12,1\n")
    r1 = pipeline.ingest(cfg, first, warehouse, issue_date=dt.date(2024, 1, 20))
    assert r1["revisions_added"] == 2
    assert pipeline.ingest(cfg, first, warehouse)["status"] == "unchanged"           # same bytes: nothing
    forced = pipeline.ingest(cfg, first, warehouse, issue_date=dt.date(2024, 1, 20), force=True)
    assert forced["revisions_added"] == 0                                              # same weeks: no new rows
    assert read.cases_weekly(warehouse).select(pl.col("cases").sum()).collect().item() == 22

    # the next week's report revises week 2 upwards and adds week 3
    second = write(tmp_path, "w2.csv", HEADER + "Jalisco,2024,1,10,0\nJalisco,2024,2,15,1\nJalisco,2024,3,7,0\n")
    r2 = pipeline.ingest(cfg, second, warehouse, issue_date=dt.date(2024, 1, 27))
    assert r2["revisions_added"] == 2                                                  # week 2 revised, week 3 new
    now = read.cases_weekly(warehouse).sort("epi_week").collect()
    assert now.select("epi_week", "cases").rows() == [(1, 10), (2, 15), (3, 7)]
    assert now.filter(pl.col("epi_week") == 2)["issue_date"].item() == dt.date(2024, 1, 27)
    then = read.cases_weekly(warehouse, as_of="2024-01-21").sort("epi_week").collect()
    assert then.select("epi_week", "cases").rows() == [(1, 10), (2, 12)]
    assert read.cases_weekly(warehouse, as_of=dt.date(2024, 1, 19)).collect().height == 0
    revisions = read.dataset(warehouse, "cases_revisions").filter(pl.col("epi_week") == 2).collect()
    assert sorted(revisions["cases"].to_list()) == [12, 15]

    # re-ingesting the older report later does not roll the dataset back
    pipeline.ingest(cfg, first, warehouse, issue_date=dt.date(2024, 1, 20), force=True)
    assert read.cases_weekly(warehouse).filter(pl.col("epi_week") == 2).collect()["cases"].item() == 15


def test_a_publish_killed_between_revisions_and_weekly_heals_on_the_next_run(tmp_path, warehouse, monkeypatch):
    cfg = source_from_dict(weekly_source())
    pipeline.ingest(cfg, write(tmp_path, "w1.csv", HEADER + "Jalisco,2024,1,10,0\n"), warehouse, issue_date=dt.date(2024, 1, 20))
    second = write(tmp_path, "w2.csv", HEADER + "Jalisco,2024,1,10,0\nJalisco,2024,2,15,1\n")
    real_commit = publish.commit

    def dies_before_weekly(storage, name, **kw):       # the process dies after the cases_revisions commit
        if name == "cases_weekly":
            raise SystemExit("killed")
        return real_commit(storage, name, **kw)

    monkeypatch.setattr(publish, "commit", dies_before_weekly)
    with pytest.raises(SystemExit):
        pipeline.ingest(cfg, second, warehouse, issue_date=dt.date(2024, 1, 27))
    monkeypatch.setattr(publish, "commit", real_commit)
    assert read.dataset(warehouse, "cases_revisions").collect().height == 2                 # week 2 is a revision...
    assert read.cases_weekly(warehouse).collect()["epi_week"].to_list() == [1]               # ...but not published
    healed = pipeline.ingest(cfg, second, warehouse, issue_date=dt.date(2024, 1, 27))        # the retry (same bytes)
    assert healed["status"] == "published" and healed["revisions_added"] == 0
    now = read.cases_weekly(warehouse).sort("epi_week").collect()
    assert now.select("epi_week", "cases").rows() == [(1, 10), (2, 15)]
    weekly = publish.current_manifest(Storage.open(warehouse), "cases_weekly")
    assert weekly.extra["revisions_version"] == publish.current_manifest(Storage.open(warehouse), "cases_revisions").version


def test_the_healing_run_locks_every_partition_it_rebuilds(tmp_path, warehouse, monkeypatch):
    """A run that finds cases_weekly behind its revisions rebuilds every partition, so it holds every partition's
    lock, not only its own file's: a publisher into another country x disease cannot commit in between and
    lose its rows to the rebuild."""
    zika = source_from_dict(weekly_source(id="mex_dgepi_zika", diseases=["zika"]))
    pipeline.ingest(zika, write(tmp_path, "z.csv", HEADER + "Jalisco,2024,1,3,0\n"), warehouse, issue_date=dt.date(2024, 1, 20))
    cfg = source_from_dict(weekly_source())
    real_commit, real_lock = publish.commit, Storage.lock
    monkeypatch.setattr(publish, "commit", lambda storage, name, **kw: (_ for _ in ()).throw(SystemExit("killed"))
                        if name == "cases_weekly" else real_commit(storage, name, **kw))
    with pytest.raises(SystemExit):
        pipeline.ingest(cfg, write(tmp_path, "w1.csv", HEADER + "Jalisco,2024,1,10,0\n"), warehouse, issue_date=dt.date(2024, 1, 20))
    monkeypatch.setattr(publish, "commit", real_commit)
    held: list[str] = []

    def spying(self, key, **kw):
        held.append(key)
        return real_lock(self, key, **kw)

    monkeypatch.setattr(Storage, "lock", spying)
    pipeline.ingest(cfg, write(tmp_path, "w2.csv", HEADER + "Jalisco,2024,2,4,0\n"), warehouse, issue_date=dt.date(2024, 1, 27))
    parts = [k for k in held if ".partition-" in k]
    assert parts == ["datasets/cases_weekly/.partition-mex-dengue.lock", "datasets/cases_weekly/.partition-mex-zika.lock"]
    rows = read.cases_weekly(warehouse).select("disease", "epi_week", "cases").sort("disease", "epi_week").collect().rows()
    assert rows == [("dengue", 1, 10), ("dengue", 2, 4), ("zika", 1, 3)]
    held.clear()   # healed: the next run locks only its own partition
    pipeline.ingest(cfg, write(tmp_path, "w3.csv", HEADER + "Jalisco,2024,3,5,0\n"), warehouse, issue_date=dt.date(2024, 2, 3))
    assert [k for k in held if ".partition-" in k] == ["datasets/cases_weekly/.partition-mex-dengue.lock"]


def test_other_sources_partitions_are_untouched(tmp_path, warehouse):
    a = source_from_dict(weekly_source())
    b = source_from_dict(weekly_source(id="mex_imss_weekly", reporter={"institution": "IMSS", "type": "social_security"}))
    pipeline.ingest(a, write(tmp_path, "a.csv", HEADER + "Jalisco,2024,1,10,0\n"), warehouse)
    pipeline.ingest(b, write(tmp_path, "b.csv", HEADER + "Jalisco,2024,1,8,0\n"), warehouse)
    rows = read.cases_weekly(warehouse).select("source_id", "reporter_type", "cases").sort("source_id").collect().rows()
    assert rows == [("mex_dgepi_weekly", "ministry", 10), ("mex_imss_weekly", "social_security", 8)]


def test_cumulative_source_publishes_differences_and_reports_a_decrease(tmp_path, warehouse):
    cfg = source_from_dict(weekly_source(shape="cumulative_counts", limits={"max_quarantined_share": 0.5}))
    text = HEADER + "Jalisco,2024,1,10,0\nJalisco,2024,2,25,1\nJalisco,2024,3,22,1\nJalisco,2024,4,30,2\n"
    report = pipeline.ingest(cfg, write(tmp_path, "c.csv", text), warehouse)
    rows = read.cases_weekly(warehouse).sort("epi_week").select("epi_week", "cases", "deaths").collect().rows()
    assert rows == [(1, 10, 0), (2, 15, 1), (4, 8, 1)]
    [dec] = [c for c in report["by_check"] if c["check"] == "cumulative_decrease"]
    assert dec["first_row"] == 3 and "weekly -3" in dec["example"]


def test_latin1_semicolon_decimal_comma_file_from_a_ministry(tmp_path, warehouse):
    cfg = source_from_dict(weekly_source(csv={"decimal": ",", "thousands": "."}))
    text = "estado;anio;semana;casos;defunciones\nMéxico;2024;1;1.204;0\nNuevo León;2024;1;35;0\n"
    p = tmp_path / "mx_latin1.csv"
    p.write_bytes(text.encode("latin-1"))
    report = pipeline.ingest(cfg, p, warehouse)
    assert report["file"]["encoding"] == "cp1252" and report["notes"]
    got = read.cases_weekly(warehouse).select("geo_code", "cases").sort("geo_code").collect().rows()
    assert got == [("MX-MEX", 1204), ("MX-NLE", 35)]


def test_ingest_into_an_s3_warehouse(store, tmp_path):  # noqa: F811 (pytest fixture)
    """The same run against a folder and against a real S3 server (SeaweedFS): same rows back."""
    cfg = source_from_dict(weekly_source(limits={"max_quarantined_share": 1}))   # half the rows fail, on purpose
    report = pipeline.ingest(cfg, write(tmp_path, "w.csv", HEADER + "Jalisco,2024,1,10,0\nNarnia,2024,1,3,0\n"), store,
                             issue_date=dt.date(2024, 1, 20))
    assert report["status"] == "published" and report["rows_quarantined"] == 1
    assert read.cases_weekly(store).select("geo_code", "cases").collect().rows() == [("MX-JAL", 10)]
    assert read.dataset(store, "quarantine").collect()["check"].to_list() == ["unknown_place"]
    assert store.exists(f"raw/{cfg.id}/{report['file']['sha256']}.csv")
    assert store.read_json("catalog.json")["datasets"]
