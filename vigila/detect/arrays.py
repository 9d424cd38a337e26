"""A long frame of many series as flat numpy arrays (one slice per series), for the vectorised methods.

Input: a frame with series_id, t, cases[, week_start][, population]; output: `Series`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass
class Series:
    ids: list[str]
    start: np.ndarray            # offset of each series in the flat arrays
    length: np.ndarray
    y: np.ndarray                # cases, float64, flat
    days: np.ndarray | None      # week_start as days since 1970-01-01 (date-based series)
    population: np.ndarray | None
    frame: pl.DataFrame          # the input, sorted by series_id and t
    integral: bool = False       # cases came as an integer column


def to_arrays(frame: pl.DataFrame | pl.LazyFrame) -> Series:
    """Rows grouped by series and sorted by t within each; a frame already grouped that way keeps its
    order (checking is much cheaper than sorting), any other is sorted by series_id and t."""
    df = frame.lazy().collect() if isinstance(frame, pl.LazyFrame) else frame
    if df.n_chunks() > 1:                        # e.g. Parquet row groups: aligned columns are far faster
        df = df.select(c for c in ("series_id", "t", "cases", "week_start", "population") if c in df.columns).rechunk()
    new = _series_starts(df)
    if not _in_order(df, new):
        df = df.sort("series_id", "t")
        new = _series_starts(df)
    starts = np.flatnonzero(new.to_numpy())
    counts = np.diff(np.append(starts, df.height)).astype(np.int64)
    ids = df["series_id"].cast(pl.String).gather(starts).to_list() if df.height else []
    integral = df["cases"].dtype.is_integer()
    y = df["cases"].cast(pl.Float64).to_numpy()
    days = None
    if "week_start" in df.columns and df["week_start"].null_count() == 0:
        days = df["week_start"].cast(pl.Date).cast(pl.Int64).to_numpy()
    pop = df["population"].cast(pl.Float64).to_numpy() if "population" in df.columns else None
    return Series(ids, starts.astype(np.int64), counts, y, days, pop, df, integral)


def _series_starts(df: pl.DataFrame) -> pl.Series:
    sid = df["series_id"]
    return (sid != sid.shift(1)).fill_null(True) if df.height else pl.Series([], dtype=pl.Boolean)


def _in_order(df: pl.DataFrame, new: pl.Series) -> bool:
    """Each series in one contiguous block, t increasing inside it (the order of the blocks is free)."""
    if df.height < 2:
        return True
    if not (new | (df["t"].diff() > 0).fill_null(True)).all():
        return False
    return df["series_id"].filter(new).n_unique() == int(new.sum())     # no series in two blocks


def in_blocks(s: Series, fn: Callable[[int, int], None], rows: int = 2_000_000) -> None:
    """Call fn(a, b) for consecutive blocks of whole series a..b-1 (about `rows` rows each, at least
    one block per core), on a thread pool: numpy releases the GIL in its array loops."""
    n, workers = int(s.length.sum()), os.cpu_count() or 1
    size = max(1, min(rows, -(-n // workers)))
    ends = np.searchsorted(np.cumsum(s.length), np.arange(size, n, size), side="left") + 1
    bounds = np.unique(np.concatenate([[0], ends, [len(s.length)]]))
    in_parallel(lambda ab: fn(*ab), [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a])


def in_parallel(fn: Callable[[Any], None], pieces: list) -> None:
    """fn(piece) for every piece, on a thread pool of one thread per core (inline for one piece):
    numpy releases the GIL in its array loops; each piece writes its own part of the outputs."""
    if len(pieces) <= 1:
        for piece in pieces:
            fn(piece)
        return
    with ThreadPoolExecutor(min(os.cpu_count() or 1, len(pieces))) as pool:
        for done in [pool.submit(fn, piece) for piece in pieces]:
            done.result()
