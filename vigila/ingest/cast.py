"""Map file columns to canonical fields and cast text to types.

Input: text columns (`vigila.ingest.readers`) and the source config; output: canonical column names
(`select_fields`) and polars expressions that type each field (`typed_expr`), bad values -> null.
"""

from __future__ import annotations

import polars as pl

from vigila.config import SourceConfig
from vigila.ingest.readers import ReadError
from vigila.warehouse.contract import ERROR_SCHEMA, ROW  # noqa: F401  (ERROR_SCHEMA: importers read it here)

FIELD_TYPES: dict[str, str] = {
    "country": "text", "place": "text", "place_parent": "text", "disease": "text", "classification": "text", "sex": "text",
    "age_group": "text", "resolution": "text", "age_unit": "text",
    "date": "date", "week_start": "date", "issue_date": "date",
    "epi_year": "int32", "epi_week": "int32", "cases": "int64", "deaths": "int64", "age": "number",
}
AUTO_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%Y/%m/%d")


LINE, ROW_KEY = "__line", "__row_key"   # hashes of a row's whole line and of its `row_key` columns (count files)


def select_fields(frame: pl.LazyFrame, columns: list[str], source: SourceConfig) -> pl.LazyFrame:
    """Keep the mapped columns under their canonical names; `ReadError` naming any missing one.
    Count files also get LINE (hash of every column: identical whole lines) and, with `row_key`,
    ROW_KEY (hash of the key columns), so rows sharing a place-week can be told apart."""
    missing = {f: c for f, c in source.mapped.items() if c not in columns}
    if missing:
        field, col = next(iter(missing.items()))
        raise ReadError(f"column {col!r} (columns.{field}) is not in the file; the file has: {_names(columns)}")
    absent = [c for c in source.row_key if c not in columns]
    if absent:
        raise ReadError(f"column {absent[0]!r} (row_key) is not in the file; the file has: {_names(columns)}")
    hashes = []
    if source.shape != "line_list":
        hashes.append(pl.struct(pl.col(c) for c in columns).hash(7).alias(LINE))
        if source.row_key:
            hashes.append(pl.struct(pl.col(c) for c in source.row_key).hash(11).alias(ROW_KEY))
    out = frame.select(*(pl.col(c).alias(f) for f, c in source.mapped.items()), *hashes)
    if source.columns.epi_yearweek:
        out = out.with_columns(split_yearweek(pl.col("epi_week").cast(pl.Utf8)))
    return out.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))


def split_yearweek(value: pl.Expr) -> list[pl.Expr]:
    """YYYYWW text (SINAN SEM_NOT / SEM_PRI) -> epi_year, epi_week text. A value of another shape keeps its
    whole text as the week (and no year), so the epi_week checks report it as it was written."""
    text = value.str.strip_chars()
    ok = text.str.contains(r"^\d{6}$")
    return [pl.when(ok).then(text.str.slice(0, 4)).alias("epi_year"),
            pl.when(ok).then(text.str.slice(4, 2)).otherwise(text).alias("epi_week")]


def _names(columns: list[str], most: int = 30, chars: int = 40) -> str:
    """A header, as echoed in a message: at most `most` names of at most `chars` characters."""
    shown = [c if len(c) <= chars else c[:chars] + "…" for c in columns[:most]]
    return ", ".join(shown) + (f" (+{len(columns) - most} more)" if len(columns) > most else "")


def _number(expr: pl.Expr, source: SourceConfig) -> pl.Expr:
    s = expr.str.strip_chars().str.replace_all(r"\s", "")
    if source.csv.thousands:
        s = s.str.replace_all(source.csv.thousands, "", literal=True)
    if source.csv.decimal == ",":
        s = s.str.replace_all(",", ".", literal=True)
    return s.cast(pl.Float64, strict=False)


def _integer(expr: pl.Expr, source: SourceConfig, dtype: pl.DataType) -> pl.Expr:
    f = _number(expr, source)
    ok = f.is_finite() & (f == f.round(0)) & (f.abs() < 2**53)
    return pl.when(ok).then(f).otherwise(None).cast(dtype)


def _date(expr: pl.Expr, source: SourceConfig) -> pl.Expr:
    s = expr.str.strip_chars()
    fmt = source.csv.date_format
    if fmt != "auto":
        return s.str.strptime(pl.Date, fmt, strict=False)
    iso_prefix = s.str.extract(r"^(\d{4}-\d{2}-\d{2})(?:[T ][0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?)?$")
    return pl.coalesce(iso_prefix.str.strptime(pl.Date, "%Y-%m-%d", strict=False),
                       *(s.str.strptime(pl.Date, f, strict=False) for f in AUTO_DATE_FORMATS[1:]))


def typed_expr(field: str, source: SourceConfig, expr: pl.Expr | None = None) -> pl.Expr:
    kind, col = FIELD_TYPES[field], pl.col(field) if expr is None else expr
    if kind == "text":
        return col.str.strip_chars()
    if kind == "date":
        return _date(col, source)
    if kind == "number":
        return _number(col, source).pipe(lambda f: pl.when(f.is_finite()).then(f).otherwise(None))
    return _integer(col, source, pl.Int32 if kind == "int32" else pl.Int64)
