"""Harmonisation rules: controlled-value tables, per-source reference context, and the shape
steps that need whole series (duplicate weeks, cumulative -> weekly).

Input: harmonised rows from `vigila.ingest.plan`; output: rows of the weekly contract plus error
records (_row, field, check, value, severity). Pure polars; no files, no Prefect.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from vigila.ingest import agebands
from vigila.core import places
from vigila.ingest.cast import ERROR_SCHEMA, LINE, ROW_KEY
from vigila.config import SourceConfig
from vigila.ingest.readers import ROW
from vigila.core.vocab import AGE_GROUPS, CLASSIFICATIONS, SEXES, disease_table

DIMS = ["country_iso3", "geo_level", "geo_code", "geo_name", "admin1_code", "admin1_name", "disease", "classification", "sex",
        "age_group", "age_band_source", "epi_year", "epi_week", "week_start"]
HARMONISE_ERROR_SCHEMA = {**ERROR_SCHEMA, "severity": pl.Utf8}

# Spellings seen in the region's files, beyond the controlled values themselves.
BUILTIN_VALUES: dict[str, dict[str, str]] = {
    "sex": {"M": "male", "MASCULINO": "male", "HOMBRE": "male", "H": "male", "MALE": "male", "MASC": "male",
            "F": "female", "FEMENINO": "female", "MUJER": "female", "FEMALE": "female", "FEM": "female",
            "I": "unknown", "IGNORADO": "unknown", "DESCONOCIDO": "unknown", "SIN DATO": "unknown",
            "U": "unknown", "NI": "unknown", "TOTAL": "all", "AMBOS": "all", "AMBOS SEXOS": "all"},
    "classification": {"SOSPECHOSO": "suspected", "SUSPEITO": "suspected", "PROBABLE": "probable",
                       "PROVAVEL": "probable", "CONFIRMADO": "confirmed", "GRAVE": "severe",
                       "DENGUE GRAVE": "severe", "TOTAL": "total"},
    "age_group": {"TOTAL": "all", "TODAS": "all", "DESCONOCIDO": "unknown", "IGNORADO": "unknown"},
}
#: columns that follow from geo_code (kept, never part of a key)
PLACE_NAMES = ["geo_name", "admin1_code", "admin1_name"]
#: fields whose bad values make a line-list case count as 'unknown' (with a warning) instead of voiding it
SOFT_FIELDS: dict[str, set[str]] = {"line_list": {"age", "sex"}}
CONTROLLED = {"sex": SEXES, "classification": CLASSIFICATIONS, "age_group": AGE_GROUPS}


def value_table(field_name: str, overrides: dict[str, str]) -> pl.DataFrame:
    """(key, value) lookup for a controlled field: identity, built-in spellings, then config."""
    allowed = CONTROLLED[field_name]
    bad = sorted({v for v in overrides.values() if v not in allowed})
    if bad:
        raise ValueError(f"value_maps.{field_name} maps to {bad[0]!r}, not one of {', '.join(allowed)}")
    pairs = {**{v: v for v in allowed}, **BUILTIN_VALUES.get(field_name, {}), **overrides}
    table = pl.DataFrame({"key": list(pairs), "value": list(pairs.values())})
    return table.with_columns(places.normalise_expr(pl.col("key")).alias("key")).unique("key", keep="last", maintain_order=True)


@dataclass
class Context:
    """Reference tables for one source, built once per run."""

    source: SourceConfig
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    issue_date: dt.date | None = None      # the report's issue date: weeks after it are implausible

    @classmethod
    def build(cls, source: SourceConfig, issue_date: dt.date | None = None) -> Context:
        vm = source.value_maps
        tables = {f: value_table(f, getattr(vm, f)) for f in CONTROLLED}
        if source.age_bands:   # the source's own bands: harmonised where they nest, else kept (age_band_source)
            tables["age_group"] = agebands.with_bands(tables["age_group"], source.age_bands)
        countries = places.country_table()
        tables["country"] = places.table_from_aliases(vm.country, countries) if vm.country else countries
        dis = disease_table().select("key", "disease")
        if vm.disease:
            extra = pl.DataFrame({"key": list(vm.disease), "disease": list(vm.disease.values())})
            dis = pl.concat([extra.with_columns(places.normalise_expr(pl.col("key"))), dis]).unique("key", keep="first")
        tables["disease"] = dis
        return cls(source, tables, issue_date or dt.date.today())

    def place_table(self, iso3: str) -> pl.DataFrame:
        key = f"place:{iso3}"
        if key not in self.tables:
            aliases = self.source.value_maps.place
            if self.source.geo_level == "admin1":
                base = places.admin1_table(iso3)
                self.tables[key] = places.table_from_aliases(aliases, base) if aliases else base
            else:  # below admin 1: national codes come only from the source's place map
                self.tables[key] = pl.DataFrame(
                    {"key": list(aliases), "geo_code": [f"{iso3}-{c}" for c in aliases.values()],
                     "geo_name": list(aliases)}).with_columns(places.normalise_expr(pl.col("key")))
        return self.tables[key]


def _errors(df: pl.DataFrame, mask: pl.Expr, field_name: str, check: str, value: pl.Expr,
            severity: str = "error") -> pl.DataFrame:
    return df.filter(mask).select(pl.col(ROW), pl.lit(field_name).alias("field"), pl.lit(check).alias("check"),
                                  value.cast(pl.Utf8).alias("value"), pl.lit(severity).alias("severity"))


def series_key(rows: pl.DataFrame) -> list[str]:
    """The harmonised key of a count row: place, disease, breakdowns, week (and issue date when per row)."""
    return [d for d in DIMS if d not in (*PLACE_NAMES, "week_start")] + (["issue_date"] if "issue_date" in rows.columns else [])


def resolve_sub_rows(rows: pl.DataFrame, ledger: pl.DataFrame, source: SourceConfig
                     ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Count rows sharing a harmonised key (`series_key`) -> one row each, as the config declares.

    Whole lines repeated byte for byte follow `identical_rows` (count: kept, warning `identical_rows`;
    drop: first kept, the others set aside as `identical_row_dropped`). Rows whose lines differ are:
    - with `row_key`: rows of one row key with different lines conflict (all quarantined,
      `row_key_conflict`, naming the rows); the rest are summed per harmonised key;
    - with `aggregate: sum`: summed per harmonised key;
    - otherwise undeclared: returned as the third frame (_row, __group) and nothing is guessed.
    Returns (rows, error records, undeclared rows)."""
    key = series_key(rows)
    hashes = [c for c in (LINE, ROW_KEY) if c in ledger.columns]
    r = rows.join(ledger.select(ROW, *hashes), on=ROW, how="left") if hashes else rows.with_columns(pl.lit(None, pl.UInt64).alias(LINE))
    r = r.with_columns(pl.col(ROW).rank("ordinal").over([*key, LINE]).alias("__rep"),
                       pl.col(ROW).min().over([*key, LINE]).alias("__first"))
    repeat = (pl.col("__rep") > 1) & pl.col(LINE).is_not_null()
    drop = source.identical_rows == "drop"
    errors = [_errors(r, repeat, "cases", "identical_row_dropped" if drop else "identical_rows",
                      pl.format("same whole line as row {}", "__first"), "set_aside" if drop else "warning")]
    if drop:
        r = r.filter(~repeat)
    if source.row_key:
        distinct = pl.col(LINE).n_unique().over(ROW_KEY)
        conflict = distinct > 1
        rows_of_key = pl.col(ROW).sort().head(5).cast(pl.Utf8).str.join(", ").over(ROW_KEY, mapping_strategy="join")
        r = r.with_columns(rows_of_key.alias("__rows"))
        errors.append(_errors(r, conflict, "cases", "row_key_conflict",
                              pl.format("rows {} share the row key ({}) with other values", "__rows",
                                        pl.lit(", ".join(source.row_key)))))
        r = r.filter(~conflict)
    many = pl.col(LINE).n_unique().over(key) > 1
    undeclared = pl.DataFrame(schema={ROW: pl.Int64, "__group": pl.UInt32})
    if source.aggregate == "none" and not source.row_key:
        undeclared = r.filter(many).select(ROW, pl.struct(key).rank("dense").cast(pl.UInt32).alias("__group")).sort(ROW)
        r = r.filter(~many)
    values = [c for c in ("cases", "deaths") if c in r.columns]
    summed = r.group_by(key, maintain_order=True).agg(
        pl.col(ROW).min(), pl.col(*PLACE_NAMES, "week_start").first(),
        *(pl.when(pl.col(c).is_null().all()).then(None).otherwise(pl.col(c).sum()).alias(c) for c in values))
    return summed.select(rows.columns), pl.concat(errors), undeclared


def difference_cumulative(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cumulative-to-date counts (reset each epi year) -> weekly counts.

    The first week of a year keeps its cumulative value when it is week 1; a decrease is a
    downward revision: reported (check `cumulative_decrease`, with the negative difference),
    never clamped to zero. A week whose previous week is missing cannot be attributed and is
    reported (`cumulative_gap`)."""
    series = [d for d in DIMS if d not in ("epi_year", "epi_week", "week_start", *PLACE_NAMES)] + ["epi_year"]
    rows = rows.sort([*series, "epi_week"])
    prev_week = pl.col("epi_week").shift(1).over(series)
    out = rows.with_columns(
        *[(pl.col(c) - pl.col(c).shift(1).over(series)).alias(f"__d_{c}") for c in ("cases", "deaths") if c in rows.columns],
        prev_week.alias("__prev"),
    ).with_columns(
        pl.when(pl.col("__prev").is_null() & (pl.col("epi_week") == 1)).then(pl.col("cases"))
        .otherwise(pl.col("__d_cases")).alias("weekly"),
    )
    gap = (pl.col("__prev").is_null() & (pl.col("epi_week") != 1)) | (pl.col("__prev").is_not_null() & (pl.col("__prev") != pl.col("epi_week") - 1))
    negative = ~gap & (pl.col("weekly") < 0)
    label = pl.format("{}-W{}: cumulative {} -> weekly {}", "epi_year", "epi_week", "cases", "weekly")
    errors = pl.concat([
        _errors(out, gap, "cases", "cumulative_gap", label),
        _errors(out, negative, "cases", "cumulative_decrease", label),
    ])
    weekly = out.filter(~gap & ~negative).with_columns(pl.col("weekly").alias("cases"))
    if "deaths" in rows.columns:
        weekly = weekly.with_columns(
            pl.when(pl.col("epi_week") == 1).then(pl.col("deaths")).otherwise(pl.col("__d_deaths")).alias("deaths"))
    return weekly.drop([c for c in weekly.columns if c.startswith("__")] + ["weekly"]), errors
