"""The weekly bulletin (vigila/regional/bulletin.py): rendered from a weekly_summary frame built here, checked as
text and in a real headless Chromium (charts drawn, no console errors, no external URLs).

Set VIGILA_UPDATE_SCREENSHOTS=1 to rewrite docs/bulletin.png from the rendered page.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.browser import body_text, chromium, console_errors, wait_for
from vigila.regional import bulletin

ROOT = Path(__file__).resolve().parents[1]
YEAR, WEEK = 2024, 10
FIRST = dt.date(2023, 1, 1)  # MMWR 2023-W01; 2023 has 52 weeks, so 2024-W10 is the 62nd week
N_WEEKS = 62
ESCAPED_NAME = "Madre de Dios & <Tambopata>"

SCHEMA = {
    "disease": pl.Utf8, "country_iso3": pl.Utf8, "country_name": pl.Utf8, "geo_level": pl.Utf8, "geo_code": pl.Utf8,
    "geo_name": pl.Utf8, "epi_year": pl.Int32, "epi_week": pl.Int32, "week_start": pl.Date, "cases": pl.Int64,
    "sources": pl.Utf8, "basis": pl.Utf8, "population": pl.Int64, "incidence_100k": pl.Float64, "prev4_mean": pl.Float64,
    "change_prev4": pl.Float64, "ytd_cases": pl.Int64, "ytd_previous_mean": pl.Float64, "ytd_ratio": pl.Float64,
    "endemic_method": pl.Utf8, "endemic_lower": pl.Float64, "endemic_median": pl.Float64, "endemic_upper": pl.Float64,
    "endemic_zone": pl.Utf8, "threshold": pl.Float64, "threshold_method": pl.Utf8, "alarm": pl.Boolean,
    "alarm_methods": pl.Utf8, "reporting_status": pl.Utf8, "completeness": pl.Float64, "signal": pl.Boolean,
    "signal_note": pl.Utf8,
}

# (disease, iso3, country, level, code, name, population, weekly baseline, last-week multiplier, channel?, alarm?)
# The multiplier sets the bulletin week's cases; None = not reported that week.
SERIES = [
    ("dengue", "PER", "Peru", "admin1", "PE-LOR", "Loreto", 1_000_000, 80, 4.0, True, True),           # epidemic + alarm
    ("dengue", "PER", "Peru", "admin1", "PE-PIU", "Piura", 2_000_000, 120, 1.3, True, True),           # alert zone + alarm
    ("dengue", "PER", "Peru", "admin1", "PE-MDD", ESCAPED_NAME, 170_000, 10, 3.0, True, False),        # epidemic, no alarm
    ("dengue", "PER", "Peru", "admin1", "PE-TUM", "Tumbes", 250_000, 30, 1.0, True, False),            # quiet
    ("dengue", "BRA", "Brazil", "admin0", "BR", "Brazil", 215_000_000, 5000, 1.0, True, False),        # quiet
    ("chikungunya", "BRA", "Brazil", "admin0", "BR", "Brazil", 215_000_000, 400, 3.5, True, True),     # epidemic + alarm
    ("dengue", "COL", "Colombia", "admin0", "CO", "Colombia", 52_000_000, 900, None, True, False),     # not reported
    ("zika", "MEX", "Mexico", "admin0", "MX", "Mexico", 128_000_000, 15, 1.0, False, False),           # no channel
]
SIGNALLED = {("Peru", "Loreto", "dengue"), ("Peru", "Piura", "dengue"), ("Peru", ESCAPED_NAME, "dengue"),
             ("Brazil", "national", "chikungunya")}


def _week(i: int) -> tuple[int, int, dt.date]:
    start = FIRST + dt.timedelta(weeks=i)
    return (2023, i + 1, start) if i < 52 else (2024, i - 51, start)


def _zone(cases: float, lower: float, median: float, upper: float) -> str:
    return "success" if cases < lower else "safety" if cases < median else "alert" if cases < upper else "epidemic"


def summary_frame(*, quiet: bool = False) -> pl.DataFrame:
    """A weekly_summary of SERIES over 62 weeks ending 2024-W10; `quiet` = no signal anywhere."""
    rng = np.random.default_rng(7)
    rows = []
    for disease, iso3, country, level, code, name, pop, base, last, channel, alarms in SERIES:
        history: list[int | None] = []
        for i in range(N_WEEKS):
            year, week, start = _week(i)
            season = 1 + 0.4 * np.sin(2 * np.pi * (week - 8) / 52)
            expected = base * season
            if i == N_WEEKS - 1:
                cases = None if last is None else round(expected * (1.0 if quiet else last))
            elif (code, i) == ("PE-LOR", 50):
                cases = None  # a gap in a signalled series' history
            else:
                cases = int(rng.poisson(expected))
            lower, median, upper = (0.75 * expected, expected, 1.35 * expected) if channel else (None, None, None)
            threshold = 1.6 * expected
            zone = _zone(cases, lower, median, upper) if channel and cases is not None else None
            alarm = None if cases is None else bool(alarms and i == N_WEEKS - 1 and not quiet)
            prev = [c for c in history[-4:] if c is not None]
            prev4 = sum(prev) / len(prev) if prev else None
            reported = cases is not None
            rows.append({
                "disease": disease, "country_iso3": iso3, "country_name": country, "geo_level": level, "geo_code": code,
                "geo_name": name, "epi_year": year, "epi_week": week, "week_start": start, "cases": cases,
                "sources": "per_minsa_dengue_linelist" if level == "admin1" else "paho_opendengue_national",
                "basis": "suspected", "population": pop,
                "incidence_100k": None if cases is None else cases / pop * 1e5, "prev4_mean": prev4,
                "change_prev4": None if cases is None or not prev4 else cases / prev4 - 1,
                "ytd_cases": cases or 0, "ytd_previous_mean": expected, "ytd_ratio": None if cases is None else cases / expected,
                "endemic_method": "quartiles_5y" if channel else None, "endemic_lower": lower, "endemic_median": median,
                "endemic_upper": upper, "endemic_zone": zone, "threshold": threshold, "threshold_method": "ears_C2",
                "alarm": alarm, "alarm_methods": "ears_C2,farrington_flexible" if alarm else None,
                "reporting_status": "on_time" if reported else "missing", "completeness": 1.0 if reported else 0.0,
                "signal": bool(alarm) or zone == "epidemic",
                "signal_note": None if reported else "not reported this week",
            })
            history.append(cases)
    return pl.DataFrame(rows, schema=SCHEMA)


def quality_frame() -> pl.DataFrame:
    return pl.DataFrame({
        "source_id": ["per_minsa_dengue_linelist", "paho_opendengue_national", "col_ins_sivigila"],
        "country_iso3": ["PER", None, "COL"],
        "rows_quarantined": [57, 0, None],
        "top_check": ["unknown_place", None, None],
        "reporting_status": ["on_time", "on_time", "missing"],
        "last_week_published": ["2024-W10", "2024-W10", "2024-W07"],
    }, schema={"source_id": pl.Utf8, "country_iso3": pl.Utf8, "rows_quarantined": pl.Int64, "top_check": pl.Utf8,
               "reporting_status": pl.Utf8, "last_week_published": pl.Utf8})


def test_summary_frame_signals_what_the_fixture_says():
    week = summary_frame().filter(pl.col("epi_week") == WEEK, pl.col("epi_year") == YEAR)
    got = {(r["country_name"], "national" if r["geo_level"] == "admin0" else r["geo_name"], r["disease"])
           for r in week.filter("signal").iter_rows(named=True)}
    assert got == SIGNALLED


EXTERNAL = re.compile(r"""(?:src|href|action|data)\s*=\s*["']?\s*(?:https?:)?//|@import|url\(\s*["']?\s*(?:https?:)?//""", re.I)


def test_page_is_self_contained_and_escaped():
    page = bulletin.render(summary_frame(), epi_year=YEAR, epi_week=WEEK, quality=quality_frame(),
                           generated_at=dt.datetime(2024, 3, 12, 9, 30, tzinfo=dt.UTC),
                           data_versions={"weekly_summary": "v20240312T0900Z"})
    assert not EXTERNAL.findall(page)
    # The Vega runtime once, the specs once, one small runner: three scripts whatever the number of charts.
    assert page.count("<script") == 3
    assert page.count('id="vigila-specs"') == 1
    assert 'data-charts="5"' in page  # four epidemic curves + the overview
    # Text is escaped in the HTML and in the JSON specs (no raw "<Tambopata>" anywhere).
    assert "<Tambopata>" not in page
    assert "Madre de Dios &amp; &lt;Tambopata&gt;" in page
    assert "2024-W10" in page and "03 Mar 2024 – 09 Mar 2024" in page and "2024-03-12 09:30 UTC" in page
    assert "v20240312T0900Z" in page


def test_overview_cells_worst_zone_and_not_reported():
    summary = summary_frame()
    week = summary.filter(pl.col("epi_week") == WEEK, pl.col("epi_year") == YEAR)
    cells = bulletin._overview_cells(bulletin._history(summary, week["week_start"].min(), 52), week)
    by = {(r["country_iso3"], r["disease"]): r for r in cells.iter_rows(named=True)}
    assert set(by) == {("PER", "dengue"), ("BRA", "dengue"), ("BRA", "chikungunya"), ("COL", "dengue"), ("MEX", "zika")}
    assert by[("PER", "dengue")]["state"] == "epidemic" and by[("PER", "dengue")]["signals"] == 3
    assert by[("PER", "dengue")]["alarm"] is True
    assert by[("COL", "dengue")]["state"] == "not reported" and by[("COL", "dengue")]["label"] == "n/r"
    assert by[("MEX", "zika")]["state"] == "no channel"
    assert by[("BRA", "dengue")]["signals"] == 0 and by[("BRA", "dengue")]["alarm"] is False
    # Peru has only subnational dengue series: its cases are their sum.
    assert by[("PER", "dengue")]["cases"] == week.filter(pl.col("country_iso3") == "PER")["cases"].sum()


def _specs(page: str) -> dict:
    start = page.index('id="vigila-specs">') + len('id="vigila-specs">')
    return json.loads(page[start:page.index("</script>", start)])


@pytest.mark.parametrize("history_weeks", [52, 10])
def test_curves_hold_the_last_history_weeks(history_weeks):
    specs = _specs(bulletin.render(summary_frame(), epi_year=YEAR, epi_week=WEEK, history_weeks=history_weeks))
    assert sorted(specs) == ["curve-0", "curve-1", "curve-2", "curve-3", "overview"]
    for i in range(4):
        weeks = [w for w in specs[f"curve-{i}"]["data"]["values"] if not w.get("tail")]
        assert len(weeks) == history_weeks
        assert [w["week"] for w in weeks if w["current"]] == ["2024-W10"] and weeks[-1]["current"]
    loreto = specs["curve-0"]["data"]["values"]  # the worst signal: Loreto, with one week not reported
    assert [w["week"] for w in loreto if not w.get("tail") and not w["reported"]] == (["2023-W51"] if history_weeks == 52 else [])


def test_missing_columns_are_named():
    with pytest.raises(bulletin.BulletinInputError, match="endemic_zone"):
        bulletin.render(summary_frame().drop("endemic_zone"), epi_year=YEAR, epi_week=WEEK)
    with pytest.raises(bulletin.BulletinInputError, match="top_check"):
        bulletin.render(summary_frame(), epi_year=YEAR, epi_week=WEEK, quality=quality_frame().drop("top_check"))


def test_week_without_data_renders_a_plain_page():
    page = bulletin.render(summary_frame(), epi_year=2025, epi_week=1)
    assert "No series reported data for this week." in page
    assert "<script" not in page and 'data-charts="0"' in page


def _open(driver, path: Path) -> str:
    """Load the page, wait until every chart has finished (drawn or failed), check all were drawn."""
    driver.get(path.resolve().as_uri())
    charts = int(driver.execute_script("return document.body.dataset.charts"))
    wait_for(lambda: driver.execute_script("return document.querySelectorAll('.chart[data-rendered]').length") == charts,
             what=f"{charts} Vega charts to finish")
    failed = driver.execute_script("return [...document.querySelectorAll('.chart[data-rendered=error]')].map(e => e.id)")
    assert failed == [], console_errors(driver)
    assert driver.execute_script("return document.querySelectorAll('.chart svg').length") == charts
    return body_text(driver)


def test_bulletin_in_headless_chromium(tmp_path):
    path = bulletin.write(summary_frame(), tmp_path / "bulletin.html", epi_year=YEAR, epi_week=WEEK,
                          quality=quality_frame(), generated_at=dt.datetime(2024, 3, 12, 9, 30, tzinfo=dt.UTC),
                          data_versions={"weekly_summary": "v20240312T0900Z", "alerts": "v20240312T0845Z"})
    with chromium(width=1400, height=1000) as driver:
        text = _open(driver, path)
        assert console_errors(driver) == []
        table = driver.execute_script("""return [...document.querySelectorAll('#signals-table tbody tr')]
            .map(tr => [...tr.cells].slice(0, 3).map(td => td.innerText))""")
        assert {tuple(r) for r in table} == SIGNALLED
        assert len(table) == len(SIGNALLED)
        # Worst first: the epidemic-zone series with alarms lead, the alert-zone one (Piura) is last.
        assert table[-1][1] == "Piura"
        curves = driver.execute_script("return [...document.querySelectorAll('figure.curve h3')].map(h => h.innerText)")
        assert len(curves) == 4 and any(ESCAPED_NAME in c for c in curves) and any("chikungunya — Brazil" in c for c in curves)
        # Each curve draws the channel's bands, a cases line and a threshold line, and a legend of the four zones;
        # the overview marks Colombia not reported.
        for i in range(4):
            svg = f"#curve-{i} svg"
            assert driver.execute_script(f"return document.querySelectorAll('{svg} .mark-rect path').length") >= 52
            assert driver.execute_script(f"return document.querySelectorAll('{svg} .mark-line path').length") == 2
            legend = driver.execute_script(f"return document.querySelector('{svg} .role-legend').textContent")
            assert all(z in legend for z in ("success", "safety", "alert", "epidemic"))
        overview = driver.execute_script("return document.querySelector('#overview svg').textContent")
        assert "n/r" in overview and "Colombia" in overview and "▲3" in overview
        notes = driver.execute_script("return document.querySelector('#not-reported').innerText")
        assert "Colombia" in notes and "not reported this week" in notes and "Peru" not in notes
        sources = driver.execute_script("return document.querySelector('#sources').innerText")
        assert "unknown_place" in sources and "2024-W07" in sources
        assert ESCAPED_NAME in text and "Epidemiological week 2024-W10" in text
        if os.environ.get("VIGILA_UPDATE_SCREENSHOTS") == "1":
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1400, min(height + 200, 3000))  # the window's height includes its frame
            wait_for(lambda: driver.execute_script("return document.readyState") == "complete", what="resize")
            driver.save_screenshot(str(ROOT / "docs" / "bulletin.png"))


def test_quiet_week_in_headless_chromium(tmp_path):
    path = bulletin.write(summary_frame(quiet=True), tmp_path / "quiet.html", epi_year=YEAR, epi_week=WEEK, quality=None)
    with chromium() as driver:
        text = _open(driver, path)
        assert console_errors(driver) == []
        assert "No signals this week" in text
        assert driver.execute_script("return document.querySelectorAll('#signals-table, figure.curve').length") == 0
        assert driver.execute_script("return document.querySelectorAll('#overview svg').length") == 1


def test_reporters_that_disagree_are_in_the_quality_notes():
    disc = pl.DataFrame({"country_iso3": ["PER"] * 3 + ["MEX"], "geo_level": ["admin0"] * 3 + ["admin1"],
                         "disease": ["dengue"] * 4, "epi_year": [YEAR, YEAR, YEAR + 1, YEAR], "epi_week": [WEEK - 1, WEEK, 1, WEEK],
                         "source_a": ["per_minsa"] * 3 + ["mex_a"], "source_b": ["paho"] * 3 + ["mex_b"],
                         "relative_difference": [0.05, -0.12, 0.5, 0.9], "exceeds": [False, True, True, True]})
    page = bulletin.render(summary_frame(), epi_year=YEAR, epi_week=WEEK, discrepancies=disc)
    section = page[page.index('id="discrepancies"'):]
    section = section[:section.index("</section>")]
    # up to this week only (the later week is not counted), national only (MEX's admin1 row is not)
    assert "<code>per_minsa</code> vs <code>paho</code>" in section and "mex_a" not in section
    assert '<td class="num">2</td><td class="num warn">1</td><td class="num">-12%</td>' in section
    assert 'id="discrepancies"' not in bulletin.render(summary_frame(), epi_year=YEAR, epi_week=WEEK)
