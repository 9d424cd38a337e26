"""Alerts to operators: the Prefect events and webhook messages of a failed or crashed flow run and
of an overdue source, and which overdue episodes were already alerted (`state/alerts/<source>.json`
in the warehouse). No Prefect, no network: `flows/notify.py` emits and delivers them.

An alert is a dict: `event` (name), `resource` (Prefect resource labels, id `vigila.source.<id>`, or
`vigila.flow.<flow name>` for a run of a flow that is not about one source), `payload` (what happened;
the webhook JSON body is the payload plus `event` and `text`) and `text` (one line for people).
Error messages are the exceptions' own: the connectors already redact secrets from theirs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

FAILED = "vigila.ingest.failed"      # an ingest_source run failed or crashed (resource: the source)
RUN_FAILED = "vigila.run.failed"     # a run of another flow (detect_alerts, regional_summary, check_overdue)
OVERDUE = "vigila.source.overdue"
MAX_ERROR_CHARS = 1000
_PREFIX = "Flow run encountered an exception. "


def resource(source_id: str) -> dict[str, str]:
    return {"prefect.resource.id": f"vigila.source.{source_id}", "prefect.resource.name": source_id}


def error_text(message: str | None) -> str:
    """A failed state's message as one short line: Prefect's generic prefix dropped, truncated."""
    text = " ".join(str(message or "unknown error").split())
    for prefix in (_PREFIX, _PREFIX.rstrip(". ") + ": "):
        text = text.removeprefix(prefix)
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def failed_alert(source_id: str, country: str | None, flow_run_name: str | None, flow_run_id: str | None,
                 error: str | None, state: str = "Failed") -> dict[str, Any]:
    """`vigila.ingest.failed`: one ingest_source run of `source_id` failed (or crashed) with `error`."""
    err = error_text(error)
    payload = {"source": source_id, "country": country, "flow": "ingest_source", "flow_run_name": flow_run_name,
               "flow_run_id": str(flow_run_id) if flow_run_id else None, "state": state, "error": err}
    verb = "crashed" if state == "Crashed" else "failed"
    return {"event": FAILED, "resource": resource(source_id), "payload": payload,
            "text": f"Vigila: ingest of {source_id} {verb} (run {flow_run_name or flow_run_id}): {err}"}


def run_failed_alert(flow_name: str, flow_run_name: str | None, flow_run_id: str | None,
                     parameters: dict[str, Any] | None, error: str | None, state: str = "Failed") -> dict[str, Any]:
    """`vigila.run.failed`: one run of flow `flow_name` (not an ingest) failed or crashed with `error`;
    the payload carries its parameters (as text: paths, dates, flags)."""
    err = error_text(error)
    params = {k: None if v is None else str(v) for k, v in (parameters or {}).items()}
    payload = {"source": None, "flow": flow_name, "flow_run_name": flow_run_name,
               "flow_run_id": str(flow_run_id) if flow_run_id else None, "parameters": params, "state": state,
               "error": err}
    verb = "crashed" if state == "Crashed" else "failed"
    return {"event": RUN_FAILED,
            "resource": {"prefect.resource.id": f"vigila.flow.{flow_name}", "prefect.resource.name": flow_name},
            "payload": payload, "text": f"Vigila: {flow_name} {verb} (run {flow_run_name or flow_run_id}): {err}"}


def overdue_alerts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`vigila.source.overdue`, one per overdue source among `vigila.ingest.completeness.status` rows."""
    alerts = []
    for r in rows:
        if not r.get("overdue"):
            continue
        run = r.get("last_run") or {}
        payload = {"source": r["source"], "country": r.get("country"), "overdue_since": r.get("overdue_since"),
                   "weeks_missing": r.get("weeks_missing"), "last_week_published": r.get("last_week_published"),
                   "completeness_pct": r.get("completeness_pct"), "deadline": r.get("deadline"),
                   "timezone": r.get("timezone"), "last_run_status": run.get("status"), "last_run_at": run.get("at")}
        alerts.append({"event": OVERDUE, "resource": resource(r["source"]), "payload": payload,
                       "text": f"Vigila: {r['source']} is overdue since {r.get('overdue_since')} "
                               f"({r.get('weeks_missing')} week(s) missing; "
                               + (f"last published {r['last_week_published']})" if r.get("last_week_published")
                                  else "never published)")})
    return alerts


def webhook_body(alert: dict[str, Any]) -> dict[str, Any]:
    """The JSON POSTed to the webhook: the event name, the one-line text and the payload."""
    return {"event": alert["event"], "text": alert["text"], **alert["payload"]}


def alert_state_key(source_id: str) -> str:
    """Where the overdue episode last alerted for a source is kept in the warehouse."""
    return f"state/alerts/{source_id}.json"


def already_alerted(storage, alert: dict[str, Any]) -> dict[str, Any] | None:
    """The stored record if this overdue alert's episode (`overdue_since`) was already alerted, else None."""
    key = alert_state_key(alert["payload"]["source"])
    if not storage.exists(key):
        return None
    seen = storage.read_json(key)
    return seen if seen.get("overdue_since") == alert["payload"].get("overdue_since") else None


def remember_alerted(storage, alert: dict[str, Any], now: dt.datetime) -> None:
    """Record that this overdue episode was alerted (so the next checks skip it until a new one starts)."""
    storage.write_json(alert_state_key(alert["payload"]["source"]),
                       {"source": alert["payload"]["source"], "overdue_since": alert["payload"].get("overdue_since"),
                        "alerted_at": now.isoformat(), "event_id": alert.get("event_id"),
                        "delivered": alert.get("delivered")})
