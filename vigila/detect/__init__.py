"""Early-detection algorithms over many series at once (pure polars/numpy, no Prefect).

Input: a long frame (series_id, t, cases[, week_start][, population]); output: one row per
evaluated series-week: series_id, t, week_start, observed, expected, upperbound, alarm, method.
Methods follow R `surveillance` 1.20.3; parameters are R's control names in snake_case.

Contract shared by every method function `fn(frame, *, range=None, **params) -> pl.DataFrame`:
- `frame` holds series_id (str), t (1-based consecutive week index per series, Int64), cases
  (numeric, >= 0), and optionally week_start (Date: then baseline weeks are chosen by calendar
  date as R does for date-based sts objects) and population.
- `range` is (start, end) in R's 1-based t indices, inclusive; None = R's default range.
- the result has at least series_id, t, observed, expected, upperbound, alarm, method; nulls
  where R gives NA. `alarm` is true only when observed > upperbound (R's rule; ties no alarm),
  except CUSUM, whose alarm is R's cusum >= h.
"""

import importlib
import sys
import types

from vigila.detect.cusum import cusum
from vigila.detect.ears import ears

__all__ = ["cusum", "ears", "farrington", "farrington_flexible"]


class _Package(types.ModuleType):
    """Farrington's two functions are imported on first use: EARS and CUSUM do not pay for its scipy.special
    import (half a second of a `vigila detect` process). `vigila.detect.farrington` stays the function, as
    when it was imported here, even after its module is imported."""

    def __getattr__(self, name: str):
        if name in ("farrington", "farrington_flexible"):
            return getattr(importlib.import_module("vigila.detect.farrington"), name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name == "farrington" and isinstance(value, types.ModuleType):   # the import system binding the submodule
            value = value.farrington
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
