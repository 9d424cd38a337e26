"""Harmonisation: typed canonical rows -> rows of the harmonised weekly contract.

Input: typed batches (`vigila.cast`) and the source config; output: harmonised rows (weekly
counts, line-list partial counts, or cumulative rows still to difference) and error records
(_row, field, check, value, severity) for every row that cannot be harmonised.
All functions are pure polars; nothing here reads files or knows about Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from vigila import epiweek, places
from vigila.cast import ERROR_SCHEMA
from vigila.config import SourceConfig
from vigila.readers import ROW
from vigila.vocab import AGE_GROUPS, CLASSIFICATIONS, SEXES, age_band_expr, disease_table

DIMS = ["country_iso3", "geo_level", "geo_code", "geo_name", "disease", "classification", "sex", "age_group",
        "epi_year", "epi_week", "week_start"]
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

    @classmethod
    def build(cls, source: SourceConfig) -> Context:
        vm = source.value_maps
        tables = {f: value_table(f, getattr(vm, f)) for f in CONTROLLED}
        countries = places.country_table()
        tables["country"] = places.table_from_aliases(vm.country, countries) if vm.country else countries
        dis = disease_table().select("key", "disease")
        if vm.disease:
            extra = pl.DataFrame({"key": list(vm.disease), "disease": list(vm.disease.values())})
            dis = pl.concat([extra.with_columns(places.normalise_expr(pl.col("key"))), dis]).unique("key", keep="first")
        tables["disease"] = dis
        return cls(source, tables)

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


def _lookup(df: pl.DataFrame, raw: str, table: pl.DataFrame, outputs: dict[str, str]) -> pl.DataFrame:
    """Add `outputs` (table column -> new column) by matching normalise(raw) on the table's key.
    Normalising runs once per distinct raw value, not per row."""
    distinct = df.select(pl.col(raw).unique()).drop_nulls()
    keyed = distinct.with_columns(places.normalise_expr(pl.col(raw)).alias("__k")).join(
        table.select(pl.col("key").alias("__k"), *(pl.col(t).alias(o) for t, o in outputs.items())),
        on="__k", how="left").drop("__k").unique(raw, keep="first")
    return df.join(keyed, on=raw, how="left", maintain_order="left")


def harmonise_batch(df: pl.DataFrame, ctx: Context) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Typed canonical batch -> (rows with every harmonised dimension, error records)."""
    src = ctx.source
    errs: list[pl.DataFrame] = []
    cols = set(df.columns)

    if "resolution" in cols:  # e.g. yearly totals among weekly rows: set aside, reported
        weekly = [places.normalise(v) for v in src.weekly_resolution_values]
        off = pl.col("resolution").is_not_null() & ~places.normalise_expr(pl.col("resolution")).is_in(weekly)
        errs.append(_errors(df, off, "resolution", "temporal_resolution", pl.col("resolution"), "set_aside"))
        df = df.filter(~off)

    df, week_errs = _derive_weeks(df, src)
    errs.append(week_errs)

    if src.country:
        df = df.with_columns(pl.lit(src.country).alias("country_iso3"))
    else:
        df = _lookup(df, "country", ctx.tables["country"], {"iso3": "country_iso3"})
        errs.append(_errors(df, pl.col("country_iso3").is_null(), "country", "unknown_country", pl.col("country")))
    df = _place(df, ctx, errs)

    for name in ("classification", "sex", "age_group"):
        if name in cols:
            df = _lookup(df.rename({name: f"raw_{name}"}), f"raw_{name}", ctx.tables[name], {"value": name})
            soft = name in SOFT_FIELDS.get(src.shape, ())
            unmapped = pl.col(name).is_null() & (pl.col(f"raw_{name}").is_not_null() | pl.lit(not soft))
            errs.append(_errors(df, unmapped, name, f"unmapped_{name}", pl.col(f"raw_{name}").fill_null("<missing>"),
                                "warning" if soft else "error"))
            if soft:
                df = df.with_columns(pl.col(name).fill_null("unknown"))
        elif name == "age_group" and "age" in cols:
            df = df.with_columns(age_band_expr(pl.col("age")).alias("age_group"))
        else:
            df = df.with_columns(pl.lit(getattr(src.constants, name)).alias(name))
    if "disease" in cols:
        df = _lookup(df.rename({"disease": "raw_disease"}), "raw_disease", ctx.tables["disease"], {"disease": "disease"})
        errs.append(_errors(df, pl.col("disease").is_null() | ~pl.col("disease").is_in(src.diseases), "disease",
                            "unknown_disease", pl.col("raw_disease").fill_null("<missing>")))
    else:
        df = df.with_columns(pl.lit(src.diseases[0]).alias("disease"))

    errors = pl.concat([e.cast(HARMONISE_ERROR_SCHEMA) for e in errs]) if errs else pl.DataFrame(schema=HARMONISE_ERROR_SCHEMA)
    bad = errors.filter(pl.col("severity") == "error")[ROW].unique()
    good = df.filter(~pl.col(ROW).is_in(bad.implode()))
    keep = [ROW, *DIMS, *[c for c in ("cases", "deaths", "issue_date") if c in good.columns]]
    return good.select(keep), errors


def _derive_weeks(df: pl.DataFrame, src: SourceConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """epi_year, epi_week, week_start from reported epi weeks, else week start, else any date."""
    cols = set(df.columns)
    conv = src.epiweek
    if {"epi_year", "epi_week"} <= cols:
        df = epiweek.add_week_start(df.drop("week_start", strict=False), conv)
        missing = pl.col("epi_year").is_null() | pl.col("epi_week").is_null()
        label = pl.format("{}-W{}", "epi_year", "epi_week")
        err = pl.concat([
            _errors(df, missing, "epi_week", "missing_epi_week", label),
            _errors(df, ~missing & pl.col("week_start").is_null(), "epi_week", "week_not_in_year", label),
        ])
        return df, err
    col = "week_start" if "week_start" in cols else "date"
    df = epiweek.add_weeks_from_dates(df, col, conv)
    if col == "date":
        df = df.drop("date")
    return df, _errors(df, pl.col("week_start").is_null(), col, f"missing_{col}", pl.lit(None))


def _place(df: pl.DataFrame, ctx: Context, errs: list[pl.DataFrame]) -> pl.DataFrame:
    src = ctx.source
    df = df.with_columns(pl.lit(src.geo_level).alias("geo_level"))
    if src.geo_level == "admin0":
        names = places.country_table().unique("iso3", keep="first").select(
            pl.col("iso3").alias("country_iso3"), pl.col("name").alias("geo_name"))
        return df.with_columns(pl.col("country_iso3").alias("geo_code")).join(
            names, on="country_iso3", how="left", maintain_order="left")
    parts = []
    for iso3 in df["country_iso3"].drop_nulls().unique().sort().to_list():
        part = df.filter(pl.col("country_iso3") == iso3)
        parts.append(_lookup(part, "place", ctx.place_table(iso3), {"geo_code": "geo_code", "geo_name": "geo_name"}))
    nulls = df.filter(pl.col("country_iso3").is_null()).with_columns(
        pl.lit(None, pl.Utf8).alias("geo_code"), pl.lit(None, pl.Utf8).alias("geo_name"))
    df = pl.concat([*parts, nulls]) if parts else nulls
    errs.append(_errors(df, pl.col("country_iso3").is_not_null() & pl.col("geo_code").is_null(), "place",
                        "unknown_place", pl.col("place").fill_null("<missing>")))
    return df


# --------------------------------------------------------------------------- shapes


def aggregate_line_list(rows: pl.DataFrame) -> pl.DataFrame:
    """Line-list rows -> counts per harmonised dimension (one batch; sum partials with `sum_partials`)."""
    return rows.group_by(DIMS).agg(pl.len().cast(pl.Int64).alias("cases"), pl.col(ROW).min().alias(ROW))


def sum_partials(parts: list[pl.DataFrame]) -> pl.DataFrame:
    if not parts:
        return pl.DataFrame()
    return pl.concat(parts).group_by(DIMS).agg(pl.col("cases").sum(), pl.col(ROW).min()).with_columns(
        pl.lit(None, pl.Int64).alias("deaths"))


def split_duplicates(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows with a repeated key: exact repeats keep their first copy, conflicting repeats are
    all set aside. Returns (unique rows, error records)."""
    key = [d for d in DIMS if d not in ("geo_name", "week_start")]
    values = [c for c in ("cases", "deaths") if c in rows.columns]
    rows = rows.with_columns(
        pl.len().over(key).alias("__n"),
        pl.struct(values).n_unique().over(key).alias("__variants"),
        pl.col(ROW).rank("ordinal").over(key).alias("__rank"),
    )
    conflict = pl.col("__variants") > 1
    repeat = (pl.col("__variants") == 1) & (pl.col("__rank") > 1)
    label = pl.format("{} {}-W{}", "geo_code", "epi_year", "epi_week")
    errors = pl.concat([
        _errors(rows, conflict, "cases", "duplicate_week_conflict", label),
        _errors(rows, repeat, "cases", "duplicate_week_repeat", label),
    ])
    return rows.filter(~conflict & ~repeat).drop("__n", "__variants", "__rank"), errors


def difference_cumulative(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cumulative-to-date counts (reset each epi year) -> weekly counts.

    The first week of a year keeps its cumulative value when it is week 1; a decrease is a
    downward revision: reported (check `cumulative_decrease`, with the negative difference),
    never clamped to zero. A week whose previous week is missing cannot be attributed and is
    reported (`cumulative_gap`)."""
    series = [d for d in DIMS if d not in ("epi_year", "epi_week", "week_start", "geo_name")] + ["epi_year"]
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
