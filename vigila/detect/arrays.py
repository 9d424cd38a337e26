"""A long frame of many series as flat numpy arrays (one slice per series), for the vectorised methods.

Input: a frame with series_id, t, cases[, week_start][, population]; output: `Series`.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from typing import Any
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa


@dataclass
class Series:
    ids: list[str]
    start: np.ndarray            # offset of each series in the flat arrays
    length: np.ndarray
    y: np.ndarray                # cases, float64, flat (contiguous=False: `Chunked` input cases, int64 or float64)
    days: np.ndarray | None      # week_start as days since 1970-01-01 (date-based series; contiguous=False: `Chunked`)
    population: np.ndarray | None
    frame: pl.DataFrame          # the input, sorted by series_id and t
    integral: bool = False       # cases came as an integer column
    t: Chunked | None = None     # the t column, int64, read by row ranges
    id_values: pl.Series | None = None   # the series ids as a String Series (one per series, in order)


class Chunked:
    """A column without nulls as the numpy views of its chunks (no copy), read by row ranges `c[a:b]`:
    a range inside one chunk is a view, one across chunks a small copy."""

    def __init__(self, col: pl.Series, dtype: type):
        self.parts = [flat(chunk, dtype) for chunk in col.get_chunks() if len(chunk)] or [np.zeros(0, dtype)]
        self.ends = np.cumsum([len(p) for p in self.parts])
        self.begins = self.ends - [len(p) for p in self.parts]

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitem__(self, rows: slice) -> np.ndarray:
        a, b = int(rows.start or 0), int(len(self) if rows.stop is None else rows.stop)
        i, j = np.searchsorted(self.ends, [a, max(b - 1, a)], side="right")
        if i == j:
            return self.parts[i][a - self.begins[i]:b - self.begins[i]]
        return np.concatenate([self.parts[k][max(a - self.begins[k], 0):b - self.begins[k]] for k in range(i, j + 1)])

    def increasing_except_at(self, starts: np.ndarray) -> bool:
        """Every value greater than the one before it, except at rows `starts` (sorted)."""
        drops = [np.flatnonzero(p[1:] <= p[:-1]) + 1 + b0 for p, b0 in zip(self.parts, self.begins)]
        drops += [[b0] for p, q, b0 in zip(self.parts, self.parts[1:], self.begins[1:]) if len(p) and len(q) and q[0] <= p[-1]]
        drops = np.concatenate(drops) if drops else np.zeros(0, np.int64)
        return bool(np.isin(drops, starts).all())


def to_arrays(frame: pl.DataFrame | pl.LazyFrame, contiguous: bool = True) -> Series:
    """Rows grouped by series and sorted by t within each; a frame already grouped that way keeps its
    order (checking is much cheaper than sorting), any other is sorted by series_id and t.
    contiguous=False: y and days are `Chunked` views of the frame's columns (read by row ranges only; y keeps
    the input's numeric type) instead of flat copies; t is always `Chunked`."""
    df = frame.lazy().collect() if isinstance(frame, pl.LazyFrame) else frame
    df = df.select(c for c in ("series_id", "t", "cases", "week_start", "population") if c in df.columns)
    runs, t = _runs(df)
    if not _in_order(runs, t):
        df = df.sort("series_id", "t")
        runs, t = _runs(df)
    counts = runs["len"].to_numpy().astype(np.int64)
    starts = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    id_values = runs["value"].cast(pl.String).rename("series_id")
    integral = df["cases"].dtype.is_integer()
    column = flat if contiguous else Chunked
    y = flat(df["cases"]) if contiguous else Chunked(df["cases"], np.int64 if integral else np.float64)
    days = None
    if "week_start" in df.columns and df["week_start"].null_count() == 0:
        days = column(df["week_start"].cast(pl.Date).cast(pl.Int64), np.int64)
    pop = flat(df["population"].cast(pl.Float64)) if "population" in df.columns else None
    return Series(id_values.to_list(), starts, counts, y, days, pop, df, integral, t, id_values)


def _runs(df: pl.DataFrame) -> tuple[pl.DataFrame, Chunked]:
    """Runs of equal series_id (len, value) in row order, and t as `Chunked` int64 (no copy of the ids)."""
    runs = df.select(pl.col("series_id").rle()).unnest("series_id")
    return runs, Chunked(df["t"].cast(pl.Int64), np.int64)


def _in_order(runs: pl.DataFrame, t: Chunked) -> bool:
    """Each series in one contiguous block, t increasing inside it (the order of the blocks is free)."""
    if len(t) < 2:
        return True
    if runs["value"].n_unique() != runs.height:        # a series in two blocks
        return False
    return t.increasing_except_at(np.cumsum(runs["len"].to_numpy()[:-1]))   # t drops only where a series starts


POPULATE_FROM = 1 << 26          # bytes: smaller arrays come from the allocator (see `empty`)


def recycle_memory() -> None:
    """For a process detecting block after block (`vigila detect`): keep freed memory for the next block instead
    of giving it back and faulting it in again. glibc hands allocations up to 256 MB from its heap and keeps up
    to 1 GB free there; call before numpy allocates much. Measured on 2 M-row EARS blocks: the kernel's CPU
    time -30 % (with NUMPY_MADVISE_HUGEPAGE=0 set before numpy's import: no huge-page first touch)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:          # not glibc: its allocator's defaults
        return
    libc.mallopt(-3, 256 << 20)          # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1 << 30)            # M_TRIM_THRESHOLD


def empty(n: int, dtype: type = np.float64) -> np.ndarray:
    """An uninitialised flat array for a large result: a private anonymous mapping populated in one call.

    On our Firecracker VMs (nested virtualisation, free-page reporting) fresh memory is the dominant cost of a
    large result: numpy advises MADV_HUGEPAGE on arrays of 4 MB or more and their first touch measured 2.6 s
    per GB; 4 KB pages faulted one by one 0.4 s/GB from one thread and several times that from two; one
    MAP_POPULATE call 0.3 s/GB. The mapping is freed with the array.
    Below POPULATE_FROM (a block of `vigila detect`, result after result) plain np.empty: the allocator hands the
    memory of the block before back without a fault when the process keeps it (`recycle_memory`)."""
    size = max(int(n), 1) * np.dtype(dtype).itemsize
    if size < POPULATE_FROM or not hasattr(mmap, "MAP_POPULATE"):
        return np.empty(n, dtype)
    return np.frombuffer(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE), dtype, count=n)


class RepeatedIds:
    """A String column of n rows made of runs of the series ids (series i repeated counts[i] times), filled
    block by block in place and handed to polars without a copy: the rows are Arrow string_view entries, 16
    bytes each, copied from the ids' own views (an id longer than 12 bytes points into their one data buffer).
    Against polars' gather: no index array, and the 16 n bytes are populated at once (see `empty`)."""

    def __init__(self, ids: pl.Series, n: int):
        # from polars, not pa.array(list): pyarrow imports pandas (~0.7 s) the first time it converts Python objects
        self.unique = ids.cast(pl.String).rechunk().to_arrow(compat_level=pl.CompatLevel.newest())
        if self.unique.type != pa.string_view() or self.unique.offset or self.unique.null_count:
            raise RuntimeError(f"series ids exported as {self.unique.type} (offset {self.unique.offset}), not string_view")
        self.views = np.frombuffer(self.unique.buffers()[1], "V16", count=len(ids))
        self.rows = empty(n * 16, np.uint8).view("V16")

    def fill(self, a: int, b: int, counts: np.ndarray, at: int) -> None:
        """Rows at.. get series a..b-1, counts[k] rows each."""
        self.rows[at:at + int(counts.sum())] = np.repeat(self.views[a:b], counts)

    def series(self, name: str) -> pl.Series:
        data = self.unique.buffers()[2:]
        arr = pa.Array.from_buffers(pa.string_view(), len(self.rows), [None, pa.py_buffer(self.rows), *data])
        return pl.Series(name, pl.from_arrow(arr))


def flat(col: pl.Series, dtype: type = np.float64) -> np.ndarray:
    """A column without nulls as one contiguous numpy array of `dtype` (no copy when it already is one)."""
    if col.n_chunks() == 1 and col.dtype == pl.Series(np.zeros(0, dtype)).dtype:
        return col.to_numpy()
    out, at = empty(len(col), dtype), 0
    for chunk in col.get_chunks():
        out[at:at + len(chunk)] = chunk.to_numpy()
        at += len(chunk)
    return out


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
