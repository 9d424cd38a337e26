"""Population reference: the bundled World Bank figures, the CSV checks, and incidence per 100,000."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pycountry
import pytest

from vigila.ingest import pipeline
from vigila.regional import population
from vigila.warehouse import read
from vigila.config import load_source

from conftest import DEMO, SOURCES


def test_bundled_table_covers_the_demo_countries_it_can():
    pop = population.load()
    demo = set(pl.read_csv(DEMO / "opendengue_paho_national_v1_3.csv.gz", columns=["ISO_A0"])["ISO_A0"])
    assert set(pop["geo_code"]) <= demo and pop.height == 44
    assert demo - set(pop["geo_code"]) == {"AIA", "BES", "BLM", "GLP", "GUF", "MSR", "MTQ"}  # none published
    assert all(pycountry.countries.get(alpha_3=c) for c in pop["country_iso3"])
    assert (pop["geo_code"] == pop["country_iso3"]).all() and (pop["year"] == 2019).all()
    assert pop.schema == population.SCHEMA
    # ordered as the Americas are: Brazil and the USA the largest, Montserrat-sized islands the smallest
    top = pop.sort("population", descending=True)["geo_code"].head(3).to_list()
    assert top == ["USA", "BRA", "MEX"] and pop["population"].min() > 10_000


def test_bad_csv_lists_each_problem(tmp_path):
    bad = tmp_path / "pop.csv"
    bad.write_text("country_iso3,geo_code,year,population,source\n"
                   "PER,PER,2019,32510453,wb\nper,PER,20x9,0,wb\nPER,PER,2019,1,wb\n")
    with pytest.raises(population.PopulationError) as e:
        population.load(bad)
    got = {(p["check"], p["column"], p["row"], p["value"]) for p in e.value.problems}
    assert got == {("iso3_code", "country_iso3", 2, "per"), ("year_1900_2100", "year", 2, "20x9"),
                   ("integer_greater_than_0", "population", 2, "0"),
                   ("unique_geo_code_year", "geo_code", 1, "PER"), ("unique_geo_code_year", "geo_code", 3, "PER")}
    (tmp_path / "short.csv").write_text("geo_code,year\nPER,2019\n")
    with pytest.raises(population.PopulationError, match="missing_column"):
        population.load(tmp_path / "short.csv")


POP = pl.DataFrame({"country_iso3": ["PER", "PER", "BOL"], "geo_code": ["PER", "PER", "BOL"],
                    "year": [2010, 2019, 2015], "population": [29_000_000, 32_500_000, 11_000_000],
                    "source": ["t", "t", "t"]}).with_columns(pl.col("year").cast(pl.Int32))


@pytest.mark.parametrize("lazy", [False, True])
def test_per_100k_takes_the_latest_year_not_after_else_the_earliest(lazy):
    frame = pl.DataFrame({"geo_code": ["PER", "PER", "PER", "PER", "BOL", "ZZZ", "PER"],
                          "epi_year": [2023, 2005, 2015, 2019, 2010, 2020, 2010],
                          "cases": [325, 290, 29, 0, 11, 5, None]}).with_columns(pl.col("epi_year").cast(pl.Int32))
    got = population.per_100k(frame.lazy() if lazy else frame, POP)
    got = got.collect() if lazy else got
    assert got.select("geo_code", "epi_year", "cases").equals(frame)  # rows kept, in order
    assert got["population_year"].to_list() == [2019, 2010, 2010, 2019, 2015, None, 2010]
    expected = [325 * 1e5 / 32.5e6, 290 * 1e5 / 29e6, 29 * 1e5 / 29e6, 0.0, 11 * 1e5 / 11e6, None, None]
    values = got["incidence_per_100k"].to_list()
    assert [v is None for v in values] == [v is None for v in expected]
    assert [v for v in values if v is not None] == pytest.approx([v for v in expected if v is not None])
    with pytest.raises(ValueError, match="already present"):
        population.per_100k(got, POP)


def test_incidence_of_the_real_weekly_counts(tmp_path):
    cfg = load_source(SOURCES / "paho_opendengue_national.yaml")
    pipeline.ingest(cfg, cfg.location, tmp_path / "wh", issue_date=dt.date(2025, 1, 10))
    weekly = read.cases_weekly(tmp_path / "wh", country=["PER", "AIA"], weeks=2023, source=cfg.id)
    yearly = weekly.group_by("geo_code", "epi_year").agg(pl.col("cases").sum()).collect()
    got = population.per_100k(yearly, population.load()).sort("geo_code")
    peru = got.filter(pl.col("geo_code") == "PER").row(0, named=True)
    assert peru["population"] == 32_510_453 and peru["population_year"] == 2019  # the World Bank's 2019 figure
    assert peru["incidence_per_100k"] == pytest.approx(peru["cases"] * 100_000 / 32_510_453)
    assert got.filter(pl.col("geo_code") == "AIA")["incidence_per_100k"].to_list() == [None]  # no figure: null
