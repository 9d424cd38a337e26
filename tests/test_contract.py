"""The compiled contracts (schemas/contracts.json) say what the pandera models say, and the polars checker
reports exactly what pandera reports on the same frames; the ingest path never imports pandera."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import polars as pl
import pytest

from schemas.harmonised import CasesWeekly, QuarantineRecord
from schemas.raw import RAW_MODELS
from vigila.warehouse import contract
from vigila.ingest.validate import validate_frame

from conftest import ROOT


def test_contracts_file_is_compiled_from_the_models():
    assert json.loads(contract.CONTRACTS_PATH.read_text()) == json.loads(json.dumps(contract.compile_contracts())), \
        "run `vigila dictionary` after changing schemas/"


def _weekly_rows() -> pl.DataFrame:
    good = {"_row": 1, "country_iso3": "PER", "geo_level": "admin1", "geo_code": "PE-LIM", "geo_name": "Lima",
            "disease": "dengue", "classification": "total", "sex": "all", "age_group": "all", "epi_year": 2020, "epi_week": 1,
            "week_start": dt.date(2019, 12, 29), "cases": 1, "deaths": None, "source_id": "s", "reporter_type": "ministry",
            "issue_date": dt.date(2020, 1, 10), "run_id": "r"}
    bad = [{"country_iso3": "pe"}, {"geo_level": "x"}, {"geo_code": "??"}, {"geo_name": None}, {"disease": "zz"},
           {"classification": "q"}, {"sex": "q"}, {"age_group": "q"}, {"epi_year": 3000}, {"epi_week": 0}, {"cases": -1},
           {"deaths": -2}, {"reporter_type": "q"}, {"issue_date": dt.date(2200, 1, 1)}, {"cases": None}, {"epi_week": 60, "sex": "z"}]
    rows = [good] + [{**good, "_row": i + 2, "epi_week": 2 + i, **b} for i, b in enumerate(bad)]
    rows.append({**good, "_row": len(rows) + 1})              # repeats row 1's key
    return pl.DataFrame(rows, schema_overrides={"epi_year": pl.Int32, "epi_week": pl.Int32, "deaths": pl.Int64, "cases": pl.Int64})


def _sorted(errors: pl.DataFrame) -> list[tuple]:
    return sorted(errors.select("_row", "field", "check", "value").rows(), key=lambda r: tuple(map(str, r)))


@pytest.mark.parametrize("change", ["none", "dtype", "missing"])
def test_the_polars_checker_reports_what_pandera_reports(change):
    df = _weekly_rows()
    if change == "dtype":
        df = df.with_columns(pl.col("cases").cast(pl.Int32))
    if change == "missing":
        df = df.drop("run_id")
    mine, theirs = contract.contract("cases_weekly").failures(df), validate_frame(df, CasesWeekly)
    strip = lambda rows: [r if r[2] != "multiple_fields_uniqueness" else r[:3] for r in rows]   # noqa: E731 (JSON text)
    assert strip(_sorted(mine)) == strip(_sorted(theirs))
    assert len(mine) >= 18


@pytest.mark.parametrize("shape", sorted(RAW_MODELS))
@pytest.mark.parametrize("field, values", [
    ("epi_year", pl.Series([1899, 1900, 2100, 2101, None], dtype=pl.Int32)),
    ("epi_week", pl.Series([0, 1, 53, 54, None], dtype=pl.Int32)),
    ("cases", pl.Series([-1, 0, 5, None], dtype=pl.Int64)),
    ("deaths", pl.Series([-1, 0, None], dtype=pl.Int64)),
    ("date", pl.Series([dt.date(1899, 12, 31), dt.date(2020, 1, 1), dt.date(2101, 1, 1), None])),
    ("age", pl.Series([-0.5, 0.0, 120.0, 120.5, None], dtype=pl.Float64)),
])
def test_raw_value_checks_match_pandera(shape, field, values):
    import pandera.polars as pa

    model = RAW_MODELS[shape]
    schema = model.to_schema()
    expected = pl.Series(field, [None] * values.len(), pl.Utf8)
    if field in schema.columns:
        try:
            pa.DataFrameSchema({field: schema.columns[field]}).validate(values.to_frame(field), lazy=True)
        except pa.errors.SchemaErrors as exc:
            fc = exc.failure_cases.filter(pl.col("index").is_not_null()).unique("index", keep="first", maintain_order=True)
            expected = expected.scatter(fc["index"].cast(pl.UInt32), fc["check"])
    got = contract.contract(f"raw_{shape}").first_failure(values, field)
    assert got.to_list() == expected.to_list()


def test_quarantine_schema_from_the_contract_equals_the_model():
    from schemas.harmonised import polars_schema

    assert contract.contract("quarantine").polars_schema() == polars_schema(QuarantineRecord)


def test_check_and_ingest_never_import_pandera(tmp_path):
    code = ("import sys\nfrom vigila.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('PANDERA=' + str('pandera' in sys.modules) + ' PANDAS=' + str('pandas' in sys.modules), file=sys.stderr)")
    for args in (["check", "sources/per_minsa_dengue_linelist.yaml", "--quiet"],
                 ["ingest", "sources/per_minsa_dengue_linelist.yaml", "--warehouse", str(tmp_path / "wh"), "--quiet"]):
        res = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "ph")})
        assert "PANDERA=False PANDAS=False" in res.stderr, res.stderr[-2000:]
