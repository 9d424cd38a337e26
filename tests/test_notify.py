"""Alerts to operators: a failed ingest run and an overdue source each emit a Prefect event and
are POSTed to the webhook (`VIGILA_ALERT_WEBHOOK`) or through a saved Prefect notification block
(`VIGILA_ALERT_BLOCK`), here to a receiver on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vigila.operate import log as vlog
from vigila.ingest import completeness
from vigila.operate import notify
from vigila.ingest import pipeline
from vigila.warehouse.storage import Storage
from vigila.config import load_source

from conftest import SOURCES
from test_progress_logs import _run_logs

PAHO = SOURCES / "paho_opendengue_national.yaml"


@pytest.fixture()
def receiver(monkeypatch):
    """A webhook receiver on a free loopback port, set as VIGILA_ALERT_WEBHOOK; yields the JSON bodies POSTed to it."""
    with _receiving() as (url, got):
        monkeypatch.setenv("VIGILA_ALERT_WEBHOOK", f"{url}/hook?token=x")
        monkeypatch.delenv("VIGILA_ALERT_BLOCK", raising=False)
        yield got


@contextmanager
def _receiving():
    """A JSON receiver on a free loopback port: (its base URL, the list of bodies POSTed to it)."""
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()
        server.server_close()


def _events(name: str, resource_id: str, timeout: float = 15) -> list:
    """Events of `name` on `resource_id` as the Prefect API stored them (they arrive asynchronously)."""
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            found = client.read_events(filter=flt, limit=50).events  # the server caps it at 50
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def test_alert_payloads_are_built_without_prefect():
    alert = notify.failed_alert("gtm", "GTM", "ingest-gtm-2024-W10", "abc",
                                "Flow run encountered an exception: FetchError: /x: no such file or folder")
    assert alert["event"] == "vigila.ingest.failed" and alert["resource"]["prefect.resource.id"] == "vigila.source.gtm"
    assert alert["payload"]["error"] == "FetchError: /x: no such file or folder"
    body = notify.webhook_body(alert)
    assert body["source"] == "gtm" and body["country"] == "GTM" and body["event"] == alert["event"]
    rows = [{"source": "a", "overdue": True, "overdue_since": "2025-01-08T23:00:00+00:00", "weeks_missing": 3},
            {"source": "b", "overdue": False}, {"source": "c", "overdue": None}]
    assert [a["payload"]["source"] for a in notify.overdue_alerts(rows)] == ["a"]


def test_a_failed_run_emits_an_event_and_posts_to_the_webhook(prefect_harness, receiver, tmp_path, monkeypatch):
    import flows.ingest as ingest

    monkeypatch.setattr(ingest, "fetch", ingest.fetch.with_options(retries=0))   # fail at once
    src = tmp_path / "gtm.yaml"
    src.write_text("id: gtm_mspas_weekly\ncountry: GTM\nreporter: {institution: MSPAS, type: ministry}\n"
                   "diseases: [dengue]\ngeo_level: admin1\nlocation: nowhere\n"
                   "columns: {place: departamento, epi_year: anio, epi_week: semana, cases: casos}\n")
    with pytest.raises(Exception, match="no such file or folder"):
        ingest.ingest_source(str(src), str(tmp_path / "wh"))
    [body] = receiver
    assert body["event"] == "vigila.ingest.failed" and body["source"] == "gtm_mspas_weekly" and body["country"] == "GTM"
    assert "nowhere: no such file or folder" in body["error"] and body["flow_run_name"].startswith("ingest-gtm_mspas_weekly-")
    assert body["flow_run_id"]
    [event] = _events("vigila.ingest.failed", "vigila.source.gtm_mspas_weekly")
    assert event.payload["error"] == body["error"]
    assert any(r.id == f"prefect.flow-run.{body['flow_run_id']}" for r in event.related)
    # `vigila status` shows the failed run as the source's last run (nothing was ever published)
    last = completeness.last_run(Storage.open(tmp_path / "wh"), "gtm_mspas_weekly")
    assert last["status"] == "failed" and "no such file or folder" in last["error"] and last["run_id"] == body["flow_run_id"]


def test_check_overdue_emits_and_posts_per_overdue_source(prefect_harness, receiver, tmp_path):
    from flows.notify import check_overdue

    wh = tmp_path / "wh"
    cfg = load_source(PAHO)
    pipeline.ingest(cfg, cfg.location, wh, issue_date=dt.date(2025, 1, 1))      # its data stop in 2024
    state = check_overdue(str(wh), str(PAHO), return_state=True)
    alerts = state.result()
    [body] = receiver
    assert body["event"] == "vigila.source.overdue" and body["source"] == "paho_opendengue_national"
    assert body["overdue_since"].startswith("2025-01") and body["weeks_missing"] > 0
    [alert] = alerts
    assert alert["delivered"] and alert["event_id"]
    [event] = _events("vigila.source.overdue", "vigila.source.paho_opendengue_national")
    assert str(event.id) == alert["event_id"]
    logged = {e["event"]: e for e in _run_logs(state.state_details.flow_run_id)}   # the run's structured lines
    assert logged["alert"]["source"] == "paho_opendengue_national" and logged["alert"]["delivered"] == "true"
    assert logged["alert"]["event_id"] == alert["event_id"] and logged["alert"]["name"] == "vigila.source.overdue"
    assert (logged["check_overdue"]["sources"], logged["check_overdue"]["overdue"], logged["check_overdue"]["status"]) == ("1", "1", "ok")


def _failing_source(tmp_path):
    src = tmp_path / "gtm.yaml"
    src.write_text("id: gtm_mspas_weekly\ncountry: GTM\nreporter: {institution: MSPAS, type: ministry}\n"
                   "diseases: [dengue]\ngeo_level: admin1\nlocation: nowhere\n"
                   "columns: {place: departamento, epi_year: anio, epi_week: semana, cases: casos}\n")
    return src


def test_a_failed_run_is_delivered_through_a_saved_notification_block(prefect_harness, tmp_path, monkeypatch):
    """VIGILA_ALERT_BLOCK names a real Prefect webhook block (saved on the API); its notify() POSTs."""
    import flows.ingest as ingest
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    monkeypatch.setattr(ingest, "fetch", ingest.fetch.with_options(retries=0))
    monkeypatch.delenv("VIGILA_ALERT_WEBHOOK", raising=False)
    with _receiving() as (url, got):
        block = CustomWebhookNotificationBlock(name="vigila-ops", url=f"{url}/ops", method="POST",
                                               json_data={"title": "{{subject}}", "alert": "{{body}}"})
        block.save("vigila-ops", overwrite=True)
        monkeypatch.setenv("VIGILA_ALERT_BLOCK", f"{block.get_block_type_slug()}/vigila-ops")
        with pytest.raises(Exception, match="no such file or folder"):
            ingest.ingest_source(str(_failing_source(tmp_path)), str(tmp_path / "wh"))
    [posted] = got
    assert posted["title"].startswith("Vigila: ingest of gtm_mspas_weekly failed (run ingest-gtm_mspas_weekly-")
    body = json.loads(posted["alert"])      # the block's {{body}}: the same JSON the webhook route POSTs
    assert body["event"] == "vigila.ingest.failed" and body["source"] == "gtm_mspas_weekly" and body["country"] == "GTM"
    assert "nowhere: no such file or folder" in body["error"]


def test_an_undeliverable_alert_is_logged_not_raised(prefect_harness, monkeypatch, caplog):
    from flows.notify import deliver

    monkeypatch.setenv("VIGILA_ALERT_WEBHOOK", "http://127.0.0.1:9/closed-port")   # discard port: refused
    monkeypatch.setenv("VIGILA_ALERT_BLOCK", "custom-webhook/no-such-block")
    alert = notify.failed_alert("gtm", "GTM", "run", "abc", "boom")
    with caplog.at_level("WARNING"):
        assert deliver(alert) is False
    lines = [vlog.parse(r.getMessage()) for r in caplog.records if r.getMessage().startswith("event=alert_undelivered")]
    assert [(e["route"], e["source"]) for e in lines] == [("webhook", "gtm"), ("block", "gtm")]
    assert lines[1]["block"] == "custom-webhook/no-such-block" and "closed-port" not in caplog.text  # no URL logged


def test_every_flow_alerts_operators_when_it_fails_or_crashes():
    from flows.detect import detect_alerts
    from flows.ingest import ingest_source
    from flows.notify import alert_failed_run, check_overdue
    from flows.regional import regional_summary

    for f in (ingest_source, detect_alerts, regional_summary, check_overdue):
        assert f.on_failure_hooks == [alert_failed_run] and f.on_crashed_hooks == [alert_failed_run], f.name
    assert ingest_source.on_failure_hooks is not detect_alerts.on_failure_hooks   # no list shared between flows


def test_a_failed_detect_alerts_posts_to_the_webhook(prefect_harness, receiver, tmp_path):
    from flows.detect import detect_alerts

    wh = tmp_path / "empty"      # nothing published (as_of reads cases_revisions)
    with pytest.raises(FileNotFoundError, match="no published dataset"):
        detect_alerts(str(wh), as_of=dt.date(2024, 3, 1))
    [body] = receiver
    assert body["event"] == "vigila.run.failed" and body["flow"] == "detect_alerts" and body["state"] == "Failed"
    assert body["flow_run_name"].startswith("detect-") and body["flow_run_id"]
    assert body["parameters"]["warehouse"] == str(wh) and body["parameters"]["as_of"] == "2024-03-01"
    assert "no published dataset 'cases_revisions'" in body["error"] and body["source"] is None
    assert body["text"].startswith("Vigila: detect_alerts failed (run detect-")
    events = _events("vigila.run.failed", "vigila.flow.detect_alerts")
    assert any(e.payload["flow_run_id"] == body["flow_run_id"] for e in events)


def test_a_failing_check_overdue_alerts_once_without_a_loop(prefect_harness, receiver, tmp_path):
    from flows.notify import check_overdue

    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "broken.yml").write_text("id: broken\nno_such_key: 1\n")
    with pytest.raises(Exception, match="broken.yml"):
        check_overdue(str(tmp_path / "wh"), str(folder))
    [body] = receiver       # the hook's own alert only: nothing re-entered check_overdue
    assert body["event"] == "vigila.run.failed" and body["flow"] == "check_overdue"
    assert body["parameters"]["sources_dir"] == str(folder) and "broken.yml" in body["error"]


def test_check_overdue_alerts_each_overdue_episode_once(prefect_harness, receiver, tmp_path):
    from flows.notify import check_overdue

    wh, folder = tmp_path / "wh", tmp_path / "sources"
    folder.mkdir()
    (folder / "paho.yml").write_text(PAHO.read_text())     # a .yml config counts too
    cfg = load_source(PAHO)
    pipeline.ingest(cfg, cfg.location, wh, issue_date=dt.date(2025, 1, 1))      # its data stop in 2024
    first = check_overdue(str(wh), str(folder), return_state=True)
    when = dt.datetime(2025, 3, 1, 10, 15, tzinfo=dt.UTC)
    second = check_overdue(str(wh), str(folder), today=when, return_state=True)
    assert len(receiver) == 1 and len(first.result()) == 1 and second.result() == []
    stored = json.loads((wh / "state" / "alerts" / "paho_opendengue_national.json").read_text())
    assert stored["overdue_since"] == receiver[0]["overdue_since"] and stored["delivered"] is True
    logged = {e["event"]: e for e in _run_logs(second.state_details.flow_run_id)}
    skipped = logged["alert_skipped"]
    assert (skipped["source"], skipped["reason"], skipped["overdue_since"]) == (
        "paho_opendengue_national", "already_alerted", stored["overdue_since"])
    assert "alert" not in logged and (logged["check_overdue"]["overdue"], logged["check_overdue"]["alerted"]) == ("1", "0")

    from prefect import get_client

    with get_client(sync_client=True) as client:
        names = [client.read_flow_run(s.state_details.flow_run_id).name for s in (first, second)]
    assert names[1] == "overdue-2025-03-01T10:15"
    assert re.fullmatch(r"overdue-\d{4}-\d\d-\d\dT\d\d:\d\d", names[0])

    # a new episode (another overdue_since than the one alerted) is alerted again
    stored["overdue_since"] = "2024-06-01T00:00:00+00:00"
    (wh / "state" / "alerts" / "paho_opendengue_national.json").write_text(json.dumps(stored))
    check_overdue(str(wh), str(folder))
    assert len(receiver) == 2 and receiver[1]["overdue_since"] == receiver[0]["overdue_since"]


def test_source_paths_are_the_yaml_and_yml_configs_of_a_folder(tmp_path):
    from vigila.config import source_paths

    for name in ("b.yaml", "a.yml", "c.txt", "d.yaml.bak"):
        (tmp_path / name).write_text("id: x\n")
    (tmp_path / "sub.yaml").mkdir()
    assert [p.name for p in source_paths(tmp_path)] == ["a.yml", "b.yaml"]
    assert source_paths(tmp_path / "b.yaml") == [tmp_path / "b.yaml"]
    assert source_paths(str(tmp_path)) == source_paths(tmp_path)


def test_status_and_deployments_read_yml_configs(tmp_path):
    from typer.testing import CliRunner

    from flows.deploy import scheduled_sources
    from vigila.cli import app

    (tmp_path / "paho.yml").write_text(PAHO.read_text())
    result = CliRunner().invoke(app, ["status", "--warehouse", str(tmp_path / "wh"), "--source", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert [r["source"] for r in json.loads(result.output)] == ["paho_opendengue_national"]
    assert [s.path.name for s in scheduled_sources(tmp_path)] == (["paho.yml"] if load_source(PAHO).schedule.cron else [])


class _Crash(BaseException):
    """Not an Exception: Prefect records the run as Crashed, not Failed (as for a killed process)."""


def test_a_crashed_regional_summary_posts_to_the_webhook(prefect_harness, receiver, tmp_path, monkeypatch):
    import flows.regional as regional

    def crash(*args, **kwargs):
        raise _Crash("worker went away")

    monkeypatch.setattr(regional.reconcile, "load_config", crash)
    with pytest.raises(_Crash):
        regional.regional_summary(str(tmp_path / "wh"))
    [body] = receiver
    assert body["event"] == "vigila.run.failed" and body["flow"] == "regional_summary" and body["state"] == "Crashed"
    assert body["flow_run_name"].startswith("regional-") and body["text"].startswith("Vigila: regional_summary crashed")
