"""Alerts to operators, the Prefect side: emit each alert of `vigila.notify` as a Prefect event
and deliver it to the operators' webhook.

Delivery (both optional, both may be set): `VIGILA_ALERT_WEBHOOK`, a URL that gets the alert as a
JSON POST (`vigila.notify.webhook_body`); `VIGILA_ALERT_BLOCK`, a saved Prefect notification block
(`<block type slug>/<name>`, e.g. `custom-webhook/ops`) whose `notify(body, subject)` is called.
A delivery failure is logged, never raised: an alert must not fail or mask the run it reports.
The events are emitted whatever the delivery, so a Prefect automation can act on them instead.

`alert_failed_run` is the `on_failure` hook of `ingest_source`; `check_overdue` is a flow (deployed
hourly by `flows/deploy.py`). Each alert logs one `vigila.log` line, `event=alert name=<event>
source=<id> delivered=true|false`; a failed delivery `event=alert_undelivered route=webhook|block`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.logging import get_logger

from vigila import completeness, notify
from vigila import log as vlog
from vigila.config import load_source

WEBHOOK_ENV = "VIGILA_ALERT_WEBHOOK"
BLOCK_ENV = "VIGILA_ALERT_BLOCK"
WEBHOOK_TIMEOUT_SECONDS = 10


def _logger():
    try:
        return get_run_logger()
    except Exception:  # outside a run (a hook runs after it)
        return get_logger("vigila.notify")


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
    vlog.event("alert", name=alert["event"], source=alert["payload"]["source"], event_id=alert["event_id"],
               delivered=alert["delivered"], flow_run=alert["payload"].get("flow_run_name"),
               overdue_since=alert["payload"].get("overdue_since"), weeks_missing=alert["payload"].get("weeks_missing"))
    return alert


def emit(alert: dict[str, Any], related: list[dict[str, str]] | None = None):
    """Emit the alert as a Prefect event (returns the Event, or None when events are off)."""
    return emit_event(event=alert["event"], resource=alert["resource"], payload=alert["payload"], related=related)


def alert_failed_run(flow, flow_run, state) -> None:
    """`on_failure` hook of `ingest_source`: emit `vigila.ingest.failed` and deliver it."""
    try:
        path = (flow_run.parameters or {}).get("source_path", "unknown")
        try:
            source = load_source(path)
            source_id, country = source.id, source.country
        except Exception:  # the config itself is broken: that is the error reported
            source_id, country = Path(str(path)).stem, None
        alert = notify.failed_alert(source_id, country, flow_run.name, flow_run.id, state.message)
        related = [{"prefect.resource.id": f"prefect.flow-run.{flow_run.id}", "prefect.resource.role": "flow-run",
                    "prefect.resource.name": flow_run.name or ""}]
        with vlog.to_logger(_logger()):
            send(alert, related)
    except Exception as exc:  # a hook must never hide the run's own failure
        _logger().warning("failure alert not sent: %s: %s", type(exc).__name__, exc)


@flow(name="check_overdue", log_prints=True)
def check_overdue(warehouse: str = "warehouse", sources_dir: str = "sources", today: dt.datetime | None = None,
                  weeks: int = 12) -> list[dict[str, Any]]:
    """Emit `vigila.source.overdue` (and deliver it) for every overdue source of `sources_dir`
    (a folder of configs or one YAML), by `vigila.completeness.status` as of `today` (now)."""
    where = Path(sources_dir)
    paths = sorted(where.glob("*.yaml")) if where.is_dir() else [where]
    with vlog.to_logger(get_run_logger()), vlog.stage("check_overdue", sources=len(paths)) as logged:
        rows = completeness.status(warehouse, [load_source(p) for p in paths], today=today or dt.datetime.now(dt.UTC),
                                   weeks=weeks)
        alerts = [send(alert) for alert in notify.overdue_alerts(rows)]
        logged.update(overdue=len(alerts), delivered=sum(a["delivered"] for a in alerts))
    for alert in alerts:
        print(alert["text"])
    return alerts
