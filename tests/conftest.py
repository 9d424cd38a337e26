"""Shared fixtures: bundled real demo data, ../shared when present, one Prefect harness per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIGILA_SHARED", ROOT.parent / "shared"))
DEMO = ROOT / "data" / "demo"
SOURCES = ROOT / "sources"
FIXTURES = Path(__file__).with_name("fixtures")


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "README.md").exists():
        pytest.skip(f"../shared not present at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for the whole session: starting one costs 10-20 s."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def warehouse(tmp_path) -> Path:
    return tmp_path / "warehouse"
