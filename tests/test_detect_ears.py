"""EARS C1-C3 equal R surveillance::earsC on every earsC reference: bundled fixtures always, ../shared when present.

Inputs: the R `surveillance` series (../shared/data/surveillance; bundled: salmonella_agona.csv) and the
Latin-American dengue series (`files_lac`), rebuilt here from the project's own data/demo exactly as R got them.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from epiweeks import Week, Year

from vigila.detect import ears
from vigila.detect.ears import default_alpha

from conftest import DEMO, FIXTURES, SHARED

BUNDLED = FIXTURES / "surveillance"
SHARED_REF = SHARED / "reference" / "surveillance"
INPUTS = {  # reference dataset -> input series file; R aggregated salmNewport's 16 states for the DE series
    "salmNewport_DE": "salmNewport_DE_total",
    "salmNewport_DE_idx": "salmNewport_DE_total",
    "salmNewport_DE_vignette": "salmNewport_DE_total",
    "salmNewport_states": "salmNewport",
    "salmonella_agona_helpex": "salmonella_agona",
}
INDEX_BASED = {"salmNewport_DE_idx": (2004, 2)}   # R: sts(observed, start = c(2004, 2), freq = 52): no dates
LAC_WEEKS = (dt.date(2021, 1, 3), dt.date(2023, 12, 31))    # OpenDengue weekly rows R used (2020 is absent)


def r_range(text: str) -> tuple[int, int]:
    """R's "a:b" -> (a, b)."""
    lo, hi = text.split(":")
    return int(lo), int(hi)


def mmwr(dates: list[dt.date]) -> pl.DataFrame:
    """week_start -> MMWR epi_year, epi_week."""
    weeks = [Week.fromdate(d, system="cdc") for d in dates]
    return pl.DataFrame({"week_start": dates, "epi_year": [w.year for w in weeks], "epi_week": [w.week for w in weeks]})


@cache
def surveillance_series(path: Path, dataset: str) -> pl.DataFrame:
    """An R `surveillance` export: series_id (= unit), t, cases, epi_year, epi_week, week_start; for an
    index-based dataset, R's nominal 52-week calendar and no dates."""
    series = (pl.read_csv(path, infer_schema_length=None, schema_overrides={"week_start": pl.Date})
              .select(pl.col("unit").alias("series_id"), "t", "cases", "epi_year", "epi_week", "week_start"))
    if dataset not in INDEX_BASED:
        return series
    year, week = INDEX_BASED[dataset]
    i = pl.col("t") + week - 2
    return series.with_columns((year + i // 52).alias("epi_year"), (i % 52 + 1).alias("epi_week"),
                               pl.lit(None, pl.Date).alias("week_start"))


@cache
def opendengue(country: str) -> pl.DataFrame:
    """OpenDengue national extract, one country's weekly (T_res "Week") rows in LAC_WEEKS; t = 1 on 2021-01-03."""
    rows = (pl.read_csv(DEMO / "opendengue_paho_national_v1_3.csv.gz", infer_schema_length=None, null_values="NA",
                        schema_overrides={"calendar_start_date": pl.Date})
            .filter(pl.col("adm_0_name") == country, pl.col("T_res") == "Week",
                    pl.col("calendar_start_date").is_between(*LAC_WEEKS))
            .sort("calendar_start_date")
            .select(pl.col("adm_0_name").alias("series_id"), pl.int_range(1, pl.len() + 1).alias("t"),
                    pl.col("dengue_total").alias("cases"), pl.col("calendar_start_date").alias("week_start")))
    assert (rows["week_start"].diff().drop_nulls() == dt.timedelta(days=7)).all(), "R's series is contiguous"
    return rows.join(mmwr(rows["week_start"].to_list()), on="week_start")


@cache
def peru_departamentos() -> pl.DataFrame:
    """Peru's line list counted per departamento ("\\N" = missing, kept as a unit) and MMWR week (ano, semana),
    zero-filled over every week from the first to the last: t = 1 on 2019 week 1."""
    counts = (pl.read_csv(DEMO / "peru_dengue_linelist_2019_2022.csv.gz", infer_schema_length=None)
              .group_by(pl.col("departamento").alias("series_id"), pl.col("ano").alias("epi_year"),
                        pl.col("semana").alias("epi_week"))
              .agg(pl.len().cast(pl.Int64).alias("cases")))
    years = range(counts["epi_year"].min(), counts["epi_year"].max() + 1)
    weeks = [w for y in years for w in Year(y, system="cdc").iterweeks()]
    calendar = pl.DataFrame({"t": range(1, len(weeks) + 1), "epi_year": [w.year for w in weeks],
                             "epi_week": [w.week for w in weeks], "week_start": [w.startdate() for w in weeks]})
    return (counts.select("series_id").unique().join(calendar, how="cross")
            .join(counts, on=["series_id", "epi_year", "epi_week"], how="left")
            .with_columns(pl.col("cases").fill_null(0)).sort("series_id", "t"))


def lac_series(name: str) -> pl.DataFrame:
    source = name.removeprefix("LAC_").split("__")[0]
    if source == "peru_departamentos":
        return peru_departamentos()
    return opendengue(source.removeprefix("opendengue_").replace("_", " ").upper())


def cases(root: Path, method: str = "earsC") -> list:
    """One param per reference file of `method` in root's manifest: (reference, series loader, manifest entry)."""
    manifest = root / "manifest.json"
    if not manifest.exists():
        return [pytest.param(None, None, None, id="absent", marks=pytest.mark.skip(reason=f"{manifest} not present"))]
    data_dir = root if root == BUNDLED else root.parent.parent / "data" / "surveillance"
    entries = json.loads(manifest.read_text())
    out = []
    for name, f in entries["files"].items():
        data = data_dir / f"{INPUTS.get(f['dataset'], f['dataset'])}.csv"
        if method in f["method"]:
            out.append(pytest.param(root / name, lambda data=data, ds=f["dataset"]: surveillance_series(data, ds), f, id=name))
    for name, f in entries.get("files_lac", {}).items():
        if method in name:
            out.append(pytest.param(root / name, lambda name=name: lac_series(name), f, id=name))
    return out


def reference_frame(reference: Path, series: pl.DataFrame) -> pl.DataFrame:
    """R's output with series_id (its unit, or the input's id when there is one series) and the input's column
    names for the week fields (LAC files name them week_start_mmwr / mmwr_year / mmwr_week)."""
    ref = pl.read_csv(reference, infer_schema_length=None)
    ref = ref.rename({k: v for k, v in {"week_start_mmwr": "week_start", "mmwr_year": "epi_year",
                                        "mmwr_week": "epi_week"}.items() if k in ref.columns})
    one = series["series_id"].unique()
    return ref.with_columns(pl.lit(one[0]).alias("series_id") if len(one) == 1 else pl.col("unit").alias("series_id"),
                            pl.col("week_start").str.to_date(), pl.col("alarm").cast(pl.Boolean))


def assert_rows_match(ref: pl.DataFrame, got: pl.DataFrame, series: pl.DataFrame) -> pl.DataFrame:
    """Same (series_id, t) rows, same observed, calendar and alarms (nulls included), bounds within 1e-6
    relative. Returns the joined frame, R's columns prefixed r_."""
    r = ref.select("series_id", "t", *(pl.col(c).alias(f"r_{c}") for c in ref.columns if c not in ("series_id", "t")))
    j = (r.join(got, on=["series_id", "t"], how="full", coalesce=True)
         .join(series.select("series_id", "t", "epi_year", "epi_week"), on=["series_id", "t"], how="left"))
    assert j.height == ref.height == got.height, "R and vigila evaluate different weeks"
    assert (j["r_observed"] == j["observed"]).all()
    for c in ("epi_year", "epi_week", "week_start"):     # t is the same week as in R
        assert j[f"r_{c}"].eq_missing(j[c]).all(), c
    assert j["r_upperbound"].is_null().equals(j["upperbound"].is_null())
    ub = j.filter(pl.col("r_upperbound").is_not_null())
    assert ((ub["upperbound"] - ub["r_upperbound"]).abs() <= 1e-6 * ub["r_upperbound"].abs() + 1e-9).all()
    assert j["r_alarm"].eq_missing(j["alarm"]).all()
    return j


def assert_manifest_counts(got: pl.DataFrame, entry: dict) -> None:
    """The manifest's n_rows, n_alarms and (where given) n_upperbound_na."""
    assert (got.height, got["alarm"].sum()) == (entry["n_rows"], entry["n_alarms"])
    if "n_upperbound_na" in entry:
        assert got["upperbound"].null_count() == entry["n_upperbound_na"]


def compare(reference: Path, load, entry: dict) -> None:
    control = entry["control"]
    method = control["method"]
    if "effective_alpha" in entry:                   # R: a control list without alpha -> 0.001 (C1, C2), 0.025 (C3)
        assert control.get("alpha", default_alpha(method)) == entry["effective_alpha"]
    series = load()
    got = ears(series.select("series_id", "t", "cases", "week_start"), method=method,
               baseline=control.get("baseline", 7), alpha=control.get("alpha"), min_sigma=control.get("minSigma", 0),
               range=r_range(control["range"]) if "range" in control else None)
    if "effective_range" in entry:
        spans = got.group_by("series_id").agg(pl.col("t").min().alias("lo"), pl.col("t").max().alias("hi"))
        assert spans.select("lo", "hi").unique().rows() == [r_range(entry["effective_range"])]
    assert_manifest_counts(got, entry)
    assert_rows_match(reference_frame(reference, series), got, series)


@pytest.mark.parametrize("reference, load, entry", cases(BUNDLED))
def test_bundled_reference(reference, load, entry):
    compare(reference, load, entry)


@pytest.mark.parametrize("reference, load, entry", cases(SHARED_REF))
def test_shared_reference(reference, load, entry):
    compare(reference, load, entry)


def test_every_shared_earsC_file_is_compared(shared):
    listed = {p.id for p in cases(SHARED_REF)}
    on_disk = {p.name for p in SHARED_REF.glob("*earsC*.csv")}
    assert listed == on_disk


def test_every_bundled_reference_is_in_its_manifest():
    manifest = json.loads((BUNDLED / "manifest.json").read_text())
    assert {p.name for p in BUNDLED.glob("*__*.csv")} == {*manifest["files"], *manifest["files_lac"]}


def test_many_series_at_once_equal_one_at_a_time():
    one = pl.read_csv(BUNDLED / "salmonella_agona.csv").select(pl.lit("a").alias("series_id"), "t", "cases")
    many = pl.concat([one, one.with_columns(pl.lit("b").alias("series_id"), pl.col("cases") * 3)])
    both = ears(many, method="C2")
    alone = ears(one.with_columns(pl.col("cases") * 3), method="C2")
    assert both.filter(pl.col("series_id") == "b")["upperbound"].equals(alone["upperbound"])
    assert both.filter(pl.col("series_id") == "a")["alarm"].equals(ears(one, method="C2")["alarm"])


def test_exact_tie_with_the_bound_is_no_alarm():
    flat = pl.DataFrame({"series_id": "x", "t": range(1, 10), "cases": [2] * 8 + [2]})
    out = ears(flat, method="C1")
    assert out["upperbound"].to_list() == [2.0, 2.0] and out["alarm"].to_list() == [False, False]


@pytest.mark.parametrize("method", ["C1", "C2", "C3"])
@pytest.mark.parametrize("cases", ["int", "float"])
def test_input_in_many_chunks_gives_the_same_rows_as_one_chunk(method, cases):
    """A frame read from Parquet comes in chunks (row groups) that split series; ears reads the chunks in
    place, so a block of series crossing a chunk boundary must see the same weeks as a contiguous copy."""
    one = pl.read_csv(BUNDLED / "salmonella_agona.csv").select("t", "cases")
    frame = pl.concat([one.with_columns(pl.lit(f"s{i}").alias("series_id"), pl.col("cases") * (i + 1)) for i in range(7)])
    frame = frame.with_columns(pl.col("cases").cast(pl.Float64) / 3 if cases == "float" else pl.col("cases"),
                               week_start=pl.date(2000, 1, 3) + pl.duration(weeks=pl.col("t") - 1)).rechunk()
    cuts = [0, 5, 312, 313, 1000, 1001, frame.height - 2, frame.height]     # inside series and at their edges
    chunked = pl.concat([frame.slice(a, b - a) for a, b in zip(cuts, cuts[1:])], rechunk=False)
    assert chunked["cases"].n_chunks() == len(cuts) - 1
    assert_frame_equal(ears(chunked, method=method), ears(frame.rechunk(), method=method))


def test_a_chunk_boundary_where_t_goes_back_is_sorted_not_trusted():
    """The order check must also compare across chunk boundaries: here t only decreases between two chunks."""
    a = pl.DataFrame({"series_id": "x", "t": range(10, 20), "cases": range(10)})
    b = pl.DataFrame({"series_id": "x", "t": range(1, 10), "cases": range(100, 109)})
    got = ears(pl.concat([a, b], rechunk=False), method="C1")
    want = ears(pl.concat([b, a]), method="C1")
    assert_frame_equal(got, want)
    assert got["t"].to_list() == list(range(8, 20))


def test_series_ids_short_and_long_come_back_as_given():
    """Ids of up to 12 bytes sit inside the result's string views, longer ones point into a shared buffer."""
    ids = ["a", "twelve-bytes", "PER|dengue|paho_opendengue_national", "PE-LOR|dengue|per_minsa_dengue_linelist", "ñandú"]
    one = pl.read_csv(BUNDLED / "salmonella_agona.csv").select("t", "cases").head(40)
    frame = pl.concat([one.with_columns(pl.lit(i).alias("series_id")) for i in ids])
    out = ears(frame, method="C1")
    assert out["series_id"].dtype == pl.String
    assert out["series_id"].to_list() == [i for i in ids for _ in range(40 - 7)]
    assert out.group_by("series_id").len().join(pl.DataFrame({"series_id": ids}), on="series_id").height == 5
