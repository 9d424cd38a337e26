"""Flows on a Dask cluster through prefect-dask: many sources in one run, detection by blocks of series.

Input: a Dask scheduler address (a `cluster` parameter, `--cluster`, or `VIGILA_DASK_ADDRESS`), source YAML
paths / a warehouse root (local for one machine, `s3://` for many); output: the same reports and datasets as
the one-process flows. Each source is one task (`ingest_source`'s own steps and leases, run on a worker);
detection is a plan (key columns only), one task per block of series on the workers (each reads its
partitions of the pinned input from the warehouse and writes its block's rows there), then one atomic publish.
Without an address nothing here is imported: `distributed` loads only when a cluster is given. Each run links
the Dask dashboard in an artifact (`<flow>-dask-dashboard`).
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from vigila.detect import alerts, scale
from vigila.operate import artifacts
from vigila.operate import log as vlog
from vigila.ingest.pipeline import new_run_id

from flows.notify import failure_hooks

BLOCK_RETRIES = 2   # a block task whose worker died is rerun by Dask; one that raised is retried this often


@contextmanager
def task_runner(address: str | None, what: str):
    """A started task runner: prefect-dask's `DaskTaskRunner` on the cluster at ADDRESS (its dashboard linked
    as the artifact `<what>-dask-dashboard`), else a one-thread runner (this process, one task at a time)."""
    if address is None:
        from prefect.task_runners import ThreadPoolTaskRunner

        with ThreadPoolTaskRunner(max_workers=1) as runner:
            yield runner
        return
    from prefect_dask import DaskTaskRunner

    with DaskTaskRunner(address=address) as runner:
        link = dashboard_link(runner)
        if link:
            create_link_artifact(link, link_text=f"Dask dashboard ({address})", key=artifacts.artifact_key(what, "dask-dashboard"),
                                 description=f"{what}: the Dask cluster this run's tasks ran on")
        yield runner


def absolute(warehouse: str) -> str:
    """A local warehouse as an absolute path (workers start elsewhere); s3:// URLs unchanged."""
    from pathlib import Path

    return warehouse if "://" in warehouse else str(Path(warehouse).expanduser().resolve())


def dashboard_link(runner) -> str | None:
    """The scheduler's dashboard URL (None when it serves none)."""
    try:
        return runner.client.dashboard_link
    except (KeyError, AttributeError):
        return None


# --------------------------------------------------------------------------- ingest


@task(cache_policy=NO_CACHE, task_run_name="ingest-{source_path}")
def ingest_one(source_path: str, warehouse: str, issue_date: dt.date | None, force: bool,
               location: str | None = None) -> list[dict]:
    """One source's whole `ingest_source` (fetch, land, process, publish under its leases, run record) on a worker."""
    from flows.ingest import run_source

    return run_source(source_path, warehouse, location, issue_date, force)


def run_sources_on_cluster(source_paths: list[str], warehouse: str, issue_date: dt.date | None, force: bool,
                           cluster: str | None, *, location: str | None = None) -> list[list[dict]]:
    """Every source as one task (on the cluster when one is given); their reports in the order given.
    All sources are tried; the first failure is then raised (the run fails, the others' publishes stand)."""
    warehouse = absolute(warehouse)
    with task_runner(scale.cluster_address(cluster), "ingest") as runner:
        futures = [runner.submit(ingest_one, {"source_path": p, "warehouse": warehouse, "issue_date": issue_date,
                                              "force": force, "location": location}) for p in source_paths]
        states = [f.wait() or f.state for f in futures]
    failed = [(p, s) for p, s in zip(source_paths, states, strict=True) if not s.is_completed()]
    if failed:
        get_run_logger().error("%d of %d sources failed: %s", len(failed), len(source_paths), ", ".join(p for p, _ in failed))
        failed[0][1].result()   # raises that source's exception
    return [s.result() for s in states]


@flow(name="ingest_sources", flow_run_name=lambda: f"ingest-{len(flow_run.parameters['source_paths'])}-sources",
      log_prints=True, **failure_hooks())
def ingest_sources(source_paths: list[str], warehouse: str = "warehouse", issue_date: dt.date | None = None,
                   force: bool = False, cluster: str | None = None) -> list[list[dict]]:
    """Many sources in one run, each a task (on the Dask cluster at `cluster` / `VIGILA_DASK_ADDRESS` when
    given); a source's publishes are serialised by its lease as in `ingest_source`."""
    with vlog.to_logger(get_run_logger()), vlog.stage("ingest_sources", sources=len(source_paths),
                                                      cluster=scale.cluster_address(cluster)) as logged:
        reports = run_sources_on_cluster(source_paths, warehouse, issue_date, force, cluster)
        logged.update(files=sum(map(len, reports)),
                      published=sum(r["status"] == "published" for rs in reports for r in rs))
    return reports


# --------------------------------------------------------------------------- detection


@task(cache_policy=NO_CACHE, retries=BLOCK_RETRIES, retry_delay_seconds=2, task_run_name="detect-block-{index}")
def detect_block(warehouse: str, config_path: str | None, plan: dict[str, Any], index: int, run_id: str) -> dict:
    with vlog.to_logger(get_run_logger()):
        return scale.detect_block(warehouse, alerts.load_config(config_path), plan, index, run_id)


def detect_on_cluster(warehouse: str, config_path: str | None, run_id: str, as_of: dt.date | None, force: bool,
                      cluster: str | None, block_series: int = scale.BLOCK_SERIES) -> dict:
    """Plan here (key columns only), one task per block on the workers, then one atomic publish here."""
    warehouse = absolute(warehouse)
    config = alerts.load_config(config_path)
    plan = scale.plan_detection(warehouse, config, as_of=as_of, force=force, block_series=block_series)
    if plan["status"] == "unchanged":
        return plan
    with task_runner(scale.cluster_address(cluster), "detect") as runner:
        futures = [runner.submit(detect_block, {"warehouse": warehouse, "config_path": config_path, "plan": plan,
                                                "index": i, "run_id": run_id}) for i in range(len(plan["blocks"]))]
        blocks = [f.result() for f in futures]   # a block that failed for good fails the run: nothing published
    create_table_artifact([{"block": i, "series": b["series"], "rows": b["rows"], "alarms": b["alarms"]}
                           for i, b in enumerate(blocks)], key="detect-blocks",
                          description=f"detection blocks of run {run_id} ({len(blocks)} blocks)")
    with vlog.stage("publish_alerts", blocks=len(blocks)) as logged:
        summary = scale.publish_blocks(warehouse, config, plan, blocks, run_id=run_id)
        logged.update(version=summary["version"], rows=summary["rows"])
    return summary
