"""Field handlers: how each canonical field (or dependent pair of fields) of a file is typed, checked and
harmonised, once per distinct raw value, into a domain table.

In: the distinct raw values of a field's columns (text, from `plan.distinct_values`) and the run's `Env`
(source config, raw contract, reference tables). Out: a `Domain`: those values with their output columns
(`__v_<field>` typed values, `__d_*` / `__w_*` weeks, geo_code...) and the failed check and its severity.
`HANDLERS` is the table: distinct-value group -> handler(s); `plan.build_domains` iterates it. A new kind of
field = a `Handler` here (its checks listed in vigila/checks.yaml), its raw type in `cast.FIELD_TYPES` and its
column in the config's `Columns`; `plan.dimensions` only if it makes a new harmonised column.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from vigila.config import SourceConfig
from vigila.core import catalogues, epiweek, places
from vigila.core.vocab import age_band_expr
from vigila.ingest import harmonise as hz
from vigila.ingest.cast import FIELD_TYPES, typed_expr
from vigila.warehouse.contract import Contract


@dataclass
class Domain:
    """Distinct raw values of `on` -> harmonised `outputs`, with the failed check (or null)."""

    id: str
    field: str              # reported in error records (mapped back to the file's column)
    on: list[str]           # raw canonical columns joined on
    table: pl.DataFrame     # on + outputs + chk + sev

    @property
    def chk(self) -> str:
        return f"__chk_{self.id}"

    @property
    def sev(self) -> str:
        return f"__sev_{self.id}"

    def canonical(self) -> pl.Series:
        """For each table row, the first row with the same outputs: raw values that harmonise
        alike (dates of one week, ages of one band) share it, so counting groups by it."""
        outputs = [c for c in self.table.columns if c not in (*self.on, self.chk, self.sev)]
        if not outputs:
            return pl.repeat(0, self.table.height, dtype=pl.UInt32, eager=True)
        t = self.table.select(outputs).with_row_index("__i")
        first = t.group_by(outputs, maintain_order=True).agg(pl.col("__i").first().alias("__f"))
        return t.join(first, on=outputs, how="left", nulls_equal=True, maintain_order="left")["__f"]


def _finish(df: pl.DataFrame, id_: str, field: str, on: list[str], check: pl.Expr, severity: str = "error") -> Domain:
    d = Domain(id_, field, on, df)
    d.table = df.with_columns(check.cast(pl.Utf8).alias(d.chk)).with_columns(
        pl.when(pl.col(d.chk).is_not_null()).then(pl.lit(severity)).alias(d.sev))
    return d


def _typed_domain(field: str, raw: pl.DataFrame, source: SourceConfig, model: Contract) -> tuple[pl.DataFrame, pl.Expr]:
    """Distinct raw values with their typed value `__t` and the failed check expression."""
    df = raw.with_columns(typed_expr(field, source, pl.col(field)).alias("__t"))
    df = df.with_columns(model.first_failure(df["__t"], field).alias("__contract"))
    kind = FIELD_TYPES[field]
    bad_cast = pl.col(field).is_not_null() & (pl.col(field).str.strip_chars() != "") & pl.col("__t").is_null()
    return df, pl.when(bad_cast).then(pl.lit(f"type:{kind}")).otherwise(pl.col("__contract"))


def _places(raw: pl.DataFrame, source: SourceConfig, ctx: hz.Context) -> pl.DataFrame:
    """Distinct raw places (or (parent, place) pairs) -> geo_code, geo_name and the admin1 they lie in
    (admin1_code, admin1_name): by name (ISO 3166-2, aliases, value_maps.place), or by the national codes of
    the `place_codes` catalogue (vigila.core.catalogues). Unknown places get null codes."""
    outputs = {"geo_code": "geo_code", "geo_name": "geo_name"}
    if source.place_codes is None:
        df = _lookup(raw, "place", ctx.place_table(source.country), outputs)
        admin1 = source.geo_level == "admin1"
        return df.with_columns((pl.col("geo_code") if admin1 else pl.lit(None, pl.Utf8)).alias("admin1_code"),
                               (pl.col("geo_name") if admin1 else pl.lit(None, pl.Utf8)).alias("admin1_name"))
    if source.geo_level == "admin1":
        table = catalogues.admin1_lookup(source.country)
        if source.value_maps.place:
            table = places.table_from_aliases(source.value_maps.place, table)
        right = table.select(pl.col("key").alias("__k"), "geo_code", "geo_name").unique("__k")
        df = (raw.with_columns(catalogues.place_key_expr(pl.col("place")).alias("__k"))
              .join(right, on="__k", how="left", maintain_order="left").drop("__k"))
        return df.with_columns(pl.col("geo_code").alias("admin1_code"), pl.col("geo_name").alias("admin1_name"))
    parent = "place_parent" if "place_parent" in raw.columns else None
    return catalogues.resolve(raw, "place", source.place_codes, source.geo_level, parent=parent)


def excluding(d: Domain, values: list[str]) -> Domain:
    """Raw values the source declares out of scope: set aside (reported), whatever else they are."""
    keys = [places.normalise(v) for v in values]
    hit = places.normalise_expr(pl.col(d.field)).is_in(keys).fill_null(False)
    d.table = d.table.with_columns(pl.when(hit).then(pl.lit("excluded_value")).otherwise(pl.col(d.chk)).alias(d.chk),
                                   pl.when(hit).then(pl.lit("set_aside")).otherwise(pl.col(d.sev)).alias(d.sev))
    return d


def including(d: Domain, values: list[str]) -> Domain:
    """Only these raw values are in scope: any other value (or none) is set aside, whatever else it is."""
    keys = [places.normalise(v) for v in values]
    out = ~places.normalise_expr(pl.col(d.field)).is_in(keys).fill_null(False)
    d.table = d.table.with_columns(pl.when(out).then(pl.lit("not_included_value")).otherwise(pl.col(d.chk)).alias(d.chk),
                                   pl.when(out).then(pl.lit("set_aside")).otherwise(pl.col(d.sev)).alias(d.sev))
    return d


#: spellings of the age unit (compared normalised: upper case, no accents)
AGE_UNITS = {"years": ["A", "Y", "ANO", "ANOS", "YEAR", "YEARS", "AÑO", "AÑOS"],
             "months": ["M", "MES", "MESES", "MONTH", "MONTHS"],
             "days": ["D", "DIA", "DIAS", "DAY", "DAYS"],
             "hours": ["H", "HORA", "HORAS", "HOUR", "HOURS"], "minutes": ["MIN", "MINUTO", "MINUTOS", "MINUTES"]}
UNIT_DIVISOR = {"years": 1.0, "months": 12.0, "days": 365.25, "hours": 8766.0, "minutes": 525960.0}
SINAN_UNITS = {1: "hours", 2: "days", 3: "months", 4: "years"}


def _age_domain(raw: pl.DataFrame, source: SourceConfig, model: Contract, severity: str) -> Domain:
    """Distinct ages (with their unit, or SINAN-coded) -> age band. The raw contract (0..120 years) is
    checked on the age in years; an unknown unit or code is `unmapped_age_unit` and the band `unknown`."""
    number = typed_expr("age", source, pl.col("age"))
    if source.age_coding == "sinan":
        code = number.cast(pl.Int64, strict=False)
        unit = (code // 1000).replace_strict(SINAN_UNITS, default=None, return_dtype=pl.Utf8)
        value = (code % 1000).cast(pl.Float64)
    elif "age_unit" in raw.columns:
        spelled = {places.normalise(k): u for u, ks in AGE_UNITS.items() for k in ks}
        spelled.update({places.normalise(k): u for k, u in source.value_maps.age_unit.items()})
        unit = places.normalise_expr(pl.col("age_unit")).replace_strict(spelled, default=None, return_dtype=pl.Utf8)
        value = number
    else:
        unit, value = pl.lit("years"), number
    df = raw.with_columns(unit.alias("__unit"), value.alias("__value"))
    df = df.with_columns((pl.col("__value") / pl.col("__unit").replace_strict(UNIT_DIVISOR, default=None,
                                                                              return_dtype=pl.Float64)).alias("__t"))
    df = df.with_columns(model.first_failure(df["__t"], "age").alias("__contract"))
    given = pl.col("age").is_not_null() & (pl.col("age").str.strip_chars() != "")
    check = (pl.when(given & pl.col("__value").is_null()).then(pl.lit("type:number"))
             .when(given & pl.col("__unit").is_null()).then(pl.lit("unmapped_age_unit"))
             .otherwise(pl.col("__contract")))
    band = pl.when(check.is_null()).then(age_band_expr(pl.col("__t"))).otherwise(pl.lit("unknown"))
    on = [c for c in ("age", "age_unit") if c in raw.columns]
    return _finish(df.select(*on, band.alias("age_group"), check.alias("c")), "age" if len(on) == 1 else "age_pair", "age",
                   on, pl.col("c"), severity)


#: line-list death flags (compared normalised); any valid date also means a death (a date of death)
#: (numeric codes differ between systems, e.g. SIVIGILA CON_FIN 1 = alive, 2 = dead: map them in value_maps.deaths)
DEATH_YES = ["S", "SI", "Y", "YES", "TRUE", "FALLECIDO", "FALLECIDA", "MUERTO", "MUERTA", "OBITO", "DEFUNCION", "DEAD", "DIED"]
DEATH_NO = ["N", "NO", "FALSE", "VIVO", "VIVA", "CURA", "ALIVE", "RECUPERADO"]


def _death_flags(raw: pl.DataFrame, source: SourceConfig) -> Domain:
    """Line lists: distinct values of the deaths column -> 1 (a death) / 0. A date is a date of death; an
    empty cell is no death; any other value is `unmapped_deaths` (warning: the case counts, not as a death)."""
    table = {**{places.normalise(k): 1 for k in DEATH_YES}, **{places.normalise(k): 0 for k in DEATH_NO},
             **{places.normalise(k): int(v == "yes") for k, v in source.value_maps.deaths.items()}}
    flag = places.normalise_expr(pl.col("deaths")).replace_strict(table, default=None, return_dtype=pl.Int64)
    dated = typed_expr("date", source, pl.col("deaths")).is_not_null()
    blank = pl.col("deaths").is_null() | (pl.col("deaths").str.strip_chars() == "")
    df = raw.with_columns(pl.coalesce(flag, pl.when(dated).then(pl.lit(1, pl.Int64)), pl.when(blank).then(pl.lit(0, pl.Int64)))
                          .alias("__v_deaths"))
    df = df.with_columns(pl.when(pl.col("__v_deaths").is_null()).then(pl.lit("unmapped_deaths")).alias("c"),
                         pl.col("__v_deaths").fill_null(0))
    return _finish(df.drop("c"), "deaths", "deaths", ["deaths"], df["c"], "warning")


def _implausible(prefix: str, source: SourceConfig, ctx: hz.Context) -> pl.Expr:
    """A week that starts more than limits.future_weeks after the issue date, or an epi year before
    limits.min_epi_year: data nobody can have reported (year 2099, a typo'd 2031) never publishes."""
    limits = source.limits
    latest = ctx.issue_date + dt.timedelta(weeks=limits.future_weeks)
    return (pl.when(pl.col(f"{prefix}week_start") > latest).then(pl.lit("week_in_future"))
            .when(pl.col(f"{prefix}epi_year") < limits.min_epi_year).then(pl.lit("implausible_year")))


def _week_pairs(raw: pl.DataFrame, source: SourceConfig, ctx: hz.Context) -> Domain:
    """Distinct (epi_year, epi_week) text pairs -> typed week and its start; week 53 of a 52-week year fails."""
    typed = raw.select(*(typed_expr(f, source, pl.col(f)).alias(f) for f in ("epi_year", "epi_week")))
    weeks = epiweek.add_week_start(typed, source.epiweek)
    df = raw.with_columns(*(weeks[c].alias(f"__w_{c}") for c in ("epi_year", "epi_week", "week_start")))
    in_range = pl.col("__w_epi_week").is_between(1, 53) & pl.col("__w_epi_year").is_between(1900, 2100)
    check = pl.coalesce(pl.when(in_range & pl.col("__w_week_start").is_null()).then(pl.lit("week_not_in_year")),
                        _implausible("__w_", source, ctx))
    return _finish(df, "week_pair", "epi_week", ["epi_year", "epi_week"], check)


def _country_places(raw: pl.DataFrame, ctx: hz.Context) -> Domain:
    df = _lookup(raw, "country", ctx.tables["country"], {"iso3": "__iso3"})
    parts = []
    for iso3 in df["__iso3"].drop_nulls().unique().sort().to_list():
        part = df.filter(pl.col("__iso3") == iso3)
        parts.append(_lookup(part, "place", ctx.place_table(iso3), {"geo_code": "geo_code", "geo_name": "geo_name"}))
    rest = df.filter(pl.col("__iso3").is_null()).with_columns(pl.lit(None, pl.Utf8).alias("geo_code"),
                                                               pl.lit(None, pl.Utf8).alias("geo_name"))
    df = pl.concat([*parts, rest]).drop("__iso3")
    admin1 = ctx.source.geo_level == "admin1"   # names of several countries: admin1 (ISO 3166-2) or value_maps.place
    df = df.with_columns((pl.col("geo_code") if admin1 else pl.lit(None, pl.Utf8)).alias("admin1_code"),
                         (pl.col("geo_name") if admin1 else pl.lit(None, pl.Utf8)).alias("admin1_name"))
    return _finish(df, "country_place", "place", ["country", "place"],
                   pl.when(pl.col("geo_code").is_null()).then(pl.lit("unknown_place")))


def _lookup(df: pl.DataFrame, raw: str, table: pl.DataFrame, outputs: dict[str, str]) -> pl.DataFrame:
    keyed = df.with_columns(places.normalise_expr(pl.col(raw)).alias("__k"))
    right = table.select(pl.col("key").alias("__k"), *(pl.col(t).alias(o) for t, o in outputs.items())).unique("__k")
    return keyed.join(right, on="__k", how="left", maintain_order="left").drop("__k")


def country_names() -> pl.DataFrame:
    return places.country_table().unique("iso3", keep="first", maintain_order=True).select(
        pl.col("iso3").alias("country_iso3"), pl.col("name").alias("geo_name"))


# --------------------------------------------------------------------------- the handler table


@dataclass(frozen=True)
class Env:
    """What every handler may read: the source, its raw contract, its reference tables."""

    source: SourceConfig
    ctx: hz.Context
    model: Contract                 # the raw contract of the source's shape
    soft: frozenset[str]            # fields whose bad values count as 'unknown' with a warning (line lists: age, sex)


@dataclass(frozen=True)
class Handler:
    """How one distinct-value group becomes a domain. `build(raw, env, group)` returns the `Domain`.

    checks: the check names it can raise besides the raw contract's bounds (`{field}` and `{kind}` stand for the
    field and its raw type; each is in vigila/checks.yaml). stage: 0 a field (or pair) read on its own, 1 a pair
    that replaces its fields, 2 a check across fields, built after the source's exclude/include apply.
    scoped: the source's exclude/include lists name this group's raw values. when: the handler applies to this
    source (else the next handler of the group, or no domain)."""

    build: Callable[[pl.DataFrame, Env, str], Domain]
    checks: tuple[str, ...] = ()
    stage: int = 0
    scoped: bool = True
    when: Callable[[SourceConfig], bool] = lambda source: True


def _typed_value(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    """A typed value kept as it is (`__v_<field>`): cases, deaths of a count file, issue_date."""
    df, check = _typed_domain(f, raw, env.source, env.model)
    return _finish(df.select(f, pl.col("__t").alias(f"__v_{f}"), check.alias("c")), f, f, [f], pl.col("c"))


def _week_of_date(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    """A date (or a week's first day) -> its epi week (`__d_epi_year`, `__d_epi_week`, `__d_week_start`)."""
    source = env.source
    df, check = _typed_domain(f, raw, source, env.model)
    weeks = epiweek.weeks_of_dates(df["__t"], source.epiweek)
    df = df.join(weeks.rename({"date": "__t", **{c: f"__d_{c}" for c in epiweek.WEEK_SCHEMA}}), on="__t", how="left")
    check = pl.coalesce(check, pl.when(pl.col("__t").is_null()).then(pl.lit(f"missing_{f}")),
                        _implausible("__d_", source, env.ctx))
    return _finish(df.select(f, *(f"__d_{c}" for c in epiweek.WEEK_SCHEMA), check.alias("c")), f, f, [f], pl.col("c"))


def _week_part(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    """epi_year or epi_week alone: typed and checked (the pair makes the week: `_week_pairs`)."""
    df, check = _typed_domain(f, raw, env.source, env.model)
    check = pl.coalesce(check, pl.when(pl.col("__t").is_null()).then(pl.lit("missing_epi_week")))
    return _finish(df.select(f, check.alias("c")), f, f, [f], pl.col("c"))


def _age(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    return _age_domain(raw, env.source, env.model, "warning" if "age" in env.soft else "error")


def _deaths(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    return _death_flags(raw, env.source)


def _resolution(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    """A row of another temporal resolution (a yearly or monthly total) is set aside."""
    weekly = [places.normalise(v) for v in env.source.weekly_resolution_values]
    off = pl.col(f).is_not_null() & ~places.normalise_expr(pl.col(f)).is_in(weekly)
    return _finish(raw, f, f, [f], pl.when(off).then(pl.lit("temporal_resolution")), "set_aside")


def _country(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    df = _lookup(raw, f, env.ctx.tables["country"], {"iso3": "country_iso3"})
    if env.source.geo_level == "admin0":
        df = df.with_columns(pl.col("country_iso3").alias("geo_code")).join(country_names(), on="country_iso3", how="left")
    return _finish(df, f, f, [f], pl.when(pl.col("country_iso3").is_null()).then(pl.lit("unknown_country")))


def _place(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    df = _places(raw, env.source, env.ctx)
    return _finish(df, f, f, [f], pl.when(pl.col("geo_code").is_null()).then(pl.lit("unknown_place")))


def _place_pair(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    """(parent, place) codes unique only within their parent; exclude/include apply to the place's raw values."""
    df = _places(raw, env.source, env.ctx)
    return _finish(df, "place_pair", "place", ["place_parent", "place"],
                   pl.when(pl.col("geo_code").is_null()).then(pl.lit("unknown_place")))


def _lookup_of(f: str, env: Env) -> tuple[pl.DataFrame, dict[str, str]]:
    table, col = (env.ctx.tables["disease"], "disease") if f == "disease" else (env.ctx.tables[f], "value")
    outputs = {col: f"__v_{f}", **({"age_band_source": "__v_age_band_source"} if "age_band_source" in table.columns else {})}
    return table, outputs


def _disease(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    table, outputs = _lookup_of(f, env)
    df = _lookup(raw, f, table, outputs)
    missing = pl.col(f"__v_{f}").is_null() | ~pl.col(f"__v_{f}").is_in(env.source.diseases)
    return _finish(df, f, f, [f], pl.when(missing).then(pl.lit("unknown_disease")))


def _controlled(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    """classification, sex, age_group: looked up in the controlled vocabulary (built-in spellings + value_maps)."""
    table, outputs = _lookup_of(f, env)
    df = _lookup(raw, f, table, outputs)
    missing = pl.col(f"__v_{f}").is_null()
    if f in env.soft:  # a line-list case with an odd sex still counts, as 'unknown'
        df = df.with_columns(pl.when(missing & pl.col(f).is_not_null()).then(pl.lit(f"unmapped_{f}")).alias("c"),
                             pl.col(f"__v_{f}").fill_null("unknown"))
        return _finish(df.drop("c"), f, f, [f], df["c"], "warning")
    if f in ("sex", "age_group"):  # a blank breakdown of a count: 'unknown', with a warning (as on line lists)
        blank = pl.col(f).is_null() | (pl.col(f).str.strip_chars() == "")
        df = df.with_columns(pl.when(blank).then(pl.lit("unknown")).otherwise(pl.col(f"__v_{f}")).alias(f"__v_{f}"))
        d = _finish(df, f, f, [f], pl.when(blank).then(pl.lit(f"missing_{f}"))
                    .when(pl.col(f"__v_{f}").is_null()).then(pl.lit(f"unmapped_{f}")))
        d.table = d.table.with_columns(pl.when(pl.col(d.chk) == f"missing_{f}").then(pl.lit("warning"))
                                       .otherwise(pl.col(d.sev)).alias(d.sev))
        return d
    return _finish(df, f, f, [f], pl.when(missing).then(pl.lit(f"unmapped_{f}")))


def _week_pair(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    return _week_pairs(raw, env.source, env.ctx)


def _country_place(raw: pl.DataFrame, env: Env, f: str) -> Domain:
    return _country_places(raw, env.ctx)


TYPED = Handler(_typed_value, ("type:{kind}",))
WEEK_OF_DATE = Handler(_week_of_date, ("type:{kind}", "missing_{field}", "week_in_future", "implausible_year"))
WEEK_PART = Handler(_week_part, ("type:{kind}", "missing_epi_week"))
AGE_CHECKS = ("type:number", "unmapped_age_unit")
CONTROLLED = Handler(_controlled, ("unmapped_{field}",))
BREAKDOWN = Handler(_controlled, ("unmapped_{field}", "missing_{field}"))


def _line_list(source: SourceConfig) -> bool:
    return source.shape == "line_list"


#: distinct-value group (`plan.distinct_values`: a field, or fields joined by "+") -> its handlers, first that applies
HANDLERS: dict[str, tuple[Handler, ...]] = {
    "cases": (TYPED,),
    "deaths": (Handler(_deaths, ("unmapped_deaths",), when=_line_list), TYPED),   # line lists: a death flag per case
    "issue_date": (TYPED,),
    "date": (WEEK_OF_DATE,),
    "week_start": (WEEK_OF_DATE,),
    "epi_year": (WEEK_PART,),
    "epi_week": (WEEK_PART,),
    "age": (Handler(_age, AGE_CHECKS),),
    "age+age_unit": (Handler(_age, AGE_CHECKS, scoped=False),),
    "resolution": (Handler(_resolution, ("temporal_resolution",)),),
    "country": (Handler(_country, ("unknown_country",)),),
    # a place alone needs the source's country (several countries: "country+place"); at admin0 the country is the place
    "place": (Handler(_place, ("unknown_place",), when=lambda s: bool(s.country) and s.geo_level != "admin0"),),
    "place_parent+place": (Handler(_place_pair, ("unknown_place",), stage=1),),
    "disease": (Handler(_disease, ("unknown_disease",)),),
    "classification": (CONTROLLED,),
    "sex": (BREAKDOWN,),
    "age_group": (BREAKDOWN,),
    "epi_year+epi_week": (Handler(_week_pair, ("week_not_in_year", "week_in_future", "implausible_year"), stage=2, scoped=False),),
    "country+place": (Handler(_country_place, ("unknown_place",), stage=2, scoped=False),),
}


def handler_for(group: str, source: SourceConfig) -> Handler | None:
    """The handler that builds `group`'s domain for this source, or None (the group has no domain of its own:
    a place_parent or age_unit read only in its pair, a place without the source's country)."""
    return next((h for h in HANDLERS.get(group, ()) if h.when(source)), None)
