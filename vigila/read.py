"""Analyst reads of published datasets as polars LazyFrames, with `as_of` for revisions.

Input: a warehouse root (path or s3:// URL); output: LazyFrames with the documented schema.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from schemas.harmonised import KEY, CasesWeekly
from vigila import publish
from vigila.storage import Storage


def dataset(warehouse: str | Storage, name: str) -> pl.LazyFrame:
    """The current version of any published dataset."""
    storage = Storage.open(warehouse)
    if publish.current_manifest(storage, name) is None:
        raise FileNotFoundError(f"{storage.root}: no published dataset {name!r}")
    return publish.scan(storage, name)


def latest_issue(revisions: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Latest issue of each key (by issue date, then ingest time): `cases_weekly` from revisions."""
    return revisions.lazy().sort("issue_date", "ingested_at").group_by(KEY).agg(pl.all().last())


def cases_weekly(warehouse: str | Storage, *, as_of: dt.date | str | None = None) -> pl.LazyFrame:
    """Weekly counts as currently published, or as known on `as_of` (latest issue on or before it)."""
    columns = list(CasesWeekly.to_schema().columns)
    if as_of is None:
        return dataset(warehouse, "cases_weekly").select(columns)
    as_of = dt.date.fromisoformat(as_of) if isinstance(as_of, str) else as_of
    return latest_issue(dataset(warehouse, "cases_revisions").filter(pl.col("issue_date") <= as_of)).select(columns)
