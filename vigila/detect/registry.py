"""Detection methods by name, with their parameters parsed from text (for the CLI and flows).

Input: a user frame (see `series.prepare`), a method name and `key=value` strings; output: one row
per evaluated series-week: series_id, t, week_start, observed, expected, upperbound, alarm, method[, extras].
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import polars as pl

from vigila.detect.series import DetectInputError, prepare

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


def detect(frame: pl.DataFrame | pl.LazyFrame, method: str, params: dict[str, Any] | None = None,
           range: tuple[int, int] | None = None, gaps: str = "error") -> pl.DataFrame:
    """prepare -> method -> the common output columns (then any extra columns the method returns)."""
    fn = get_method(method)
    _check_keys(method, params or {})
    series = prepare(frame, gaps=gaps)
    result = fn(series, range=range, **(params or {}))
    weeks = series.select("series_id", "t", (pl.col("week_start") if "week_start" in series.columns
                                             else pl.lit(None, pl.Date).alias("week_start")))
    extras = [c for c in result.columns if c not in COLUMNS]
    typed = result.drop("week_start", strict=False).with_columns(
        pl.col("series_id").cast(pl.String), pl.col("t").cast(pl.Int64), pl.col("observed", "expected", "upperbound").cast(pl.Float64),
        pl.col("alarm").cast(pl.Boolean), pl.col("method").cast(pl.String))   # an empty result may come untyped
    return typed.join(weeks, on=["series_id", "t"], how="left").select(*COLUMNS, *extras).sort("series_id", "t")
