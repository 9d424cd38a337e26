"""Alerts to operators, the Prefect side: emit each alert of `vigila.notify` as a Prefect event
and deliver it to the operators' webhook.

Delivery (both optional, both may be set): `VIGILA_ALERT_WEBHOOK`, a URL that gets the alert as a
JSON POST (`vigila.notify.webhook_body`); `VIGILA_ALERT_BLOCK`, a saved Prefect notification block
(`<block type slug>/<name>`, e.g. `custom-webhook/ops`) whose `notify(body, subject)` is called.
A delivery failure is logged, never raised: an alert must not fail or mask the run it reports.
The events are emitted whatever the delivery, so a Prefect automation can act on them instead.

`alert_failed_run` is the `on_failure` hook of `ingest_source`; `check_overdue` is a flow.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.logging import get_logger

from vigila import completeness, notify
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
            _logger().warning("alert %s for %s not delivered to %s: %s", alert["event"],
                              alert["payload"]["source"], WEBHOOK_ENV, type(exc).__name__)
    if name := os.environ.get(BLOCK_ENV):
        try:
            from prefect.blocks.core import Block

            Block.load(name).notify(body=json.dumps(notify.webhook_body(alert)), subject=alert["text"])
            sent = True
        except Exception as exc:
            _logger().warning("alert %s for %s not delivered to block %r: %s", alert["event"],
                              alert["payload"]["source"], name, type(exc).__name__)
    return sent


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
        emit(alert, related)
        deliver(alert)
    except Exception as exc:  # a hook must never hide the run's own failure
        _logger().warning("failure alert not sent: %s: %s", type(exc).__name__, exc)


@flow(name="check_overdue", log_prints=True)
def check_overdue(warehouse: str = "warehouse", sources_dir: str = "sources", today: dt.datetime | None = None,
                  weeks: int = 12) -> list[dict[str, Any]]:
    """Emit `vigila.source.overdue` (and deliver it) for every overdue source of `sources_dir`
    (a folder of configs or one YAML), by `vigila.completeness.status` as of `today` (now)."""
    where = Path(sources_dir)
    paths = sorted(where.glob("*.yaml")) if where.is_dir() else [where]
    rows = completeness.status(warehouse, [load_source(p) for p in paths], today=today or dt.datetime.now(dt.UTC),
                               weeks=weeks)
    alerts = notify.overdue_alerts(rows)
    for alert in alerts:
        event = emit(alert)
        alert["event_id"] = str(event.id) if event else None
        alert["delivered"] = deliver(alert)
        print(alert["text"])
    return alerts
