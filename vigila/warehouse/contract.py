"""The pandera contracts of `schemas/` as data, checked with polars: the ingest path without pandera.

The models in `schemas/` stay the one definition of every contract (and the data dictionary comes from
them); `compile_contracts()` turns them into `schemas/contracts.json` (columns, dtypes, nullability, each
check with the name pandera gives its failures, unique keys) and the data dictionary's text. At run time
`vigila check` / `ingest` read that file instead of importing pandera and pandas (~3.5 s of start-up):
`contract(name)` gives the columns, the polars schema, and failure records identical to pandera's
(`failures`) or the first failed check of each value (`first_failure`). `vigila dictionary` rewrites the
file; a test keeps it equal to what the models say and compares both checkers on the same frames.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

ROW = "_row"   # 1-based data row of the original file, carried by every ingest frame and error record
ERROR_SCHEMA = {ROW: pl.Int64, "field": pl.Utf8, "check": pl.Utf8, "value": pl.Utf8}   # one failed check of a row

CONTRACTS_PATH = Path(__file__).resolve().parents[2] / "schemas" / "contracts.json"
DTYPES = {"String": pl.Utf8, "Int32": pl.Int32, "Int64": pl.Int64, "Float64": pl.Float64, "Date": pl.Date,
          "Boolean": pl.Boolean, "Datetime(time_unit='us', time_zone='UTC')": pl.Datetime("us", "UTC"),
          "Datetime(time_unit='us', time_zone=None)": pl.Datetime("us"), "UInt32": pl.UInt32}


def _models() -> dict[str, Any]:
    from schemas.harmonised import CasesRevision, CasesWeekly, QuarantineRecord
    from schemas.outputs import Reporting
    from schemas.raw import RAW_MODELS

    return {"cases_weekly": CasesWeekly, "cases_revisions": CasesRevision, "quarantine": QuarantineRecord,
            "reporting": Reporting, **{f"raw_{shape}": model for shape, model in RAW_MODELS.items()}}


def _json_value(v: Any) -> Any:
    if isinstance(v, dt.date):
        return {"date": v.isoformat()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


def _py_value(v: Any) -> Any:
    if isinstance(v, dict) and "date" in v:
        return dt.date.fromisoformat(v["date"])
    if isinstance(v, list):
        return [_py_value(x) for x in v]
    return v


def compile_contracts() -> dict[str, Any]:
    """The models of `schemas/` as JSON-able data (imports pandera: for `vigila dictionary` and tests)."""
    from schemas.harmonised import SCHEMA_VERSION
    from schemas.outputs import REPORTING_SCHEMA_VERSION
    from vigila.warehouse import dictionary

    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "versions": {"reporting": REPORTING_SCHEMA_VERSION},
                           "contracts": {},
                           "dictionary": {"markdown": dictionary.markdown(), "json": dictionary.as_dict()}}
    for name, model in _models().items():
        schema = model.to_schema()
        out["contracts"][name] = {
            "model": model.__name__, "strict": bool(schema.strict), "unique": list(schema.unique or []),
            "columns": {col: {"dtype": str(c.dtype), "nullable": bool(c.nullable), "required": bool(c.required),
                              "checks": [{"kind": ch.name, "error": str(ch.error),
                                          "stats": {k: _json_value(v) for k, v in (ch.statistics or {}).items()}}
                                         for ch in c.checks]}
                        for col, c in schema.columns.items()}}
    return out


def write_contracts() -> Path:
    CONTRACTS_PATH.write_text(json.dumps(compile_contracts(), indent=1, ensure_ascii=False) + "\n")
    _load.cache_clear()
    return CONTRACTS_PATH


@cache
def _load() -> dict[str, Any]:
    return json.loads(CONTRACTS_PATH.read_text())


def schema_version(dataset: str | None = None) -> str:
    """The contract version of the harmonised datasets (cases, revisions, quarantine), or of `dataset`."""
    return _load()["versions"][dataset] if dataset else _load()["schema_version"]


def dictionary_docs() -> tuple[str, dict]:
    """The data dictionary (markdown, JSON) as generated from the models when the contracts were compiled."""
    d = _load()["dictionary"]
    return d["markdown"], d["json"]


@dataclass(frozen=True)
class Contract:
    name: str
    spec: dict[str, Any]

    @property
    def columns(self) -> list[str]:
        return list(self.spec["columns"])

    @property
    def unique(self) -> list[str]:
        return self.spec["unique"]

    def polars_schema(self) -> dict[str, pl.DataType]:
        return {c: DTYPES[s["dtype"]] for c, s in self.spec["columns"].items()}

    def _check_expr(self, column: str, check: dict) -> pl.Expr:
        """True where a (non-null) value passes the check; pandera ignores nulls in checks."""
        col, stats = pl.col(column), {k: _py_value(v) for k, v in check["stats"].items()}
        kind = check["kind"]
        if kind == "greater_than_or_equal_to":
            return col >= stats["min_value"]
        if kind == "less_than_or_equal_to":
            return col <= stats["max_value"]
        if kind == "greater_than":
            return col > stats["min_value"]
        if kind == "less_than":
            return col < stats["max_value"]
        if kind == "isin":
            return col.is_in(stats["allowed_values"])
        if kind == "str_matches":
            pattern = stats["pattern"]
            return col.str.contains(pattern if pattern.startswith("^") else f"^{pattern}")
        if kind == "in_range":
            return col.is_between(stats["min_value"], stats["max_value"])
        raise NotImplementedError(f"contract {self.name}: check {kind} has no polars form; add it to vigila.warehouse.contract")

    def first_failure(self, values: pl.Series, column: str) -> pl.Series:
        """For each typed value, the name of the first check it fails (null when it passes)."""
        spec = self.spec["columns"].get(column)
        if spec is None:
            return pl.Series(column, [None] * values.len(), pl.Utf8)
        frame = values.to_frame(column)
        failed = [pl.when(pl.col(column).is_null()).then(pl.lit(None if spec["nullable"] else "not_nullable"))]
        failed += [pl.when(~self._check_expr(column, ch)).then(pl.lit(ch["error"])) for ch in spec["checks"]]
        return frame.select(pl.coalesce(failed).cast(pl.Utf8).alias(column)).to_series()

    def failures(self, df: pl.DataFrame) -> pl.DataFrame:
        """Every failure of the contract on `df` (a `_row` column numbers the rows) as error records
        (_row, field, check, value), as pandera's lazy validation reports them: missing columns and wrong
        dtypes once for the frame (row 0), each failing value by row, both rows of a repeated unique key."""
        parts, present = [], set(df.columns)
        frame_level = [(self.spec["model"], "column_in_dataframe", c) for c, s in self.spec["columns"].items()
                       if s["required"] and c not in present]
        for c, s in self.spec["columns"].items():
            if c in present and df.schema[c] != DTYPES[s["dtype"]]:
                frame_level.append((c, f"dtype('{s['dtype']}')", str(df.schema[c])))
        for c, s in self.spec["columns"].items():
            if c not in present:
                continue
            checks = ([("not_nullable", pl.col(c).is_null())] if not s["nullable"] else [])
            checks += [(ch["error"], pl.col(c).is_not_null() & ~self._check_expr(c, ch).fill_null(True)) for ch in s["checks"]]
            for name, failed in checks:
                bad = df.filter(failed)
                if bad.height:
                    parts.append(bad.select(pl.col(ROW), pl.lit(c).alias("field"), pl.lit(name).alias("check"),
                                            pl.col(c).cast(pl.Utf8).alias("value")))
        key = [k for k in self.unique if k in present]
        if key and df.height:
            dup = df.filter(pl.struct(key).is_duplicated())
            if dup.height:
                others = [c for c in df.columns if c != ROW]
                parts.append(dup.select(pl.col(ROW), pl.lit(self.spec["model"]).alias("field"),
                                        pl.lit("multiple_fields_uniqueness").alias("check"),
                                        pl.struct(others).struct.json_encode().alias("value")))
        if frame_level:
            parts.append(pl.DataFrame({ROW: [0] * len(frame_level), "field": [f for f, _, _ in frame_level],
                                       "check": [k for _, k, _ in frame_level], "value": [v for _, _, v in frame_level]}))
        return pl.concat([pl.DataFrame(schema=ERROR_SCHEMA), *(p.cast(ERROR_SCHEMA) for p in parts)])


@cache
def contract(name: str) -> Contract:
    """A compiled contract: cases_weekly, cases_revisions, quarantine, reporting, raw_<shape>."""
    return Contract(name, _load()["contracts"][name])
