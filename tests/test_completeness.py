"""Reporting completeness and timeliness (`reporting` dataset) and `vigila status`, on the real Peru
line list and on a small synthetic weekly source with on-time, late, partial, missing and pending weeks."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from epiweeks import Week

from schemas.outputs import Reporting
from vigila.ingest import completeness as cp
from vigila.operate import notify
from vigila.ingest import pipeline
from vigila.warehouse import publish, read
from vigila.config import ConfigError, load_source, source_from_dict
from vigila.warehouse.storage import Storage

from conftest import ROOT, SOURCES

PERU = SOURCES / "per_minsa_dengue_linelist.yaml"
UTC = dt.UTC


def test_deadline_is_the_weekday_and_time_of_the_week_after_in_the_source_timezone():
    peru = load_source(PERU)                              # tue 12:00, America/Lima (UTC-5)
    assert peru.schedule.deadline == "tue 12:00"
    # MMWR week 2024-W02 starts Sunday 7 Jan; the week after starts 14 Jan; its Tuesday is 16 Jan
    assert cp.deadline_of(dt.date(2024, 1, 7), peru) == dt.datetime(2024, 1, 16, 17, 0, tzinfo=UTC)
    iso = source_from_dict({**_weekly_config(), "epiweek": "iso", "schedule": {"timezone": "UTC", "deadline": "Monday 9:30"}})
    assert cp.deadline_of(dt.date(2024, 1, 8), iso) == dt.datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
    default = source_from_dict({**_weekly_config(), "schedule": {"timezone": "UTC"}})   # no deadline: end of the week after
    assert default.schedule.deadline is None
    assert cp.deadline_of(dt.date(2024, 1, 7), default) == dt.datetime(2024, 1, 21, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["tuesday", "tu 12:00", "tue 24:00", "tue 12:60", "12:00 tue"])
def test_a_bad_deadline_is_one_line_naming_the_key(tmp_path, bad):
    p = tmp_path / "src.yaml"
    p.write_text(PERU.read_text().replace('deadline: "tue 12:00"', f'deadline: "{bad}"'))
    with pytest.raises(ConfigError, match=r"src.yaml:\d+: schedule.deadline: deadline .* must be '<weekday> HH:MM'"):
        load_source(p)


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def peru_wh(tmp_path_factory):
    wh = tmp_path_factory.mktemp("peru") / "warehouse"
    cfg = load_source(PERU)
    pipeline.ingest(cfg, cfg.location, wh, issue_date=dt.date(2023, 1, 5))
    return wh, cfg


def test_peru_line_list_every_published_week_is_received_late_then_missing(peru_wh):
    wh, cfg = peru_wh
    frame = cp.completeness(wh, [cfg], today=dt.date(2023, 1, 20))
    weeks = read.cases_weekly(wh).select("epi_year", "epi_week").unique().collect()
    received = frame.filter(pl.col("received") > 0)
    assert received.height == weeks.height == 209                   # 2019-W01 .. 2022-W52
    assert (received["expected"] == 1).all()                        # a line list is one report per disease
    # published years after their deadlines (the ingest ran now): late, never on time
    assert set(received["status"]) == {"late"} and (received["received_on_time"] == 0).all()
    assert received["first_received_at"].min() > received["deadline"].max()
    tail = frame.tail(3).select("epi_year", "epi_week", "status").rows()
    # 2023-W03 (15-21 Jan) has not ended on 20 Jan: not owed yet
    assert tail == [(2022, 52, "late"), (2023, 1, "missing"), (2023, 2, "missing")]
    assert frame["deadline"][-2] == dt.datetime(2023, 1, 10, 17, tzinfo=UTC)   # Tue 10 Jan 12:00 Lima
    Reporting.validate(frame)

    [row] = cp.status(wh, [cfg], today=dt.date(2023, 1, 20))
    assert row["last_week_published"] == "2022-W52" and row["country"] == "PER"
    assert row["completeness_pct"] == pytest.approx(100 * 10 / 12, abs=0.1)
    assert row["overdue"] is True and row["overdue_since"] == "2023-01-10T17:00:00+00:00" and row["weeks_missing"] == 2
    assert row["last_run"]["status"] == "published"


def test_status_command_prints_the_table_without_importing_prefect(peru_wh):
    wh, _ = peru_wh
    cmd = [sys.executable, "-X", "importtime", "-m", "vigila.cli", "status", "--warehouse", str(wh),
           "--source", str(PERU), "--source", str(SOURCES / "http_open_data_example.yaml"), "--today", "2023-01-20"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    imported = [line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")]
    assert "polars" in imported and not [m for m in imported if m.split(".")[0] == "prefect"]
    lines = run.stdout.splitlines()
    for col in ("source", "country", "last run", "last epi week", "complete 12w", "overdue"):
        assert col in lines[1]
    peru = next(line for line in lines if "per_minsa_dengue_linelist" in line)
    for cell in ("PER", "published", "2022-W52", "83%", "yes, since 2023-01-10 17:00 UTC"):
        assert cell in peru
    http = next(line for line in lines if "http_open_data_example" in line)
    assert "never" in http and "no data" in http

    js = subprocess.run([*cmd[:1], *cmd[3:], "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert js.returncode == 0
    rows = {r["source"]: r for r in json.loads(js.stdout)}
    assert rows["per_minsa_dengue_linelist"]["overdue_since"] == "2023-01-10T17:00:00+00:00"
    assert rows["http_open_data_example"]["overdue"] is None and rows["http_open_data_example"]["last_run"] is None


# --------------------------------------------------------------------------- synthetic weeks


def _weekly_config() -> dict:
    return {"id": "test_weekly", "reporter": {"institution": "test"}, "diseases": ["dengue"], "format": "csv",
            "columns": {"country": "pais", "epi_year": "ano", "epi_week": "semana", "cases": "casos"},
            "schedule": {"timezone": "America/Lima", "deadline": "tue 12:00"},
            "limits": {"future_weeks": 6}}   # the fixture publishes weeks ahead of the real clock on purpose


def _csv(path: Path, rows: list[tuple[str, Week]]) -> Path:
    path.write_text("pais,ano,semana,casos\n" + "".join(f"{c},{w.year},{w.week},3\n" for c, w in rows))
    return path


@pytest.fixture()
def synthetic(tmp_path):
    """Weeks around the real clock (ingested_at is the real publish time): P ~ 2 months ago (past its
    deadline), F ~ 3 weeks ahead (before its deadline). PER and BOL both report from week P."""
    cfg = source_from_dict(_weekly_config())
    wh = tmp_path / "warehouse"
    p = Week.fromdate(dt.date.today() - dt.timedelta(days=60))
    f = Week.fromdate(dt.date.today() + dt.timedelta(days=21))
    pipeline.ingest(cfg, _csv(tmp_path / "a.csv", [("PER", p), ("BOL", p), ("PER", p + 1)]), wh)
    pipeline.ingest(cfg, _csv(tmp_path / "b.csv", [("PER", f), ("BOL", f), ("PER", f + 1)]), wh)
    return cfg, wh, p, f


def _statuses(frame: pl.DataFrame) -> dict[tuple[int, int], str]:
    return {(y, w): s for y, w, s in frame.select("epi_year", "epi_week", "status").iter_rows()}


def test_on_time_late_partial_missing_pending(synthetic):
    cfg, wh, p, f = synthetic
    g = f + 1
    # 1) the day after week F+1 ended: its deadline (Tuesday) is still ahead -> pending
    before = cp.completeness(wh, [cfg], today=g.startdate() + dt.timedelta(days=8))
    s = _statuses(before)
    assert s[(p.year, p.week)] == "late"                   # both countries, after the deadline
    assert s[((p + 1).year, (p + 1).week)] == "partial"    # BOL never sent it
    assert s[((p + 2).year, (p + 2).week)] == "missing"    # nothing at all
    assert s[(f.year, f.week)] == "on_time"                # both, before the deadline
    assert s[(g.year, g.week)] == "pending"                # only PER so far, not due yet
    assert list(s)[-1] == (g.year, g.week)
    row = before.filter(pl.col("epi_week") == f.week, pl.col("epi_year") == f.year).row(0, named=True)
    assert (row["expected"], row["received"], row["received_on_time"], row["completeness"]) == (2, 2, 2, 1.0)
    assert row["first_received_at"] <= row["last_received_at"] < row["deadline"]
    assert row["week_start"] == f.startdate()
    [st] = cp.status(wh, [cfg], today=g.startdate() + dt.timedelta(days=8))
    assert st["overdue"] is False and st["country"] == "BOL, PER"

    # 2) a month later: F+1 is partial, F+2 and F+3 missing, F+4 not due yet
    later = cp.completeness(wh, [cfg], today=g.startdate() + dt.timedelta(days=30))
    s = _statuses(later)
    assert [s[((g + i).year, (g + i).week)] for i in range(4)] == ["partial", "missing", "missing", "pending"]
    [st] = cp.status(wh, [cfg], today=g.startdate() + dt.timedelta(days=30), weeks=4)
    assert st["overdue"] is True and st["weeks_missing"] == 2
    assert st["overdue_since"] == cp.deadline_of((g + 1).startdate(), cfg).isoformat()
    assert st["completeness_pct"] == pytest.approx(100 * (2 + 1 + 0 + 0) / 8)   # F, F+1, F+2, F+3
    assert st["on_time_pct"] == st["completeness_pct"]


def test_a_late_report_completes_a_partial_week_as_late(synthetic, tmp_path):
    cfg, wh, p, f = synthetic
    today = (f + 6).startdate()
    assert _statuses(cp.completeness(wh, [cfg], today=today))[((p + 1).year, (p + 1).week)] == "partial"
    pipeline.ingest(cfg, _csv(tmp_path / "c.csv", [("BOL", p + 1)]), wh)
    frame = cp.completeness(wh, [cfg], today=today)
    row = frame.filter(pl.col("epi_week") == (p + 1).week, pl.col("epi_year") == (p + 1).year).row(0, named=True)
    assert (row["status"], row["received"], row["expected"]) == ("late", 2, 2)
    assert row["last_received_at"] > row["first_received_at"]      # BOL's arrived with the later run


def test_publish_completeness_commits_the_reporting_dataset_atomically(synthetic):
    cfg, wh, p, f = synthetic
    peru = load_source(PERU)
    pipeline.ingest(peru, peru.location, wh, issue_date=dt.date(2023, 1, 5))
    storage = Storage.open(wh)
    today = (f + 3).startdate()
    m = cp.publish_completeness(storage, [cfg, peru], today)
    published = read.dataset(wh, "reporting").collect()
    expected = cp.completeness(wh, [cfg, peru], today=today)
    cols = expected.columns
    assert published.select(cols).sort("source_id", "week_start").equals(expected.sort("source_id", "week_start"))
    assert m.partition_by == ["source_id"] and m.schema_version == "1.0.0"
    assert {d["name"] for d in storage.read_json("catalog.json")["datasets"]} >= {"reporting", "cases_weekly"}

    # a later evaluation of one source replaces its partition only, in a new version
    m2 = cp.publish_completeness(storage, [cfg], today + dt.timedelta(days=14))
    assert m2.sequence == m.sequence + 1
    again = read.dataset(wh, "reporting").collect()
    assert again.filter(pl.col("source_id") == peru.id).equals(published.filter(pl.col("source_id") == peru.id))
    assert again.filter(pl.col("source_id") == cfg.id)["as_of"].unique().to_list() == \
        [dt.datetime.combine(today + dt.timedelta(days=14), dt.time(), UTC)]
    assert publish.current_manifest(storage, "reporting").version == m2.version


def test_a_source_without_published_rows_has_no_weeks(tmp_path):
    cfg = source_from_dict(_weekly_config())
    assert cp.completeness(tmp_path / "empty", [cfg], today=dt.date(2024, 1, 1)).height == 0
    [st] = cp.status(tmp_path / "empty", [cfg], today=dt.date(2024, 1, 1))
    assert st["overdue"] is None and st["last_run"] is None and st["last_week_published"] is None


def _expected_from(day: str) -> dict:
    c = _weekly_config()
    c["schedule"]["expected_from"] = day
    return c


def test_a_source_that_never_published_is_missing_from_expected_from_and_overdue_after_the_deadline(tmp_path):
    """MMWR 2024-W01 starts Sun 31 Dec 2023; its report is due Tue 9 Jan 12:00 Lima (17:00 UTC)."""
    cfg = source_from_dict(_expected_from("2024-01-03"))
    today = dt.datetime(2024, 1, 23, 18, 0, tzinfo=dt.UTC)         # Tue: W03's deadline (17:00 UTC) just passed
    frame = cp.completeness(tmp_path / "empty", [cfg], today=today)
    assert _statuses(frame) == {(2024, 1): "missing", (2024, 2): "missing", (2024, 3): "missing"}
    assert frame["expected"].to_list() == [1, 1, 1] and frame["received"].to_list() == [0, 0, 0]
    [st] = cp.status(tmp_path / "empty", [cfg], today=today)
    assert st["overdue"] is True and st["weeks_missing"] == 3 and st["last_week_published"] is None
    assert st["overdue_since"] == "2024-01-09T17:00:00+00:00"
    [alert] = notify.overdue_alerts([st])
    assert "never published" in alert["text"] and alert["payload"]["weeks_missing"] == 3


def test_before_the_first_deadline_a_new_source_is_pending_not_overdue(tmp_path):
    cfg = source_from_dict(_expected_from("2024-01-03"))
    today = dt.datetime(2024, 1, 9, 16, 0, tzinfo=dt.UTC)          # W01 ended, its deadline is at 17:00 UTC
    assert _statuses(cp.completeness(tmp_path / "empty", [cfg], today=today)) == {(2024, 1): "pending"}
    [st] = cp.status(tmp_path / "empty", [cfg], today=today)
    assert st["overdue"] is False
    later = source_from_dict(_expected_from("2024-03-01"))          # owed from a week that has not ended yet
    assert cp.completeness(tmp_path / "empty", [later], today=today).height == 0


def test_expected_from_no_longer_matters_once_the_source_publishes(synthetic):
    cfg, wh, p, _ = synthetic
    early = source_from_dict({**_weekly_config(), "schedule": {**_weekly_config()["schedule"], "expected_from": "2001-01-01"}})
    today = dt.date.today()
    assert cp.completeness(wh, [early], today=today).equals(cp.completeness(wh, [cfg], today=today))


def test_by_country_each_country_of_a_multi_country_file_has_its_own_status(synthetic):
    """PER and BOL both report week P, only PER week P+1: the file is `partial` for P+1 as a whole; by
    country, PER's P+1 is received and BOL's is missing."""
    cfg, wh, p, _ = synthetic
    whole = cp.completeness(wh, [cfg], today=dt.date.today())
    assert _statuses(whole)[(p + 1).year, (p + 1).week] == "partial"
    per_country = cp.completeness(wh, [cfg], today=dt.date.today(), by_country=True)
    status = {(c, y, w): st for c, y, w, st in per_country.select("country_iso3", "epi_year", "epi_week", "status").iter_rows()}
    assert status["BOL", (p + 1).year, (p + 1).week] == "missing"
    assert status["PER", (p + 1).year, (p + 1).week] in ("on_time", "late")
    assert set(per_country["expected"].to_list()) == {1}              # one place x disease per country
    rows = cp.status_by_country(wh, [cfg], today=dt.date.today())
    assert [(r["source"], r["country"]) for r in rows] == [("test_weekly", "BOL"), ("test_weekly", "PER")]
    assert all(r["last_week_published"] for r in rows)


def test_status_by_country_from_the_command_line(synthetic, tmp_path):
    cfg, wh, _, _ = synthetic
    (src := tmp_path / "src.yaml").write_text(json.dumps(_weekly_config()))
    out = subprocess.run([sys.executable, "-m", "vigila.cli", "status", "--warehouse", str(wh), "--source", str(src),
                          "--by-country", "--json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert [r["country"] for r in json.loads(out.stdout)] == ["BOL", "PER"]
