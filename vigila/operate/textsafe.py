"""Untrusted text on its way out: what a ministry's file says is shown, never obeyed.

In: cell values or a polars frame; out: the same text with spreadsheet formula prefixes neutralised the
OWASP way (a leading `=`, `+`, `-`, `@`, tab or carriage return gets a `'` in front, so Excel or LibreOffice
shows it instead of evaluating `=HYPERLINK(...)`), for every CSV Vigila writes and every artifact cell.
Terminal output escapes rich markup separately (`rich.markup.escape`).
"""

from __future__ import annotations

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    """A value as it may go into a CSV cell or an artifact: text starting like a formula gets a leading `'`."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def frame(df):
    """A polars frame whose text columns are neutralised with `cell` (numbers, dates untouched)."""
    import polars as pl

    text = [c for c, t in df.schema.items() if t == pl.Utf8]
    if not text:
        return df
    risky = "^[" + "".join("\\" + p if p in "+-" else p for p in FORMULA_PREFIXES) + "]"
    return df.with_columns(pl.when(pl.col(c).str.contains(risky)).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c)
                           for c in text)
