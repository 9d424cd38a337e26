"""Prefect flow `detect_alerts`: the configured detection methods on the published cases_weekly -> `alerts`.

Input: a warehouse root and an optional detection YAML (layered over vigila/detect/detection.yaml);
output: the run summary (dict). Thin on purpose: the work is `vigila.detect.scale.run_blocks` (the series in
blocks, one after the other, then one streamed publish: `alerts.run_detection`'s answer in one block's memory),
or, given a Dask cluster, the same blocks on its workers (`flows.cluster`).
Logs one `vigila.operate.log` line per method and block (`event=detect method=... block=...`) and one for the run
(`event=detect_alerts`) through the Prefect run logger.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from vigila.detect import alerts, scale
from vigila.operate import artifacts
from vigila.operate import log as vlog
from vigila.ingest.pipeline import new_run_id

from flows.notify import failure_hooks


@task(cache_policy=NO_CACHE)
def check_config(config_path: str | None) -> None:
    alerts.load_config(config_path)  # fail fast, naming the file and line, before reading any data


@task(cache_policy=NO_CACHE)
def detect(warehouse: str, config_path: str | None, run_id: str, as_of: dt.date | None, force: bool) -> dict:
    with vlog.to_logger(get_run_logger()):
        return scale.run_blocks(warehouse, alerts.load_config(config_path), run_id=run_id, as_of=as_of, force=force)


@flow(name="detect_alerts", flow_run_name=lambda: f"detect-{dt.date.today():%G-W%V}", log_prints=True,
      **failure_hooks())
def detect_alerts(warehouse: str = "warehouse", config_path: str | None = None, as_of: dt.date | None = None,
                  force: bool = False, cluster: str | None = None, block_series: int = scale.BLOCK_SERIES) -> dict:
    """`cluster` (else `VIGILA_DASK_ADDRESS`): a Dask scheduler address; detection then runs by blocks of
    series on its workers (`flows.cluster.detect_on_cluster`, `block_series` series a task) and publishes the
    same `alerts`."""
    check_config(config_path)
    address = scale.cluster_address(cluster)
    with vlog.to_logger(get_run_logger()), vlog.stage("detect_alerts", as_of=as_of, force=force, cluster=address) as logged:
        run_id = str(flow_run.id or new_run_id())
        if address:
            from flows.cluster import detect_on_cluster

            summary = detect_on_cluster(warehouse, config_path, run_id, as_of, force, address, block_series)
        else:
            summary = detect(warehouse, config_path, run_id, as_of, force)
        logged.update(status=summary["status"], version=summary["version"], series=summary["series"],
                      rows=summary["rows"], alarms=sum(summary["alarms"].values()))
    create_table_artifact(artifacts.detect_table(summary), key="detect-alarms",
                          description=f"alerts {summary.get('version')}: alarms per method")
    print(f"alerts {summary['version']} ({summary['status']}): {summary['series']} series, alarms {summary['alarms']}")
    return summary
