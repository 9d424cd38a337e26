"""Detection methods by name, with their parameters parsed from text (for the CLI and flows).

Input: a user frame (see `series.prepare`), a method name and `key=value` strings; output: one row
per evaluated series-week: series_id, t, week_start, observed, expected, upperbound, alarm, method[, extras],
sorted by series_id and t; `detect_blocks` gives the same rows block by block of whole series (memory bounded by
the block, for a result too large to hold), from a frame or from row batches in series order.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import polars as pl

from vigila.detect.series import GAPS, DetectInputError, prepare

COLUMNS = ("series_id", "t", "week_start", "observed", "expected", "upperbound", "alarm", "method")
_WHERE = {"ears": "vigila.detect.ears", "farrington_flexible": "vigila.detect.farrington",
          "farrington": "vigila.detect.farrington", "cusum": "vigila.detect.cusum"}


class _Methods(Mapping[str, Callable[..., pl.DataFrame]]):
    """Name -> method function, imported on first use (a method's module may not exist yet)."""

    def __getitem__(self, name: str) -> Callable[..., pl.DataFrame]:
        if name not in _WHERE:
            raise KeyError(name)
        try:
            return getattr(importlib.import_module(_WHERE[name]), name)
        except ModuleNotFoundError as e:
            if e.name != _WHERE[name]:
                raise
        except AttributeError:
            pass
        raise DetectInputError(f"method {name!r} is not available in this installation ({_WHERE[name]}.{name} is missing)")

    def __contains__(self, name: object) -> bool:
        return name in _WHERE

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)


METHODS = _Methods()


def get_method(name: str) -> Callable[..., pl.DataFrame]:
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), 1)
        raise DetectInputError(f"unknown method {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                               + f"; methods: {', '.join(METHODS)}")
    return METHODS[name]


def _params(name: str) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(get_method(name)).parameters
    return {k: p for k, p in sig.items() if p.kind is p.KEYWORD_ONLY and k != "range"}


def _check_keys(name: str, keys) -> dict[str, inspect.Parameter]:
    valid = _params(name)
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), 1)
            raise DetectInputError(f"unknown parameter {key!r} for {name}" + (f" (did you mean {close[0]!r}?)" if close else "")
                                   + f"; valid parameters: {', '.join(valid)}" + ("; give range with --range" if key == "range" else ""))
    return valid


def _convert(text: str, default: Any) -> Any:
    if text.strip().lower() == "null":
        return None
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError("true or false")
        return text.lower() == "true"
    if isinstance(default, tuple):
        parts = [p.strip() for p in text.strip("()[] ").split(",")]
        if default and len(parts) != len(default):
            raise ValueError(f"{len(default)} comma-separated values like {','.join(map(str, default))}")
        return tuple(_convert(p, d) for p, d in zip(parts, default or [None] * len(parts)))
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError("a whole number") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError("a number") from None
    if default is None:  # no type to go by: the value's own
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return {"true": True, "false": False}.get(text.lower(), text)
    return text


def parse_params(name: str, pairs: list[str] | None) -> dict[str, Any]:
    """["b=5", "limit54=5,4", "alpha=null"] -> {"b": 5, "limit54": (5, 4), "alpha": None}, typed by the defaults."""
    split = []
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise DetectInputError(f"--param {pair!r} is not key=value")
        split.append((key.strip(), value.strip()))
    valid = _check_keys(name, [k for k, _ in split])
    out = {}
    for key, value in split:
        default = valid[key].default
        try:
            out[key] = _convert(value, default)
        except ValueError as e:
            raise DetectInputError(f"--param {key}={value}: {key} takes {e} (default {default!r})") from None
    return out


def parse_range(text: str) -> tuple[int, int]:
    """"53:312" -> (53, 312): R's 1-based t indices, inclusive."""
    start, colon, end = text.partition(":")
    try:
        lo, hi = int(start), int(end)
    except ValueError:
        lo = hi = 0
    if not colon or lo < 1 or hi < lo:
        raise DetectInputError(f"range {text!r} is not START:END with 1 <= START <= END (R's 1-based week index t)")
    return lo, hi


BLOCK_ROWS = 2_000_000    # rows of input per block of whole series: what bounds `detect_blocks`' memory


class NeedsWholeInput(Exception):
    """A stream of row batches that `detect_blocks` cannot take block by block: its series are not contiguous
    in series_id order, or a block failed validation. Run `detect_blocks` on the whole input as one frame,
    which sorts it and names the first bad row as `prepare` does."""


def detect(frame: pl.DataFrame | pl.LazyFrame, method: str, params: dict[str, Any] | None = None,
           range: tuple[int, int] | None = None, gaps: str = "error") -> pl.DataFrame:
    """prepare -> method -> the common output columns (then any extra columns the method returns),
    sorted by series_id and t: the blocks of `detect_blocks` in one frame."""
    blocks = list(detect_blocks(frame, method, params, range, gaps))
    return blocks[0] if len(blocks) == 1 else pl.concat(blocks, how="vertical_relaxed", rechunk=False)


def detect_blocks(source: pl.DataFrame | pl.LazyFrame | Iterable[pl.DataFrame], method: str,
                  params: dict[str, Any] | None = None, range: tuple[int, int] | None = None, gaps: str = "error",
                  *, rows: int | None = None) -> Iterator[pl.DataFrame]:
    """`detect`'s result as consecutive frames of whole series (about `rows` input rows each), in series_id
    order, the same rows and order as `detect`: write each as it comes and nothing holds the whole result.

    `source` is the input frame, or its row batches in order (e.g. slices of a Parquet file) whose series
    are contiguous and in series_id order (as `prepare` sorts them); a stream that is not, or whose rows
    fail validation, raises `NeedsWholeInput` (possibly after some blocks were yielded: discard them)."""
    fn = get_method(method)
    _check_keys(method, params or {})
    rows = rows or BLOCK_ROWS
    if gaps not in GAPS:
        prepare(pl.DataFrame(), gaps=gaps)                 # raises prepare's own message
    stream = not isinstance(source, (pl.DataFrame, pl.LazyFrame))
    frame = None if stream else (source.collect() if isinstance(source, pl.LazyFrame) else source)
    if frame is not None and not _contiguous_in_order(frame):
        for block in _slices(prepare(frame, gaps=gaps), rows):          # sorts the whole input
            yield _finish(fn(block, range=range, **(params or {})), block)
        return
    last = None
    for block in series_blocks(source if stream else (frame.iter_slices(rows) if frame.height else [frame]), rows):
        runs = _runs(block) if stream else None     # one run-length pass for the check and the prepare
        if stream and not _contiguous_in_order(block, after=last, runs=runs):
            raise NeedsWholeInput("the input's series are not contiguous and in series_id order")
        series = _as_prepared(block, gaps, runs=runs)
        if series is None:
            try:
                series = prepare(block, gaps=gaps)
            except DetectInputError:
                if stream:
                    raise NeedsWholeInput("a block failed validation") from None
                prepare(frame, gaps=gaps)                # the whole input's first bad row, as its message
                raise
        if block.height:
            last = block.select(_ids(block).last()).item()
        yield _finish(fn(series, range=range, **(params or {})), series)


def series_blocks(batches: Iterable[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """Row batches in order -> consecutive blocks of about `rows` rows cut where a series starts (a series
    running on into the next batch waits for its end); without series_id the input is one series. At least
    one block, possibly empty."""
    pending: list[pl.DataFrame] = []
    size, done = 0, False
    for batch in batches:
        if batch.height == 0 and (pending or done):
            continue
        pending.append(batch)
        size += batch.height
        if size < rows or "series_id" not in batch.columns:
            continue
        block = pl.concat(pending, how="vertical_relaxed", rechunk=False) if len(pending) > 1 else pending[0]
        tail = _tail_length(block)
        if tail == block.height:                              # one series so far: read on
            pending, size = [block], block.height
            continue
        yield block.slice(0, block.height - tail)
        done = True
        pending, size = [block.slice(block.height - tail)], tail
    if pending or not done:
        yield (pl.concat(pending, how="vertical_relaxed", rechunk=False) if len(pending) > 1
               else pending[0] if pending else pl.DataFrame())


def _tail_length(block: pl.DataFrame) -> int:
    """Rows of the block's last series: a binary search for its first row when the ids are sorted (as the blocks'
    checks require; a block that is not fails them after the cut), else the length of the last run."""
    ids = block["series_id"]
    last = ids[-1]
    if last is not None and ids.dtype == pl.String:
        first = ids.search_sorted(last, side="left")
        if first < block.height and ids[first] == last and (first == 0 or ids[first - 1] < last):
            return block.height - first
    return block.select(pl.col("series_id").rle().struct.field("len").last()).item()


def _ids(df: pl.DataFrame) -> pl.Expr:
    """The series ids as `prepare` reads them."""
    return pl.col("series_id").cast(pl.String) if "series_id" in df.columns else pl.lit("1")


def _runs(df: pl.DataFrame) -> pl.DataFrame | None:
    """Runs of equal series id (len, value as `prepare` reads it) in row order; None without series_id or rows."""
    if "series_id" not in df.columns or df.height == 0:
        return None
    return df.select(_ids(df).rle()).unnest("series_id")


def _contiguous_in_order(df: pl.DataFrame, after: str | None = None, runs: pl.DataFrame | None = None) -> bool:
    """Each series in one run of rows, the runs in increasing series_id (as `prepare` sorts them), the
    first after `after`. No series_id: one series. `runs`: `_runs(df)` when the caller has it."""
    if "series_id" not in df.columns or df.height == 0:
        return after is None
    runs = (runs if runs is not None else _runs(df))["value"]
    if runs.null_count():
        return False
    increasing = runs.len() < 2 or bool((runs.slice(1) > runs.slice(0, runs.len() - 1)).all())
    return increasing and (after is None or runs[0] > after)


def _slices(series: pl.DataFrame, rows: int) -> Iterator[pl.DataFrame]:
    """A prepared frame (sorted by series) in slices of whole series of about `rows` rows."""
    yield from series_blocks(series.iter_slices(rows) if series.height else [series], rows)


def _as_prepared(df: pl.DataFrame, gaps: str, runs: pl.DataFrame | None = None) -> pl.DataFrame | None:
    """`prepare(df)` without its sorts and window checks when `df` is already its result in all but types
    (whole non-negative integer cases; each series' rows consecutive weeks in order, t step 1 and/or
    week_start a Date stepping 7 days, t >= 1; no nulls); None when it is not: then call `prepare`."""
    cols, schema = df.columns, df.schema
    has_w, has_t = "week_start" in cols, "t" in cols
    if df.height == 0 or "cases" not in cols or not (has_w or has_t) or not schema["cases"].is_integer():
        return None
    if (has_t and not schema["t"].is_integer()) or (has_w and schema["week_start"] != pl.Date):
        return None
    keys = [c for c in ("series_id", "cases", "t", "week_start") if c in cols]
    if any(df.select(pl.col(c).null_count() for c in keys).row(0)):
        return None
    sid = _ids(df)
    lengths = ((runs if runs is not None else _runs(df))["len"].to_numpy().astype(np.int64)
               if "series_id" in cols else np.array([df.height], np.int64))
    starts = np.cumsum(lengths) - lengths
    bounds = df.select(pl.col("cases").min().alias("c0"), pl.col("cases").max().alias("c1"),
                       *([pl.col("t").min().alias("t0"), pl.col("t").max().alias("t1")] if has_t else [])).row(0, named=True)
    exact = 2 ** 53                                       # prepare casts through Float64: the same integers below this
    if bounds["c0"] < 0 or bounds["c1"] >= exact or (has_t and (bounds["t0"] < 1 or bounds["t1"] >= exact)):
        return None
    for name, step in (("t", 1), ("week_start", 7)):      # within a series: consecutive weeks (numpy, no text compare)
        if name in cols:
            values = df[name].cast(pl.Int64).to_numpy()
            diff = np.diff(values)
            diff[starts[1:] - 1] = step                   # a new series may start anywhere
            if not (diff == step).all():
                return None
    if gaps == "consecutive" or not has_t:                  # t = 1.. in each series
        t = pl.lit(pl.Series("t", np.arange(df.height, dtype=np.int64) - np.repeat(starts, lengths) + 1))
    else:
        t = pl.col("t").cast(pl.Int64)
    return df.select(sid.alias("series_id"), t.alias("t"),
                     pl.col("cases").cast(pl.Int64), *(["week_start"] if has_w else []),
                     *(["population"] if "population" in cols else []))


def _finish(result: pl.DataFrame, series: pl.DataFrame) -> pl.DataFrame:
    """A method's result in the common columns and types, sorted by series_id and t, with week_start from
    `series` (the method's own when it kept it and its rows come in order: no join, no sort)."""
    extras = [c for c in result.columns if c not in COLUMNS]
    typed = result.with_columns(
        pl.col("series_id").cast(pl.String), pl.col("t").cast(pl.Int64), pl.col("observed", "expected", "upperbound").cast(pl.Float64),
        pl.col("alarm").cast(pl.Boolean), pl.col("method").cast(pl.String))   # an empty result may come untyped
    if "week_start" in series.columns and "week_start" in typed.columns and _in_order(typed):
        typed = typed.with_columns(pl.col("week_start").cast(pl.Date))
    elif "week_start" not in series.columns and _in_order(typed):
        typed = typed.with_columns(pl.lit(None, pl.Date).alias("week_start"))
    else:
        weeks = series.select("series_id", "t", (pl.col("week_start") if "week_start" in series.columns
                                                 else pl.lit(None, pl.Date).alias("week_start")))
        typed = typed.drop("week_start", strict=False).join(weeks, on=["series_id", "t"], how="left").sort("series_id", "t")
    return typed.select(*COLUMNS, *extras)


def _in_order(df: pl.DataFrame) -> bool:
    """Rows sorted by series_id then t, no (series_id, t) twice."""
    if df.height < 2:
        return True
    sid, t = pl.col("series_id"), pl.col("t")
    step = (sid > sid.shift(1)) | ((sid == sid.shift(1)) & (t > t.shift(1)))
    return bool(df.select(step.slice(1).all()).item())
