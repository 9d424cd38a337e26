"""Prefect flow `ingest_source`: fetch -> land -> process -> publish for one source config.

Input: a source YAML path and a warehouse root; output: one data-quality report per file.
Thin on purpose: every step is a function of `vigila.ingest.pipeline`; only fetching retries (with
backoff, jitter and a timeout). Publishing holds the Prefect global concurrency limit
`publish-<source id>` (one slot, created on first use), so two runs of one source never publish at
once: the second waits up to `PUBLISH_WAIT_SECONDS`, then fails naming the source. Each run
leaves artifacts: the data-quality summary (markdown), the checks table and the quarantine link,
and logs one `vigila.operate.log` line per stage (fetch, land, parse, harmonise, validate, publish), one
per report (`event=report`) and one for the run (`event=ingest`) through the Prefect run logger.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run

import connectors
from connectors import Fetched, FetchError
from vigila.operate import artifacts
from vigila.ingest import completeness
from vigila.ingest import pipeline
from vigila.detect import scale
from vigila.operate import log as vlog
from vigila.config import SourceConfig, load_source
from vigila.ingest.readers import ReadError
from vigila.warehouse.storage import Storage

from flows.notify import failure_hooks


def _retryable(task, task_run, state) -> bool:
    """Retry a fetch unless the connector said trying again cannot help (401, 404, a missing secret...)."""
    exc = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(exc, FetchError) or exc.retryable


FETCH_TIMEOUT_SECONDS = 1800      # one try of a fetch (a whole download); then it is retried
PUBLISH_WAIT_SECONDS = 3600       # how long a run waits for another run of the same source to publish


class PublishBusy(RuntimeError):
    """Another run of the same source held the publish slot for longer than we could wait."""


@task(retries=3, retry_delay_seconds=[2, 10, 30], retry_jitter_factor=0.5, timeout_seconds=FETCH_TIMEOUT_SECONDS,
      retry_condition_fn=_retryable, cache_policy=NO_CACHE)
def fetch(location: str, source: SourceConfig | None = None, state: dict | None = None) -> list[Fetched]:
    with vlog.to_logger(get_run_logger()):
        return pipeline.fetch(location, source, state)


@task(cache_policy=NO_CACHE)
def land(warehouse: str, source: SourceConfig, path: str, origin: str | None = None) -> pipeline.Landed:
    with vlog.to_logger(get_run_logger()):
        return pipeline.land(Storage.open(warehouse), source, path, origin=origin)


@task(cache_policy=NO_CACHE)
def process(path: str, source: SourceConfig, run_id: str, sha: str, issue_date: dt.date, workdir: str) -> pipeline.Processed:
    with vlog.to_logger(get_run_logger()):
        return pipeline.process(path, source, run_id=run_id, file_sha256=sha, issue_date=issue_date, workdir=Path(workdir))


def publish_limit(source_id: str) -> str:
    """Name of the global concurrency limit serialising the publishes of one source; created with
    one slot if missing (an operator may create it beforehand, e.g. `prefect gcl create`)."""
    return publish_limit_named(f"publish-{source_id}")


def publish_limit_named(name: str) -> str:
    """The global concurrency limit NAME, created with one slot if missing."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass  # created meanwhile by the other run
    return name


@task(cache_policy=NO_CACHE)
def publish(warehouse: str, source: SourceConfig, landed: pipeline.Landed, processed: pipeline.Processed, run_id: str,
            wait_seconds: float | None = None) -> dict:
    limit = publish_limit(source.id)
    # and one lease per cases_weekly partition the file touches: two sources of one country x disease (e.g. a
    # regional national series and a ministry's line list) publishing at once would each rebuild the partition
    # from the revisions it read before the other's commit. All leases are taken in one call (no deadlock).
    parts = [publish_limit_named(scale.partition_lease(*p)) for p in scale.staged_partitions(processed.harmonised)] \
        if not processed.report.get("rejected_because") else []
    wait_seconds = PUBLISH_WAIT_SECONDS if wait_seconds is None else wait_seconds
    try:
        # strict: a missing limit would otherwise not limit anything
        with concurrency([limit, *parts], occupy=1, timeout_seconds=wait_seconds, lease_duration=60, strict=True), \
                vlog.to_logger(get_run_logger()):
            return pipeline.publish_run(Storage.open(warehouse), source, landed, processed, run_id)
    except TimeoutError as exc:
        raise PublishBusy(f"{source.id}: another run is still publishing this source (Prefect concurrency limit "
                          f"{limit!r} busy for {wait_seconds:g} s); nothing was published by this run") from exc


def _run_name() -> str:
    """`ingest-<source id>-<epi year>-W<epi week>` of the issue date (MMWR week; today when not given)."""
    params = flow_run.parameters
    try:
        given = params.get("issue_date")
        given = dt.date.fromisoformat(given) if isinstance(given, str) else given
        source = load_source(params["source_path"])
        name, day = source.id, pipeline.resolve_issue_date(source, given)
    except Exception:  # a broken config fails in the flow itself, with its own message
        name, day = Path(params["source_path"]).stem, dt.date.today()
    return f"ingest-{name}-{pipeline.epi_week_label(day)}"


def report_artifacts(warehouse: str, report: dict) -> None:
    """The run's artifacts, keyed by source: summary (markdown), checks (table), quarantine (link)."""
    source_id = report["source_id"]
    storage = Storage.open(warehouse)
    quarantine = None
    if (report.get("versions") or {}).get("quarantine") or report.get("status") == "published":
        quarantine = artifacts.quarantine_location(storage, source_id, (report.get("versions") or {}).get("quarantine"))
    key = artifacts.artifact_key("ingest", source_id)
    create_markdown_artifact(artifacts.report_markdown(report, quarantine), key=key,
                             description=f"{source_id}: data-quality report of run {report.get('run_id')}")
    create_table_artifact(artifacts.report_table(report), key=f"{key}-checks",
                          description=f"{source_id}: rows per failed check, and totals")
    if quarantine:
        link = quarantine if quarantine.startswith("s3://") else Path(quarantine).as_uri()
        create_link_artifact(link, link_text=quarantine, key=f"{key}-quarantine",
                             description=f"{source_id}: quarantine records of this source (current version)")


@task(cache_policy=NO_CACHE)
def update_reporting(warehouse: str, source: SourceConfig) -> str:
    """This source's weeks in the `reporting` dataset (completeness and timeliness), as of now."""
    with vlog.to_logger(get_run_logger()), vlog.stage("reporting", source=source.id) as logged:
        logged["version"] = completeness.publish_completeness(Storage.open(warehouse), [source], dt.datetime.now(dt.UTC)).version
    return logged["version"]


def log_report(report: dict, epi_week: str) -> None:
    """One `event=report` line per report: what this file added (or why it added nothing)."""
    vlog.event("report", source=report["source_id"], epi_week=epi_week, run_id=report.get("run_id"),
               status=report.get("status"), rows=report.get("rows_read"), quarantined=report.get("rows_quarantined"),
               cases=(report.get("cases") or {}).get("read"), cases_quarantined=(report.get("cases") or {}).get("quarantined"),
               harmonised=report.get("harmonised_rows"), revisions=report.get("revisions_added"),
               file=(report.get("file") or {}).get("original_name"))


@flow(name="ingest_source", flow_run_name=_run_name, log_prints=True, **failure_hooks())
def ingest_source(source_path: str, warehouse: str = "warehouse", location: str | None = None,
                  issue_date: dt.date | None = None, force: bool = False, cluster: str | None = None) -> list[dict]:
    """`cluster` (else `VIGILA_DASK_ADDRESS`): a Dask scheduler address; the source's steps then run as one
    task on a worker of that cluster (`flows.cluster`). Without one, in this process as always."""
    if scale.cluster_address(cluster):
        from flows.cluster import run_sources_on_cluster

        return run_sources_on_cluster([source_path], warehouse, issue_date, force, cluster, location=location)[0]
    return run_source(source_path, warehouse, location, issue_date, force)


def run_source(source_path: str, warehouse: str, location: str | None = None, issue_date: dt.date | None = None,
               force: bool = False) -> list[dict]:
    """The `ingest_source` flow's work (its tasks, the run record), in a flow run or inside a task."""
    source = load_source(source_path)
    week = pipeline.epi_week_label(pipeline.resolve_issue_date(source, issue_date))
    with vlog.to_logger(get_run_logger()), vlog.stage("ingest", source=source.id, epi_week=week,
                                                      flow_run=flow_run.name) as logged:
        reports = _ingest(source_path, source, warehouse, location, issue_date, force, week)
        if reports:   # a failure is recorded by the failure hook (flows/notify.py)
            last = reports[-1]
            completeness.record_run(Storage.open(warehouse), source.id, run_id=last.get("run_id"), status=last["status"],
                                    flow_run=flow_run.name, lost=completeness.lost_share(last),
                                    counts={w: last[w] for w in ("rows", "cases", "deaths") if w in last})
        logged.update(files=len(reports), published=sum(r["status"] == "published" for r in reports),
                      rows=sum(r.get("harmonised_rows", 0) for r in reports))
    return reports


def _ingest(source_path: str, source: SourceConfig, warehouse: str, location: str | None, issue_date: dt.date | None,
            force: bool, week: str) -> list[dict]:
    """The flow's steps (tasks), file by file; then this source's weeks in `reporting`."""
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
                log_report(reports[-1], week)
                report_artifacts(warehouse, reports[-1])
                continue
            path = str(got.path)
            landed = land(warehouse, source, path, got.origin)
            if landed.already_ingested and not force:
                reports.append(pipeline.unchanged_report(source, landed, run_id))
            else:
                with tempfile.TemporaryDirectory(prefix="vigila-flow-") as tmp:
                    try:
                        staged = process(path, source, run_id, landed.sha256, pipeline.resolve_issue_date(source, issue_date), tmp)
                    except ReadError as e:           # the data team's report says why; the run still fails
                        rejected = pipeline.reject(Storage.open(warehouse), source, landed, run_id, e)
                        log_report(rejected, week)
                        report_artifacts(warehouse, rejected)
                        raise
                    reports.append(publish(warehouse, source, landed, staged, run_id))
            log_report(reports[-1], week)
            report_artifacts(warehouse, reports[-1])
            if reports[-1]["status"] != "rejected":   # only bytes now published may a 304 stand for
                pipeline.save_fetch_state(Storage.open(warehouse), source.id, kind, got.origin, got.validators,
                                          {"sha256": landed.sha256, "key": landed.key, "original_name": landed.original_name})
    finally:
        for got in fetched:
            got.discard()
    update_reporting(warehouse, source)
    rejected = [r for r in reports if r["status"] == "rejected"]
    if rejected:      # the run fails (operator alert) once every file was tried; reports and quarantine kept
        raise pipeline.RunRejected(rejected[0])
    return reports
