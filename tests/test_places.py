"""Tests for vigila.core.places: normalisation, country/admin1 tables, vectorised mapping."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pycountry
import pytest
import yaml

from vigila.core import places
from vigila.core.places import (
    admin1_table,
    country_table,
    map_places,
    normalise,
    normalise_expr,
    resolve,
    table_from_aliases,
)

from conftest import SHARED  # noqa: E402

PAHO_CSV = SHARED / "data" / "opendengue" / "National_extract_PAHO_V1_3.csv"
PERU_CSV = SHARED / "data" / "peru_dengue" / "dengue_peru.csv.gz"
REFERENCE = Path(places.__file__).parents[1] / "reference"

# Every distinct (adm_0_name, ISO_A0) pair of OpenDengue V1.3 National_extract_PAHO.
PAHO_PAIRS = [
    ("ANGUILLA", "AIA"), ("ANTIGUA AND BARBUDA", "ATG"), ("ARGENTINA", "ARG"), ("ARUBA", "ABW"),
    ("BAHAMAS", "BHS"), ("BARBADOS", "BRB"), ("BELIZE", "BLZ"), ("BERMUDA", "BMU"),
    ("BOLIVIA", "BOL"), ("BONAIRE, SAINT EUSTATIUS AND SABA", "BES"), ("BRAZIL", "BRA"),
    ("CAYMAN ISLANDS", "CYM"), ("CHILE", "CHL"), ("COLOMBIA", "COL"), ("COSTA RICA", "CRI"),
    ("CUBA", "CUB"), ("CURACAO", "CUW"), ("DOMINICA", "DMA"), ("DOMINICAN REPUBLIC", "DOM"),
    ("ECUADOR", "ECU"), ("EL SALVADOR", "SLV"), ("FRENCH GUIANA", "GUF"), ("GRENADA", "GRD"),
    ("GUADELOUPE", "GLP"), ("GUATEMALA", "GTM"), ("GUYANA", "GUY"), ("HAITI", "HTI"),
    ("HONDURAS", "HND"), ("JAMAICA", "JAM"), ("MARTINIQUE", "MTQ"), ("MEXICO", "MEX"),
    ("MONTSERRAT", "MSR"), ("NICARAGUA", "NIC"), ("PANAMA", "PAN"), ("PARAGUAY", "PRY"),
    ("PERU", "PER"), ("PUERTO RICO", "PRI"), ("SAINT BARTHELEMY", "BLM"),
    ("SAINT KITTS AND NEVIS", "KNA"), ("SAINT LUCIA", "LCA"), ("SAINT MARTIN", "MAF"),
    ("SAINT VINCENT AND THE GRENADINES", "VCT"), ("SINT MAARTEN", "SXM"), ("SURINAME", "SUR"),
    ("TRINIDAD AND TOBAGO", "TTO"), ("TURKS AND CAICOS ISLANDS", "TCA"),
    ("UNITED STATES OF AMERICA", "USA"), ("URUGUAY", "URY"), ("VENEZUELA", "VEN"),
    ("VIRGIN ISLANDS (UK)", "VGB"), ("VIRGIN ISLANDS (US)", "VIR"),
]

# Every distinct `departamento` of the MINSA Peru dengue line list (besides its \N nulls).
PERU_DEPARTAMENTOS = {
    "AMAZONAS": "PE-AMA", "ANCASH": "PE-ANC", "AREQUIPA": "PE-ARE", "AYACUCHO": "PE-AYA",
    "CAJAMARCA": "PE-CAJ", "CALLAO": "PE-CAL", "CUSCO": "PE-CUS", "HUANUCO": "PE-HUC",
    "ICA": "PE-ICA", "JUNIN": "PE-JUN", "LA LIBERTAD": "PE-LAL", "LAMBAYEQUE": "PE-LAM",
    "LIMA": "PE-LIM", "LORETO": "PE-LOR", "MADRE DE DIOS": "PE-MDD", "PASCO": "PE-PAS",
    "PIURA": "PE-PIU", "PUNO": "PE-PUN", "SAN MARTIN": "PE-SAM", "TUMBES": "PE-TUM",
    "UCAYALI": "PE-UCA",
}

TRICKY = [
    "Apurímac", "san  martín", "  Côte d’Ivoire ", "Bonaire, Sint Eustatius and Saba",
    "VIRGIN ISLANDS (US)", "Virgin Islands, U.S.", "prov._const.-del callao", "Straße",
    "São Tomé and Príncipe", "Curaçao", "Åland", "ﬁjian ligature", "tab\tand\nnewline",
    "Bogotá, D.C.", "", "---", "Ñuñoa", "Zürich", "Ελλάδα", "Москва",
]


def _all_pycountry_names() -> list[str]:
    names = [getattr(c, f, None) for c in pycountry.countries
             for f in ("name", "official_name", "common_name")]
    names += [s.name for s in pycountry.subdivisions]
    return [n for n in names if n] + TRICKY


# --- normalise ---------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "key"), [
    ("Apurímac", "APURIMAC"),
    ("san  martín", "SAN MARTIN"),
    ("BOLIVIA (PLURINATIONAL STATE OF)", "BOLIVIA PLURINATIONAL STATE OF"),
    ("Bolivia, Plurinational State of", "BOLIVIA PLURINATIONAL STATE OF"),
    ("Côte d'Ivoire", "COTE D IVOIRE"),
    ("Côte d’Ivoire", "COTE D IVOIRE"),
    ("prov._const.-del callao", "PROV CONST DEL CALLAO"),
    ("  Ñuñoa\t", "NUNOA"),
    ("", ""),
])
def test_normalise_examples(raw: str, key: str) -> None:
    assert normalise(raw) == key


def test_normalise_expr_agrees_with_normalise() -> None:
    names = _all_pycountry_names()
    assert len(names) > 5000
    got = pl.Series(names, dtype=pl.String).to_frame("n").select(normalise_expr(pl.col("n")))
    expected = [normalise(n) for n in names]
    mismatches = [(n, g, e) for n, g, e in zip(names, got.to_series(), expected) if g != e]
    assert mismatches == []


def test_normalise_expr_keeps_nulls_and_accepts_categoricals() -> None:
    df = pl.DataFrame({"n": ["Junín", None]}, schema={"n": pl.Categorical})
    assert df.select(normalise_expr(pl.col("n"))).to_series().to_list() == ["JUNIN", None]


# --- country table -----------------------------------------------------------------------

def test_country_table_shape_and_unique_keys() -> None:
    t = country_table()
    assert t.columns == ["key", "iso3", "name"]
    assert t["key"].is_unique().all()
    assert t.null_count().sum_horizontal().item() == 0
    assert set(t["iso3"]) == {c.alpha_3 for c in pycountry.countries}


def test_country_table_has_codes_and_official_names() -> None:
    r = dict(resolve(["PE", "per", "Peru", "Republic of Peru", "Plurinational State of Bolivia",
                      "BOLIVIA (PLURINATIONAL STATE OF)", "Venezuela", "Nowhere"],
                     country_table()).select("raw", "iso3").rows())
    assert r == {"PE": "PER", "per": "PER", "Peru": "PER", "Republic of Peru": "PER",
                 "Plurinational State of Bolivia": "BOL", "BOLIVIA (PLURINATIONAL STATE OF)": "BOL",
                 "Venezuela": "VEN", "Nowhere": None}
    assert resolve(["VIRGIN ISLANDS (US)"], country_table())["name"].item() == "Virgin Islands, U.S."


def test_country_table_resolves_paho_names_hardcoded() -> None:
    r = resolve([n for n, _ in PAHO_PAIRS], country_table())
    assert list(zip(r["raw"], r["iso3"])) == PAHO_PAIRS


@pytest.mark.skipif(not PAHO_CSV.exists(), reason="OpenDengue PAHO extract not available")
def test_country_table_resolves_real_paho_extract() -> None:
    pairs = (
        pl.scan_csv(PAHO_CSV, infer_schema=False)
        .select("adm_0_name", "ISO_A0").unique()
        .pipe(map_places, "adm_0_name", country_table(), code_col="iso3", name_col=None)
        .collect()
    )
    assert pairs.height >= 50
    assert pairs.filter(pl.col("iso3").ne_missing(pl.col("ISO_A0"))).height == 0
    assert set(pairs.select("adm_0_name", "ISO_A0").rows()) <= set(PAHO_PAIRS)


def test_country_yaml_aliases_all_apply() -> None:
    aliases = yaml.safe_load((REFERENCE / "countries.yaml").read_text(encoding="utf-8"))
    r = resolve(list(aliases), country_table())
    assert r["iso3"].to_list() == list(aliases.values())
    assert resolve(["San Martín"], country_table())["iso3"].item() is None  # ambiguous on purpose


# --- admin1 tables -----------------------------------------------------------------------

def test_admin1_peru_table() -> None:
    t = admin1_table("PER")
    assert t.columns == ["key", "geo_code", "geo_name"]
    assert t["key"].is_unique().all()
    assert t.null_count().sum_horizontal().item() == 0
    assert t["geo_code"].n_unique() == 26  # 25 regions + Lima Metropolitana
    r = dict(resolve(["Apurímac", "PE-AMA", "ama", "LIMA", "Lima Metropolitana", "LMA",
                      "Prov. Const. del Callao", "El Callao", "Cuzco", "Atlantis", None],
                     t).select("raw", "geo_code").rows())
    assert r == {"Apurímac": "PE-APU", "PE-AMA": "PE-AMA", "ama": "PE-AMA", "LIMA": "PE-LIM",
                 "Lima Metropolitana": "PE-LMA", "LMA": "PE-LMA",
                 "Prov. Const. del Callao": "PE-CAL", "El Callao": "PE-CAL", "Cuzco": "PE-CUS",
                 "Atlantis": None, None: None}


def test_admin1_peru_departamentos_hardcoded() -> None:
    r = resolve(list(PERU_DEPARTAMENTOS), admin1_table("per"))
    assert dict(zip(r["raw"], r["geo_code"])) == PERU_DEPARTAMENTOS
    assert r.filter(pl.col("raw") == "SAN MARTIN")["geo_name"].item() == "San Martín"


@pytest.mark.skipif(not PERU_CSV.exists(), reason="Peru dengue line list not available")
def test_admin1_peru_real_line_list() -> None:
    deps = (
        pl.read_csv(PERU_CSV, columns=["departamento"], null_values=[r"\N"], infer_schema=False)
        .drop_nulls().unique()
        .pipe(map_places, "departamento", admin1_table("PER"))
    )
    assert deps.height >= 20
    assert deps.filter(pl.col("geo_code").is_null())["departamento"].to_list() == []
    assert dict(deps.select("departamento", "geo_code").rows()).items() <= PERU_DEPARTAMENTOS.items()


@pytest.mark.parametrize("path", sorted((REFERENCE / "admin1").glob("*.yaml")), ids=lambda p: p.stem)
def test_admin1_yaml_aliases_all_apply(path: Path) -> None:
    aliases = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert aliases
    assert resolve(list(aliases), admin1_table(path.stem))["geo_code"].to_list() == list(aliases.values())


def test_admin1_other_countries_and_errors() -> None:
    assert resolve(["Santa Cruz", "BO-L"], admin1_table("BOL"))["geo_code"].to_list() == ["BO-S", "BO-L"]
    assert resolve(["Bogotá, D.C.", "VALLE"], admin1_table("COL"))["geo_code"].to_list() == ["CO-DC", "CO-VAC"]
    assert resolve(["Distrito Federal"], admin1_table("MEX"))["geo_code"].item() == "MX-CMX"
    assert resolve(["Distrito Federal"], admin1_table("BRA"))["geo_code"].item() == "BR-DF"
    # Dominican Republic: provinces are nested under regions in ISO 3166-2 and still resolve.
    assert resolve(["Santiago"], admin1_table("DOM"))["geo_code"].item() == "DO-25"
    with pytest.raises(ValueError, match="unknown"):
        admin1_table("XYZ")


# --- mapping API ---------------------------------------------------------------------------

def test_map_places_eager_and_lazy_keep_rows_and_order() -> None:
    df = pl.DataFrame({"dep": ["LIMA", None, "junín", "Narnia", "LIMA", "callao"], "n": range(6)})
    eager = map_places(df, "dep", admin1_table("PER"))
    lazy = map_places(df.lazy(), "dep", admin1_table("PER"))
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.collect().equals(eager)
    assert eager.columns == ["dep", "n", "geo_code", "geo_name"]
    assert eager["n"].to_list() == list(range(6))
    assert eager["geo_code"].to_list() == ["PE-LIM", None, "PE-JUN", None, "PE-LIM", "PE-CAL"]
    assert eager["geo_name"].to_list() == ["Lima", None, "Junín", None, "Lima", "El Callao"]


def test_map_places_options_and_clash() -> None:
    df = pl.DataFrame({"country": ["Perú"]})
    out = map_places(df, "country", country_table(), code_col="iso3", name_col=None)
    assert out.columns == ["country", "iso3"] and out["iso3"].item() == "PER"
    with pytest.raises(ValueError, match="already present"):
        map_places(out, "country", country_table(), code_col="iso3")


def test_resolve_accepts_series_and_lists() -> None:
    s = pl.Series("x", ["Brasil", "México"])
    assert resolve(s, country_table())["iso3"].to_list() == ["BRA", "MEX"]
    assert resolve([], country_table()).height == 0


def test_table_from_aliases_overlays_and_validates() -> None:
    base = admin1_table("PER")
    t = table_from_aliases({"Lima": "PE-LMA", "Capital": "pe-lma "}, base)
    assert t.columns == base.columns and t["key"].is_unique().all()
    r = resolve(["LIMA", "capital", "Ica"], t)
    assert r["geo_code"].to_list() == ["PE-LMA", "PE-LMA", "PE-ICA"]
    assert r["geo_name"][0] == "Municipalidad Metropolitana de Lima"
    with pytest.raises(ValueError, match="not in the base"):
        table_from_aliases({"Gotham": "PE-XXX"}, base)
    with pytest.raises(ValueError, match="conflicts"):
        table_from_aliases({"San Martín": "PE-SAM", "SAN MARTIN": "PE-LIM"}, base)


def test_iso_files_are_pycountrys_iso_3166():
    """vigila/reference/iso3166_{1,2}.csv (read at run time instead of pycountry's database) equal the
    installed pycountry; `places.write_iso_files()` rewrites them after a pycountry upgrade."""
    import polars as pl
    import pycountry

    from vigila.core import places

    one = pl.read_csv(places.ISO_3166_1, infer_schema=False)
    assert one["alpha_3"].to_list() == [c.alpha_3 for c in pycountry.countries]
    assert one["name"].to_list() == [c.name for c in pycountry.countries]
    assert one["common_name"].to_list() == [getattr(c, "common_name", None) for c in pycountry.countries]
    two = pl.read_csv(places.ISO_3166_2, infer_schema=False)
    expected = sorted((s.code, s.name, s.country_code, s.parent_code) for s in pycountry.subdivisions)
    assert sorted(two.select("code", "name", "country_code", "parent_code").iter_rows()) == expected
