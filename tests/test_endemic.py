"""Endemic channels (vigila/regional/endemic.py): expected values computed here independently (numpy,
statistics, math), never by calling the module; plus the bundled OpenDengue national series."""

from __future__ import annotations

import math
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from schemas.outputs import EndemicChannel
from vigila.regional import endemic
from vigila.core import epiweek
from vigila.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
OPENDENGUE = ROOT / "data" / "demo" / "opendengue_paho_national_v1_3.csv.gz"
KEYS = endemic.KEYS


def weekly(values: dict[int, float | None], *, week: int = 10, country: str = "PER", geo: str | None = None,
           disease: str = "dengue", population: float | None = None) -> pl.DataFrame:
    """One series, one row per year for `week`."""
    df = pl.DataFrame({"epi_year": list(values), "cases": list(values.values())},
                      schema={"epi_year": pl.Int32, "cases": pl.Float64})
    df = df.with_columns(pl.lit(country).alias("country_iso3"), pl.lit("admin0" if geo is None else "admin1").alias("geo_level"),
                         pl.lit(geo or country).alias("geo_code"), pl.lit(disease).alias("disease"),
                         pl.lit(week, pl.Int32).alias("epi_week"))
    if population is not None:
        df = df.with_columns(pl.lit(population).alias("population"))
    return df


def row(ch: pl.DataFrame, year: int, week: int = 10, method: str | None = None, **keys) -> dict:
    f = ch.filter(pl.col("epi_year") == year, pl.col("epi_week") == week,
                  *(pl.col(k) == v for k, v in keys.items()), pl.col("method") == method if method else pl.lit(True))
    assert f.height == 1, f
    return f.row(0, named=True)


def bortman(xs: list[float], k: float = 1.96) -> tuple[float, float, float]:
    ys = [math.log(x + 1) for x in xs]
    m, s = statistics.mean(ys), statistics.stdev(ys)
    return max(0.0, math.exp(m - k * s) - 1), math.exp(m) - 1, math.exp(m + k * s) - 1


HISTORY = {2013: 40, 2014: 7, 2015: 12, 2016: 3, 2017: 25, 2018: 18, 2019: 9, 2020: 60}


# --------------------------------------------------------------------------- the two methods


def test_quartile_channel_is_type7_quartiles_of_the_previous_five_years():
    ch = endemic.channel(weekly(HISTORY), method="quartile", target_years=[2020])
    base = [HISTORY[y] for y in range(2015, 2020)]                   # 12, 3, 25, 18, 9
    q1, q2, q3 = np.percentile(base, [25, 50, 75])                    # numpy "linear" = R type 7
    assert statistics.quantiles(base, n=4, method="inclusive") == [q1, q2, q3]  # the same definition, twice
    r = row(ch, 2020)
    assert (r["lower"], r["median"], r["upper"]) == pytest.approx((q1, q2, q3))
    assert (q1, q2, q3) == (9, 12, 18)
    assert r["years_used"] == 5 and r["baseline_years"] == "2015,2016,2017,2018,2019"
    assert r["method"] == "quartile" and r["per"] is None


def test_bortman_channel_is_geometric_mean_plus_minus_196_sd_on_log_scale():
    ch = endemic.channel(weekly(HISTORY), method="bortman", target_years=[2020])
    lo, md, up = bortman([HISTORY[y] for y in range(2015, 2020)])
    r = row(ch, 2020)
    assert (r["lower"], r["median"], r["upper"]) == pytest.approx((lo, md, up))
    wider = row(endemic.channel(weekly(HISTORY), method="bortman", target_years=[2020], multiplier=2.5), 2020)
    assert (wider["lower"], wider["median"], wider["upper"]) == pytest.approx(bortman([12, 3, 25, 18, 9], k=2.5))


def test_bortman_lower_is_floored_at_zero():
    xs = [0, 50, 1, 30, 0]
    assert math.exp(statistics.mean(math.log(x + 1) for x in xs)
                    - 1.96 * statistics.stdev(math.log(x + 1) for x in xs)) - 1 < 0
    r = row(endemic.channel(weekly(dict(zip(range(2015, 2021), [*xs, 5]))), method="bortman", target_years=[2020]), 2020)
    assert r["lower"] == 0.0 and r["upper"] == pytest.approx(bortman(xs)[2])


@pytest.mark.parametrize("years", [1, 2, 4, 7, 12])
def test_any_window_length_matches_numpy_and_statistics(years):
    rng = np.random.default_rng(years)
    hist = {y: float(rng.integers(0, 500)) for y in range(1990, 2021)}
    ch = endemic.channel(weekly(hist), years=years, method=["quartile", "bortman"], target_years=[2021], min_years=1)
    base = [hist[y] for y in range(2021 - years, 2021)]
    q, b = row(ch, 2021, method="quartile"), row(ch, 2021, method="bortman")
    assert (q["lower"], q["median"], q["upper"]) == pytest.approx(tuple(np.percentile(base, [25, 50, 75])))
    assert q["years_used"] == years and q["baseline_years"] == ",".join(map(str, range(2021 - years, 2021)))
    if years > 1:
        assert (b["lower"], b["median"], b["upper"]) == pytest.approx(bortman(base))
    else:  # one value: no sd, so no Bortman band
        assert (b["lower"], b["median"], b["upper"]) == (None, pytest.approx(base[0]), None)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R not installed")
def test_quartiles_and_bortman_agree_with_r():
    xs = [3, 1, 4, 1, 5, 9, 2]
    out = subprocess.run(["Rscript", "-e", "x<-c(3,1,4,1,5,9,2); y<-log(x+1); cat(quantile(x, c(.25,.5,.75), type=7), "
                          "exp(mean(y)-1.96*sd(y))-1, exp(mean(y))-1, exp(mean(y)+1.96*sd(y))-1)"],
                         capture_output=True, text=True, check=True).stdout.split()
    ch = endemic.channel(weekly(dict(zip(range(2010, 2018), [*xs, 0]))), years=7, method=["quartile", "bortman"],
                         target_years=[2017])
    q, b = row(ch, 2017, method="quartile"), row(ch, 2017, method="bortman")
    got = [q["lower"], q["median"], q["upper"], b["lower"], b["median"], b["upper"]]
    assert got == pytest.approx([float(v) for v in out], rel=1e-6)


def test_rates_per_100000_use_the_population():
    pop = 250_000.0
    ch = endemic.channel(weekly(HISTORY, population=pop), method="quartile", target_years=[2020], per=100_000)
    rates = [HISTORY[y] / pop * 100_000 for y in range(2015, 2020)]
    r = row(ch, 2020)
    assert (r["lower"], r["median"], r["upper"]) == pytest.approx(tuple(np.percentile(rates, [25, 50, 75])))
    assert r["per"] == 100_000
    with pytest.raises(endemic.EndemicInputError, match="population"):
        endemic.channel(weekly(HISTORY), per=100_000)


# --------------------------------------------------------------------------- the baseline window


def test_excluded_epidemic_year_pushes_the_window_back():
    ch = endemic.channel(weekly(HISTORY), method="quartile", target_years=[2020], exclude_years=[2017])
    base = [HISTORY[y] for y in (2014, 2015, 2016, 2018, 2019)]
    r = row(ch, 2020)
    assert r["baseline_years"] == "2014,2015,2016,2018,2019" and r["years_used"] == 5
    assert (r["lower"], r["median"], r["upper"]) == pytest.approx(tuple(np.percentile(base, [25, 50, 75])))
    # two exclusions reach 2013; three leave only four earlier years
    assert row(endemic.channel(weekly(HISTORY), target_years=[2020], exclude_years=[2017, 2019]), 2020)["baseline_years"] \
        == "2013,2014,2015,2016,2018"
    r = row(endemic.channel(weekly(HISTORY), target_years=[2020], exclude_years=[2015, 2017, 2019]), 2020)
    assert (r["baseline_years"], r["years_used"]) == ("2013,2014,2016,2018", 4)
    four = [HISTORY[y] for y in (2013, 2014, 2016, 2018)]             # fewer values than `years`: quartiles of those
    assert (r["lower"], r["median"], r["upper"]) == pytest.approx(tuple(np.percentile(four, [25, 50, 75])))


def test_exclusions_apply_to_matching_series_only():
    both = pl.concat([weekly(HISTORY, country="PER"), weekly(HISTORY, country="BRA"),
                      weekly(HISTORY, country="PER", geo="PE-LOR")])
    ex = pl.DataFrame({"disease": ["dengue", "dengue"], "country_iso3": ["PER", None], "geo_code": [None, "PE-LOR"],
                       "epi_year": [2019, 2018]})
    ch = endemic.channel(both, target_years=[2020], exclude_years=ex)
    assert row(ch, 2020, geo_code="PER")["baseline_years"] == "2014,2015,2016,2017,2018"
    assert row(ch, 2020, geo_code="BRA")["baseline_years"] == "2015,2016,2017,2018,2019"
    assert row(ch, 2020, geo_code="PE-LOR")["baseline_years"] == "2013,2014,2015,2016,2017"  # its country's and its own
    with pytest.raises(ValueError, match="series keys"):
        endemic.channel(both, exclude_years=pl.DataFrame({"source_id": ["x"], "epi_year": [2019]}))


def test_missing_weeks_are_skipped_like_excluded_years():
    hist = {**HISTORY, 2018: None}                                    # a null count: the week was not reported
    r = row(endemic.channel(weekly(hist), target_years=[2020]), 2020)
    assert r["baseline_years"] == "2014,2015,2016,2017,2019"
    no_row = {y: v for y, v in HISTORY.items() if y != 2018}          # no row at all: the same
    assert row(endemic.channel(weekly(no_row), target_years=[2020]), 2020)["baseline_years"] == r["baseline_years"]


def test_too_few_years_give_a_null_channel_with_years_used_recorded():
    hist = {2017: 4, 2018: 6, 2019: 5}
    ch = endemic.channel(weekly(hist), method=["quartile", "bortman"], target_years=[2019, 2020], min_years=3)
    for m in ("quartile", "bortman"):
        short = row(ch, 2019, method=m)
        assert (short["lower"], short["median"], short["upper"]) == (None, None, None)
        assert (short["years_used"], short["baseline_years"]) == (2, "2017,2018")
        assert row(ch, 2020, method=m)["median"] is not None
    none = row(ch, 2019, week=11, method="quartile")                  # a week without any history
    assert (none["years_used"], none["baseline_years"], none["median"]) == (0, "", None)
    r = row(endemic.channel(weekly(hist), target_years=[2019], min_years=2), 2019)
    assert r["median"] == statistics.median([4, 6])


def test_target_years_default_to_the_years_of_each_series_and_weeks_1_to_52():
    ch = endemic.channel(pl.concat([weekly({2018: 1, 2019: 2}), weekly({2020: 3}, country="BRA")]))
    years = dict(ch.group_by("geo_code").agg(pl.col("epi_year").unique().sort()).iter_rows())
    assert years == {"PER": [2018, 2019], "BRA": [2020]}
    assert ch.group_by("geo_code", "epi_year").agg(pl.col("epi_week").sort()).get_column("epi_week").to_list() \
        == [list(range(1, 53))] * 3


def test_week_53_of_a_year_without_one_is_its_week_52():
    rows = [(y, w, 100 * (y - 2010) + w) for y in range(2011, 2016) for w in (51, 52)]
    rows += [(2015, 53, 999), (2020, 53, 7), (2020, 52, 1)]         # 2015 and 2020 have a week 53
    df = pl.DataFrame(rows, schema={"epi_year": pl.Int32, "epi_week": pl.Int32, "cases": pl.Float64}, orient="row")
    df = df.with_columns(pl.lit("PER").alias("country_iso3"), pl.lit("admin0").alias("geo_level"),
                         pl.lit("PER").alias("geo_code"), pl.lit("dengue").alias("disease"))
    ch = endemic.channel(df, method="quartile", target_years=[2016, 2020])
    base = [152, 252, 352, 452, 999]                                   # weeks 52 of 2011-2014, week 53 of 2015
    r = row(ch, 2020, week=53)
    assert (r["lower"], r["median"], r["upper"]) == pytest.approx(tuple(np.percentile(base, [25, 50, 75])))
    assert r["baseline_years"] == "2011,2012,2013,2014,2015"
    assert row(ch, 2020, week=52)["median"] == statistics.median([152, 252, 352, 452, 552])
    assert ch.filter(pl.col("epi_year") == 2016)["epi_week"].max() == 52  # no week 53 in the data for 2016: no row


# --------------------------------------------------------------------------- zones


@pytest.mark.parametrize(("cases", "expected"), [
    (0.0, "success"), (9.99, "success"), (10.0, "safety"), (15.0, "safety"), (20.0, "safety"), (20.01, "alert"),
    (30.0, "alert"), (30.01, "epidemic"), (1e9, "epidemic"), (None, None)])
def test_zone_boundaries(cases, expected):
    df = pl.DataFrame({"cases": [cases], "lower": [10.0], "median": [20.0], "upper": [30.0]},
                      schema={"cases": pl.Float64, "lower": pl.Float64, "median": pl.Float64, "upper": pl.Float64})
    assert df.select(endemic.zone())["zone"][0] == expected


def test_zone_is_null_without_a_channel_and_takes_expressions():
    df = pl.DataFrame({"n": [5, 5, 0, 1], "lo": [None, 0.0, 0.0, 0.0], "md": [None, 1.0, 0.0, 0.0], "up": [None, 2.0, 0.0, 0.0]})
    got = df.select(endemic.zone(pl.col("n"), "lo", "md", pl.col("up")))["zone"].to_list()
    assert got == [None, "epidemic", "safety", "epidemic"]   # an all-zero baseline: 0 is safe, 1 case is epidemic


# --------------------------------------------------------------------------- many series at once


def test_many_series_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(6)
    parts = []
    for i, (country, geo) in enumerate([("PER", None), ("PER", "PE-LOR"), ("BRA", None), ("COL", None), ("COL", "CO-ANT")]):
        years = [y for y in range(2008, 2022) if rng.random() > 0.15]
        df = pl.DataFrame([(y, w, float(rng.poisson(12 + 20 * i + 10 * math.sin(w / 8))), 1e5 + 1e4 * i)
                           for y in years for w in range(1, 53 + (y == 2020)) if rng.random() > 0.05],
                          schema={"epi_year": pl.Int32, "epi_week": pl.Int32, "cases": pl.Float64, "population": pl.Float64},
                          orient="row")
        parts.append(df.with_columns(pl.lit(country).alias("country_iso3"), pl.lit("admin1" if geo else "admin0").alias("geo_level"),
                                     pl.lit(geo or country).alias("geo_code"), pl.lit("dengue").alias("disease")))
    everything = pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=1)
    ex = pl.DataFrame({"country_iso3": ["PER", "COL"], "geo_code": [None, "CO-ANT"], "epi_year": [2016, 2019]})
    kw = dict(method=["quartile", "bortman"], exclude_years=ex, per=100_000, years=4)
    together = endemic.channel(everything, **kw)
    alone = pl.concat([endemic.channel(p, **kw) for p in parts]).sort(together.columns[:4] + ["method", "epi_year", "epi_week"])
    assert together.height == alone.height > 5 * 10 * 52
    assert together.sort(alone.columns[:4] + ["method", "epi_year", "epi_week"]).equals(alone)
    EndemicChannel.validate(together)
    assert together.filter(pl.col("epi_week") == 53)["epi_year"].unique().to_list() == [2020]


# --------------------------------------------------------------------------- input checks and config


def test_bad_input_raises_structured_problems():
    df = pl.concat([weekly(HISTORY), weekly({2019: 1})])              # 2019 twice
    with pytest.raises(endemic.EndemicInputError) as err:
        endemic.channel(df.with_columns(pl.when(pl.col("epi_year") == 2014).then(-1.0).otherwise("cases").alias("cases")))
    checks = {(p["check"], p["column"]) for p in err.value.problems}
    assert checks == {("unique_series_week", "epi_week"), ("cases_non_negative", "cases")}
    assert all(isinstance(p["row"], int) for p in err.value.problems)
    with pytest.raises(endemic.EndemicInputError, match="column_present: column 'cases'"):
        endemic.channel(weekly(HISTORY).drop("cases"))
    with pytest.raises(ValueError, match="unknown endemic-channel method"):
        endemic.channel(weekly(HISTORY), method="mean")


def test_default_config_and_layered_overrides(tmp_path):
    cfg = endemic.load_config()
    assert (cfg.years, cfg.methods, cfg.multiplier, cfg.min_years, cfg.per) == (5, ["quartile", "bortman"], 1.96, 3, None)
    assert (2023 in cfg.exclude["dengue"]["PER"])
    over = tmp_path / "endemic.yaml"
    over.write_text("years: 4\nexclude:\n  dengue:\n    PE-LOR: [2017]\n    '*': [2010]\n")
    cfg = endemic.load_config(over)
    assert cfg.years == 4 and cfg.multiplier == 1.96 and cfg.exclude["dengue"]["PER"] == [2017, 2023]  # merged key by key
    ex = cfg.exclusions()
    assert set(ex.iter_rows()) == {("dengue", "PER", None, 2017), ("dengue", "PER", None, 2023), ("dengue", "BRA", None, 2024),
                                   ("dengue", None, "PE-LOR", 2017), ("dengue", None, None, 2010)}
    bad = tmp_path / "bad.yaml"
    bad.write_text("years: 5\nmethod: [quartile]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2: method"):
        endemic.load_config(bad)
    bad.write_text("exclude:\n  dengeu:\n    PER: [2023]\n")
    with pytest.raises(ConfigError, match="unknown disease 'dengeu'"):
        endemic.load_config(bad)


def test_channel_from_config_applies_its_exclusions(tmp_path):
    over = tmp_path / "e.yaml"
    over.write_text("methods: [quartile]\nexclude:\n  dengue:\n    PER: [2018]\n")
    ch = endemic.channel_from_config(pl.concat([weekly(HISTORY), weekly(HISTORY, country="BRA")]), endemic.load_config(over),
                                     target_years=[2020])
    assert row(ch, 2020, geo_code="PER")["baseline_years"] == "2014,2015,2016,2017,2019"
    assert row(ch, 2020, geo_code="BRA")["baseline_years"] == "2015,2016,2017,2018,2019"
    assert ch["method"].unique().to_list() == ["quartile"]


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def opendengue() -> pl.DataFrame:
    """National weekly dengue counts of Brazil and Peru from the bundled OpenDengue extract (MMWR weeks)."""
    raw = pl.read_csv(OPENDENGUE, null_values="NA", try_parse_dates=True, schema_overrides={"dengue_total": pl.Float64})
    raw = raw.filter(pl.col("T_res") == "Week", pl.col("ISO_A0").is_in(["BRA", "PER"]))
    raw = epiweek.add_weeks_from_dates(raw, "calendar_start_date", "mmwr")
    return raw.select(pl.col("ISO_A0").alias("country_iso3"), pl.lit("admin0").alias("geo_level"),
                      pl.col("ISO_A0").alias("geo_code"), pl.lit("dengue").alias("disease"), "epi_year", "epi_week",
                      pl.col("dengue_total").alias("cases"))


def zones(ch: pl.DataFrame, data: pl.DataFrame, country: str, year: int, method: str) -> dict[str, int]:
    j = ch.filter(pl.col("country_iso3") == country, pl.col("epi_year") == year, pl.col("method") == method).join(
        data, on=[*KEYS, "epi_year", "epi_week"])
    assert j.height == 52
    return dict(j.select(endemic.zone()).group_by("zone").len().iter_rows())


def test_opendengue_channels_are_ordered_and_epidemic_years_land_in_the_epidemic_zone(opendengue):
    ch = endemic.channel_from_config(opendengue, endemic.load_config())
    EndemicChannel.validate(ch)
    known = ch.filter(pl.col("median").is_not_null())
    assert known.height > 1000
    assert known.filter((pl.col("lower") > pl.col("median")) | (pl.col("median") > pl.col("upper"))).height == 0
    assert row(ch, 2023, week=10, method="quartile", country_iso3="PER")["baseline_years"] == "2016,2018,2019,2021,2022"
    # Peru 2023 (largest dengue epidemic on record there): every week above the quartile channel
    assert zones(ch, opendengue, "PER", 2023, "quartile") == {"epidemic": 52}
    per_b = zones(ch, opendengue, "PER", 2023, "bortman")            # Bortman's band is wider: above the mean, always
    assert per_b.get("epidemic", 0) + per_b.get("alert", 0) == 52
    # Brazil 2019 (1.5 million probable cases, after two quiet years): mostly epidemic
    bra = zones(ch, opendengue, "BRA", 2019, "quartile")
    assert bra.get("epidemic", 0) > 52 / 2
    bra_b = zones(ch, opendengue, "BRA", 2019, "bortman")
    assert bra_b.get("epidemic", 0) + bra_b.get("alert", 0) > 0.9 * 52
    # ... while Brazil 2018, a low year, is mostly below the median
    low = zones(ch, opendengue, "BRA", 2018, "quartile")
    assert low.get("success", 0) + low.get("safety", 0) > 0.8 * 52
