"""Population reference for incidence per 100,000.

In: a CSV ``country_iso3, geo_code, year, population, source`` (default: the bundled World Bank 2019
national figures, vigila/reference/population.csv) and frames with ``geo_code, epi_year`` and counts.
Out: the checked population frame; the frames with ``population, population_year, incidence_per_100k``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import TypeVar

import polars as pl

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

SCHEMA = {"country_iso3": pl.String, "geo_code": pl.String, "year": pl.Int32, "population": pl.Int64, "source": pl.String}


class PopulationError(ValueError):
    """A population CSV failed its checks; ``problems`` holds one dict (check, column, row, value) each."""

    def __init__(self, path: str, problems: list[dict]):
        self.problems = problems
        shown = "; ".join(f"row {p['row']} {p['column']}: {p['check']} ({p['value']!r})" for p in problems[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{path}: {len(problems)} problem(s): {shown}{more}")


def default_path() -> Path:
    return Path(str(importlib.resources.files("vigila").joinpath("reference", "population.csv")))


def load(path: str | Path | None = None) -> pl.DataFrame:
    """The population table at `path` (default: the bundled one), checked: the five columns, an
    integer year and a population > 0 on every line, one line per geo_code x year."""
    path = Path(path) if path is not None else default_path()
    raw = pl.read_csv(path, infer_schema_length=0)  # all text: the checks below say what is wrong where
    missing = [c for c in SCHEMA if c not in raw.columns]
    if missing:
        raise PopulationError(str(path), [{"check": "missing_column", "column": c, "row": 0, "value": None}
                                          for c in missing])
    raw = raw.select(list(SCHEMA)).with_row_index("row", offset=1)
    typed = raw.with_columns(pl.col("year").cast(pl.Int32, strict=False).alias("_year"),
                             pl.col("population").cast(pl.Int64, strict=False).alias("_pop"))
    problems = []
    for column, bad, check in (
        ("country_iso3", ~pl.col("country_iso3").str.contains(r"^[A-Z]{3}$").fill_null(False), "iso3_code"),
        ("geo_code", pl.col("geo_code").is_null(), "not_null"),
        ("year", pl.col("_year").is_null() | ~pl.col("_year").is_between(1900, 2100), "year_1900_2100"),
        ("population", pl.col("_pop").is_null() | (pl.col("_pop") <= 0), "integer_greater_than_0"),
        ("source", pl.col("source").is_null(), "not_null"),
        ("geo_code", pl.struct("geo_code", "year").is_duplicated(), "unique_geo_code_year"),
    ):
        for r in typed.filter(bad).iter_rows(named=True):
            problems.append({"check": check, "column": column, "row": r["row"], "value": r[column]})
    if problems:
        raise PopulationError(str(path), sorted(problems, key=lambda p: p["row"]))
    return typed.select(
        "country_iso3", "geo_code", pl.col("_year").alias("year"), pl.col("_pop").alias("population"), "source"
    ).sort("geo_code", "year")


def per_100k(frame: Frame, population: pl.DataFrame | None = None, *, value: str = "cases",
             column: str = "incidence_per_100k") -> Frame:
    """`frame` with ``population``, ``population_year`` and `column` = `value` x 100,000 / population.

    Joined on ``geo_code``; the population year is the latest one not after the row's ``epi_year``,
    else (a row older than every figure) the earliest one. Places without a population get nulls;
    rows are neither dropped nor reordered."""
    population = load() if population is None else population
    clash = {"population", "population_year", column} & set(frame.collect_schema().names())
    if clash:
        raise ValueError(f"columns already present: {sorted(clash)}")
    pop = population.lazy().select("geo_code", pl.col("year").cast(pl.Int32), pl.col("population").cast(pl.Int64))
    keys = frame.lazy().select("geo_code", pl.col("epi_year").cast(pl.Int32)).unique()
    chosen = (
        keys.join(pop, on="geo_code", how="inner")
        .group_by("geo_code", "epi_year")
        .agg(pl.col("year").filter(pl.col("year") <= pl.col("epi_year")).max().alias("_before"),
             pl.col("year").min().alias("_first"))
        .select("geo_code", "epi_year", pl.coalesce("_before", "_first").alias("population_year"))
        .join(pop, left_on=["geo_code", "population_year"], right_on=["geo_code", "year"], how="left")
    )
    if isinstance(frame, pl.DataFrame):
        chosen = chosen.collect()
    dtype = frame.collect_schema()["epi_year"]
    out = frame.join(chosen.with_columns(pl.col("epi_year").cast(dtype)), on=["geo_code", "epi_year"],
                     how="left", maintain_order="left")
    return out.with_columns((pl.col(value).cast(pl.Float64) * 100_000 / pl.col("population")).alias(column))
