"""A real headless Chromium for tests (Debian `chromium` + `chromium-driver`, driven by selenium).

Input: a URL (http:// or file://); output: page text, console errors and screenshots.
Tests skip when the browser is absent, except under CI (VIGILA_REQUIRE_CHROMIUM=1), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


def require_chromium() -> None:
    """Skip (or, under CI, fail) when Debian's chromium and its chromedriver are not installed."""
    if CHROMIUM and CHROMEDRIVER:
        return
    message = "headless Chromium needs Debian packages chromium and chromium-driver (apt-get install chromium chromium-driver)"
    if os.environ.get("VIGILA_REQUIRE_CHROMIUM"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator:
    """A selenium WebDriver on a fresh headless Chromium profile; browser console logs are kept."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium never tries to download one (there is no internet here).
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(120)
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[str]:
    """Browser console messages of level SEVERE since the last call (JavaScript errors, failed loads)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def wait_for(condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.5, what: str = "condition"):
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the page may still be rendering
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def body_text(driver) -> str:
    """The visible text of the page."""
    return driver.execute_script("return document.body ? document.body.innerText : ''") or ""
