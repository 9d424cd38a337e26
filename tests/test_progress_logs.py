"""Progress and structured logs: the `vigila.operate.log` stage events the core reports (the hook the CLI's
progress display listens to), the display itself on a forced terminal (and its absence when piped
or `--quiet`), and the `event=... key=value` lines every flow run leaves in the Prefect API."""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from uuid import UUID

import pytest
from prefect.logging.handlers import PrefectConsoleHandler
from rich.console import Console
from typer.testing import CliRunner

import flows.ingest  # noqa: F401  Prefect sets up its console logging now, not inside a CliRunner (whose stderr closes)
from vigila import cli
from vigila.ingest import pipeline
from vigila.operate import log as vlog
from vigila.cli import app
from vigila.config import load_source

from conftest import DEMO, FIXTURES, SOURCES

PAHO = SOURCES / "paho_opendengue_national.yaml"
DETECT_INPUT = FIXTURES / "detect" / "dengue_hnd_mex_2015_2019.csv"
STAGES = ["fetch", "land", "parse", "harmonise", "validate", "publish"]


def test_a_line_is_key_value_tokens_that_parse_back():
    text = vlog.line("publish", source="a b", versions={"cases_weekly": "v1", "quarantine": "v2"}, ok=True,
                     duration_s=0.12345, skipped=None, note='say "hi"')
    assert text.startswith("event=publish ") and "skipped" not in text
    assert vlog.parse(text) == {"event": "publish", "source": "a b", "versions": "cases_weekly:v1,quarantine:v2",
                                "ok": "true", "duration_s": "0.123", "note": 'say "hi"'}


def test_a_failed_stage_is_logged_with_its_error_and_re_raised():
    records = []
    with vlog.listening(records.append), pytest.raises(KeyError):
        with vlog.stage("land", source="x") as logged:
            logged["rows"] = 3
            raise KeyError("boom")
    assert [(r["event"], r["phase"]) for r in records] == [("land", "start"), ("land", "end")]
    assert records[1]["status"] == "failed" and records[1]["error"] == "KeyError" and records[1]["rows"] == 3


def test_the_core_reports_each_stage_in_order_to_listeners(tmp_path):
    """The hook the CLI passes in: fetch -> land -> parse -> harmonise -> validate -> publish, with rows."""
    cfg = load_source(PAHO)
    records: list[dict] = []
    with vlog.listening(records.append):
        [report] = pipeline.fetch_and_ingest(cfg, tmp_path / "wh", location=str(DEMO / "opendengue_paho_national_v1_3.csv.gz"),
                                             issue_date=dt.date(2025, 3, 5))
    ends = [r for r in records if r["phase"] == "end"]
    assert [r["event"] for r in ends] == STAGES
    assert [r["event"] for r in records if r["phase"] == "start"] == STAGES
    assert all(r["status"] == "ok" and r["source"] == cfg.id and r["duration_s"] >= 0 for r in ends)
    by = {r["event"]: r for r in ends}
    assert by["harmonise"]["rows"] == report["rows_read"] and by["publish"]["rows"] == report["harmonised_rows"]
    assert {by[s]["epi_week"] for s in ("parse", "harmonise", "validate", "publish")} == {"2025-W10"}
    assert by["land"]["already_ingested"] is False and by["fetch"]["files"] == 1
    [rows] = [r for r in records if r["phase"] == "progress"]                # rows read, between the stages
    assert rows["event"] == "rows" and rows["rows"] == report["rows_read"]
    # listeners are removed with their context
    pipeline.fetch_and_ingest(cfg, tmp_path / "wh", location=str(DEMO / "opendengue_paho_national_v1_3.csv.gz"))
    assert len(records) == 2 * len(STAGES) + 1


def _terminal(monkeypatch) -> io.StringIO:
    """The CLI's stderr console as a forced terminal writing into a buffer."""
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=buffer, force_terminal=True, width=200, color_system=None))
    return buffer


def test_detect_shows_per_method_progress_on_a_terminal_only(monkeypatch, tmp_path):
    args = ["detect", "--input", str(DETECT_INPUT), "--method", "ears", "--output", str(tmp_path / "o.csv"), "--top", "0"]
    shown = _terminal(monkeypatch)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    display = shown.getvalue()
    assert "detect ears" in display and "ok: 30 alarms in 508 series-weeks" in display  # the method's line
    assert "read ok" in display and (tmp_path / "o.csv").exists()            # reading per file; the detect stage
    assert not list(tmp_path.glob(".*.partial"))                              # writes block by block, then renames
    assert "alarms in" not in result.output                                   # stdout: the results only
    quiet = _terminal(monkeypatch)
    assert CliRunner().invoke(app, [*args, "--quiet"]).exit_code == 0
    assert quiet.getvalue() == ""
    piped = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=piped))                      # not a terminal
    assert CliRunner().invoke(app, args).exit_code == 0
    assert piped.getvalue() == ""


def test_ingest_shows_the_source_stages_with_prefect_lines_above(prefect_harness, monkeypatch, tmp_path):
    shown = _terminal(monkeypatch)
    result = CliRunner().invoke(app, ["ingest", str(PAHO), "--warehouse", str(tmp_path / "wh"), "--flow",
                                      "--file", str(DEMO / "opendengue_paho_national_v1_3.csv.gz")])
    assert result.exit_code == 0, result.output
    display = shown.getvalue()
    assert "paho_opendengue_national" in display and "ok: 1 file(s)" in display and "16,055 rows" in display
    # Prefect's console lines went through the display's console (printed above it), whole lines
    assert any(line.lstrip().split(" - ", 1)[-1].startswith("event=ingest source=paho_opendengue_national")
               for line in display.splitlines())
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    assert not isinstance(handler.console.file, cli._AboveDisplay)             # restored afterwards


def _run_logs(flow_run_id: UUID, until: str | None = None) -> list[dict]:
    """The run's `event=` lines as the Prefect API stored them (log shipping is asynchronous)."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort
    from prefect.logging.handlers import APILogHandler

    for name in ("prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, APILogHandler):
                handler.flush()
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                    sort=LogSort.TIMESTAMP_ASC, limit=200)
            events = [vlog.parse(log.message) | {"_level": log.level, "_task": log.task_run_id}
                      for log in logs if log.message.startswith("event=")]
            last = {until} if until else {"ingest", "detect_alerts", "check_overdue"}  # a run's last line
            if any(e["event"] in last for e in events) or time.monotonic() > deadline:
                return events
            time.sleep(0.5)


def test_ingest_and_detect_runs_leave_structured_lines_in_the_prefect_api(prefect_harness, tmp_path):
    from flows.detect import detect_alerts
    from flows.ingest import ingest_source

    wh = str(tmp_path / "wh")
    state = ingest_source(str(PAHO), wh, str(DEMO / "opendengue_paho_national_v1_3.csv.gz"), dt.date(2025, 3, 5),
                          return_state=True)
    assert state.is_completed()
    events = _run_logs(state.state_details.flow_run_id)
    names = [e["event"] for e in events]
    assert names == [*STAGES[:2], *STAGES[2:5], "publish", "report", "reporting", "ingest"]
    for e in events:
        assert e["source"] == "paho_opendengue_national" and e["_level"] == 20
        assert e.get("status", "published") in ("ok", "published")
    stages = [e for e in events if e["event"] != "report"]
    assert all(float(e["duration_s"]) >= 0 for e in stages)
    assert all(e["_task"] is not None for e in stages if e["event"] in STAGES)  # each under its task run
    by = {e["event"]: e for e in events}
    assert {by[n]["epi_week"] for n in ("parse", "harmonise", "validate", "publish", "report", "ingest")} == {"2025-W10"}
    assert by["harmonise"]["rows"] == "18226" and by["ingest"]["rows"] == "16055" and by["ingest"]["files"] == "1"
    assert by["report"]["status"] == "published" and by["report"]["revisions"] == "16055"

    state = detect_alerts(wh, return_state=True)
    assert state.is_completed()
    events = _run_logs(state.state_details.flow_run_id)
    methods = [e for e in events if e["event"] == "detect"]
    summary = state.result()
    assert {e["method"] for e in methods} == set(summary["alarms"]) and all(e["status"] == "ok" for e in methods)
    assert sum(int(e["alarms"]) for e in methods) == sum(summary["alarms"].values())
    [run] = [e for e in events if e["event"] == "detect_alerts"]
    assert run["version"] == summary["version"] and run["status"] == "ok"


def test_a_failed_stage_is_an_error_line_of_the_run(prefect_harness, tmp_path):
    from flows.ingest import ingest_source

    bad = tmp_path / "empty.csv"
    bad.write_text("")
    state = ingest_source(str(PAHO), str(tmp_path / "wh"), str(bad), return_state=True)
    assert state.is_failed()
    events = _run_logs(state.state_details.flow_run_id)
    failed = [e for e in events if e.get("status") == "failed"]
    assert [e["event"] for e in failed] == ["parse", "ingest"] and all(e["_level"] == 40 for e in failed)
    assert failed[0]["error"] == failed[1]["error"] == "ReadError"
    [alert] = [e for e in events if e["event"] == "alert"]                   # the on_failure hook's line
    assert alert["name"] == "vigila.ingest.failed" and alert["delivered"] == "false" and alert["event_id"]


def test_the_regional_run_logs_each_step(prefect_harness, tmp_path):
    from flows.detect import detect_alerts
    from flows.ingest import ingest_source
    from flows.regional import regional_summary

    wh = str(tmp_path / "wh")
    ingest_source(str(PAHO), wh, str(DEMO / "opendengue_paho_national_v1_3.csv.gz"), dt.date(2025, 3, 5))
    detect_alerts(wh)
    state = regional_summary(wh, return_state=True)
    assert state.is_completed()
    result = state.result()
    events = {e["event"]: e for e in _run_logs(state.state_details.flow_run_id, until="regional_summary")}
    assert {"reconcile", "endemic", "summary", "bulletin", "regional_summary"} <= set(events)
    assert all(events[n]["status"] == "ok" and float(events[n]["duration_s"]) >= 0 for n in events)
    assert events["summary"]["version"] == result["weekly_summary"]["version"]
    bulletin = result["bulletin"]
    assert events["bulletin"]["epi_week"] == events["regional_summary"]["epi_week"] == \
        f"{bulletin['epi_year']}-W{bulletin['epi_week']:02d}"
