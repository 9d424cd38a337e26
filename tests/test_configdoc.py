"""The config language reference and the check catalogue are generated, complete and in sync."""

from __future__ import annotations

import polars as pl
import pytest
import yaml

from vigila import configdoc
from vigila.ingest import pipeline
from vigila.config import load_source, source_from_dict

from conftest import FIXTURES, ROOT, SOURCES


@pytest.mark.parametrize("name", sorted(configdoc.DOCS))
def test_docs_are_generated_not_hand_written(name):
    assert (ROOT / "docs" / name).read_text() == configdoc.DOCS[name](), "run `vigila config-reference`"


def test_every_config_key_is_documented_with_its_default_and_allowed_values():
    rows = {r["key"]: r for r in configdoc.rows()}
    assert all(r["meaning"] or r["doc"] for r in rows.values()), [k for k, r in rows.items() if not (r["meaning"] or r["doc"])]
    assert rows["limits.max_quarantined_share"]["default"] == "0.05"
    assert rows["aggregate"]["allowed"] == "`none`, `sum`"
    assert rows["epiweek"]["allowed"] == "`mmwr`, `iso`"
    assert "Prefect Secret block" in rows["http.auth.secret_block"]["meaning"]
    assert {"dhis2.period_types", "fhir.measures", "fhir.stratifiers", "columns.age_unit", "value_maps.deaths"} <= set(rows)
    assert rows["shape"]["example"] == "`shape: line_list`"


def test_every_check_the_test_files_raise_is_in_the_catalogue(tmp_path):
    """The real fixtures, the demo, a file of every broken row kind, the DHIS2 and FHIR fixtures."""
    found: set[str] = set()
    arg = yaml.safe_load((FIXTURES / "real" / "arg_dengue_snvs_indec" / "arg_snvs_dengue.yaml").read_text())
    for cfg, path in [(load_source(SOURCES / "per_minsa_dengue_linelist.yaml"), None),
                      (load_source(SOURCES / "paho_opendengue_national.yaml"), None),
                      (load_source(FIXTURES / "real" / "col_sivigila_malaria_complicada_2018" / "col_sivigila_malaria.yaml"), None),
                      (source_from_dict({**arg, "location": None, "row_key": ["id_depto_indec_residencia", "id_prov_indec_residencia",
                                        "evento", "id_grupo_etario", "anio_min", "sepi_min"], "aggregate": "none"}),
                       FIXTURES / "real" / "arg_dengue_snvs_indec" / "dengue_zika_nacional_2025_extract.csv")]:
        _, q = pipeline.check(cfg, path or cfg.location)
        found |= set(q["check"])
    bad = tmp_path / "bad.csv"
    bad.write_text("estado,anio,semana,casos,defunciones,sexo\n" + "\n".join([
        "Jalisco,2024,1,10,0,M", "Jalisco,2024,2,-3,0,M", "Jalisco,2024,54,4,0,M", "Jalisco,2023,53,4,0,M", "Narnia,2024,3,4,0,M",
        "Yucatán,2024,3,abc,0,M", "Oaxaca,2024,5,6,1,", "Oaxaca,2024,5,6,1,", "Sonora,2099,6,2,0,M", "Sonora,2024,7,2,5,M",
        "Sonora,2024,8,2,0,Z", "Sonora,2024,9,2,0,M,extra"]) + "\n")
    cfg = source_from_dict({"id": "mx_bad", "country": "MEX", "reporter": {"institution": "x"}, "diseases": ["dengue"],
                            "geo_level": "admin1", "issue_date": {"fixed": "2024-06-01"},
                            "columns": {"place": "estado", "epi_year": "anio", "epi_week": "semana", "cases": "casos",
                                        "deaths": "defunciones", "sex": "sexo"}})
    _, q = pipeline.check(cfg, bad)
    found |= set(q["check"])
    for name in ("data_value_sets_dengue.json", "data_value_sets_period_types.json"):
        dhis2 = yaml.safe_load((SOURCES / "dhis2_country_example.yaml").read_text())
        dhis2["dhis2"]["period_types"] = None
        dhis2["location"] = None
        try:
            _, q = pipeline.check(source_from_dict(dhis2), FIXTURES / "dhis2" / name)
            found |= set(q["check"])
        except pipeline.ReadError:
            pass
    unknown = sorted(c for c in found if not configdoc.check_known(c))
    assert not unknown, f"add these to vigila/checks.yaml: {unknown}"
    assert len(found) >= 15, found
