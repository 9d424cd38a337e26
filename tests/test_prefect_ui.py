"""The Prefect UI shows Vigila's runs and their artifacts: a real `prefect server` (SQLite, UI on, free
loopback port), one real ingest, a real headless Chromium reading the pages.

In: the first 3,000 rows of the bundled Peru line list (data/demo), ingested once. Out: pass/skip; with
VIGILA_UPDATE_SCREENSHOTS=1 also docs/prefect_ui_runs.png and docs/prefect_ui_artifacts.png (the README's).
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from browser import body_text, chromium, console_errors, require_chromium, wait_for
from conftest import DEMO, ROOT, SOURCES
from test_deployments import _free_port, _prefect_env, _start, _stop, _wait_healthy

SOURCE_ID = "per_minsa_dengue_linelist"
ISSUE_DATE = dt.date(2019, 6, 4)  # after the extract's last week (2019-W21); MMWR week 23
RUN_NAME = f"ingest-{SOURCE_ID}-2019-W23"
SUMMARY_KEY = "ingest-per-minsa-dengue-linelist"
ROWS = 3000  # of 171,282: seven have a missing departamento ("\N") and are quarantined
UPDATE_SCREENSHOTS = os.environ.get("VIGILA_UPDATE_SCREENSHOTS") == "1"
# Console errors that are Prefect's own and harmless: Chromium asks every site for /favicon.ico (the UI
# ships its icons under /ico/), and the v1 flow-run page sets its tab icon to /ico/<state type>.svg before
# the run's state has loaded, so it asks once for /ico/undefined.svg. Anything else fails the test.
HARMLESS_404 = re.compile(r"^https?://127\.0\.0\.1:\d+/(favicon\.ico|ico/undefined\.svg) - Failed to load resource: "
                          r"the server responded with a status of 404")


def _app_errors(driver) -> list[str]:
    return [e for e in console_errors(driver) if not HARMLESS_404.match(e)]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """Base URL of a real Prefect server with its UI (the v1 UI is served at the root, v2 under /v2)."""
    require_chromium()  # no server start when the browser is missing
    tmp = tmp_path_factory.mktemp("prefect-ui")
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = _prefect_env(tmp / "home", PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp / 'prefect.db'}")
    # the UI on, talking to this server; its static bundle copied to tmp, not into the venv's site-packages
    env.update(PREFECT_UI_ENABLED="true", PREFECT_UI_API_URL=f"{base}/api", PREFECT_UI_STATIC_DIRECTORY=str(tmp / "ui"))
    log = tmp / "server.log"
    proc = _start([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log, tmp)
    try:
        _wait_healthy(proc, f"{base}/api", log)
        yield base
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def flow_run_id(server: str, tmp_path_factory) -> str:
    """One real ingest of a small real extract by `vigila ingest` in its own process, reporting to the server.
    (Not in this process: after another Prefect API in the session, its event and log workers would still
    send the task runs and logs there, and the UI would find neither.)"""
    tmp = tmp_path_factory.mktemp("ingest")
    with gzip.open(DEMO / "peru_dengue_linelist_2019_2022.csv.gz", "rt", encoding="utf-8-sig") as f:
        head = [next(f) for _ in range(ROWS + 1)]
    (tmp / "peru_head.csv").write_text("".join(head), encoding="utf-8")
    config = re.sub(r"^location: .*$", f"location: {tmp / 'peru_head.csv'}",
                    (SOURCES / f"{SOURCE_ID}.yaml").read_text(), flags=re.M)
    (tmp / f"{SOURCE_ID}.yaml").write_text(config)
    env = _prefect_env(tmp / "home", PREFECT_API_URL=f"{server}/api")
    done = subprocess.run([sys.executable, "-m", "vigila.cli", "ingest", str(tmp / f"{SOURCE_ID}.yaml"),
                           "--warehouse", str(tmp / "warehouse"), "--issue-date", ISSUE_DATE.isoformat(), "--quiet"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    [run] = httpx.post(f"{server}/api/flow_runs/filter", json={}, timeout=30).json()
    assert (run["name"], run["state_type"]) == (RUN_NAME, "COMPLETED")
    def task_names() -> list[str]:  # task runs reach the server as events, processed asynchronously
        return sorted(t["name"].rsplit("-", 1)[0] for t in httpx.post(f"{server}/api/task_runs/filter", json={}).json())

    steps = ["fetch", "land", "process", "publish", "update_reporting"]
    wait_for(lambda: task_names() == steps, timeout=120, what=f"task runs {steps} on the server")
    return run["id"]


def _run_row(driver):
    """The runs-list row whose link is our flow run's name (None until rendered)."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.XPATH, f"//*[contains(@class,'flow-run-list-item')][.//a[normalize-space(.)='{RUN_NAME}']]")
    return rows[0] if rows else None


def test_runs_page_lists_the_run_by_name_completed(server: str, flow_run_id: str) -> None:
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        driver.get(f"{server}/runs")
        row = wait_for(lambda: _run_row(driver), timeout=120, what=f"{RUN_NAME} in the runs list")
        wait_for(lambda: "Completed" in _run_row(driver).text.splitlines(), timeout=60,
                 what=f"state Completed on the row of {RUN_NAME}")
        # the flow's name, before the run's: the UI fetches flows apart from runs, so under load it comes later
        wait_for(lambda: "ingest_source" in _run_row(driver).text.splitlines(), timeout=60,
                 what=f"the flow name ingest_source on the row of {RUN_NAME}")
        row = _run_row(driver)
        link = row.find_element(By.XPATH, f".//a[normalize-space(.)='{RUN_NAME}']")
        assert link.get_attribute("href").endswith(f"/runs/flow-run/{flow_run_id}")
        if UPDATE_SCREENSHOTS:
            driver.save_screenshot(str(ROOT / "docs" / "prefect_ui_runs.png"))
        errors = _app_errors(driver)
        assert errors == [], "\n".join(errors)


def test_flow_run_page_shows_the_data_quality_artifacts(server: str, flow_run_id: str) -> None:
    from selenium.webdriver.common.by import By

    with chromium(height=1300) as driver:
        driver.get(f"{server}/runs/flow-run/{flow_run_id}")
        wait_for(lambda: RUN_NAME in body_text(driver), timeout=120, what="the flow run page")
        wait_for(lambda: "5 Task runs" in body_text(driver).splitlines(), timeout=60, what="its five task runs")
        wait_for(lambda: driver.find_element(By.ID, "artifacts"), timeout=60, what="the Artifacts tab").click()
        keys = (SUMMARY_KEY, f"{SUMMARY_KEY}-checks", f"{SUMMARY_KEY}-quarantine")
        wait_for(lambda: all(k in body_text(driver).splitlines() for k in keys), timeout=60,
                 what=f"artifacts {keys} on the flow run's Artifacts tab")
        text = body_text(driver)
        assert f"{SOURCE_ID}: data-quality report of run {flow_run_id}-0" in text
        assert f"{SOURCE_ID}: rows per failed check, and totals" in text

        errors = _app_errors(driver)
        assert errors == [], "\n".join(errors)

        # the summary card links to the rendered markdown report. Loaded as a new page: leaving the
        # flow-run page inside the app races its run graph's animation (pixi.js, destroyed on unmount)
        # into "Cannot read properties of null" errors, a Prefect UI bug that is not Vigila's.
        card = wait_for(lambda: driver.find_element(By.XPATH, f"//a[.//*[normalize-space(text())='{SUMMARY_KEY}']]"),
                        timeout=30, what="the summary's card")
        href = card.get_attribute("href")
        assert re.search(r"/artifacts/artifact/[0-9a-f-]{36}$", href), href
        driver.get(href)
        wait_for(lambda: f"{SOURCE_ID} — data-quality report" in body_text(driver), timeout=120,
                 what="the rendered data-quality report")
        wait_for(lambda: "unknown_place" in body_text(driver), timeout=30, what="the report's by-check table")
        lines = body_text(driver).splitlines()
        for row in ("rows read\t3,000", "rows quarantined (not published)\t7", "status\tpublished"):
            assert row in lines, row
        assert any(line.startswith("error\tunknown_place\tdepartamento\t7\t") for line in lines)
        assert RUN_NAME in lines  # the artifact page links back to its flow run
        if UPDATE_SCREENSHOTS:
            driver.save_screenshot(str(ROOT / "docs" / "prefect_ui_artifacts.png"))
        errors = _app_errors(driver)
        assert errors == [], "\n".join(errors)
