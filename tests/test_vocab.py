"""Tests for vigila.core.vocab: disease vocabulary, classifications, sexes, age bands."""

from __future__ import annotations

import math
import re

import polars as pl
import pytest

from vigila.core import vocab
from vigila.core.places import map_places, normalise
from vigila.core.vocab import (
    AGE_GROUPS,
    CLASSIFICATION_DESCRIPTIONS,
    CLASSIFICATIONS,
    DISEASES,
    SEXES,
    age_band_expr,
    disease_code,
    disease_table,
)

ICD10 = re.compile(r"^[A-Z]\d{2}(\.\d)?(-[A-Z]\d{2}(\.\d)?)?$")

EXPECTED_ICD = {
    "dengue": {"A97", "A90", "A91"}, "chikungunya": {"A92.0"}, "zika": {"A92.5", "U06"},
    "yellow_fever": {"A95"}, "malaria": {"B50-B54"}, "measles": {"B05"}, "rubella": {"B06"},
    "cholera": {"A00"}, "leptospirosis": {"A27"}, "pertussis": {"A37"}, "diphtheria": {"A36"},
    "influenza": {"J09-J11"}, "covid19": {"U07.1"}, "sari": {"J09-J22"}, "hepatitis_a": {"B15"},
    "salmonellosis": {"A02"}, "campylobacteriosis": {"A04.5"}, "meningococcal": {"A39"},
    "tuberculosis": {"A15-A19"}, "oropouche": {"A93.0"}, "mpox": {"B04"},
}


def test_diseases_structure_and_icd_codes() -> None:
    assert set(EXPECTED_ICD) <= set(DISEASES)
    assert "severe_dengue" not in DISEASES  # severity is a classification
    for code, info in DISEASES.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", code)
        assert set(info) == {"name", "icd10", "aliases"}
        assert info["name"] and info["aliases"]
        assert all(ICD10.match(c) for c in info["icd10"]), (code, info["icd10"])
        assert EXPECTED_ICD.get(code, set()) <= set(info["icd10"])


def test_disease_aliases_are_unambiguous() -> None:
    owners: dict[str, str] = {}
    for code, info in DISEASES.items():
        for alias in (code, info["name"], *info["aliases"]):
            assert owners.setdefault(normalise(alias), code) == code, alias


@pytest.mark.parametrize(("name", "code"), [
    ("DENGUE", "dengue"), ("dengue", "dengue"), ("Fiebre del Dengue", "dengue"),
    ("SARAMPION", "measles"), ("Sarampión", "measles"), ("Rougeole", "measles"),
    ("FIEBRE AMARILLA", "yellow_fever"), ("yellow_fever", "yellow_fever"),
    ("Paludismo", "malaria"), ("COVID-19", "covid19"), ("covid 19", "covid19"),
    ("IRAG", "sari"), ("SRAG", "sari"), ("Tos ferina", "pertussis"), ("Coqueluche", "pertussis"),
    ("Viruela símica", "mpox"), ("MONKEYPOX", "mpox"), ("Fièvre d’Oropouche", "oropouche"),
    ("Enfermedad por virus del Zika", "zika"), ("Chikungunya", "chikungunya"),
    ("Hepatitis A", "hepatitis_a"), ("Tuberculose", "tuberculosis"),
])
def test_disease_code_resolves_aliases(name: str, code: str) -> None:
    assert disease_code(name) == code


@pytest.mark.parametrize("name", [
    "DENGUE SIN SENALES DE ALARMA", "DENGUE GRAVE", "Hepatitis", "", "ebola-ish",
])
def test_disease_code_unknown_or_not_a_disease(name: str) -> None:
    assert disease_code(name) is None


def test_disease_table_maps_vectorised() -> None:
    t = disease_table()
    assert t.columns == ["key", "disease", "disease_name"] and t["key"].is_unique().all()
    df = pl.DataFrame({"enf": ["DENGUE", "Sarampión", "DENGUE GRAVE", None]})
    out = map_places(df, "enf", t, code_col="disease", name_col="disease_name")
    assert out["disease"].to_list() == ["dengue", "measles", None, None]
    assert out["disease_name"].to_list() == ["Dengue", "Measles", None, None]


def test_classifications_and_sexes() -> None:
    assert CLASSIFICATIONS == ["suspected", "probable", "confirmed", "severe",
                               "without_warning_signs", "with_warning_signs", "total"]
    assert all(d and "\n" not in d for d in CLASSIFICATION_DESCRIPTIONS.values())
    assert "WHO 2009" in CLASSIFICATION_DESCRIPTIONS["with_warning_signs"]
    assert SEXES == ["female", "male", "other", "unknown", "all"]


def test_age_groups_labels() -> None:
    assert AGE_GROUPS[:3] == ["00-04", "05-09", "10-14"]
    assert AGE_GROUPS[-5:] == ["75-79", "80+", "unknown", "all", "source_band"]   # source_band: tests/test_age_bands.py
    assert len(AGE_GROUPS) == 20 and len(set(AGE_GROUPS)) == 20


@pytest.mark.parametrize(("age", "band"), [
    (0.0, "00-04"), (4.99, "00-04"), (5.0, "05-09"), (17.5, "15-19"), (79.99, "75-79"),
    (80.0, "80+"), (120.0, "80+"), (120.01, "unknown"), (-0.5, "unknown"), (None, "unknown"),
    (math.nan, "unknown"), (math.inf, "unknown"), (1e300, "unknown"),
])
def test_age_band_expr_cases(age: float | None, band: str) -> None:
    df = pl.DataFrame({"age": [age]}, schema={"age": pl.Float64})
    assert df.select(age_band_expr(pl.col("age"))).item() == band


def _reference_band(age: float) -> str:
    if not 0 <= age <= vocab.MAX_AGE:
        return "unknown"
    return "80+" if age >= 80 else f"{int(age // 5) * 5:02d}-{int(age // 5) * 5 + 4:02d}"


def test_age_band_expr_matches_reference_on_grid() -> None:
    ages = [i / 4 for i in range(-8, 4 * 130)]
    got = pl.DataFrame({"age": ages}).select(age_band_expr(pl.col("age"))).to_series().to_list()
    assert got == [_reference_band(a) for a in ages]
    assert set(got) == set(AGE_GROUPS) - {"all", "source_band"}


@pytest.mark.parametrize("dtype", [pl.Int8, pl.Int32, pl.UInt16, pl.Int64])
def test_age_band_expr_integer_types_and_lazy(dtype: pl.DataType) -> None:
    lf = pl.LazyFrame({"age": [3, 45, 99, None]}, schema={"age": dtype})
    out = lf.select(age_band_expr(pl.col("age")).alias("band")).collect()
    assert out.schema["band"] == pl.String
    assert out["band"].to_list() == ["00-04", "45-49", "80+", "unknown"]


def test_age_band_expr_numeric_strings() -> None:
    df = pl.DataFrame({"edad": ["55", "15", "x", None, "-3"]})
    assert df.select(age_band_expr(pl.col("edad"))).to_series().to_list() == [
        "55-59", "15-19", "unknown", "unknown", "unknown"]
