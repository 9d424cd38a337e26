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


@pytest.fixture(scope="session")
def demo_ingested(tmp_path_factory) -> Path:
    """Both bundled real reports (PAHO national, Peru's line list) ingested once, issued 2025-01-10 (after the last week of data).
    Read-only: a test that publishes more copies it first (`copy_warehouse`)."""
    import datetime as dt

    from vigila.ingest import pipeline
    from vigila.config import load_source

    wh = tmp_path_factory.mktemp("demo") / "warehouse"
    for name in ("paho_opendengue_national.yaml", "per_minsa_dengue_linelist.yaml"):
        cfg = load_source(SOURCES / name)
        pipeline.ingest(cfg, cfg.location, wh, issue_date=dt.date(2025, 1, 10))
    return wh


def copy_warehouse(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst
