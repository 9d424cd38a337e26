"""Prefect flow `ingest_source`: fetch -> land -> process -> publish for one source config.

Input: a source YAML path and a warehouse root; output: one data-quality report per file.
Thin on purpose: every step is a function of `vigila.pipeline`; only fetching retries.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from connectors import connector_for
from vigila import pipeline
from vigila.config import SourceConfig, load_source
from vigila.storage import Storage


@task(retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def fetch(location: str) -> list[str]:
    return [str(f.path) for f in connector_for(location).fetch(location)]


@task(cache_policy=NO_CACHE)
def land(warehouse: str, source: SourceConfig, path: str) -> pipeline.Landed:
    return pipeline.land(Storage.open(warehouse), source, path)


@task(cache_policy=NO_CACHE)
def process(path: str, source: SourceConfig, run_id: str, sha: str, issue_date: dt.date, workdir: str) -> pipeline.Processed:
    return pipeline.process(path, source, run_id=run_id, file_sha256=sha, issue_date=issue_date, workdir=Path(workdir))


@task(cache_policy=NO_CACHE)
def publish(warehouse: str, source: SourceConfig, landed: pipeline.Landed, processed: pipeline.Processed, run_id: str) -> dict:
    return pipeline.publish_run(Storage.open(warehouse), source, landed, processed, run_id)


def _run_name() -> str:
    return f"ingest-{Path(flow_run.parameters['source_path']).stem}-{dt.date.today():%G-W%V}"


@flow(name="ingest_source", flow_run_name=_run_name, log_prints=True)
def ingest_source(source_path: str, warehouse: str = "warehouse", location: str | None = None,
                  issue_date: dt.date | None = None, force: bool = False) -> list[dict]:
    source = load_source(source_path)
    where = location or source.location
    if not where:
        raise ValueError(f"{source_path}: no `location` in the config and none given")
    reports = []
    for i, path in enumerate(fetch(where)):
        run_id = f"{flow_run.id or pipeline.new_run_id()}-{i}"
        landed = land(warehouse, source, path)
        if landed.already_ingested and not force:
            reports.append(pipeline.unchanged_report(source, landed, run_id))
            continue
        with tempfile.TemporaryDirectory(prefix="vigila-flow-") as tmp:
            staged = process(path, source, run_id, landed.sha256, pipeline.resolve_issue_date(source, issue_date), tmp)
            reports.append(publish(warehouse, source, landed, staged, run_id))
    return reports
