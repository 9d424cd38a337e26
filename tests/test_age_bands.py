"""Source age bands: a report's own age groups ("De 25 a 34 años", "< 1 año", "80 y más") declared in `age_bands`
are published as the harmonised band when they nest in one, and kept as declared otherwise (age_group
'source_band', the band in age_band_source), never re-banded; a label not declared is a row-level check.

Real file: tests/fixtures/real/arg_dengue_snvs_indec (Argentina SNVS 2.0 age groups; provenance in its README)."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
import yaml

from vigila.ingest import agebands, pipeline
from vigila.warehouse import read
from vigila.config import load_source, source_from_dict
from vigila.warehouse.contract import contract, schema_version

from conftest import FIXTURES, ROOT
from test_accounting import balanced

ARG = FIXTURES / "real" / "arg_dengue_snvs_indec"
YAML = ARG / "arg_snvs_dengue_age_bands.yaml"
CSV = ARG / "dengue_zika_nacional_2025_extract.csv"
ISSUE = dt.date(2025, 10, 1)

#: what each SNVS label must become, written out by hand (not computed by vigila.ingest.agebands)
EXPECTED = {
    "Posneonato (29 hasta 365 días)": ("00-04", None), "De 13 a 24 meses": ("00-04", None),
    "De 2 a 4 años": ("00-04", None), "De 5 a 9 años": ("05-09", None), "De 10 a 14 años": ("10-14", None),
    "De 15 a 19 años": ("15-19", None), "De 20 a 24 años": ("20-24", None),
    "De 25 a 34 años": ("source_band", "25-34"), "De 35 a 44 años": ("source_band", "35-44"),
    "De 45 a 65 años": ("source_band", "45-65"), "Mayores de 65 años": ("source_band", "66+"),
}


def raw() -> pl.DataFrame:
    return pl.read_csv(CSV, separator=";", infer_schema=False).with_columns(pl.col("cantidad").cast(pl.Int64))


def config(**over) -> dict:
    data = yaml.safe_load(YAML.read_text())
    data.update(location=str(CSV), **over)
    return data


@pytest.mark.parametrize(("band", "group", "kept"), [
    ([25, 34], "source_band", "25-34"),          # De 25 a 34 años
    ([0, 4], "00-04", None),                     # 0-4
    ([65, None], "source_band", "65+"),          # 65+
    ([0, 0], "00-04", None),                     # < 1 año, Menor de 1 año
    ([1, 4], "00-04", None),                     # 1 a 4
    ([80, None], "80+", None),                   # 80 y más
    ([80, 84], "80+", None),
    ([75, 84], "source_band", "75-84"),
    ([13, 24, "months"], "00-04", None),
    ([48, 71, "months"], "source_band", "48-71m"),   # 4 to 5 years 11 months: across 00-04 and 05-09
    ([29, 365, "days"], "00-04", None),
    ([5, 9], "05-09", None),
    ([4, 5], "source_band", "04-05"),
])
def test_bands_nest_or_are_kept(band, group, kept):
    [row] = agebands.band_table({"label": band}).to_dicts()
    assert (row["age_group"], row["age_band_source"]) == (group, kept)


def test_real_snvs_age_groups_nested_or_kept_every_case_accounted(tmp_path):
    cfg = load_source(YAML)
    wh = tmp_path / "wh"
    report = pipeline.ingest(cfg, CSV, wh, issue_date=ISSUE)
    balanced(report)
    r = raw()
    unknown = r.filter(pl.col("provincia_residencia") == "desconocida")
    assert set(r["grupo_etario"]) == set(EXPECTED)
    assert report["cases"] == {"read": 1149, "published": 1149 - 674, "quarantined": 674, "set_aside": 0, "unaccounted": 0}
    assert unknown["cantidad"].sum() == 674
    published = read.cases_weekly(wh).collect()
    assert published["cases"].sum() == report["cases"]["published"] == 475
    labels = pl.DataFrame({"grupo_etario": list(EXPECTED), "age_group": [g for g, _ in EXPECTED.values()],
                           "age_band_source": [k for _, k in EXPECTED.values()]})
    geo = {"Buenos Aires": "AR-B", "CABA": "AR-C", "Córdoba": "AR-X", "Tucumán": "AR-T"}
    key = ["geo_code", "epi_week", "age_group", "age_band_source"]
    expected = (r.filter(pl.col("provincia_residencia") != "desconocida").join(labels, on="grupo_etario")
                .with_columns(pl.col("provincia_residencia").replace_strict(geo).alias("geo_code"),
                              pl.col("sepi_min").cast(pl.Int32).alias("epi_week"))
                .group_by(key).agg(pl.col("cantidad").sum().alias("cases")).sort(key, nulls_last=True))
    got = published.select(*key, "cases").sort(key, nulls_last=True)
    assert got.equals(expected)
    # the kept bands hold exactly their own labels' cases: nothing was spread over harmonised bands
    kept = published.filter(pl.col("age_group") == "source_band")
    assert kept["age_band_source"].null_count() == 0
    assert published.filter(pl.col("age_group") != "source_band")["age_band_source"].null_count() == \
        published.filter(pl.col("age_group") != "source_band").height
    assert set(kept["age_band_source"]) == {"25-34", "35-44", "45-65", "66+"}
    # published again: nothing new (a null age_band_source is part of the key like any value)
    again = pipeline.ingest(cfg, CSV, wh, issue_date=ISSUE, force=True)
    assert again["revisions_added"] == 0
    assert read.cases_weekly(wh).collect().height == published.height


def test_an_undeclared_band_label_is_a_row_level_check(tmp_path):
    data = config()
    del data["age_bands"]["De 35 a 44 años"]
    report, q = pipeline.check(source_from_dict(data), CSV)
    balanced(report)
    r = raw()
    missing = r.with_row_index("row", offset=1).filter(pl.col("grupo_etario") == "De 35 a 44 años")
    bad = q.filter(pl.col("check") == "unmapped_age_group")
    assert bad["column"].unique().to_list() == ["grupo_etario"] and bad["severity"].unique().to_list() == ["error"]
    assert sorted(bad["row"].to_list()) == missing["row"].to_list() and missing.height == 71
    assert set(bad["value"]) == {"De 35 a 44 años"}
    assert report["cases"]["quarantined"] == 674 + missing.filter(pl.col("provincia_residencia") != "desconocida")["cantidad"].sum()


def test_age_band_config_is_checked():
    base = config()
    with pytest.raises(ValueError, match=r"must be \[from, to\] or \[from, to, unit\]"):
        source_from_dict({**base, "age_bands": {"De 25 a 34 años": [34, 25]}})
    with pytest.raises(ValueError, match="unit: years, months or days"):
        source_from_dict({**base, "age_bands": {"x": [1, 2, "weeks"]}})
    with pytest.raises(ValueError, match="same label once case, accents and punctuation are ignored"):
        source_from_dict({**base, "age_bands": {"De 1 a 4 años": [1, 4], "de 1 a 4 anos": [1, 5]}})
    same = source_from_dict({**base, "age_bands": {"< 1 año": [0, 0], "1 año": [1, 1], "0-4": [0, 4], "0 4": [0, 4]}})
    assert len(same.age_bands) == 4                                            # '<' and '+' are kept in the key
    with pytest.raises(ValueError, match="map columns.age_group"):
        source_from_dict({**base, "columns": {k: v for k, v in base["columns"].items() if k != "age_group"}})
    with pytest.raises(ValueError, match="cannot map to source_band"):
        source_from_dict({**base, "value_maps": {**base["value_maps"], "age_group": {"x": "source_band"}}})


def test_age_band_source_is_a_documented_column_of_the_contract():
    assert schema_version() == "1.2.0"
    weekly = contract("cases_weekly")
    assert "age_band_source" in weekly.columns and "age_band_source" in weekly.unique
    assert "source_band" in json.dumps(weekly.spec["columns"]["age_group"])
    doc = (ROOT / "docs" / "data_dictionary.md").read_text()
    assert "`age_band_source`" in doc and "source_band" in doc
    compiled = json.loads((ROOT / "schemas" / "contracts.json").read_text())
    assert compiled["schema_version"] == "1.2.0"


def test_a_warehouse_published_before_age_band_source_still_reads_and_publishes(tmp_path):
    """Versions written under schema 1.1.0 have no age_band_source: read with it null, and the next publish
    compares against them (nothing new) instead of failing."""
    import pyarrow.parquet as pq

    wh = tmp_path / "wh"
    plain = yaml.safe_load((ARG / "arg_snvs_dengue.yaml").read_text())
    plain.update(location=str(CSV), limits={"max_quarantined_share": 0.7})
    cfg = source_from_dict(plain)
    pipeline.ingest(cfg, CSV, wh, issue_date=ISSUE)
    files = [f for name in ("cases_weekly", "cases_revisions") for f in (wh / "datasets" / name).glob("versions/*/**/*.parquet")]
    assert len(files) >= 2
    for f in files:                                          # make the current versions look like 1.1.0 files
        pq.write_table(pq.read_table(f).drop_columns(["age_band_source"]), f)
    old = read.cases_weekly(wh).collect()
    assert old["age_band_source"].null_count() == old.height and old["cases"].sum() == 475
    again = pipeline.ingest(cfg, CSV, wh, issue_date=ISSUE, force=True)
    assert again["status"] == "published" and again["revisions_added"] == 0
