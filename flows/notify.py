"""Alerts to operators, the Prefect side: emit each alert of `vigila.operate.notify` as a Prefect event
and deliver it to the operators' webhook.

Delivery (both optional, both may be set): `VIGILA_ALERT_WEBHOOK`, a URL that gets the alert as a
JSON POST (`vigila.operate.notify.webhook_body`); `VIGILA_ALERT_BLOCK`, a saved Prefect notification block
(`<block type slug>/<name>`, e.g. `custom-webhook/ops`) whose `notify(body, subject)` is called.
A delivery failure is logged, never raised: an alert must not fail or mask the run it reports.
The events are emitted whatever the delivery, so a Prefect automation can act on them instead.

`alert_failed_run` is the `on_failure` and `on_crashed` hook of every flow (ingest_source,
detect_alerts, regional_summary, check_overdue); `check_overdue` is a flow (deployed hourly by
`flows/deploy.py`) that alerts each overdue episode of a source once (`state/alerts/<source>.json`
in the warehouse). Each alert logs one `vigila.operate.log` line, `event=alert name=<event>
source=<id> delivered=true|false`; a failed delivery `event=alert_undelivered route=webhook|block`;
an overdue episode already alerted `event=alert_skipped`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.logging import get_logger
from prefect.runtime import flow_run as current_run

from vigila.ingest import completeness
from vigila.operate import notify
from vigila.operate import log as vlog
from vigila.config import load_source, source_paths
from vigila.warehouse.storage import Storage

WEBHOOK_ENV = "VIGILA_ALERT_WEBHOOK"
BLOCK_ENV = "VIGILA_ALERT_BLOCK"
WEBHOOK_TIMEOUT_SECONDS = 10


def _logger():
    try:
        return get_run_logger()
    except Exception:  # outside a run (a hook runs after it)
        return get_logger("vigila.operate.notify")


def deliver(alert: dict[str, Any]) -> bool:
    """Send one alert to the configured webhook and/or notification block; True if any got it."""
    sent = False
    if url := os.environ.get(WEBHOOK_ENV):
        try:
            httpx.post(url, json=notify.webhook_body(alert), timeout=WEBHOOK_TIMEOUT_SECONDS).raise_for_status()
            sent = True
        except httpx.HTTPError as exc:  # never log the URL: it may carry a token
            vlog.event("alert_undelivered", level=logging.WARNING, name=alert["event"], source=alert["payload"]["source"],
                       route="webhook", setting=WEBHOOK_ENV, error=type(exc).__name__)
    if name := os.environ.get(BLOCK_ENV):
        try:
            from prefect.blocks.core import Block

            Block.load(name).notify(body=json.dumps(notify.webhook_body(alert)), subject=alert["text"])
            sent = True
        except Exception as exc:
            vlog.event("alert_undelivered", level=logging.WARNING, name=alert["event"], source=alert["payload"]["source"],
                       route="block", block=name, error=type(exc).__name__)
    return sent


def send(alert: dict[str, Any], related: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Emit the event, deliver it, log `event=alert`; the alert gets `event_id` and `delivered`."""
    event = emit(alert, related)
    alert["event_id"] = str(event.id) if event else None
    alert["delivered"] = deliver(alert)
    vlog.event("alert", name=alert["event"], source=alert["payload"]["source"], flow=alert["payload"].get("flow"),
               state=alert["payload"].get("state"), event_id=alert["event_id"],
               delivered=alert["delivered"], flow_run=alert["payload"].get("flow_run_name"),
               overdue_since=alert["payload"].get("overdue_since"), weeks_missing=alert["payload"].get("weeks_missing"))
    return alert


def emit(alert: dict[str, Any], related: list[dict[str, str]] | None = None):
    """Emit the alert as a Prefect event (returns the Event, or None when events are off)."""
    return emit_event(event=alert["event"], resource=alert["resource"], payload=alert["payload"], related=related)


_hook = threading.local()   # set while a failure alert is being sent: a hook never nests in another


def alert_failed_run(flow, flow_run, state) -> None:
    """`on_failure` / `on_crashed` hook of every Vigila flow: emit and deliver `vigila.ingest.failed`
    (an ingest_source run: the alert names its source) or `vigila.run.failed` (any other flow: its name,
    run name, parameters and error). It only emits and POSTs (no flow runs from here), and a hook
    entered while another is sending (e.g. a notification block running a flow that fails) logs instead
    of alerting again, so a failing `check_overdue` is alerted once, without a loop."""
    if getattr(_hook, "active", False):
        _logger().warning("failure alert of %s not sent: raised while sending another failure alert", flow_run.name)
        return
    _hook.active = True
    try:
        params = dict(flow_run.parameters or {})
        kind = state.name or str(state.type.value).title()
        if flow.name == "ingest_source":
            path = params.get("source_path", "unknown")
            try:
                source = load_source(path)
                source_id, country = source.id, source.country
            except Exception:  # the config itself is broken: that is the error reported
                source_id, country = Path(str(path)).stem, None
            alert = notify.failed_alert(source_id, country, flow_run.name, flow_run.id, state.message, state=kind)
            try:   # `vigila status` shows the failed run as the source's last run (a rejected run stays rejected)
                storage = Storage.open(params.get("warehouse", "warehouse"))
                last = completeness.last_run(storage, source_id) or {}
                if last.get("status") == "rejected" and str(last.get("run_id") or "").startswith(str(flow_run.id)):
                    completeness.record_run(storage, source_id, run_id=last["run_id"], status="rejected",
                                            error=last.get("error"), flow_run=flow_run.name, lost=last.get("lost"),
                                            counts={w: last[w] for w in ("rows", "cases", "deaths") if w in last})
                else:
                    completeness.record_run(storage, source_id, run_id=str(flow_run.id), status=kind.lower(),
                                            error=state.message, flow_run=flow_run.name)
            except Exception as exc:
                _logger().warning("last run of %s not recorded: %s: %s", source_id, type(exc).__name__, exc)
        else:
            alert = notify.run_failed_alert(flow.name, flow_run.name, flow_run.id, params, state.message, state=kind)
        related = [{"prefect.resource.id": f"prefect.flow-run.{flow_run.id}", "prefect.resource.role": "flow-run",
                    "prefect.resource.name": flow_run.name or ""}]
        with vlog.to_logger(_logger()):
            send(alert, related)
    except Exception as exc:  # a hook must never hide the run's own failure
        _logger().warning("failure alert not sent: %s: %s", type(exc).__name__, exc)
    finally:
        _hook.active = False


def failure_hooks() -> dict[str, list]:
    """`@flow(..., **failure_hooks())`: `alert_failed_run` on failure and on crash (fresh lists per flow)."""
    return {"on_failure": [alert_failed_run], "on_crashed": [alert_failed_run]}


def _routes() -> bool:
    """Whether any delivery route is configured (without one, an emitted event is all there is)."""
    return bool(os.environ.get(WEBHOOK_ENV) or os.environ.get(BLOCK_ENV))


def _overdue_run_name() -> str:
    """`overdue-<UTC date>T<HH:MM>` of the check (its `today` parameter when given, else now)."""
    given = current_run.parameters.get("today")
    try:
        when = dt.datetime.fromisoformat(given) if isinstance(given, str) else given
    except ValueError:
        when = None
    if isinstance(when, dt.datetime) and when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    elif isinstance(when, dt.date) and not isinstance(when, dt.datetime):
        when = dt.datetime.combine(when, dt.time())
    return f"overdue-{(when or dt.datetime.now(dt.UTC)):%Y-%m-%dT%H:%M}"


def alert_overdue(storage: Storage, alert: dict[str, Any]) -> bool:
    """Send one overdue alert unless its episode (`overdue_since`) was already alerted; True if sent.
    Remembered once delivered (or emitted, with no delivery route): an undelivered one is retried next check."""
    source = alert["payload"]["source"]
    with storage.lock(f"state/alerts/.{source}.lock"):
        if seen := notify.already_alerted(storage, alert):
            vlog.event("alert_skipped", name=alert["event"], source=source, reason="already_alerted",
                       overdue_since=seen.get("overdue_since"), alerted_at=seen.get("alerted_at"),
                       event_id=seen.get("event_id"))
            return False
        send(alert)
        if alert["delivered"] or not _routes():
            notify.remember_alerted(storage, alert, dt.datetime.now(dt.UTC))
    return True


@flow(name="check_overdue", flow_run_name=_overdue_run_name, log_prints=True, **failure_hooks())
def check_overdue(warehouse: str = "warehouse", sources_dir: str = "sources", today: dt.datetime | None = None,
                  weeks: int = 12) -> list[dict[str, Any]]:
    """Emit `vigila.source.overdue` (and deliver it) for every source of `sources_dir` (a folder of
    `*.yaml`/`*.yml` configs, or one YAML) that became overdue since the last alert of it, by
    `vigila.ingest.completeness.status` as of `today` (now); returns the alerts sent this run."""
    paths = source_paths(sources_dir)
    with vlog.to_logger(get_run_logger()), vlog.stage("check_overdue", sources=len(paths)) as logged:
        rows = completeness.status(warehouse, [load_source(p) for p in paths], today=today or dt.datetime.now(dt.UTC),
                                   weeks=weeks)
        storage = Storage.open(warehouse)
        overdue = notify.overdue_alerts(rows)
        alerts = [a for a in overdue if alert_overdue(storage, a)]
        logged.update(overdue=len(overdue), alerted=len(alerts), skipped=len(overdue) - len(alerts),
                      delivered=sum(a["delivered"] for a in alerts))
    for alert in alerts:
        print(alert["text"])
    return alerts
