"""Source age bands ("De 25 a 34 años", "< 1 año", "80 y más") declared in a source's `age_bands` -> the
harmonised age group they nest in, or the declared band kept as it is.

Input: `SourceConfig.age_bands` (label -> [from, to] or [from, to, unit]; `to` null: open-ended; both ends
included, in whole units); output: a lookup table (normalised label -> age_group, age_band_source). A band that
lies inside one harmonised 5-year band (or inside 80+) is that band, and age_band_source is null; any other
band is never re-banded: age_group is 'source_band' and age_band_source its canonical form ('25-34', '65+',
'13-24m', '29-365d').
"""

from __future__ import annotations

import math

import polars as pl

from vigila.core import places
from vigila.core.vocab import _BANDS, SOURCE_BAND

UNITS = {"years": 1.0, "months": 12.0, "days": 365.25}
_SUFFIX = {"years": "", "months": "m", "days": "d"}


def interval(band: list) -> tuple[float, float]:
    """[from, to(, unit)] -> [lo, hi) in years: the band holds ages lo <= age < hi (to + 1 unit, exclusive)."""
    lo, hi, unit = (*band, "years") if len(band) == 2 else band
    per = UNITS[unit]
    return lo / per, (math.inf if hi is None else (hi + 1) / per)


def nesting_band(lo: float, hi: float) -> str | None:
    """The harmonised band holding all of [lo, hi) years, or None when it spans two or more."""
    for i, label in enumerate(_BANDS):
        b_lo, b_hi = 5.0 * i, (math.inf if label == "80+" else 5.0 * i + 5)
        if b_lo <= lo + 1e-9 and hi <= b_hi + 1e-9:
            return label
    return None


def canonical(band: list) -> str:
    lo, hi, unit = (*band, "years") if len(band) == 2 else band
    fmt = (lambda v: f"{int(v):02d}") if unit == "years" else (lambda v: f"{v:g}")
    return (f"{fmt(lo)}+" if hi is None else f"{fmt(lo)}-{fmt(hi)}") + _SUFFIX[unit]


def band_table(age_bands: dict[str, list]) -> pl.DataFrame:
    """Columns key (normalised label), age_group, age_band_source (null when the band nests)."""
    rows = []
    for label, band in age_bands.items():
        nested = nesting_band(*interval(band))
        rows.append((places.normalise(label), nested or SOURCE_BAND, None if nested else canonical(band)))
    return pl.DataFrame(rows, schema={"key": pl.Utf8, "age_group": pl.Utf8, "age_band_source": pl.Utf8}, orient="row")


def with_bands(value_table: pl.DataFrame, age_bands: dict[str, list]) -> pl.DataFrame:
    """The age_group lookup (key, value) with the declared bands first: (key, value, age_band_source)."""
    bands = band_table(age_bands).rename({"age_group": "value"})
    plain = value_table.with_columns(pl.lit(None, pl.Utf8).alias("age_band_source"))
    return pl.concat([bands, plain.select(bands.columns)]).unique("key", keep="first", maintain_order=True)
