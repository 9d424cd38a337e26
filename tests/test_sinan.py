"""SINAN microdata read directly from DATASUS `.dbc` files (pyreaddbc), with SINAN's conventions declared in the
source config: coded age (age_coding: sinan), YYYYWW epi weeks (columns.epi_yearweek), IBGE state codes
(value_maps.place), final classification (exclude) and evolution (value_maps.deaths).

Fixture: tests/fixtures/real/bra_sinan_dengue_dbc (real openDataSUS dengue rows; provenance in its README)."""

from __future__ import annotations

import datetime as dt
import json
import struct

import polars as pl
import pytest
import yaml
from epiweeks import Week

from vigila.core import epiweek
from vigila.ingest import pipeline
from vigila.warehouse import read
from vigila.config import load_source, source_from_dict
from vigila.ingest.readers import ReadError, detect_format, read_raw

from conftest import FIXTURES
from dbc_writer import dbc, dbf
from test_accounting import balanced
from test_flow import run_cli

HERE = FIXTURES / "real" / "bra_sinan_dengue_dbc"
DBC = HERE / "DENGBR24_cabofrio.dbc"
CSV = HERE / "DENGBR24_cabofrio_extract.csv"
YAML = HERE / "bra_sinan_dengue.yaml"
ISSUE = dt.date(2024, 12, 31)


def extract() -> pl.DataFrame:
    return pl.read_csv(CSV, separator=";", infer_schema=False)


def config(**over) -> dict:
    data = yaml.safe_load(YAML.read_text())
    data.update(location=str(DBC), **over)
    return data


def expected_published() -> pl.DataFrame:
    """What the config says, computed from the CSV extract with polars alone: cases per (onset week, band, sex)."""
    raw = extract().filter(~pl.col("CLASSI_FIN").is_in(["5", "8"]) & pl.col("CLASSI_FIN").is_not_null())
    weeks = {d: Week.fromdate(dt.date.fromisoformat(d), system="cdc") for d in raw["DT_SIN_PRI"].unique()}
    return raw.with_columns(pl.col("DT_SIN_PRI").replace_strict({d: w.week for d, w in weeks.items()},
                                                                return_dtype=pl.Int32).alias("epi_week"))


# --------------------------------------------------------------------------- the reader


def test_the_dbc_reads_back_the_real_rows(tmp_path):
    whole = {**config(), "shape": "weekly_counts", "columns": {"epi_yearweek": "SEM_PRI", "place": "SG_UF", "cases": "NU_IDADE_N"}}
    whole.pop("exclude")
    whole["age_coding"] = "none"
    cfg = source_from_dict(whole)                          # a count file: every column is read (whole-line hashes)
    table = read_raw(DBC, cfg, tmp_path)
    try:
        got = table.frame.collect()
    finally:
        table.close()
    raw = extract()
    assert table.format == "dbc" and table.encoding == "latin-1" and table.bad_rows is None
    assert got.height == raw.height == 171
    for column in ("DT_SIN_PRI", "NU_IDADE_N", "CS_SEXO", "ID_MN_RESI", "CLASSI_FIN", "EVOLUCAO", "DT_OBITO"):
        assert got[column].to_list() == raw[column].to_list(), column           # blanks are null in both
    assert got["CS_RACA"].to_list() == raw["CS_RACA"].str.replace(r"\.0$", "").to_list()
    assert set(got["SG_UF"]) == {"33"}
    lean = read_raw(DBC, source_from_dict(config()), tmp_path)   # a line list reads only its mapped columns
    try:
        assert lean.columns == table.columns
        assert set(lean.frame.collect_schema().names()) == {"SEM_PRI", "SG_UF", "NU_IDADE_N", "CS_SEXO", "CLASSI_FIN", "EVOLUCAO"}
    finally:
        lean.close()


def test_the_fixture_is_rebuilt_byte_for_byte_from_the_csv(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_dbc", HERE / "make_dbc.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    assert dbc(dbf(make.FIELDS, make.rows())) == DBC.read_bytes()


def test_dbc_is_recognised_by_its_bytes_and_a_wrong_declaration_is_refused(tmp_path):
    renamed = tmp_path / "DENGBR24.bin"
    renamed.write_bytes(DBC.read_bytes())
    assert detect_format(renamed, "auto") == "dbc"
    plain = tmp_path / "DENGBR24.dbf"
    from dbc_writer import dbf as write_dbf
    plain.write_bytes(write_dbf([("A", "C", 2)], [["x"]]))
    assert detect_format(plain, "auto") == "dbf"
    with pytest.raises(ReadError, match="declared dbc but the bytes are not a dbc file"):
        detect_format(CSV, "dbc")
    report, _ = pipeline.check(source_from_dict(config(format="auto")), renamed)
    assert report["rows"]["read"] == 171 and report["file"]["format"] == "dbc"


# --------------------------------------------------------------------------- SINAN's conventions


def test_sinan_epi_weeks_are_mmwr_weeks():
    """Brazil's epidemiological calendar (Brasil.IO's table, year boundaries) = vigila's `mmwr` weeks."""
    cal = pl.read_csv(HERE / "brasilio_epiweek_boundaries.csv", try_parse_dates=True)
    ours = epiweek.weeks_of_dates(cal["date"], "mmwr").rename({"date": "date"})
    both = cal.join(ours, on="date")
    assert both.height == cal.height
    assert both["epidemiological_year"].to_list() == both["epi_year"].to_list()
    assert both["epidemiological_week"].to_list() == both["epi_week"].to_list()
    iso = epiweek.weeks_of_dates(cal["date"], "iso")
    assert not cal.join(iso, on="date")["epi_week"].equals(cal["epidemiological_week"].cast(pl.Int32))


def test_sinan_conventions_from_config_every_case_accounted(tmp_path):
    cfg = load_source(YAML)
    report, q = pipeline.check(cfg, cfg.location)
    balanced(report)
    raw = extract()
    excluded = raw.filter(pl.col("CLASSI_FIN").is_in(["5", "8"])).height
    blank = raw.filter(pl.col("CLASSI_FIN").is_null()).height
    assert (excluded, blank) == (25, 2)
    assert report["rows"] == {"read": 171, "published": 171 - excluded - blank, "quarantined": blank, "set_aside": excluded}
    assert report["cases"] == {"read": 171, "published": 144, "quarantined": 2, "set_aside": 25, "unaccounted": 0}
    assert report["deaths"] == {"read": 1, "published": 1, "quarantined": 0, "set_aside": 0, "unaccounted": 0}
    checks = {(c["check"], c["column"]): c["rows"] for c in report["by_check"]}
    assert checks == {("excluded_value", "CLASSI_FIN"): 25, ("unmapped_classification", "CLASSI_FIN"): 2}
    assert report["status"] == "checked" and not report["rejected_because"]


def test_yearweek_gives_the_weeks_of_the_onset_dates(tmp_path):
    wh_week, wh_date = tmp_path / "w1", tmp_path / "w2"
    pipeline.ingest(source_from_dict(config()), DBC, wh_week)
    by_date = config()
    by_date["columns"] = {**{k: v for k, v in by_date["columns"].items() if k != "epi_yearweek"}, "date": "DT_SIN_PRI"}
    pipeline.ingest(source_from_dict(by_date), DBC, wh_date)
    key = ["epi_year", "epi_week", "age_group", "sex", "classification"]
    a = read.cases_weekly(wh_week).select(*key, "week_start", "cases", "deaths").sort(key).collect()
    b = read.cases_weekly(wh_date).select(*key, "week_start", "cases", "deaths").sort(key).collect()
    assert a.equals(b) and a["cases"].sum() == 144
    exp = expected_published().group_by("epi_week").len().sort("epi_week")
    got = a.group_by("epi_week").agg(pl.col("cases").sum()).sort("epi_week")
    assert got["epi_week"].to_list() == exp["epi_week"].to_list()
    assert got["cases"].to_list() == exp["len"].cast(pl.Int64).to_list()
    assert set(read.cases_weekly(wh_week).collect()["geo_code"]) == {"BR-RJ"}
    # NU_IDADE_N 3010 (10 months) and 2001 (1 day) are babies: 00-04
    bands = a.group_by("age_group").agg(pl.col("cases").sum())
    assert bands.filter(pl.col("age_group") == "unknown").height == 0
    assert a.filter(pl.col("deaths") > 0)["classification"].to_list() == ["with_warning_signs"]


def test_a_malformed_yearweek_is_reported_as_written(tmp_path):
    fields = [("SEM_PRI", "C", 6), ("SG_UF", "C", 2)]
    f = tmp_path / "bad.dbc"
    f.write_bytes(dbc(dbf(fields, [["202407", "33"], ["20241", "33"], ["202460", "35"], [None, "35"]])))
    data = config(limits={"max_quarantined_share": 1.0})
    data["columns"] = {"epi_yearweek": "SEM_PRI", "place": "SG_UF"}
    data.pop("exclude")
    report, q = pipeline.check(source_from_dict(data), f)
    balanced(report)
    assert report["rows"] == {"read": 4, "published": 1, "quarantined": 3, "set_aside": 0}
    bad = q.filter(pl.col("severity") == "error").sort("row")
    assert set(bad["column"]) == {"SEM_PRI"} and sorted(set(bad["row"])) == [2, 3, 4]
    assert "20241" in bad.filter(pl.col("row") == 2)["value"].to_list()


def test_yearweek_and_year_plus_week_are_exclusive():
    with pytest.raises(ValueError, match="epi_yearweek carries the epi year and week"):
        source_from_dict(config(columns={"epi_yearweek": "SEM_PRI", "epi_year": "NU_ANO", "place": "SG_UF"}))


# --------------------------------------------------------------------------- the whole CLI, once


def test_cli_check_and_ingest_on_the_dbc(tmp_path):
    checked = run_cli("check", str(YAML), "--json", str(tmp_path / "check.json"))
    assert checked.returncode == 1, checked.stderr                             # 2 rows quarantined, not rejected
    report = json.loads((tmp_path / "check.json").read_text())
    balanced(report)
    assert report["cases"]["published"] == 144 and "Traceback" not in checked.stderr
    wh = tmp_path / "wh"
    done = run_cli("ingest", str(YAML), "--warehouse", str(wh), "--issue-date", "2024-12-31", "--no-flow")
    assert done.returncode == 0, done.stderr
    ingested = json.loads((wh / "reports" / "bra_sinan_dengue" / "latest.json").read_text())
    balanced(ingested)
    assert ingested["status"] == "published"
    assert ingested["rows"] == {"read": 171, "published": 144, "quarantined": 2, "set_aside": 25}
    assert ingested["cases"] == report["cases"] and ingested["deaths"]["published"] == 1
    assert read.cases_weekly(wh).collect()["cases"].sum() == 144
    assert read.quarantine(wh).collect()["cases"].sum() == 27                  # 2 quarantined + 25 set aside


# --------------------------------------------------------------------------- hostile .dbc files


FIELDS = [("SEM_PRI", "C", 6), ("SG_UF", "C", 2)]
ROWS = [["202407", "33"]] * 50


def small_config(**limits) -> object:
    data = config(limits={"max_quarantined_share": 1.0, **limits})
    data["columns"] = {"epi_yearweek": "SEM_PRI", "place": "SG_UF"}
    data.pop("exclude")
    return source_from_dict(data)


def test_a_stream_expanding_past_its_declared_size_is_refused(tmp_path):
    bomb = tmp_path / "bomb.dbc"
    bomb.write_bytes(dbc(dbf(FIELDS, ROWS), repeat=50_000_000))            # 50 MB more than the 50 records
    assert bomb.stat().st_size < 400_000
    with pytest.raises(ReadError, match="expands past the .* its header declares: refused as a decompression bomb"):
        read_raw(bomb, small_config(), tmp_path)
    assert not list(tmp_path.glob("vigila-dbase-*"))                         # nothing left behind


def test_a_header_declaring_too_much_is_refused_before_expanding(tmp_path):
    lying = tmp_path / "lying.dbc"
    lying.write_bytes(dbc(dbf(FIELDS, ROWS, n_records=400_000_000)))
    with pytest.raises(ReadError, match="refused as a decompression bomb"):
        read_raw(lying, small_config(), tmp_path)
    with pytest.raises(ReadError, match="over limits.max_rows"):
        read_raw(lying, small_config(max_rows=1000), tmp_path)


def test_truncated_and_corrupt_dbc_files_are_one_line_errors(tmp_path):
    whole = dbc(dbf(FIELDS, ROWS))
    cut = tmp_path / "cut.dbc"
    cut.write_bytes(whole[:-5])
    with pytest.raises(ReadError, match="corrupt or truncated .dbc") as err:
        read_raw(cut, small_config(), tmp_path)
    assert "\n" not in str(err.value)
    header_len = struct.unpack_from("<H", whole, 8)[0]
    garbled = tmp_path / "garbled.dbc"
    garbled.write_bytes(whole[:header_len + 4] + b"\x07" + whole[header_len + 5:])   # literal flag must be 0 or 1
    with pytest.raises(ReadError, match="not a dbc file"):
        read_raw(garbled, small_config(), tmp_path)
    from dbc_writer import _Bits, _match

    bits = _Bits()
    bits.put(0, 8)
    bits.put(6, 8)
    _match(bits, 10, 100)                     # copies from 100 bytes back before anything was written
    far = tmp_path / "far.dbc"
    far.write_bytes(whole[:header_len + 4] + bits.bytes())
    with pytest.raises(ReadError, match="corrupt or truncated .dbc") as err:
        read_raw(far, small_config(), tmp_path)
    assert "blast" in str(err.value)
    broken = tmp_path / "broken.dbc"
    broken.write_bytes(whole[:10] + b"\xff" * 30)
    with pytest.raises(ReadError):
        read_raw(broken, small_config(), tmp_path)


def test_deleted_records_are_set_aside_and_accounted(tmp_path):
    f = tmp_path / "deleted.dbc"
    f.write_bytes(dbc(dbf(FIELDS, [["202407", "33"], ["202407", "33"], ["202408", "35"]], deleted={2})))
    report, q = pipeline.check(small_config(), f)
    balanced(report)
    assert report["rows"] == {"read": 3, "published": 2, "quarantined": 0, "set_aside": 1}
    [rec] = q.to_dicts()
    assert rec["row"] == 2 and rec["check"] == "dbf_deleted_record" and rec["severity"] == "set_aside"


def test_latin1_text_is_decoded(tmp_path):
    f = tmp_path / "names.dbc"
    f.write_bytes(dbc(dbf([("SEM_PRI", "C", 6), ("ID_MN_RESI", "C", 20)], [["202407", "SÃO GONÇALO"], ["202407", "NITERÓI"]])))
    data = config(limits={"max_quarantined_share": 1.0})
    data["columns"] = {"epi_yearweek": "SEM_PRI", "place": "ID_MN_RESI"}
    data.pop("exclude")
    table = read_raw(f, source_from_dict(data), tmp_path)
    try:
        assert table.frame.collect()["ID_MN_RESI"].to_list() == ["SÃO GONÇALO", "NITERÓI"]
    finally:
        table.close()
