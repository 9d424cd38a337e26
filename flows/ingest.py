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

import connectors
from connectors import Fetched, FetchError
from vigila import pipeline
from vigila.config import SourceConfig, load_source
from vigila.storage import Storage


def _retryable(task, task_run, state) -> bool:
    """Retry a fetch unless the connector said trying again cannot help (401, 404, a missing secret...)."""
    exc = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(exc, FetchError) or exc.retryable


@task(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_retryable, cache_policy=NO_CACHE)
def fetch(location: str, source: SourceConfig | None = None, state: dict | None = None) -> list[Fetched]:
    return connectors.fetch(location, source=source, state=state)


@task(cache_policy=NO_CACHE)
def land(warehouse: str, source: SourceConfig, path: str, origin: str | None = None) -> pipeline.Landed:
    return pipeline.land(Storage.open(warehouse), source, path, origin=origin)


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
    kind = connectors.connector_for(where).kind
    state = {} if force else pipeline.load_fetch_state(Storage.open(warehouse), source.id, kind)
    reports = []
    fetched = fetch(where, source, state)
    try:
        for i, got in enumerate(fetched):
            run_id = f"{flow_run.id or pipeline.new_run_id()}-{i}"
            if got.not_modified:
                reports.append(pipeline.not_modified_report(source, got.origin, state, run_id))
                continue
            path = str(got.path)
            landed = land(warehouse, source, path, got.origin)
            if landed.already_ingested and not force:
                reports.append(pipeline.unchanged_report(source, landed, run_id))
            else:
                with tempfile.TemporaryDirectory(prefix="vigila-flow-") as tmp:
                    staged = process(path, source, run_id, landed.sha256, pipeline.resolve_issue_date(source, issue_date), tmp)
                    reports.append(publish(warehouse, source, landed, staged, run_id))
            # only now that these bytes are published may a 304 stand for them
            pipeline.save_fetch_state(Storage.open(warehouse), source.id, kind, got.origin, got.validators,
                                      {"sha256": landed.sha256, "key": landed.key, "original_name": landed.original_name})
    finally:
        for got in fetched:
            got.discard()
    return reports
