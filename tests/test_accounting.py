"""Every case accounted for, on real national files (tests/fixtures/real, provenance in each README):
rows finer than the harmonised key are summed (or conflict) as the config declares, never guessed;
rows and cases read = published + quarantined + set aside; a run that loses too much is rejected."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
import yaml

from vigila.ingest import pipeline
from vigila.warehouse import read
from vigila.config import ConfigError, load_source, source_from_dict
from vigila.ingest.fields import UNIT_DIVISOR
from vigila.core.vocab import age_band_expr

from conftest import FIXTURES, SOURCES
from test_flow import run_cli

REAL = FIXTURES / "real"
ARG = REAL / "arg_dengue_snvs_indec"
ARG_CSV = ARG / "dengue_zika_nacional_2025_extract.csv"
ARG_KEY = ["id_depto_indec_residencia", "id_prov_indec_residencia", "evento", "id_grupo_etario", "anio_min", "sepi_min"]
COL = REAL / "col_sivigila_malaria_complicada_2018"
COL_DEATHS = REAL / "col_sivigila_malaria_mortalidad"


def balanced(report: dict) -> None:
    """The accounting identity, in rows and in cases (and deaths where mapped)."""
    for what in ("rows", "cases", "deaths"):
        c = report.get(what)
        if c is None:
            continue
        assert c["read"] == c["published"] + c["quarantined"] + c["set_aside"], (what, c)
        assert c.get("unaccounted", 0) == 0


def arg_config(tmp_path, location=ARG_CSV, **over) -> dict:
    data = yaml.safe_load((ARG / "arg_snvs_dengue.yaml").read_text())
    data.update(location=str(location), **over)
    for key in [k for k, v in over.items() if v is None]:
        del data[key]
    return data


def arg_raw() -> pl.DataFrame:
    return pl.read_csv(ARG_CSV, separator=";", infer_schema=False).with_columns(pl.col("cantidad").cast(pl.Int64))


# --------------------------------------------------------------------------- rows finer than the key


def test_undeclared_sub_rows_stop_the_check_naming_rows_columns_and_the_two_ways(tmp_path):
    cfg = source_from_dict(arg_config(tmp_path, aggregate=None))
    with pytest.raises(pipeline.UndeclaredSubRows) as err:
        pipeline.check(cfg, ARG_CSV)
    msg = str(err.value)
    assert "aggregate: sum" in msg and "row_key:" in msg
    assert "id_grupo_etario" in msg and "id_depto_indec_residencia" in msg       # the columns in which they differ
    assert "rows 137 and 156" in msg                                            # rows of the file, 1-based
    raw = arg_raw()
    first = raw.slice(136, 1).row(0, named=True), raw.slice(155, 1).row(0, named=True)
    assert first[0]["provincia_residencia"] == first[1]["provincia_residencia"] and first[0]["sepi_min"] == first[1]["sepi_min"]
    # the CLI says it in one line, exit 2, and ingest leaves a `rejected` report, publishing nothing
    yml = tmp_path / "arg.yaml"
    yml.write_text(yaml.safe_dump(arg_config(tmp_path, aggregate=None)))
    res = run_cli("check", str(yml))                                            # no FILE: the config's location
    assert res.returncode == 2 and "aggregate: sum" in res.stderr and "Traceback" not in res.stderr
    wh = tmp_path / "wh"
    with pytest.raises(pipeline.UndeclaredSubRows):
        pipeline.ingest(cfg, ARG_CSV, wh, run_id="r1")
    assert json.loads((wh / "reports" / "arg_snvs_dengue" / "r1.json").read_text())["status"] == "rejected"
    assert not (wh / "datasets" / "cases_weekly").exists()


def test_sub_rows_summed_every_case_accounted_and_a_lossy_run_rejected(tmp_path):
    wh = tmp_path / "wh"
    cfg = source_from_dict(arg_config(tmp_path))
    # 137 rows of an unknown province ("desconocida"): 58.7 % of the cases cannot be placed -> rejected
    with pytest.raises(pipeline.RunRejected) as err:
        pipeline.ingest(cfg, ARG_CSV, wh, run_id="r1", issue_date=dt.date(2025, 10, 1))
    report = err.value.report
    balanced(report)
    raw = arg_raw()
    unknown = raw.filter(pl.col("provincia_residencia") == "desconocida")
    assert report["status"] == "rejected" and "58.7% of the cases" in report["error"]
    assert report["cases"] == {"read": raw["cantidad"].sum(), "published": raw["cantidad"].sum() - unknown["cantidad"].sum(),
                               "quarantined": unknown["cantidad"].sum(), "set_aside": 0, "unaccounted": 0}
    assert not (wh / "datasets" / "cases_weekly").exists()                      # nothing published...
    lost = read.quarantine(wh).filter(pl.col("severity") == "error").unique(["file_sha256", "row"]).collect()
    assert lost["cases"].sum() == unknown["cantidad"].sum() == 674                # ...but the quarantine is: one query
    assert json.loads((wh / "reports" / "arg_snvs_dengue" / "r1.json").read_text())["rejected_because"]

    # the same file, with the share declared acceptable for this source: published, sums exact
    cfg = source_from_dict(arg_config(tmp_path, limits={"max_quarantined_share": 0.7}))
    report = pipeline.ingest(cfg, ARG_CSV, wh, run_id="r2", force=True, issue_date=dt.date(2025, 10, 1))
    balanced(report)
    assert report["status"] == "published" and report["rows"]["published"] == raw.height - unknown.height
    geo = {"Buenos Aires": "AR-B", "CABA": "AR-C", "Córdoba": "AR-X", "Tucumán": "AR-T"}
    expected = (raw.filter(pl.col("provincia_residencia") != "desconocida")
                .group_by(geo_code=pl.col("provincia_residencia").replace_strict(geo), epi_week=pl.col("sepi_min").cast(pl.Int32))
                .agg(pl.col("cantidad").sum().alias("cases")).sort("geo_code", "epi_week"))
    got = read.cases_weekly(wh).select("geo_code", "epi_week", "cases").sort("geo_code", "epi_week").collect()
    assert got.equals(expected)
    assert got["cases"].sum() == report["cases"]["published"]


def test_row_key_sums_distinct_keys_and_quarantines_a_conflict_naming_both_rows(tmp_path):
    lines = ARG_CSV.read_text(encoding="utf-8").splitlines()
    ba = [i for i, line in enumerate(lines) if ";Buenos Aires;" in line][0]
    copy = lines[ba].rsplit(";", 1)[0] + ";" + str(int(lines[ba].rsplit(";", 1)[1]) + 7)   # same key, another count
    f = tmp_path / "arg_conflict.csv"
    f.write_text("\n".join([*lines, copy, lines[ba + 1]]) + "\n", encoding="utf-8")  # + a conflict + an identical line
    n = len(lines) - 1
    options = {"aggregate": None, "row_key": ARG_KEY, "limits": {"max_quarantined_share": 0.7}}
    report, q = pipeline.check(source_from_dict(arg_config(tmp_path, location=f, **options)), f)
    balanced(report)
    conflict = q.filter(pl.col("check") == "row_key_conflict")
    assert sorted(conflict["row"].to_list()) == [ba, n + 1]
    assert conflict["value"].to_list()[0].startswith(f"rows {ba}, {n + 1} share the row key")
    [ident] = q.filter(pl.col("check") == "identical_rows").to_dicts()       # counted (the default), with a warning
    assert ident["row"] == n + 2 and ident["severity"] == "warning" and ident["value"] == f"same whole line as row {ba + 1}"
    # the row-key run publishes what `aggregate: sum` publishes, less the two conflicting rows
    base, _ = pipeline.check(source_from_dict(arg_config(tmp_path, limits={"max_quarantined_share": 0.7})), ARG_CSV)
    own = int(lines[ba].rsplit(";", 1)[1])
    twin = int(lines[ba + 1].rsplit(";", 1)[1])
    assert report["cases"]["published"] == base["cases"]["published"] - own + twin
    # identical_rows: drop keeps the first line and sets the repeat aside (still accounted)
    dropped, q = pipeline.check(source_from_dict(arg_config(tmp_path, location=f, identical_rows="drop", **options)), f)
    balanced(dropped)
    assert dropped["rows"]["set_aside"] == 1 and dropped["cases"]["set_aside"] == twin
    assert dropped["cases"]["published"] == report["cases"]["published"] - twin


def test_config_refuses_contradictory_row_declarations():
    base = {"id": "x_src", "country": "ARG", "reporter": {"institution": "x"}, "diseases": ["dengue"],
            "columns": {"epi_year": "y", "epi_week": "w", "cases": "c"}}
    with pytest.raises(ValueError, match="not both"):
        source_from_dict({**base, "aggregate": "sum", "row_key": ["a"]})
    with pytest.raises(ValueError, match="line_list counts its rows"):
        source_from_dict({**base, "shape": "line_list", "columns": {"epi_year": "y", "epi_week": "w"}, "aggregate": "sum"})


# --------------------------------------------------------------------------- line lists: ages, deaths, include


def test_ages_in_months_and_days_are_banded_by_their_unit(tmp_path):
    cfg = load_source(COL / "col_sivigila_malaria.yaml")
    wh = tmp_path / "wh"
    report = pipeline.ingest(cfg, cfg.location, wh, issue_date=dt.date(2019, 1, 10))
    balanced(report)
    raw = pl.read_csv(cfg.location, infer_schema=False)
    assert report["rows"] == {"read": raw.height, "published": raw.height - 1, "quarantined": 1, "set_aside": 0}   # EXTERIOR
    units = {"1": "years", "2": "months", "3": "days"}
    years = pl.col("EDAD").cast(pl.Float64) / pl.col("UNI_MED").replace_strict(units).replace_strict(UNIT_DIVISOR)
    expected = (raw.filter(pl.col("Departamento_residencia") != "EXTERIOR")
                .group_by(age_band_expr(years).alias("age_group")).len().sort("age_group"))
    got = (read.cases_weekly(wh).group_by("age_group").agg(pl.col("cases").sum().cast(pl.UInt32).alias("len"))
           .sort("age_group").collect())
    assert got.equals(expected)
    babies = raw.filter(pl.col("UNI_MED") != "1").height
    assert babies == 6 and got.filter(pl.col("age_group") == "00-04")["len"].item() >= babies   # 5 and 9 months are 00-04
    assert read.cases_weekly(wh).collect()["deaths"].sum() == 0                 # CON_FIN 1 = alive, mapped


def test_line_list_deaths_are_counted_from_dates_of_death(tmp_path):
    cfg = load_source(COL_DEATHS / "col_sivigila_malaria_deaths.yaml")
    wh = tmp_path / "wh"
    total = 0
    for f in sorted(COL_DEATHS.glob("datos_20*_540.csv")):
        report = pipeline.ingest(cfg, f, wh)
        balanced(report)
        raw = pl.read_csv(f, infer_schema=False, separator=report["file"]["delimiter"])   # , ; | : three layouts
        assert report["deaths"]["read"] == raw["FEC_DEF"].is_not_null().sum() == report["deaths"]["published"]
        total += report["deaths"]["published"]
    published = read.cases_weekly(wh).collect()
    assert published["deaths"].sum() == total == 17 and published["cases"].sum() == 17


def test_numeric_death_codes_are_not_guessed(tmp_path):
    data = yaml.safe_load((COL / "col_sivigila_malaria.yaml").read_text())
    data["value_maps"].pop("deaths")
    data["location"] = str(COL / data["location"])
    report, q = pipeline.check(source_from_dict(data), data["location"])
    balanced(report)
    assert report["deaths"]["read"] == 0                                       # "1" is not taken for a death
    assert {c["check"] for c in report["by_check"]} >= {"unmapped_deaths"}


def test_sinan_coded_ages():
    cfg = source_from_dict({"id": "bra_sinan", "country": "BRA", "reporter": {"institution": "x"}, "diseases": ["dengue"],
                            "shape": "line_list", "columns": {"epi_year": "y", "epi_week": "w", "age": "NU_IDADE_N"},
                            "age_coding": "sinan"})
    from test_harmonise import harmonise
    good, errs = harmonise(cfg, epi_year=[2024] * 6, epi_week=[3] * 6, age=["4025", "3006", "2010", "1012", "4081", "5001"])
    bands = dict(zip(*good.group_by("age_group").agg(pl.col("cases").sum()).sort("age_group").to_dict().values()))
    assert bands == {"00-04": 3, "25-29": 1, "80+": 1, "unknown": 1}
    assert errs.filter(pl.col("check") == "unmapped_age_unit")["value"].to_list() == ["5001"]


def test_include_sets_other_values_aside_and_an_empty_run_is_rejected(tmp_path):
    data = yaml.safe_load((COL / "col_sivigila_malaria.yaml").read_text())
    data["location"] = str(COL / data["location"])
    report, q = pipeline.check(source_from_dict({**data, "include": {"sex": ["F"]}}), data["location"])
    balanced(report)
    raw = pl.read_csv(data["location"], infer_schema=False)
    males = raw.filter(pl.col("SEXO") == "M")
    # a male from abroad is set aside (out of scope), not also quarantined: each row counted once
    assert report["rows"]["set_aside"] == males.height
    assert report["rows"]["quarantined"] == raw.filter(pl.col("SEXO") == "F", pl.col("Departamento_residencia") == "EXTERIOR").height
    nobody, _ = pipeline.check(source_from_dict({**data, "include": {"sex": ["X"]}}), data["location"])
    balanced(nobody)
    assert nobody["rows"]["published"] == 0 and nobody["status"] == "rejected"
    assert any("0 rows would be published" in r for r in nobody["rejected_because"])


# --------------------------------------------------------------------------- the demo keeps its totals


@pytest.mark.parametrize("name", ["paho_opendengue_national.yaml", "per_minsa_dengue_linelist.yaml"])
def test_the_demo_sources_account_for_every_row_and_case(name):
    cfg = load_source(SOURCES / name)
    report, _ = pipeline.check(cfg, cfg.location)
    balanced(report)
    assert report["status"] == "checked" and not report["rejected_because"]
    if cfg.shape == "line_list":
        assert report["cases"] == {"read": 171_282, "published": 171_225, "quarantined": 57, "set_aside": 0, "unaccounted": 0}
    else:
        assert report["rows"] == {"read": 18_226, "published": 16_055, "quarantined": 0, "set_aside": 2_171}
        assert report["cases"]["published"] == 19_278_995


# --------------------------------------------------------------------------- API week systems, clear errors


def test_dhis2_and_fhir_week_systems_must_match_epiweek():
    dhis2 = yaml.safe_load((SOURCES / "dhis2_country_example.yaml").read_text())
    dhis2["dhis2"]["period_types"] = ["Weekly"]                                 # ISO weeks, but epiweek: mmwr
    with pytest.raises(ValueError, match="dhis2.period_types .* are iso weeks but epiweek is mmwr"):
        source_from_dict(dhis2)
    fhir = yaml.safe_load((SOURCES / "fhir_reporter_example.yaml").read_text())
    fhir["epiweek"] = "iso" if fhir["fhir"].get("epiweek", "mmwr") == "mmwr" else "mmwr"
    with pytest.raises(ValueError, match="fhir.epiweek .* contradicts epiweek"):
        source_from_dict(fhir)


def test_dhis2_periods_of_another_system_are_refused_at_check(tmp_path):
    data = yaml.safe_load((SOURCES / "dhis2_country_example.yaml").read_text())
    data["dhis2"]["period_types"] = None
    data["epiweek"] = "iso"                                                     # the fixture's periods are WeeklySunday
    with pytest.raises(pipeline.ReadError, match="periods are mmwr weeks but the source says epiweek: iso"):
        pipeline.check(source_from_dict(data), FIXTURES / "dhis2" / "data_value_sets_dengue.json")


def test_malformed_json_is_one_line(tmp_path):
    data = yaml.safe_load((SOURCES / "dhis2_country_example.yaml").read_text())
    bad = tmp_path / "broken.json"
    bad.write_text('{"dataValues": [{"dataElement": "x", ')
    with pytest.raises(pipeline.ReadError) as err:
        pipeline.check(source_from_dict(data), bad)
    assert "\n" not in str(err.value) and "malformed JSON" in str(err.value) and "broken.json" in str(err.value)


def test_status_survives_a_broken_config_and_shows_a_rejected_run(tmp_path):
    wh = tmp_path / "wh"
    cfg = source_from_dict(arg_config(tmp_path))
    with pytest.raises(pipeline.RunRejected):
        pipeline.ingest(cfg, ARG_CSV, wh, issue_date=dt.date(2025, 10, 1))
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "arg.yaml").write_text(yaml.safe_dump(arg_config(tmp_path)))
    (folder / "broken.yaml").write_text("id: broken\ncolumns: [\n")
    res = run_cli("status", "--warehouse", str(wh), "--source", str(folder), "--json")
    rows = json.loads(res.stdout)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    [arg] = [r for r in rows if r["source"] == "arg_snvs_dengue"]
    assert arg["last_run"]["status"] == "rejected" and arg["last_run"]["lost"]["cases"] == pytest.approx(0.5866, abs=1e-3)
    [broken] = [r for r in rows if r["source"] == "broken"]
    assert "invalid YAML" in broken["broken"]
    table = run_cli("status", "--warehouse", str(wh), "--source", str(folder))
    assert "rejected" in table.stdout and "lost 59%" in table.stdout and "broken config" in table.stdout


def test_quarantine_of_a_clean_warehouse_is_an_empty_frame(tmp_path):
    wh = tmp_path / "wh"
    cfg = load_source(COL_DEATHS / "col_sivigila_malaria_deaths.yaml")
    pipeline.ingest(cfg, COL_DEATHS / "datos_2019_540.csv", wh)
    empty = read.quarantine(wh).collect()
    assert empty.height == 0 and {"row", "check", "cases"} <= set(empty.columns)


def test_config_errors_for_ignored_mappings():
    base = {"id": "x_src", "country": "COL", "reporter": {"institution": "x"}, "diseases": ["malaria"],
            "shape": "line_list", "columns": {"epi_year": "y", "epi_week": "w", "age_unit": "u"}}
    with pytest.raises(ValueError, match="age_unit needs columns.age"):
        source_from_dict(base)
    with pytest.raises(ValueError, match="include.sex: the field is not mapped"):
        source_from_dict({**base, "columns": {"epi_year": "y", "epi_week": "w"}, "include": {"sex": ["F"]}})
    with pytest.raises(ConfigError):
        load_source(SOURCES / "does_not_exist.yaml")


def test_check_lists_the_first_failures_and_counts_them_all(tmp_path):
    """`vigila check` prints the first --limit failing records by row and how many there are, from the staged
    quarantine (`pipeline.check_head`), never loading every record: the same records `pipeline.check` returns."""
    cfg = source_from_dict(arg_config(tmp_path, aggregate="sum"))
    _, records = pipeline.check(cfg, ARG_CSV)
    failing = records.filter(pl.col("severity") != "set_aside").sort("row", maintain_order=True)
    assert failing.height > 5
    report, head, total = pipeline.check_head(cfg, ARG_CSV, 5)
    assert total == failing.height and head.equals(failing.head(5))
    assert report["rows_quarantined"] == failing["row"].n_unique()
    yml = tmp_path / "arg.yaml"
    yml.write_text(yaml.safe_dump(arg_config(tmp_path, aggregate="sum")))
    res = run_cli("check", str(yml), "--limit", "5")
    assert res.returncode == 3, res.stderr                       # 58.7 % of the cases unplaced: would be rejected
    assert f"failures (first 5 of {total:,})" in res.stdout
