"""One-off runs without Prefect: the steps of the `ingest_source`, `detect_alerts` and `regional_summary`
flows as plain calls, for `vigila ingest` / `vigila demo` when no Prefect API is configured.

In: a source YAML (or a warehouse) as the flows take them; out: the same reports, datasets and run records
(`reports/<source>/last_run.json`, the `reporting` dataset) as the flows, with no server to start. Flows
stay the unit of scheduled work (`vigila serve`, `vigila deploy`); `prefect_api_configured` says which path
a command takes, `cluster_address` whether the flows' tasks go to a Dask cluster (`flows/cluster.py`): both in
`vigila.operate.runtime`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from vigila.operate import log as vlog


def ingest_source(source_path: str | Path, warehouse: str = "warehouse", location: str | None = None,
                  issue_date: dt.date | None = None, force: bool = False) -> list[dict]:
    """What the `ingest_source` flow does, in this process: every report fetched, landed, checked and
    published (a rejected one raises `RunRejected` once all were tried), the run recorded as the source's
    last run and its weeks refreshed in `reporting`."""
    from vigila.ingest import completeness
    from vigila.ingest import pipeline
    from vigila.config import load_source
    from vigila.warehouse.storage import Storage

    source = load_source(source_path)
    storage = Storage.open(warehouse)
    week = pipeline.epi_week_label(pipeline.resolve_issue_date(source, issue_date))
    run_id = pipeline.new_run_id()
    with vlog.stage("ingest", source=source.id, epi_week=week, run_id=run_id) as logged:
        try:
            reports = pipeline.fetch_and_ingest(source, storage, location=location, run_id=run_id,
                                                issue_date=issue_date, force=force)
        except pipeline.RunRejected:
            _refresh_reporting(storage, source)
            raise                        # pipeline recorded the rejected run with what it lost
        except Exception as exc:
            completeness.record_run(storage, source.id, run_id=run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        if reports:
            last = reports[-1]
            completeness.record_run(storage, source.id, run_id=last.get("run_id"), status=last["status"],
                                    lost=completeness.lost_share(last),
                                    counts={w: last[w] for w in ("rows", "cases", "deaths") if w in last})
        _refresh_reporting(storage, source)
        logged.update(files=len(reports), published=sum(r["status"] == "published" for r in reports),
                      rows=sum(r.get("harmonised_rows", 0) for r in reports))
    return reports


def _refresh_reporting(storage, source) -> None:
    from vigila.ingest import completeness

    with vlog.stage("reporting", source=source.id) as logged:
        logged["version"] = completeness.publish_completeness(storage, [source], dt.datetime.now(dt.UTC)).version


def detect_alerts(warehouse: str = "warehouse", config_path: str | None = None, as_of: dt.date | None = None,
                  force: bool = False) -> dict:
    """What the `detect_alerts` flow does: the detection config's methods (vigila/detect/detection.yaml, with
    `config_path` layered over it) on cases_weekly -> `alerts`."""
    from vigila.detect import alerts, scale
    from vigila.ingest import pipeline

    with vlog.stage("detect_alerts", as_of=as_of, force=force) as logged:   # by blocks of series: bounded memory
        summary = scale.run_blocks(warehouse, alerts.load_config(config_path), run_id=pipeline.new_run_id(),
                                   as_of=as_of, force=force)
        logged.update(status=summary["status"], version=summary["version"], series=summary["series"])
    return summary


def regional_summary(warehouse: str = "warehouse") -> dict:
    """What the `regional_summary` flow does: reconcile -> endemic channels -> weekly summary -> bulletin."""
    from vigila.detect import alerts
    from vigila.regional import endemic, reconcile, regional, summary
    from vigila.ingest import pipeline

    run_id = pipeline.new_run_id()
    steps = {
        "reconciliation": ("reconcile", lambda: reconcile.run_reconciliation(warehouse, reconcile.load_config(None), run_id=run_id)),
        "endemic_channel": ("endemic", lambda: regional.run_endemic(warehouse, endemic.load_config(None), run_id=run_id)),
        "weekly_summary": ("summary", lambda: regional.run_summary(warehouse, summary.load_config(None), run_id=run_id,
                                                                   detection=alerts.load_config(None))),
        "bulletin": ("bulletin", lambda: regional.write_bulletin(warehouse, config=summary.load_config(None))),
    }
    result = {}
    for key, (name, step) in steps.items():
        with vlog.stage(name) as logged:
            result[key] = step()
            logged.update(result=result[key].get("status"), version=result[key].get("version"))
    return result
