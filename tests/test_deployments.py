"""Deployments from the source configs: built without a server, then registered on a real
`prefect server` (SQLite, free loopback port) and run by a real process worker."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from conftest import DEMO, ROOT, SOURCES
from flows.deploy import (REGIONAL_CRON, REGIONAL_NAME, DETECT_CRON, DETECT_NAME, DETECT_TIMEZONE, OVERDUE_CRON, OVERDUE_CRON_ENV, OVERDUE_NAME,
                          deployments_for, full_name)
from vigila.cli import app
from vigila.config import load_source

PAHO = "paho_opendengue_national"


def _sources_dir(tmp_path: Path) -> Path:
    """One copy of the PAHO config, its `location` made absolute, plus a config without a schedule."""
    folder = tmp_path / "sources"
    folder.mkdir()
    text = (SOURCES / f"{PAHO}.yaml").read_text()
    text = re.sub(r"^location: .*$", f"location: {DEMO / 'opendengue_paho_national_v1_3.csv.gz'}", text, flags=re.M)
    (folder / f"{PAHO}.yaml").write_text(text)
    unscheduled = (SOURCES / "per_minsa_dengue_linelist.yaml").read_text()
    unscheduled = re.sub(r"^location: .*$", f"location: {DEMO / 'peru_dengue_linelist_2019_2022.csv.gz'}", unscheduled, flags=re.M)
    unscheduled = re.sub(r"^schedule:.*(\n[ \t]+.*)*", "", unscheduled, flags=re.M)
    (folder / "per_unscheduled.yaml").write_text(unscheduled)
    assert load_source(folder / "per_unscheduled.yaml").schedule.cron is None
    return folder


def test_deployments_for_the_bundled_sources(monkeypatch):
    monkeypatch.delenv(OVERDUE_CRON_ENV, raising=False)
    deployments = deployments_for(SOURCES, "warehouse")
    by_name = {d.name: d for d in deployments}
    scheduled = [load_source(p) for p in sorted(SOURCES.glob("*.yaml"))]
    scheduled = [c for c in scheduled if c.schedule.cron]
    assert len(scheduled) >= 2
    assert set(by_name) == {c.id for c in scheduled} | {DETECT_NAME, REGIONAL_NAME, OVERDUE_NAME}
    for cfg in scheduled:
        d = by_name[cfg.id]
        assert d.flow_name == "ingest_source"
        assert d.entrypoint == "flows.ingest.ingest_source"
        [s] = d.schedules
        assert (s.schedule.cron, s.schedule.timezone) == (cfg.schedule.cron, cfg.schedule.timezone)
        assert d.tags == [f"country:{cfg.country or 'multi'}", "disease:dengue", f"reporter:{cfg.reporter.type}", f"source:{cfg.id}"]
        assert d.parameters == {"source_path": str((SOURCES / f"{cfg.id}.yaml").resolve()),
                                "warehouse": str(Path("warehouse").resolve())}
        assert d.description.startswith(cfg.description)
    per = by_name["per_minsa_dengue_linelist"]
    assert (per.schedules[0].schedule.cron, per.schedules[0].schedule.timezone) == ("0 8 * * 2", "America/Lima")
    assert per.tags[:3] == ["country:PER", "disease:dengue", "reporter:ministry"]
    detect = by_name[DETECT_NAME]
    assert detect.flow_name == "detect_alerts" and deployments[-3] is detect
    regional = by_name[REGIONAL_NAME]
    assert regional.flow_name == "regional_summary" and deployments[-2] is regional
    assert regional.entrypoint == "flows.regional.regional_summary"
    assert regional.schedules[0].schedule.cron == REGIONAL_CRON and regional.parameters == detect.parameters
    assert (detect.schedules[0].schedule.cron, detect.schedules[0].schedule.timezone) == (DETECT_CRON, DETECT_TIMEZONE)
    assert detect.parameters == {"warehouse": str(Path("warehouse").resolve())}
    overdue = by_name[OVERDUE_NAME]
    assert overdue.flow_name == "check_overdue" and deployments[-1] is overdue
    assert overdue.entrypoint == "flows.notify.check_overdue"
    assert (overdue.schedules[0].schedule.cron, overdue.schedules[0].schedule.timezone) == (OVERDUE_CRON, "UTC")
    assert overdue.parameters == {"warehouse": str(Path("warehouse").resolve()), "sources_dir": str(SOURCES.resolve())}


def test_the_overdue_check_cron_is_configurable(monkeypatch, tmp_path):
    folder = _sources_dir(tmp_path)
    monkeypatch.setenv(OVERDUE_CRON_ENV, "*/30 * * * *")
    assert deployments_for(folder)[-1].schedules[0].schedule.cron == "*/30 * * * *"
    monkeypatch.setenv(OVERDUE_CRON_ENV, "")   # empty: no check_overdue deployment
    assert [full_name(d) for d in deployments_for(folder)] == [f"ingest_source/{PAHO}", f"detect_alerts/{DETECT_NAME}",
                                                               f"regional_summary/{REGIONAL_NAME}"]
    assert deployments_for(folder, overdue="0 7 * * *")[-1].schedules[0].schedule.cron == "0 7 * * *"


def test_deployments_skip_unscheduled_sources_and_keep_uris(tmp_path, monkeypatch):
    monkeypatch.delenv(OVERDUE_CRON_ENV, raising=False)
    folder = _sources_dir(tmp_path)
    deployments = deployments_for(folder, "s3://bucket/vigila")
    assert [full_name(d) for d in deployments] == [f"ingest_source/{PAHO}", f"detect_alerts/{DETECT_NAME}",
                                                   f"regional_summary/{REGIONAL_NAME}",
                                                   f"check_overdue/{OVERDUE_NAME}"]
    assert deployments[-1].parameters == {"warehouse": "s3://bucket/vigila", "sources_dir": str(folder.resolve())}
    assert deployments[0].tags == ["country:multi", "disease:dengue", "reporter:other", f"source:{PAHO}"]
    assert deployments[0].parameters["warehouse"] == "s3://bucket/vigila"


def test_deploy_from_source_points_workers_at_the_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv(OVERDUE_CRON_ENV, raising=False)
    [ingest, detect, regional, overdue] = deployments_for(_sources_dir(tmp_path), tmp_path / "wh", from_source=True)
    assert ingest.entrypoint == "flows/ingest.py:ingest_source" and detect.entrypoint == "flows/detect.py:detect_alerts"
    assert regional.entrypoint == "flows/regional.py:regional_summary"
    assert overdue.entrypoint == "flows/notify.py:check_overdue"
    step = {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    assert ingest.storage.to_pull_step() == step


def test_deploy_needs_a_server_and_serve_needs_schedules(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(app, ["deploy", "--work-pool", "p", "--sources", str(tmp_path)])
    assert result.exit_code == 2 and "PREFECT_API_URL is not set" in result.output
    result = CliRunner().invoke(app, ["serve", "--sources", str(tmp_path)])
    assert result.exit_code == 2 and "no source config with a `schedule.cron`" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO", **extra)
    return env


def _start(cmd: list[str], env: dict, log: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the worker's flow-run children go too
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _wait_healthy(proc: subprocess.Popen, api_url: str, log: Path, seconds: float = 180) -> None:
    """Until the server at API_URL answers /health (11-25 s on 2 cores, more when the suite is busy)."""
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, f"prefect server exited:\n{_tail(log)}"
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"prefect server not healthy after {seconds:.0f} s:\n{_tail(log)}"
        time.sleep(0.5)


def _tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


@pytest.mark.timeout(300)
def test_deploy_to_a_real_server_and_a_worker_runs_the_flow(tmp_path, monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, DeploymentFilter,
                                                DeploymentFilterId)
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from vigila.warehouse import read
    from vigila.operate.artifacts import artifact_key

    monkeypatch.delenv(OVERDUE_CRON_ENV, raising=False)
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    server_log, worker_log, serve_log = tmp_path / "server.log", tmp_path / "worker.log", tmp_path / "serve.log"
    server_env = _prefect_env(tmp_path / "prefect-home",
                              PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
                              PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5")
    worker_env = _prefect_env(tmp_path / "worker-home", PREFECT_API_URL=url, PREFECT_WORKER_QUERY_SECONDS="2",
                              PREFECT_WORKER_PREFETCH_SECONDS="5")
    sources, warehouse, pool = _sources_dir(tmp_path), tmp_path / "warehouse", "vigila-test"
    server = worker = served = None
    try:
        server = _start([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], server_env,
                        server_log, tmp_path)
        _wait_healthy(server, url, server_log)

        with temporary_settings(updates={PREFECT_API_URL: url}):
            result = CliRunner().invoke(app, ["deploy", "--work-pool", pool, "--sources", str(sources),
                                              "--warehouse", str(warehouse)])
            assert result.exit_code == 0, result.output + repr(result.exception)
            assert f"created work pool {pool}" in result.output and "registered 4 deployments" in result.output

            with get_client(sync_client=True) as client:
                d = client.read_deployment_by_name(f"ingest_source/{PAHO}")
                assert d.work_pool_name == pool
                assert d.tags == ["country:multi", "disease:dengue", "reporter:other", f"source:{PAHO}"]
                [s] = d.schedules
                assert (s.schedule.cron, s.schedule.timezone, s.active) == ("0 9 * * 3", "America/Panama", True)
                assert d.parameters == {"source_path": str(sources / f"{PAHO}.yaml"), "warehouse": str(warehouse)}
                assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
                detect = client.read_deployment_by_name(f"detect_alerts/{DETECT_NAME}")
                assert detect.schedules[0].schedule.cron == DETECT_CRON
                regional = client.read_deployment_by_name(f"regional_summary/{REGIONAL_NAME}")
                assert regional.schedules[0].schedule.cron == REGIONAL_CRON and regional.work_pool_name == pool
                overdue = client.read_deployment_by_name(f"check_overdue/{OVERDUE_NAME}")
                assert overdue.schedules[0].schedule.cron == OVERDUE_CRON and overdue.work_pool_name == pool
                assert overdue.parameters == {"warehouse": str(warehouse), "sources_dir": str(sources)}
                assert client.read_work_pool(pool).type == "process"

            # deploying again updates in place
            again = CliRunner().invoke(app, ["deploy", "--work-pool", pool, "--sources", str(sources),
                                             "--warehouse", str(warehouse)])
            assert again.exit_code == 0 and "created work pool" not in again.output

            worker = _start([prefect, "worker", "start", "--pool", pool, "--type", "process"], worker_env, worker_log, tmp_path)
            run = run_deployment(f"ingest_source/{PAHO}", timeout=240, poll_interval=2)
            assert run.state is not None and run.state.is_completed(), (
                f"{run.state}\n--- worker log ---\n{_tail(worker_log, 80)}")
            with get_client(sync_client=True) as client:
                assert client.read_flow_run(run.id).state.type.value == "COMPLETED"
            weekly = read.cases_weekly(str(warehouse)).collect()
            assert weekly.height == 16_055 and set(weekly["source_id"]) == {PAHO}
            _stop(worker)
            with get_client(sync_client=True) as client:
                registered = client.read_deployment_by_name(f"ingest_source/{PAHO}").updated

            # embedded mode: `vigila serve` registers the same deployments and runs them itself — here with the
            # PAHO schedule set to every minute, so the server's scheduler (not the test) creates the run it executes
            every_minute = tmp_path / "every-minute"
            every_minute.mkdir()
            text = (sources / f"{PAHO}.yaml").read_text()
            text = re.sub(r'cron: "0 9 \* \* 3"', 'cron: "* * * * *"', text)
            assert '"* * * * *"' in text
            (every_minute / f"{PAHO}.yaml").write_text(text)
            serve_env = _prefect_env(tmp_path / "serve-home", PREFECT_API_URL=url, PREFECT_RUNNER_POLL_FREQUENCY="2")
            served = _start([sys.executable, "-m", "vigila.cli", "serve", "--sources", str(every_minute),
                             "--warehouse", str(warehouse)], serve_env, serve_log, ROOT)
            with get_client(sync_client=True) as client:
                deadline = time.monotonic() + 120
                while client.read_deployment_by_name(f"ingest_source/{PAHO}").updated <= registered:
                    assert served.poll() is None, f"vigila serve exited:\n{_tail(serve_log)}"
                    assert time.monotonic() < deadline, f"vigila serve did not register:\n{_tail(serve_log)}"
                    time.sleep(1)
                dep = client.read_deployment_by_name(f"ingest_source/{PAHO}")
                assert dep.schedules[0].schedule.cron == "* * * * *"
                deadline = time.monotonic() + 240      # next minute + the scheduler loop (5 s here) + the run
                while True:
                    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
                    done = [r for r in runs if r.auto_scheduled and r.state is not None and r.state.is_completed()]
                    if done:
                        break
                    assert served.poll() is None, f"vigila serve exited:\n{_tail(serve_log)}"
                    assert time.monotonic() < deadline, (
                        f"no scheduled run completed: {[(r.name, r.auto_scheduled, r.state_type) for r in runs]}\n"
                        f"{_tail(serve_log, 80)}")
                    time.sleep(2)
                scheduled = done[0]
                assert scheduled.name.startswith(f"ingest-{PAHO}-")
                # the run's artifacts, read back through the API: summary, checks table, quarantine link
                keys = {a.key for a in client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[scheduled.id])))}
                key = artifact_key("ingest", PAHO)
                assert {key, f"{key}-checks"} <= keys, keys      # the same bytes again: an "unchanged" report
    finally:
        _stop(worker)
        _stop(served)
        _stop(server)
