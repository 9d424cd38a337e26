"""The regional weekly summary: each measure on small hand-made frames, then the real demo reports end to end
(reconcile -> endemic channel -> summary -> bulletin), and the `regional_summary` flow under Prefect."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import polars as pl
import pytest

from schemas.outputs import WeeklySummary
from vigila.detect import alerts
from vigila.ingest import completeness
from vigila.regional import reconcile, regional, summary
from vigila.warehouse import read
from vigila.config import ConfigError, load_source
from vigila.warehouse.storage import Storage

from conftest import SOURCES, copy_warehouse

sys.path.insert(0, str(Path(__file__).parent))
from browser import body_text, chromium, console_errors, wait_for  # noqa: E402

SUNDAY = dt.date(2023, 12, 31)        # MMWR 2024-W01 starts on Sunday 31 December 2023


def rec(rows, *, country="PER", level="admin0", geo=None, sources="per_a", basis="single") -> pl.DataFrame:
    """cases_reconciled-shaped rows from (week_start, epi_year, epi_week, cases)."""
    return pl.DataFrame(
        [(country, level, geo or country, "Peru", "dengue", y, w, d, c, basis, sources) for d, y, w, c in rows],
        schema={"country_iso3": pl.Utf8, "geo_level": pl.Utf8, "geo_code": pl.Utf8, "geo_name": pl.Utf8, "disease": pl.Utf8,
                "epi_year": pl.Int32, "epi_week": pl.Int32, "week_start": pl.Date, "cases": pl.Int64, "basis": pl.Utf8,
                "sources": pl.Utf8}, orient="row")


def weeks(first: dt.date, counts: list[int | None], year: int = 2024, week: int = 1):
    """(week_start, epi_year, epi_week, cases) for consecutive weeks; None = no row (not reported)."""
    return [(first + dt.timedelta(weeks=i), year, week + i, c) for i, c in enumerate(counts) if c is not None]


def build(reconciled, **kw) -> pl.DataFrame:
    out = summary.build(reconciled, **kw)
    WeeklySummary.validate(out.with_columns(pl.lit("t").alias("run_id")))
    return out


def test_a_week_nobody_reported_is_a_row_marked_not_reported_with_its_expected_reporter():
    out = build(rec(weeks(SUNDAY, [10, 12, None, 15])))
    assert out["cases"].to_list() == [10, 12, None, 15]
    gap = out.row(2, named=True)
    assert gap["epi_week"] == 3 and gap["week_start"] == dt.date(2024, 1, 14)
    assert gap["signal_note"] == "not reported this week" and gap["sources"] == "per_a" and gap["signal"] is False


def test_series_extend_to_the_regions_latest_week_unless_dormant():
    latest = rec(weeks(SUNDAY, [5] * 40), country="BRA", sources="bra")          # the region's latest week: 2024-W40
    recent = rec(weeks(SUNDAY, [5] * 36), country="PER")                           # stopped 4 weeks before
    dormant = rec(weeks(dt.date(2023, 1, 1), [5] * 5, year=2023), country="COL", sources="col")
    out = build(pl.concat([latest, recent, dormant]))
    per = out.filter(pl.col("country_iso3") == "PER")
    assert per.height == 40 and per["cases"].tail(4).is_null().all()
    assert per.tail(4)["signal_note"].unique().to_list() == ["not reported this week"]
    assert out.filter(pl.col("country_iso3") == "COL").height == 5                 # dormant: not extended


def test_change_against_the_previous_four_weeks_and_year_to_date_against_previous_years():
    rows = (weeks(dt.date(2022, 1, 2), [1, 2, 3, 4], year=2022) + weeks(dt.date(2022, 12, 25), [], year=2022)
            + weeks(dt.date(2023, 1, 1), [3, 3, 3, 3], year=2023) + weeks(SUNDAY, [4, 4, 4, 4, 8, 2]))
    out = build(rec(rows))
    y24 = out.filter(pl.col("epi_year") == 2024).sort("epi_week")
    assert y24["prev4_mean"].to_list()[4] == pytest.approx(4.0)
    assert y24["change_prev4"].to_list()[4] == pytest.approx(8 / 4 - 1)
    assert y24["change_prev4"].to_list()[5] == pytest.approx(2 / ((4 + 4 + 4 + 8) / 4) - 1)
    assert y24["ytd_cases"].to_list() == [4, 8, 12, 16, 24, 26]
    # week 3: 2022 had 1+2+3 = 6 by then, 2023 had 9 -> mean 7.5
    w3 = y24.filter(pl.col("epi_week") == 3).row(0, named=True)
    assert w3["ytd_previous_mean"] == pytest.approx(7.5) and w3["ytd_ratio"] == pytest.approx(12 / 7.5)
    # 2023-W05..W52 were not reported: rows of the grid, so 2024-W01 has no 4-week baseline
    assert y24.filter(pl.col("epi_week") == 1)["prev4_mean"].item() is None
    assert out.filter(pl.col("epi_year") == 2022).height == 4    # 48 missing weeks > stale_after_weeks: not filled


def test_a_week_after_a_missing_one_has_no_change_baseline():
    out = build(rec(weeks(SUNDAY, [10, 10, None, 10, 10, 40])))
    assert out["prev4_mean"].to_list()[5] is None and out["change_prev4"].to_list()[5] is None


def channel_for(reconciled: pl.DataFrame, lower: float, median: float, upper: float, method: str = "bortman") -> pl.DataFrame:
    keys = reconciled.select("country_iso3", "geo_level", "geo_code", "disease", "epi_year", "epi_week").unique()
    return keys.with_columns(pl.lit(method).alias("method"), pl.lit(lower).alias("lower"), pl.lit(median).alias("median"),
                             pl.lit(upper).alias("upper"), pl.lit(None, pl.Int64).alias("per"))


def test_endemic_zones_from_the_configured_channel_and_zone_signals():
    r = rec(weeks(SUNDAY, [1, 5, 9, 10, 20]))
    channel = pl.concat([channel_for(r, 5, 9, 10, "bortman"), channel_for(r, 0, 0, 0, "quartile")])
    out = build(r, channel=channel)
    assert out["endemic_zone"].to_list() == ["success", "safety", "safety", "alert", "epidemic"]
    assert out["endemic_method"].unique().to_list() == ["bortman"]
    assert out["signal"].to_list() == [False, False, False, False, True]
    q = build(r, channel=channel, config=summary.SummaryConfig(endemic_method="quartile"))
    assert q["endemic_zone"].to_list() == ["epidemic"] * 5
    assert q["signal"].to_list() == [False, True, True, True, True]              # 1 case: below signal.min_cases


def found_rows(country: str, y: int, w: int, *, method: str, upper: float | None, alarm: bool | None) -> dict:
    return {"country_iso3": country, "geo_level": "admin0", "geo_code": country, "disease": "dengue", "epi_year": y,
            "epi_week": w, "method": method, "upperbound": upper, "alarm": alarm}


def test_alarms_and_threshold_come_from_detection_on_the_rows_own_series():
    r = pl.concat([rec(weeks(SUNDAY, [30, 40])), rec(weeks(SUNDAY, [30, 40]), country="BRA", sources="bra_a,bra_b", basis="sum")])
    found = pl.DataFrame([
        found_rows("PER", 2024, 1, method="ears_C2", upper=35.0, alarm=False),
        found_rows("PER", 2024, 2, method="ears_C2", upper=35.0, alarm=True),
        found_rows("PER", 2024, 2, method="farrington_flexible", upper=50.0, alarm=False),
        found_rows("BRA", 2024, 1, method="farrington_flexible", upper=10.0, alarm=True),
    ], schema_overrides={"epi_year": pl.Int32, "epi_week": pl.Int32})
    out = build(r, alarms=found)
    per = out.filter(pl.col("country_iso3") == "PER").sort("epi_week")
    assert per["alarm"].to_list() == [False, True] and per["alarm_methods"].to_list() == [None, "ears_C2"]
    assert per["threshold"].to_list() == [35.0, 35.0] and per["threshold_method"].to_list() == ["ears_C2"] * 2
    assert per["signal"].to_list() == [False, True]
    bra = out.filter(pl.col("country_iso3") == "BRA").sort("epi_week")
    assert bra["alarm"].to_list() == [True, None]                    # week 2: no method evaluated it
    assert bra["threshold"].to_list() == [None, None] and bra["alarm_methods"].to_list() == ["farrington_flexible", None]


def test_detection_runs_on_the_reconciled_series_and_never_across_a_gap():
    import numpy as np

    from vigila.detect import alerts

    counts = [10, 12, 9, 11, 10, 13, 12, 11, 40, 10] + [None, None] + [5, 6, 5, 7, 6, 5, 6, 30]
    r = rec(weeks(SUNDAY, counts), sources="per_a,per_b", basis="sum")
    cfg = alerts.DetectionConfig.model_validate(
        {"methods": [{"method": "ears", "params": {"method": "C1", "baseline": 7, "alpha": 0.001}}], "min_history": 7,
         "levels": ["admin0"]})
    found = summary.detections(r, cfg, weeks=100).sort("epi_week")
    got = dict(zip(found["epi_week"], found["upperbound"]))
    z = 3.090232306167813                                            # qnorm(1 - 0.001)
    for w in (9, 10, 20):                                            # C1: the 7 weeks before, within the same run
        base = np.array([c for c in counts[w - 8:w - 1]], dtype=float)
        assert got[w] == pytest.approx(base.mean() + z * base.std(ddof=1))
    assert all(got[w] is None for w in range(13, 20))                # after the gap: fewer than 7 weeks of history
    assert found.filter(pl.col("epi_week") == 9)["alarm"].item() is True


def test_reporting_status_flags_a_one_country_reporter_but_not_a_regional_compilation():
    r = pl.concat([rec(weeks(SUNDAY, [30]), sources="per_ministry"),
                   rec(weeks(SUNDAY, [30]), country="BRA", sources="paho"), rec(weeks(SUNDAY, [30]), country="COL", sources="paho")])
    rep = pl.DataFrame({"source_id": ["per_ministry", "paho"], "epi_year": [2024, 2024], "epi_week": [1, 1],
                        "status": ["partial", "partial"], "completeness": [0.5, 0.1]},
                       schema_overrides={"epi_year": pl.Int32, "epi_week": pl.Int32})
    out = build(r, reporting=rep).sort("country_iso3")
    assert out["reporting_status"].to_list() == [None, None, "partial"]          # PAHO's "partial" is about all its countries
    assert dict(zip(out["country_iso3"], out["signal_note"])) == {
        "BRA": None, "COL": None, "PER": "reporting partial: counts may be incomplete"}


def test_incidence_from_the_population_table():
    pop = pl.DataFrame({"country_iso3": ["PER"], "geo_code": ["PER"], "year": [2019], "population": [32_000_000], "source": ["t"]},
                       schema_overrides={"year": pl.Int32})
    out = build(rec(weeks(SUNDAY, [320])), population=pop)
    assert out["population"].item() == 32_000_000 and out["incidence_100k"].item() == pytest.approx(1.0)


def test_config_layering_and_errors(tmp_path):
    (p := tmp_path / "s.yaml").write_text("signal:\n  min_cases: 0\n")
    cfg = summary.load_config(p)
    assert cfg.signal.min_cases == 0 and cfg.signal.zones == ["epidemic"] and cfg.threshold_method == "ears_C2"
    (bad := tmp_path / "bad.yaml").write_text("endemic_method: median\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:1: endemic_method"):
        summary.load_config(bad)


# --------------------------------------------------------------------------- real data end to end


@pytest.fixture(scope="module")
def regional_wh(demo_ingested, tmp_path_factory):
    wh = copy_warehouse(demo_ingested, tmp_path_factory.mktemp("regional") / "warehouse")
    sources = [load_source(SOURCES / n) for n in ("paho_opendengue_national.yaml", "per_minsa_dengue_linelist.yaml")]
    completeness.publish_completeness(wh, sources, dt.datetime(2025, 1, 15, tzinfo=dt.UTC))
    reconcile.run_reconciliation(wh, reconcile.load_config(), run_id="reg")
    from vigila.regional import endemic

    channel = regional.run_endemic(wh, endemic.load_config(), run_id="reg")
    result = regional.run_summary(wh, summary.load_config(), run_id="reg")
    return wh, channel, result


def test_real_summary_counts_are_the_reconciled_counts(regional_wh):
    wh, channel, result = regional_wh
    assert channel["status"] == "published" and result["status"] == "published"
    s = read.weekly_summary(wh).collect()
    r = read.reconciled(wh).collect()
    joined = r.join(s, on=["country_iso3", "geo_level", "geo_code", "disease", "epi_year", "epi_week"], how="left")
    assert joined["cases_right"].null_count() == 0 and (joined["cases"] == joined["cases_right"]).all()
    assert s.filter(pl.col("cases").is_not_null()).height == r.height          # every other row is a week not reported
    per = s.filter(pl.col("geo_code") == "PER", pl.col("epi_year") == 2022)
    assert per["sources"].unique().to_list() == ["per_minsa_dengue_linelist"] and per["population"].drop_nulls().len() > 0
    assert s.filter(pl.col("endemic_zone").is_not_null()).height > 1000 and s["signal"].sum() > 100
    # Peru's national figure is the line list's departamentos summed: detection runs on it all the same
    per22 = per.filter(pl.col("epi_week") >= 40)
    assert per22["basis"].unique().to_list() == ["authoritative"] and per22["threshold"].null_count() == 0


def test_real_signals_follow_the_rule(regional_wh):
    wh, *_ = regional_wh
    s = read.weekly_summary(wh).collect()
    rule = ((pl.col("alarm").fill_null(False) | (pl.col("endemic_zone") == "epidemic").fill_null(False))
            & (pl.col("cases").fill_null(0) >= 5))
    assert (s["signal"] == s.select(rule).to_series()).all()
    # ytd_cases restarts each epi year and never decreases within it
    ytd = s.filter(pl.col("geo_code") == "BRA").sort("week_start")
    assert (ytd.group_by("epi_year").agg((pl.col("ytd_cases").diff().fill_null(0) >= 0).all())["ytd_cases"]).all()


def test_summary_is_idempotent_and_republishes_on_new_input(regional_wh):
    wh, _, first = regional_wh
    again = regional.run_summary(wh, summary.load_config(), run_id="reg-2")
    assert again["status"] == "unchanged" and again["version"] == first["version"]
    changed = regional.run_summary(wh, summary.SummaryConfig(change_weeks=3), run_id="reg-3")
    assert changed["status"] == "published" and changed["version"] != first["version"]


def test_real_bulletin_renders_the_signalled_series_in_chromium(regional_wh, tmp_path):
    wh, *_ = regional_wh
    s = read.weekly_summary(wh, country="Peru").collect()
    week = s.filter(pl.col("signal"), pl.col("geo_level") == "admin1").sort("week_start").row(-1, named=True)
    out = regional.write_bulletin(wh, epi_year=week["epi_year"], epi_week=week["epi_week"], output=tmp_path / "b.html")
    assert Path(out["uri"]).exists() and out["signals"] >= 1
    signalled = (read.weekly_summary(wh).collect()
                 .filter(pl.col("epi_year") == week["epi_year"], pl.col("epi_week") == week["epi_week"], pl.col("signal")))
    with chromium() as driver:
        driver.get((tmp_path / "b.html").as_uri())
        wait_for(lambda: driver.execute_script(
            "return document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length") >= 1 + signalled.height,
            what="every chart drawn")
        text = body_text(driver)
        assert console_errors(driver) == []
    for row in signalled.iter_rows(named=True):   # a national series is shown by its country's name
        assert (row["country_name"] if row["geo_level"] == "admin0" else row["geo_name"]) in text
    assert f"{week['epi_year']}-W{week['epi_week']:02d}" in text


def test_a_week_outside_the_summary_is_a_clear_error(regional_wh):
    wh, *_ = regional_wh
    with pytest.raises(ValueError, match=r"no epi week 1800-W01 \(it covers .*-W\d\d \.\. 2024-W52\)"):
        regional.write_bulletin(wh, epi_year=1800, epi_week=1)


def test_regional_flow_publishes_and_leaves_an_artifact(prefect_harness, demo_ingested, tmp_path):
    from prefect import get_client

    from flows.regional import regional_summary

    wh = copy_warehouse(demo_ingested, tmp_path / "warehouse")
    result = regional_summary(str(wh))
    assert result["weekly_summary"]["status"] == "published" and Path(result["bulletin"]["uri"]).exists()
    assert json.loads(Storage.open(wh).read_bytes("catalog.json"))  # catalog lists the new datasets
    names = {d["name"] for d in Storage.open(wh).read_json("catalog.json")["datasets"]}
    assert {"cases_reconciled", "discrepancies", "endemic_channel", "weekly_summary"} <= names

    async def artifact():
        async with get_client() as client:
            return await client.read_latest_artifacts()
    import asyncio

    latest = [a for a in asyncio.run(artifact()) if a.key == "regional-summary"]
    assert latest and "Bulletin" in latest[0].data


def test_cli_bulletin_writes_a_week_and_never_imports_prefect(regional_wh, tmp_path):
    import subprocess

    wh, *_ = regional_wh
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-X", "importtime", "-c", "from vigila.cli import app; app()", "bulletin", "--warehouse", str(wh), *args],
        capture_output=True, text=True, timeout=300)
    ok = run("--week", "2022-W10", "--output", str(tmp_path / "w10.html"))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "2022-W10" in ok.stdout and (tmp_path / "w10.html").read_text().count("2022-W10") >= 1
    assert (wh / "bulletins" / "2022-W10.html").exists()
    imported = [line.split("|")[-1].strip() for line in ok.stderr.splitlines() if line.startswith("import time:")]
    assert imported and not [m for m in imported if m.split(".")[0] == "prefect"]
    bad = run("--week", "W10")
    assert bad.returncode == 2 and "is not an epi week like 2024-W07" in bad.stderr and "Traceback" not in bad.stderr


def test_week_53_borrows_week_52_of_years_without_one_and_incomplete_years_have_no_ytd_ratio():
    # MMWR 2020 has 53 weeks (2020-W53 starts 2020-12-27); 2019 and 2018 have 52
    y2018 = weeks(dt.date(2017, 12, 31), [1] * 52, year=2018)
    y2019 = weeks(dt.date(2018, 12, 30), [2] * 52, year=2019)
    y2020 = weeks(dt.date(2019, 12, 29), [3] * 53, year=2020)
    out = build(rec(y2018 + y2019 + y2020))
    w53 = out.filter(pl.col("epi_year") == 2020, pl.col("epi_week") == 53).row(0, named=True)
    assert w53["ytd_cases"] == 159 and w53["ytd_previous_mean"] == pytest.approx((52 + 104) / 2)
    gappy = y2019[:10] + y2019[11:]                                 # 2019-W11 not reported
    out = build(rec(y2018 + gappy + y2020[:20]))
    y19 = out.filter(pl.col("epi_year") == 2019).sort("epi_week")
    assert y19["ytd_ratio"].to_list()[9] == pytest.approx(20 / 10) and y19["ytd_ratio"].to_list()[10:].count(None) == 42
    y20w15 = out.filter(pl.col("epi_year") == 2020, pl.col("epi_week") == 15).row(0, named=True)
    assert y20w15["ytd_previous_mean"] == pytest.approx(15)         # 2019 up to W15 is incomplete: 2018 only


def test_a_long_gap_inside_a_series_is_not_filled():
    rows = weeks(dt.date(2019, 12, 29), [5] * 10, year=2020) + weeks(dt.date(2023, 1, 1), [5] * 10, year=2023)
    out = build(rec(rows))
    assert out.height == 20 and out["cases"].null_count() == 0
    short = weeks(dt.date(2019, 12, 29), [5] * 10 + [None] * 3 + [5] * 5, year=2020)
    assert build(rec(short))["cases"].null_count() == 3
