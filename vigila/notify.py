"""Alerts to operators: the Prefect events and webhook messages of a failed ingest run and of an
overdue source. Pure (no Prefect, no network): `flows/notify.py` emits and delivers them.

An alert is a dict: `event` (name), `resource` (Prefect resource labels, id `vigila.source.<id>`),
`payload` (what happened; the webhook JSON body is the payload plus `event` and `text`) and
`text` (one line for people). Error messages are the exceptions' own: the connectors already
redact secrets from theirs.
"""

from __future__ import annotations

from typing import Any

FAILED = "vigila.ingest.failed"
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
                 error: str | None) -> dict[str, Any]:
    """`vigila.ingest.failed`: one ingest_source run of `source_id` failed with `error`."""
    err = error_text(error)
    payload = {"source": source_id, "country": country, "flow_run_name": flow_run_name,
               "flow_run_id": str(flow_run_id) if flow_run_id else None, "error": err}
    return {"event": FAILED, "resource": resource(source_id), "payload": payload,
            "text": f"Vigila: ingest of {source_id} failed (run {flow_run_name or flow_run_id}): {err}"}


def overdue_alerts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`vigila.source.overdue`, one per overdue source among `vigila.completeness.status` rows."""
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
                               f"({r.get('weeks_missing')} week(s) missing; last published {r.get('last_week_published')})"})
    return alerts


def webhook_body(alert: dict[str, Any]) -> dict[str, Any]:
    """The JSON POSTed to the webhook: the event name, the one-line text and the payload."""
    return {"event": alert["event"], "text": alert["text"], **alert["payload"]}
