"""National place-code catalogues (vigila/reference/catalogues, vigila.core.catalogues): their contents, the
region's ISO 3166-2 codes all reachable, `place_codes` + `columns.place_parent` in configs, and real national
files (Argentina SNVS by INDEC codes, Brazil SINAN by IBGE codes) published at admin1 and admin2 with every
row and case accounted for."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pycountry
import pytest
import yaml

from vigila.core import catalogues
from vigila.ingest import pipeline
from vigila.warehouse import read
from vigila.config import load_source, source_from_dict

from conftest import FIXTURES

REAL = FIXTURES / "real"
ARG = REAL / "arg_dengue_snvs_indec"
ARG_CSV = ARG / "dengue_zika_nacional_2025_extract.csv"
BRA = REAL / "bra_sinan_dengue_ibge"
BRA_CSV = BRA / "dengue_recife_2024_extract.csv"

#: Latin America and the Caribbean (the body's member states)
LAC = ("ATG ARG BHS BRB BLZ BOL BRA CHL COL CRI CUB DMA DOM ECU SLV GRD GTM GUY HTI HND JAM MEX NIC PAN PRY "
       "PER KNA LCA VCT SUR TTO URY VEN").split()

#: (catalogue, level) -> number of places, as the national offices count them
COUNTS = {("indec", "admin1"): 24, ("indec", "admin2"): 529, ("snvs", "admin2"): 529,
          ("ibge", "admin1"): 27, ("ibge", "admin2"): 5570,
          ("divipola", "admin1"): 33, ("divipola", "admin2"): 1121,
          ("ubigeo", "admin1"): 25, ("ubigeo", "admin2"): 196, ("ubigeo", "admin3"): 1873,
          ("cut", "admin1"): 16, ("cut", "admin2"): 56, ("cut", "admin3"): 346,
          ("inegi", "admin1"): 32, ("inegi", "admin2"): 2478, ("inec_ec", "admin1"): 24, ("inec_ec", "admin2"): 222, ("ine_gt", "admin1"): 22,
          ("ine_gt", "admin2"): 340}


# --------------------------------------------------------------------------- the catalogues themselves


@pytest.mark.parametrize(("name", "level"), sorted(COUNTS))
def test_catalogue_counts(name, level):
    assert catalogues.catalogue(name).filter(pl.col("level") == level).height == COUNTS[(name, level)]


@pytest.mark.parametrize("name", catalogues.names())
def test_every_place_has_its_parent_its_admin1_and_one_meaning_per_code(name):
    cat = catalogues.catalogue(name)
    iso = pl.read_csv(catalogues.places.ISO_3166_2, infer_schema=False)
    country = pycountry.countries.get(alpha_3=catalogues.country_of(name)).alpha_2
    assert set(cat["iso_3166_2"]) <= set(iso.filter(pl.col("country_code") == country)["code"])
    assert cat["code"].is_unique().all() and cat["code"].str.contains(r"^[0-9]+$").all()
    for child, parent in (("admin2", "admin1"), ("admin3", "admin2")):
        kids = cat.filter(pl.col("level") == child)
        parents = cat.filter(pl.col("level") == parent).select(pl.col("code").alias("parent_code"),
                                                               pl.col("iso_3166_2").alias("parent_iso"))
        joined = kids.join(parents, on="parent_code", how="left")
        assert joined["parent_iso"].null_count() == 0, joined.filter(pl.col("parent_iso").is_null())
        assert (joined["iso_3166_2"] == joined["parent_iso"]).all()               # a place lies in its parent's admin1
        assert kids["code"].str.starts_with(kids["parent_code"]).all() if kids.height else True
    for level in ("admin2", "admin3"):
        if cat.filter(pl.col("level") == level).height:
            table = catalogues.level_table(name, level)
            assert table["key"].is_unique().all()
            pairs = catalogues.pair_table(name, level)
            assert pairs.select("pkey", "key").is_unique().all()


def test_admin1_rows_cover_the_countrys_iso_codes():
    iso = pl.read_csv(catalogues.places.ISO_3166_2, infer_schema=False).filter(pl.col("parent_code").is_null())
    for name in catalogues.names():
        alpha_2 = pycountry.countries.get(alpha_3=catalogues.country_of(name)).alpha_2
        expected = set(iso.filter(pl.col("country_code") == alpha_2)["code"]) - {"PE-LMA"}  # Lima Metropolitana: UBIGEO 15 is PE-LIM
        got = set(catalogues.catalogue(name).filter(pl.col("level") == "admin1")["iso_3166_2"])
        assert got == expected, (name, sorted(expected ^ got))


@pytest.mark.parametrize("iso3", LAC)
def test_every_iso_3166_2_code_of_the_region_is_reachable(iso3):
    """From its name (ISO 3166-2, aliases, catalogue spellings) or a national code: no code shadowed by another's key."""
    alpha_2 = pycountry.countries.get(alpha_3=iso3).alpha_2
    codes = set(pl.read_csv(catalogues.places.ISO_3166_2, infer_schema=False).filter(pl.col("country_code") == alpha_2)["code"])
    assert codes, iso3
    lookup = catalogues.admin1_lookup(iso3)
    unreachable = codes - set(lookup["geo_code"])
    assert not unreachable, unreachable
    by_name = pl.DataFrame({"raw": sorted(codes)}).join(
        pl.read_csv(catalogues.places.ISO_3166_2, infer_schema=False).select(pl.col("code").alias("raw"), "name"), on="raw")
    named = catalogues.resolve(by_name.with_columns(pl.col("name").alias("place")), "place", _any_catalogue(iso3), "admin1") \
        if _any_catalogue(iso3) else None
    if named is not None:   # a catalogue country: each ISO name and each national admin1 code gives its code
        assert (named["geo_code"] == named["raw"]).all(), named.filter(pl.col("geo_code") != pl.col("raw"))
        cat = catalogues.catalogue(_any_catalogue(iso3)).filter(pl.col("level") == "admin1")
        got = catalogues.resolve(cat.select("code", "iso_3166_2"), "code", _any_catalogue(iso3), "admin1")
        assert (got["geo_code"] == got["iso_3166_2"]).all()


def _any_catalogue(iso3: str) -> str | None:
    return next((n for n in catalogues.names() if catalogues.country_of(n) == iso3), None)


def test_codes_with_or_without_leading_zeros_as_numbers_or_text():
    raw = pl.DataFrame({"m": ["3550308", "355030", " 355030 ", "3550308.0", "0003550308", "999999", None, "São Paulo"]})
    got = catalogues.resolve(raw, "m", "ibge", "admin2")
    assert got["geo_code"].to_list() == ["BRA-3550308"] * 5 + [None, None, "BRA-3550308"]
    assert got["admin1_code"].to_list()[:5] == ["BR-SP"] * 5 and got["admin1_name"][0] == "São Paulo"
    # an Argentine department is a code within its province: by code, ISO code or name of the province
    pairs = pl.DataFrame({"p": ["06", "6", "AR-B", "Buenos Aires", "14", "02", "99"],
                          "d": ["371", "371", "06371", "General San Martín", "371", "001", "999"]})
    got = catalogues.resolve(pairs, "d", "indec", "admin2", parent="p")
    assert got["geo_code"].to_list() == ["ARG-06371"] * 4 + [None, None, None]   # 14-371 and 02-001 are no INDEC department
    assert got["geo_name"][0] == "General San Martín" and got["admin1_code"][0] == "AR-B"
    # SNVS writes CABA's comunas by number (02/001 = Comuna 1), INDEC by 02007, 02014...: same published code
    snvs = catalogues.resolve(pairs.with_columns(pl.col("d").str.replace("^371$", "007")), "d", "snvs", "admin2", parent="p")
    assert snvs["geo_code"][5] == "ARG-02007" and snvs["geo_name"][5] == "Comuna 1"
    assert catalogues.resolve(pl.DataFrame({"d": ["02007"]}), "d", "indec", "admin2")["geo_name"][0] == "Comuna 1"
    # admin1 from any level's code (a municipality-coded file published by state)
    up = catalogues.resolve(pl.DataFrame({"m": ["35", "SP", "São Paulo", "355030", "3550308"]}), "m", "ibge", "admin1")
    assert up["geo_code"].to_list() == ["BR-SP"] * 5


def test_config_refuses_a_catalogue_of_another_country_and_a_parent_without_one():
    base = {"id": "x_src", "country": "ARG", "reporter": {"institution": "x"}, "diseases": ["dengue"], "geo_level": "admin2",
            "columns": {"epi_year": "y", "epi_week": "w", "cases": "c", "place": "d", "place_parent": "p"}}
    assert source_from_dict({**base, "place_codes": "indec"}).columns.place_parent == "p"
    with pytest.raises(ValueError, match="place_codes ibge is a catalogue of BRA"):
        source_from_dict({**base, "place_codes": "ibge"})
    with pytest.raises(ValueError, match="unknown place_codes catalogue 'indek'"):
        source_from_dict({**base, "place_codes": "indek"})
    with pytest.raises(ValueError, match="place_parent needs place_codes"):
        source_from_dict(base)
    with pytest.raises(ValueError, match="value_maps.place is not read with place_codes below admin1"):
        source_from_dict({**base, "place_codes": "indec", "value_maps": {"place": {"CABA": "02"}}})
    with pytest.raises(ValueError, match="place_parent needs place_codes"):
        source_from_dict({**base, "place_codes": "indec", "geo_level": "admin1"})


# --------------------------------------------------------------------------- real files


def balanced(report: dict) -> None:
    for what in ("rows", "cases", "deaths"):
        c = report.get(what)
        if c is not None:
            assert c["read"] == c["published"] + c["quarantined"] + c["set_aside"], (what, c)
            assert c.get("unaccounted", 0) == 0


def arg_config(level: str) -> dict:
    if level == "admin2":     # the fixture's own config
        return {**yaml.safe_load((ARG / "arg_snvs_dengue_admin2.yaml").read_text()), "location": str(ARG_CSV)}
    data = yaml.safe_load((ARG / "arg_snvs_dengue.yaml").read_text())
    data.update(location=str(ARG_CSV), geo_level=level, place_codes="snvs", limits={"max_quarantined_share": 0.7})
    data["value_maps"] = {"disease": data["value_maps"]["disease"]}            # no value_maps.place lines
    place = ({"place": "id_prov_indec_residencia"} if level == "admin1" else
             {"place": "id_depto_indec_residencia", "place_parent": "id_prov_indec_residencia"})
    data["columns"] = {**data["columns"], **place}
    return data


def arg_raw() -> pl.DataFrame:
    return pl.read_csv(ARG_CSV, separator=";", infer_schema=False).with_columns(pl.col("cantidad").cast(pl.Int64))


def test_argentina_by_indec_codes_at_admin1_and_admin2_every_case_accounted(tmp_path):
    raw = arg_raw()
    total = raw["cantidad"].sum()
    prov = {"02": "AR-C", "06": "AR-B", "14": "AR-X", "90": "AR-T"}

    # admin1: the province code alone; province 99 ("desconocida") is no province: quarantined, not dropped
    wh = tmp_path / "wh1"
    report = pipeline.ingest(source_from_dict(arg_config("admin1")), ARG_CSV, wh, run_id="r1", issue_date=dt.date(2025, 10, 1))
    balanced(report)
    unknown = raw.filter(pl.col("id_prov_indec_residencia") == "99")
    assert report["status"] == "published"
    assert report["rows"] == {"read": 480, "published": 480 - unknown.height, "quarantined": unknown.height, "set_aside": 0}
    assert report["cases"]["published"] == total - unknown["cantidad"].sum() == 475
    got = read.cases_weekly(wh).collect()
    expected = (raw.filter(pl.col("id_prov_indec_residencia") != "99")
                .group_by(geo_code=pl.col("id_prov_indec_residencia").replace_strict(prov), epi_week=pl.col("sepi_min").cast(pl.Int32))
                .agg(pl.col("cantidad").sum().alias("cases")).sort("geo_code", "epi_week"))
    assert got.select("geo_code", "epi_week", "cases").sort("geo_code", "epi_week").equals(expected)
    assert (got["admin1_code"] == got["geo_code"]).all() and set(got["geo_level"]) == {"admin1"}
    q = read.quarantine(wh).collect()
    assert set(q["check"]) == {"unknown_place"} and set(q["value"]) == {"99"} and q["cases"].sum() == 674

    # admin2: (province, department) pairs; department 999 ("desconocido") of a known province is no department
    wh = tmp_path / "wh2"
    report = pipeline.ingest(source_from_dict(arg_config("admin2")), ARG_CSV, wh, run_id="r1", issue_date=dt.date(2025, 10, 1))
    balanced(report)
    unplaced = raw.filter(pl.col("id_depto_indec_residencia") == "999")
    assert report["rows"]["quarantined"] == unplaced.height == 148
    assert report["cases"] == {"read": total, "published": total - unplaced["cantidad"].sum(), "quarantined": 686,
                               "set_aside": 0, "unaccounted": 0}
    got = read.cases_weekly(wh).collect()
    assert got["cases"].sum() == report["cases"]["published"] == 463 and set(got["geo_level"]) == {"admin2"}
    assert got["geo_code"].str.contains(r"^ARG-\d{5}$").all()
    san_martin = got.filter(pl.col("geo_code") == "ARG-06371", pl.col("epi_week") == 13).row(0, named=True)
    assert (san_martin["cases"], san_martin["geo_name"], san_martin["admin1_code"], san_martin["admin1_name"]) == \
        (15, "General San Martín", "AR-B", "Buenos Aires")                   # the README's worked example: 7 rows, 15 cases
    comuna = got.filter(pl.col("geo_code") == "ARG-02007")                    # SNVS 02/001 = COMUNA 1 = INDEC 02007
    assert comuna["geo_name"].unique().to_list() == ["Comuna 1"] and comuna["cases"].sum() == raw.filter(
        pl.col("id_prov_indec_residencia") == "02", pl.col("id_depto_indec_residencia") == "001")["cantidad"].sum()
    # each published department's cases equal the file's rows of that (province, department)
    by_dept = (raw.filter(pl.col("id_depto_indec_residencia") != "999")
               .group_by(pl.col("id_prov_indec_residencia"), pl.col("id_depto_indec_residencia")).agg(pl.col("cantidad").sum()))
    assert sorted(by_dept["cantidad"].to_list()) == sorted(got.group_by("geo_code").agg(pl.col("cases").sum())["cases"].to_list())
    # the admin2 rows add up to the admin1 rows, province by province
    assert dict(got.group_by("admin1_code").agg(pl.col("cases").sum()).iter_rows()) == {
        "AR-B": 311, "AR-C": 152}
    q = read.quarantine(wh).collect()
    assert set(q["check"]) == {"unknown_place"} and set(q["column"]) == {"id_depto_indec_residencia"}
    assert set(q["value"]) == {"99 / 999", "02 / 999", "14 / 999", "90 / 999"}

    # a source may declare the unknown department out of scope instead: set aside, still accounted
    aside = {**arg_config("admin2"), "exclude": {"place": ["999"]}}
    report, q = pipeline.check(source_from_dict(aside), ARG_CSV)
    balanced(report)
    assert report["cases"] == {"read": total, "published": 463, "quarantined": 0, "set_aside": 686, "unaccounted": 0}
    assert set(q["check"]) == {"excluded_value"} and set(q["severity"]) == {"set_aside"}


def test_brazil_sinan_by_ibge_codes_at_admin2(tmp_path):
    raw = pl.read_csv(BRA_CSV, separator=";", infer_schema=False)
    wh = tmp_path / "wh"
    cfg = load_source(BRA / "bra_sinan_dengue.yaml")
    report = pipeline.ingest(cfg, BRA_CSV, wh, run_id="r1", issue_date=dt.date(2024, 12, 31))
    balanced(report)
    assert report["status"] == "published"
    assert report["rows"] == {"read": 37, "published": 37, "quarantined": 0, "set_aside": 0}
    assert report["cases"]["published"] == 37
    got = read.cases_weekly(wh).collect()
    assert set(got["geo_level"]) == {"admin2"} and got["cases"].sum() == 37
    assert got["geo_code"].str.contains(r"^BRA-\d{7}$").all() and got["geo_code"].n_unique() == 15
    fortaleza = got.filter(pl.col("geo_code") == "BRA-2304400")
    assert fortaleza["cases"].sum() == raw.filter(pl.col("ID_MN_RESI") == "230440").height == 9
    assert fortaleza.select("geo_name", "admin1_code", "admin1_name").unique().rows() == [("Fortaleza", "BR-CE", "Ceará")]
    # residence UF of the file (SG_UF) = the admin1 the catalogue gives each municipality
    uf = dict(pl.read_csv(catalogues.FOLDER / "ibge.csv", infer_schema=False).filter(pl.col("level") == "admin1")
              .select("code", "iso_3166_2").iter_rows())
    by_uf = raw.group_by(pl.col("SG_UF").replace_strict(uf).alias("admin1_code")).len()
    assert dict(by_uf.iter_rows()) == dict(got.group_by("admin1_code").agg(pl.col("cases").sum()).iter_rows())

    # the same file at admin1: municipality codes roll up to their state
    cfg = source_from_dict({**yaml.safe_load((BRA / "bra_sinan_dengue.yaml").read_text()), "location": str(BRA_CSV),
                            "geo_level": "admin1"})
    report, q = pipeline.check(cfg, BRA_CSV)
    balanced(report)
    assert report["cases"]["published"] == 37 and q.height == 0


def test_colombia_sivigila_by_divipola_department_and_municipality_codes(tmp_path):
    """SIVIGILA writes the municipality of residence as 3 digits within the department (COD_DPTO_R, COD_MUN_R);
    '000' (municipality unknown) and department '01' (abroad) are no place: quarantined, each case counted."""
    col = REAL / "col_sivigila_malaria_complicada_2018"
    csv = col / "datos_2018_495_extract.csv"
    data = yaml.safe_load((col / "col_sivigila_malaria.yaml").read_text())
    data["columns"].update(place="COD_MUN_R", place_parent="COD_DPTO_R")
    data["value_maps"].pop("place")
    data.update(location=str(csv), geo_level="admin2", place_codes="divipola", limits={"max_quarantined_share": 0.2})
    raw = pl.read_csv(csv, infer_schema=False)
    unplaced = raw.filter((pl.col("COD_MUN_R") == "000") | (pl.col("COD_DPTO_R") == "01"))
    report = pipeline.ingest(source_from_dict(data), csv, tmp_path / "wh", run_id="r1", issue_date=dt.date(2019, 6, 1))
    balanced(report)
    assert report["status"] == "published" and unplaced.height > 0
    assert report["cases"]["quarantined"] == unplaced.height and report["cases"]["read"] == raw.height
    got = read.cases_weekly(tmp_path / "wh").collect()
    assert got["cases"].sum() == report["cases"]["published"] == raw.height - unplaced.height
    medellin = got.filter(pl.col("geo_code") == "COL-05001")
    assert medellin["cases"].sum() == raw.filter(pl.col("COD_DPTO_R") == "05", pl.col("COD_MUN_R") == "001").height
    assert medellin.select("admin1_code", "admin1_name").unique().rows() == [("CO-ANT", "Antioquia")]
    q = read.quarantine(tmp_path / "wh").filter(pl.col("check") == "unknown_place").collect()
    assert set(q["value"]) == {f"{d} / {m}" for d, m in unplaced.select("COD_DPTO_R", "COD_MUN_R").iter_rows()}


def test_peru_line_list_by_province_names_within_departments():
    """The demo's MINSA line list names departamento and provincia (upper case, no accents): published by
    province (UBIGEO admin2) with the pair as key. Pairs that are no province of that department (LORETO /
    SAN MARTIN: the file mixes departments; ICA / NAZCA: UBIGEO spells Nasca; \\N) are quarantined, each
    case accounted; every published province lies in the admin1 its departamento names."""
    from conftest import SOURCES

    data = yaml.safe_load((SOURCES / "per_minsa_dengue_linelist.yaml").read_text())
    data.update(location=None, geo_level="admin2", place_codes="ubigeo", limits={"max_quarantined_share": 0.2})
    data["columns"].update(place="provincia", place_parent="departamento")
    data.pop("schedule")
    cfg = source_from_dict(data)
    path = SOURCES.parent / "data" / "demo" / "peru_dengue_linelist_2019_2022.csv.gz"
    report, q = pipeline.check(cfg, path)
    balanced(report)
    raw = pl.read_csv(path, infer_schema=False, null_values=["", "NA", "\\N"]).select("departamento", "provincia")
    unknown = q.filter(pl.col("check") == "unknown_place")
    assert report["rows"]["read"] == raw.height == 171_282
    assert report["cases"]["quarantined"] == unknown["row"].n_unique() == report["rows"]["quarantined"]
    assert 57 < unknown.height < 0.05 * raw.height                            # the 57 \N rows and the odd pairs
    assert {"LORETO / SAN MARTIN", "ICA / NAZCA", "<missing> / <missing>"} <= set(unknown["value"])
    pairs = raw.unique().drop_nulls()
    got = catalogues.resolve(pairs, "provincia", "ubigeo", "admin2", parent="departamento").drop_nulls("geo_code")
    by_name = catalogues.resolve(got.select("departamento"), "departamento", "ubigeo", "admin1")
    assert (got["admin1_code"] == by_name["geo_code"]).all()                 # LIMA -> PE-LIM, CALLAO -> PE-CAL, ...
    assert got.height > 100 and got["geo_code"].str.contains(r"^PER-\d{4}$").all()


def test_revisions_of_an_older_schema_get_null_admin1_columns_on_publish():
    """A warehouse written before schema 1.2.0 keeps publishing: its revisions read with admin1_code/admin1_name null."""
    old = pl.DataFrame({"geo_code": ["PE-LOR"], "cases": [3]}).lazy()
    new = pipeline._upgraded(old).collect()
    assert new.columns[:2] == ["geo_code", "cases"] and {"admin1_code", "admin1_name", "age_band_source"} <= set(new.columns)
    assert new["geo_code"].to_list() == ["PE-LOR"] and new["cases"].to_list() == [3]
    assert new["admin1_code"].dtype == pl.String and new["admin1_code"].null_count() == 1
    assert pipeline._upgraded(new.lazy()).collect().equals(new)              # current data is left as it is


# --------------------------------------------------------------------------- Mexico: the DGE's own codes

MEX_SSA = REAL / "mex_ssa_municipios_inegi" / "MUNICIPIOS_extract.csv"


def test_mexico_ssa_municipality_codes_are_inegis_by_state_and_municipality():
    """The Secretaría de Salud's catalogue for MUNICIPIO_RES (states 01..09 of April 2020): every municipality
    is found by (ENTIDAD, MUNICIPIO) and named alike, but two renamed since; the 99x codes name no place."""
    from vigila.core import places

    raw = pl.read_csv(MEX_SSA, infer_schema=False)
    got = catalogues.resolve(raw, "CLAVE_MUNICIPIO", "inegi", "admin2", parent="CLAVE_ENTIDAD")
    special = got["CLAVE_MUNICIPIO"].is_in(["997", "998", "999"])
    assert got.filter(special)["geo_code"].null_count() == special.sum() == 13
    found = got.filter(~special)
    assert found.height == 286 and found["geo_code"].null_count() == 0
    assert (found["geo_code"] == "MEX-" + found["CLAVE_ENTIDAD"] + found["CLAVE_MUNICIPIO"]).all()
    assert found.filter(pl.col("CLAVE_ENTIDAD") == "03")["geo_name"].to_list() == [
        "Comondú", "Mulegé", "La Paz", "Los Cabos", "Loreto"]                      # 03008, 03009 as INEGI
    renamed = found.filter(places.normalise_expr(pl.col("MUNICIPIO")) != places.normalise_expr(pl.col("geo_name")))
    assert sorted(renamed["geo_code"]) == ["MEX-07017", "MEX-08056"]              # Cintalapa, Rosario (renamed)
    assert set(found["admin1_code"]) == {f"MX-{c}" for c in "AGU BCN BCS CAM COA COL CHP CHH CMX".split()}
