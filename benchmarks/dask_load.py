"""Synthetic region-shaped loads for the Dask benchmark and tests (seeded numpy; no real data involved).

`publish_cases_weekly(warehouse, n_series, weeks)`: a `cases_weekly` version of N admin2 series (places
`<ISO3>-<n>` of 8 countries x 4 diseases, one source per country, Poisson counts with a seasonal mean
level 0.5-200 a week, 1 series in 10 with a 6-week outbreak near the end), committed with `publish.commit`
as an ingest would. `write_sources(folder, n)`: N small weekly-counts sources (CSV + YAML, admin0 rows of one
country each) to ingest many sources at once. `detection_config(path, ...)`: a detection YAML.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

COUNTRIES = ["ARG", "BOL", "BRA", "CHL", "COL", "ECU", "PER", "PRY"]
DISEASES = ["dengue", "malaria", "zika", "chikungunya"]
# sources: one country x disease each, distinct up to 80 sources (the first ones share partitions with
# regional national series such as PAHO's, on purpose)
SOURCE_COUNTRIES = [*COUNTRIES, "CRI", "CUB", "DOM", "GTM", "HND", "MEX", "NIC", "PAN", "SLV", "URY", "VEN", "GUY"]
FIRST_WEEK = dt.date(2015, 1, 4)   # a Sunday: MMWR week 1 of 2015


def synthetic_cases_weekly(n_series: int, weeks: int = 520, seed: int = 20240101, first: int = 0) -> pl.DataFrame:
    """Series `first`..`first + n_series - 1` (a region built in chunks: each chunk its own random stream)."""
    from vigila.detect import alerts

    rng = np.random.default_rng(seed if first == 0 else (seed, first))
    idx = np.arange(first, first + n_series)
    country = np.array(COUNTRIES)[idx % len(COUNTRIES)]
    disease = np.array(DISEASES)[(idx // len(COUNTRIES)) % len(DISEASES)]
    level = np.exp(rng.uniform(np.log(0.5), np.log(200), n_series))
    t = np.arange(weeks)
    mean = level[:, None] * (1 + 0.5 * np.sin(2 * np.pi * (t[None, :] + rng.uniform(0, 52, n_series)[:, None]) / 52.18))
    outbreak = (idx % 10 == 0)[:, None] & (t[None, :] >= weeks - 8) & (t[None, :] < weeks - 2)
    cases = rng.poisson(np.where(outbreak, mean * 4 + 5, mean)).astype(np.int64)
    dates = pl.Series([FIRST_WEEK + dt.timedelta(weeks=int(w)) for w in t], dtype=pl.Date)
    epi = alerts.epi_weeks(dates)
    frame = pl.DataFrame({
        "i": np.repeat(idx, weeks), "w": np.tile(t, n_series), "cases": cases.ravel(),
        "country_iso3": np.repeat(country, weeks), "disease": np.repeat(disease, weeks)})
    return frame.join(epi.with_row_index("w").with_columns(pl.col("w").cast(pl.Int64)), on="w").select(
        "country_iso3", pl.lit("admin2").alias("geo_level"),
        pl.format("{}-{}", "country_iso3", pl.col("i").cast(pl.String).str.zfill(6)).alias("geo_code"),
        pl.format("place {}", "i").alias("geo_name"), "disease", pl.lit("total").alias("classification"),
        pl.lit("all").alias("sex"), pl.lit("all").alias("age_group"), pl.col("epi_year").cast(pl.Int32),
        pl.col("epi_week").cast(pl.Int32), "week_start", "cases", pl.lit(None, pl.Int64).alias("deaths"),
        pl.format("{}_synthetic", pl.col("country_iso3").str.to_lowercase()).alias("source_id"),
        pl.lit("ministry").alias("reporter_type"), pl.lit(dt.date(2025, 1, 10)).alias("issue_date"),
        pl.lit("synthetic").alias("run_id"))


def publish_cases_weekly(warehouse: str, n_series: int, weeks: int = 520, seed: int = 20240101) -> str:
    """Commit the synthetic series as the `cases_weekly` dataset of WAREHOUSE; return the version."""
    from schemas.harmonised import SCHEMA_VERSION
    from vigila.ingest import pipeline
    from vigila.warehouse import publish
    from vigila.warehouse.storage import Storage

    frame = synthetic_cases_weekly(n_series, weeks, seed)
    return publish.commit(Storage.open(warehouse), "cases_weekly", partition_by=pipeline.PARTITION_BY,
                          replace_all=frame, run_id="synthetic", schema_version=SCHEMA_VERSION).version


SOURCE_YAML = """\
id: {id}
country: {iso3}
reporter: {{institution: Synthetic ministry {iso3} {n}, type: ministry}}
diseases: [{disease}]
geo_level: admin0
location: {file}
columns: {{place: pais, epi_year: anio, epi_week: semana, cases: casos}}
"""


def write_sources(folder: Path, n: int, rows: int = 520, seed: int = 7) -> list[Path]:
    """N weekly-counts sources (one country x disease each, ROWS weeks of counts from 2015), YAML + CSV."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        iso3, disease = SOURCE_COUNTRIES[k % len(SOURCE_COUNTRIES)], DISEASES[(k // len(SOURCE_COUNTRIES)) % len(DISEASES)]
        dates = [FIRST_WEEK + dt.timedelta(weeks=w) for w in range(rows)]
        from vigila.detect import alerts

        epi = alerts.epi_weeks(pl.Series(dates, dtype=pl.Date))
        csv = folder / f"src{k:03d}.csv"
        pl.DataFrame({"pais": [iso3] * rows, "anio": epi["epi_year"], "semana": epi["epi_week"],
                      "casos": rng.poisson(30, rows)}).write_csv(csv)
        path = folder / f"src{k:03d}.yaml"
        path.write_text(SOURCE_YAML.format(id=f"syn{k:03d}_{iso3.lower()}_{disease}", iso3=iso3, n=k, disease=disease,
                                           file=csv.name))
        paths.append(path)
    return paths


def detection_config(path: Path, methods: list[dict], weeks: int, levels: tuple[str, ...] = ("admin2",),
                     min_history: int = 10) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"methods": methods, "levels": list(levels), "weeks": weeks,
                                    "min_history": min_history}))
    return path
