"""Prefect flow `regional_summary`: reconcile reporters -> endemic channels -> weekly summary -> bulletin.

Input: a warehouse root with published cases_weekly (and reporting) and optional config YAMLs layered
over vigila/{reconciliation,endemic,summary,detection}.yaml; output: the run summary (dict). Thin: the work is in
`vigila.regional.reconcile` and `vigila.regional.regional`. Each step logs one `vigila.operate.log` line (`event=reconcile|endemic|
summary|bulletin`, with version, rows, epi_week) and the run `event=regional_summary`, through the Prefect run logger.
"""

from __future__ import annotations

import datetime as dt

from collections.abc import Callable

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from vigila.detect import alerts
from vigila.regional import endemic, reconcile, regional, summary
from vigila.operate import log as vlog
from vigila.ingest.pipeline import new_run_id

from flows.notify import failure_hooks


def logged(name: str, step: Callable[[], dict]) -> dict:
    """Run STEP as the `vigila.operate.log` stage NAME: its result's status, version, rows and epi week logged."""
    with vlog.to_logger(get_run_logger()), vlog.stage(name) as fields:
        result = step()
        week = f"{result['epi_year']}-W{result['epi_week']:02d}" if result.get("epi_week") else None
        fields.update(result=result.get("status"), version=result.get("version"), rows=result.get("rows"),
                      epi_week=week, signals=result.get("signals"))
    return result


@task(cache_policy=NO_CACHE)
def reconcile_reporters(warehouse: str, config_path: str | None, run_id: str, force: bool) -> dict:
    return logged("reconcile", lambda: reconcile.run_reconciliation(warehouse, reconcile.load_config(config_path),
                                                                    run_id=run_id, force=force))


@task(cache_policy=NO_CACHE)
def endemic_channels(warehouse: str, config_path: str | None, run_id: str, force: bool) -> dict:
    return logged("endemic", lambda: regional.run_endemic(warehouse, endemic.load_config(config_path), run_id=run_id,
                                                          force=force))


@task(cache_policy=NO_CACHE)
def weekly_summary(warehouse: str, config_path: str | None, detection_path: str | None, run_id: str, force: bool) -> dict:
    return logged("summary", lambda: regional.run_summary(warehouse, summary.load_config(config_path), run_id=run_id,
                                                          detection=alerts.load_config(detection_path), force=force))


@task(cache_policy=NO_CACHE)
def weekly_bulletin(warehouse: str, config_path: str | None) -> dict:
    return logged("bulletin", lambda: regional.write_bulletin(warehouse, config=summary.load_config(config_path)))


@flow(name="regional_summary", flow_run_name=lambda: f"regional-{dt.date.today():%G-W%V}", log_prints=True,
      **failure_hooks())
def regional_summary(warehouse: str = "warehouse", reconciliation_path: str | None = None, endemic_path: str | None = None,
                     summary_path: str | None = None, detection_path: str | None = None, force: bool = False) -> dict:
    for load, path in ((reconcile.load_config, reconciliation_path), (endemic.load_config, endemic_path),
                       (summary.load_config, summary_path), (alerts.load_config, detection_path)):
        load(path)                               # fail fast on a broken config, before reading any data
    run_id = str(flow_run.id or new_run_id())
    with vlog.to_logger(get_run_logger()), vlog.stage("regional_summary", force=force) as fields:
        result = {"reconciliation": reconcile_reporters(warehouse, reconciliation_path, run_id, force),
                  "endemic_channel": endemic_channels(warehouse, endemic_path, run_id, force),
                  "weekly_summary": weekly_summary(warehouse, summary_path, detection_path, run_id, force)}
        result["bulletin"] = weekly_bulletin(warehouse, summary_path)
        fields.update(epi_week=f"{result['bulletin']['epi_year']}-W{result['bulletin']['epi_week']:02d}",
                      signals=result["bulletin"].get("signals"))
    create_markdown_artifact(regional.run_markdown(result), key="regional-summary",
                             description=f"weekly summary {result['weekly_summary']['version']} and bulletin")
    b = result["bulletin"]
    print(f"bulletin {b['epi_year']}-W{b['epi_week']:02d}: {b['signals']} signals -> {b['uri']}")
    return result
