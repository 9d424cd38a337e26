"""The ingest plan: raw text rows -> harmonised rows + one error record per failed check.

Input: a LazyFrame of text columns named by canonical field (plus `_row`) and the source config.
Output: harmonised rows (line lists already counted) and error records (_row, field, check,
value, severity). The file is read in eager batches. In each batch, every *distinct* raw value
of each mapped field (surveillance columns repeat a few hundred values over millions of rows)
is cast, validated against the raw pandera contract and harmonised once, into a small *domain
table*; rows are then matched to their domain rows by index and split into good and bad.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from vigila import catalogues, epiweek, places
from vigila import harmonise as hz
from vigila.cast import FIELD_TYPES, LINE, ROW_KEY, typed_expr
from vigila.contract import Contract, contract
from vigila.config import SourceConfig
from vigila.readers import ROW, ReadError
from vigila.vocab import age_band_expr

ERROR_SCHEMA = hz.HARMONISE_ERROR_SCHEMA  # _row, field, check, value, severity


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


def build_domains(distinct: dict[str, pl.DataFrame], source: SourceConfig, ctx: hz.Context) -> list[Domain]:
    """One domain table per mapped field (and per dependent pair of fields)."""
    model = contract(f"raw_{source.shape}")
    soft = hz.SOFT_FIELDS.get(source.shape, set())
    out: list[Domain] = []
    for f, raw in distinct.items():
        if "+" in f and f != "age+age_unit":
            continue
        if f in ("age", "age+age_unit"):
            out.append(_age_domain(raw, source, model, "warning" if "age" in soft else "error"))
        elif f == "deaths" and source.shape == "line_list":
            out.append(_death_flags(raw, source))
        elif FIELD_TYPES[f] != "text":
            df, check = _typed_domain(f, raw, source, model)
            if f in ("date", "week_start"):
                weeks = epiweek.weeks_of_dates(df["__t"], source.epiweek)
                df = df.join(weeks.rename({"date": "__t", **{c: f"__d_{c}" for c in epiweek.WEEK_SCHEMA}}), on="__t", how="left")
                check = pl.coalesce(check, pl.when(pl.col("__t").is_null()).then(pl.lit(f"missing_{f}")),
                                    _implausible("__d_", source, ctx))
                out.append(_finish(df.select(f, *(f"__d_{c}" for c in epiweek.WEEK_SCHEMA), check.alias("c")), f, f, [f], pl.col("c")))
            elif f in ("epi_year", "epi_week"):
                check = pl.coalesce(check, pl.when(pl.col("__t").is_null()).then(pl.lit("missing_epi_week")))
                out.append(_finish(df.select(f, check.alias("c")), f, f, [f], pl.col("c")))
            else:
                out.append(_finish(df.select(f, pl.col("__t").alias(f"__v_{f}"), check.alias("c")), f, f, [f], pl.col("c")))
        elif f == "resolution":
            weekly = [places.normalise(v) for v in source.weekly_resolution_values]
            off = pl.col(f).is_not_null() & ~places.normalise_expr(pl.col(f)).is_in(weekly)
            out.append(_finish(raw, f, f, [f], pl.when(off).then(pl.lit("temporal_resolution")), "set_aside"))
        elif f == "country":
            df = _lookup(raw, f, ctx.tables["country"], {"iso3": "country_iso3"})
            if source.geo_level == "admin0":
                df = df.with_columns(pl.col("country_iso3").alias("geo_code")).join(_country_names(), on="country_iso3", how="left")
            out.append(_finish(df, f, f, [f], pl.when(pl.col("country_iso3").is_null()).then(pl.lit("unknown_country"))))
        elif f == "place" and source.country and source.geo_level != "admin0":
            df = _places(raw, source, ctx)
            out.append(_finish(df, f, f, [f], pl.when(pl.col("geo_code").is_null()).then(pl.lit("unknown_place"))))
        elif f in ("classification", "sex", "age_group", "disease"):
            table, col = (ctx.tables["disease"], "disease") if f == "disease" else (ctx.tables[f], "value")
            outputs = {col: f"__v_{f}", **({"age_band_source": "__v_age_band_source"} if "age_band_source" in table.columns else {})}
            df = _lookup(raw, f, table, outputs)
            missing = pl.col(f"__v_{f}").is_null()
            if f == "disease":
                missing = missing | ~pl.col(f"__v_{f}").is_in(source.diseases)
                out.append(_finish(df, f, f, [f], pl.when(missing).then(pl.lit("unknown_disease"))))
            elif f in soft:  # a line-list case with an odd sex still counts, as 'unknown'
                df = df.with_columns(pl.when(missing & pl.col(f).is_not_null()).then(pl.lit(f"unmapped_{f}")).alias("c"),
                                     pl.col(f"__v_{f}").fill_null("unknown"))
                out.append(_finish(df.drop("c"), f, f, [f], df["c"], "warning"))
            elif f in ("sex", "age_group"):  # a blank breakdown of a count: 'unknown', with a warning (as on line lists)
                blank = pl.col(f).is_null() | (pl.col(f).str.strip_chars() == "")
                df = df.with_columns(pl.when(blank).then(pl.lit("unknown")).otherwise(pl.col(f"__v_{f}")).alias(f"__v_{f}"))
                d = _finish(df, f, f, [f], pl.when(blank).then(pl.lit(f"missing_{f}"))
                            .when(pl.col(f"__v_{f}").is_null()).then(pl.lit(f"unmapped_{f}")))
                d.table = d.table.with_columns(pl.when(pl.col(d.chk) == f"missing_{f}").then(pl.lit("warning"))
                                               .otherwise(pl.col(d.sev)).alias(d.sev))
                out.append(d)
            else:
                out.append(_finish(df, f, f, [f], pl.when(missing).then(pl.lit(f"unmapped_{f}"))))
    if "place_parent+place" in distinct:   # exclude/include of `place` apply to its raw values, whatever the parent
        df = _places(distinct["place_parent+place"], source, ctx)
        out.append(_finish(df, "place_pair", "place", ["place_parent", "place"],
                           pl.when(pl.col("geo_code").is_null()).then(pl.lit("unknown_place"))))
    own = {d.id for d in out if d.on == [d.field]} | {"place_pair"}
    out = [_excluding(d, source.exclude[d.field]) if d.field in source.exclude and d.id in own else d for d in out]
    out = [_including(d, source.include[d.field]) if d.field in source.include and d.id in own else d for d in out]
    if "epi_year+epi_week" in distinct:
        out.append(_week_pairs(distinct["epi_year+epi_week"], source, ctx))
    if "country+place" in distinct:
        out.append(_country_places(distinct["country+place"], ctx))
    return out


def _places(raw: pl.DataFrame, source: SourceConfig, ctx: hz.Context) -> pl.DataFrame:
    """Distinct raw places (or (parent, place) pairs) -> geo_code, geo_name and the admin1 they lie in
    (admin1_code, admin1_name): by name (ISO 3166-2, aliases, value_maps.place), or by the national codes of
    the `place_codes` catalogue (vigila.catalogues). Unknown places get null codes."""
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


def _excluding(d: Domain, values: list[str]) -> Domain:
    """Raw values the source declares out of scope: set aside (reported), whatever else they are."""
    keys = [places.normalise(v) for v in values]
    hit = places.normalise_expr(pl.col(d.field)).is_in(keys).fill_null(False)
    d.table = d.table.with_columns(pl.when(hit).then(pl.lit("excluded_value")).otherwise(pl.col(d.chk)).alias(d.chk),
                                   pl.when(hit).then(pl.lit("set_aside")).otherwise(pl.col(d.sev)).alias(d.sev))
    return d


def _including(d: Domain, values: list[str]) -> Domain:
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


def _country_names() -> pl.DataFrame:
    return places.country_table().unique("iso3", keep="first", maintain_order=True).select(
        pl.col("iso3").alias("country_iso3"), pl.col("name").alias("geo_name"))


# --------------------------------------------------------------------------- pass 1 and 2


def distinct_values(batch: pl.DataFrame, source: SourceConfig) -> dict[str, pl.DataFrame]:
    """Distinct raw values of each mapped field (and of dependent pairs) in one batch."""
    fields = [f for f in source.mapped if f in batch.columns]
    groups = {f: [f] for f in fields}
    if {"epi_year", "epi_week"} <= set(fields):
        groups["epi_year+epi_week"] = ["epi_year", "epi_week"]
    if {"country", "place"} <= set(fields) and source.geo_level != "admin0" and source.place_codes is None:  # (a catalogue: one country)
        groups["country+place"] = ["country", "place"]
    if "place_parent" in groups:   # a code unique only within its parent: looked up as a pair
        del groups["place"], groups["place_parent"]
        groups["place_parent+place"] = ["place_parent", "place"]
    if "age_unit" in groups:   # an age means nothing without its unit
        del groups["age"], groups["age_unit"]
        groups["age+age_unit"] = ["age", "age_unit"]
    # raw columns arrive dictionary-encoded (Categorical, see `encoded`): the first row of each distinct code
    # (an integer hash), decoded to text
    dtypes = dict(batch.schema)
    firsts = batch.select(_key(cols, dtypes).arg_unique().implode().alias(name) for name, cols in groups.items()).row(0)
    return {name: decoded(batch.select(cols)[first]) for (name, cols), first in zip(groups.items(), firsts)}


def encoded(batch: pl.DataFrame) -> pl.DataFrame:
    """The batch with its text columns dictionary-encoded (Categorical, one fresh dictionary per batch unless
    the reader already encoded them): distinct values and the row -> domain match then hash integers, not text."""
    text = [c for c, t in batch.schema.items() if t == pl.Utf8]
    if not text:
        return batch
    dtype = pl.Categorical(pl.Categories.random())
    return batch.with_columns(pl.col(text).cast(dtype))


def decoded(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.Utf8))


def _key(columns: list[str], dtypes: dict[str, pl.DataType]) -> pl.Expr:
    """An integer key per row from the dictionary codes of `columns` (text cast to the batch's Categorical
    `dtypes`): one column, its code (null when missing); a pair, both codes + 1 (0 when missing) in one UInt64."""
    codes = [pl.col(c).cast(dtypes[c]).to_physical() for c in columns]
    if len(codes) == 1:
        return codes[0]
    key = None
    for code in codes:
        code = (code.cast(pl.UInt64) + 1).fill_null(0)
        key = code if key is None else key * (1 << 32) + code
    return key


def domain_rows(batch: pl.DataFrame, domains: list[Domain]) -> pl.DataFrame:
    """For every row, the matching row of each domain table: one column's codes index a lookup array (a
    gather), a pair's combined codes go through an integer hash lookup."""
    dtypes = dict(batch.schema)
    keys = batch.select(_key(d.on, dtypes).alias(d.id) for d in domains)
    out = {}
    for d in domains:
        key, table_key = keys[d.id], d.table.select(_key(d.on, dtypes)).to_series()
        index = pl.int_range(d.table.height, dtype=pl.UInt32, eager=True)
        if len(d.on) == 1:
            top = max(key.max() or 0, table_key.max() or 0)
            present = table_key.is_not_null()
            lookup = pl.repeat(None, top + 1, dtype=pl.UInt32, eager=True).scatter(table_key.filter(present),
                                                                                    index.filter(present))
            missing = index.filter(~present)
            rows = lookup.gather(key)
            out[d.id] = rows.fill_null(missing[0]) if missing.len() else rows
        else:
            out[d.id] = key.replace_strict(table_key, index, default=None, return_dtype=pl.UInt32)
    return pl.DataFrame(out)


def gather_outputs(rows: pl.DataFrame, domains: list[Domain]) -> pl.DataFrame:
    """The domains' output columns for the given domain rows (gathers: no hashing)."""
    out: dict[str, pl.Series] = {}
    for d in domains:
        for name in d.table.columns:
            if name not in d.on and name not in out:
                out[name] = d.table[name].gather(rows[d.id]).alias(name)
    return pl.DataFrame(list(out.values()), height=rows.height)


def _any(rows: pl.DataFrame, domains: list[Domain], test) -> pl.Series:
    mask = pl.repeat(False, rows.height, eager=True)
    for d in domains:
        mask = mask | test(d).fill_null(False).gather(rows[d.id]).fill_null(False)
    return mask


def _flags(rows: pl.DataFrame, domains: list[Domain]) -> tuple[pl.Series, pl.Series]:
    """Per row: any failed check (flagged), any failed check that holds the row back (error or set aside).
    Each domain row's two flags are one small integer (1 flagged, 2 held), gathered once per domain."""
    if not domains:
        none = pl.repeat(False, rows.height, eager=True)
        return none, none
    status = {}
    for d in domains:
        code = (d.table[d.chk].is_not_null().cast(pl.UInt8) + d.table[d.sev].is_in(["error", "set_aside"]).fill_null(False)
                .cast(pl.UInt8) * 2)
        status[d.id] = code.gather(rows[d.id])
        if rows[d.id].null_count():    # a value no domain row matches: no flag from this domain
            status[d.id] = status[d.id].fill_null(0)
    both = pl.DataFrame(status).select(pl.reduce(lambda a, b: a | b, pl.all()).fill_null(0).alias("s"))["s"]
    return (both & 1) > 0, (both & 2) > 0


def dimensions(source: SourceConfig, domains: list[Domain], columns: list[str]) -> list[pl.Expr]:
    """Expressions for the harmonised dimensions, from domain outputs or the config's constants."""
    ids = {d.id for d in domains}
    have = set(columns)
    exprs = [pl.lit(source.geo_level).alias("geo_level")]
    if source.country:
        exprs.append(pl.lit(source.country).alias("country_iso3"))
        if source.geo_level == "admin0":
            name = _country_names().filter(pl.col("country_iso3") == source.country)["geo_name"]
            exprs += [pl.lit(source.country).alias("geo_code"), pl.lit(name[0] if name.len() else source.country).alias("geo_name")]
    if "admin1_code" not in have:   # admin0 rows (or no place mapped): no admin1
        exprs += [pl.lit(None, pl.Utf8).alias("admin1_code"), pl.lit(None, pl.Utf8).alias("admin1_name")]
    exprs.append(pl.col("__v_disease").alias("disease") if "disease" in ids else pl.lit(source.diseases[0]).alias("disease"))
    for name in ("classification", "sex"):
        exprs.append(pl.col(f"__v_{name}").alias(name) if name in ids else pl.lit(getattr(source.constants, name)).alias(name))
    if "age_group" in ids:
        exprs.append(pl.col("__v_age_group").alias("age_group"))
    elif not ids & {"age", "age_pair"}:
        exprs.append(pl.lit(source.constants.age_group).alias("age_group"))
    exprs.append(pl.col("__v_age_band_source").alias("age_band_source") if "__v_age_band_source" in have
                 else pl.lit(None, pl.Utf8).alias("age_band_source"))   # a declared source band kept (vigila.agebands)
    week = "__w_" if "week_pair" in ids else "__d_"  # reported epi weeks win over dates
    exprs += [pl.col(f"{week}{c}").alias(c) for c in ("epi_year", "epi_week", "week_start")]
    for value in ("cases", "deaths", "issue_date"):
        if f"__v_{value}" in have:
            exprs.append(pl.col(f"__v_{value}").alias(value))
    return exprs


BATCH_ROWS = 2_000_000


LEDGER_SCHEMA = {ROW: pl.Int64, "cases": pl.Int64, "deaths": pl.Int64, LINE: pl.UInt64, ROW_KEY: pl.UInt64}


@dataclass
class Planned:
    rows: pl.DataFrame      # harmonised rows (line lists counted), with _row (count files: one row of the file each)
    errors: pl.DataFrame    # one record per (row, failed check)
    rows_read: int
    ledger: pl.DataFrame    # LEDGER_SCHEMA: count files, every row's own cases / deaths and line / row-key hashes;
                            # line lists, only the rows that are deaths (a case each)


def run(lf: pl.LazyFrame, source: SourceConfig, ctx: hz.Context, exclude: pl.Series | None = None,
        batch_rows: int = BATCH_ROWS) -> Planned:
    """Harmonised rows, error records, rows read and the ledger, in eager batches of `batch_rows`
    so memory stays bounded whatever the file size."""
    goods, errors, ledgers, n_rows = [], [], [], 0
    for batch in _batches(lf, batch_rows):
        n_rows += batch.height
        if n_rows > source.limits.max_rows:
            raise ReadError(f"more than {source.limits.max_rows:,} data rows (limits.max_rows): refused while reading")
        good, bad, ledger = harmonise_batch(batch, source, ctx, exclude)
        goods.append(good)
        errors.append(bad)
        ledgers.append(ledger)
        if source.shape == "line_list" and len(goods) >= 4:   # every batch repeats most place-weeks: add them up as
            goods = [_sum_counts(goods)]                       # we go, so memory stays flat however long the file
    empty_ledger = pl.DataFrame(schema=LEDGER_SCHEMA)
    if not goods:
        return Planned(pl.DataFrame(), pl.DataFrame(schema=ERROR_SCHEMA), 0, empty_ledger)
    good = _sum_counts(goods) if source.shape == "line_list" and len(goods) > 1 else pl.concat(goods)
    return Planned(good, pl.concat(errors), n_rows, pl.concat([empty_ledger, *ledgers], how="diagonal_relaxed"))


def _sum_counts(goods: list[pl.DataFrame]) -> pl.DataFrame:
    """Line-list counts of several batches -> one row per harmonised dimension (cases and deaths summed, first row)."""
    good = pl.concat(goods)
    return good.group_by(hz.DIMS).agg(pl.col("cases", *(["deaths"] if "deaths" in good.columns else [])).sum(),
                                      pl.col(ROW).min())


def _batches(lf: pl.LazyFrame, batch_rows: int):
    """The file's rows in eager batches; a file polars cannot parse (an unterminated quote...) is a `ReadError`."""
    batches = iter(lf.collect_batches(chunk_size=batch_rows))
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as e:
            raise ReadError(f"the rows cannot be parsed ({str(e).splitlines()[0][:160]}): an unterminated quote, "
                            "a wrong delimiter or a broken line") from None
        yield batch


def _ledger(batch: pl.DataFrame, rows: pl.DataFrame, domains: list[Domain], source: SourceConfig) -> pl.DataFrame:
    """Each row's own counts (see `Planned.ledger`), read from the domains by gathers."""
    by_id = {d.id: d for d in domains}

    def value(field: str) -> pl.Series:
        d = by_id.get(field)
        if d is None or f"__v_{field}" not in d.table.columns:
            return pl.repeat(None, batch.height, dtype=pl.Int64, eager=True)
        return d.table[f"__v_{field}"].cast(pl.Int64).gather(rows[field])

    if source.shape == "line_list":
        if "deaths" not in by_id:      # no deaths mapped: no row is a death
            return pl.DataFrame(schema={ROW: pl.Int64, "cases": pl.Int64, "deaths": pl.Int64})
        deaths = value("deaths").fill_null(0)
        return pl.DataFrame({ROW: batch[ROW], "cases": pl.repeat(1, batch.height, dtype=pl.Int64, eager=True),
                             "deaths": deaths}).filter(pl.col("deaths") > 0)
    counts = pl.DataFrame({ROW: batch[ROW], "cases": value("cases"), "deaths": value("deaths"),
                           **{c: batch[c] for c in (LINE, ROW_KEY) if c in batch.columns}})
    return counts.with_columns(pl.when(pl.col(c) >= 0).then(pl.col(c)).alias(c) for c in ("cases", "deaths"))


def harmonise_batch(batch: pl.DataFrame, source: SourceConfig, ctx: hz.Context, exclude: pl.Series | None = None
                    ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """One batch of text rows -> (harmonised rows, error records, ledger).

    Rows are matched to domain rows once; line lists are counted by domain rows (integers)
    before any harmonised text is materialised."""
    batch = encoded(batch)
    domains = build_domains(distinct_values(batch, source), source, ctx)
    rows = domain_rows(batch, domains)
    flagged, held = _flags(rows, domains)
    if exclude is not None and exclude.len():      # already reported (parse stage): no further checks
        excluded = batch[ROW].is_in(exclude.implode())
        held, flagged = held | excluded, flagged & ~excluded
    bad = pl.concat([decoded(batch.filter(flagged)), gather_outputs(rows.filter(flagged), domains)], how="horizontal")
    good = rows.with_columns(batch[ROW]).filter(~held)
    if source.shape == "line_list":  # count by harmonised value (as integers) before any text is built
        good = _count_by_domains(good, domains)
    frame = pl.concat([good.select(ROW, *[c for c in ("cases",) if c in good.columns]), gather_outputs(good, domains)],
                      how="horizontal")
    frame = frame.with_columns(dimensions(source, domains, frame.columns))
    if source.shape == "line_list":
        deaths = [(pl.col("cases") * pl.col("deaths")).sum().alias("deaths")] if "deaths" in frame.columns else []
        frame = frame.group_by(hz.DIMS).agg(pl.col("cases").sum(), *deaths, pl.col(ROW).min())
    else:
        frame = frame.select(ROW, *hz.DIMS, *[c for c in ("cases", "deaths", "issue_date") if f"__v_{c}" in frame.columns])
    return frame, error_records(bad, domains), _ledger(batch, rows, domains, source)


def _count_by_domains(good: pl.DataFrame, domains: list[Domain]) -> pl.DataFrame:
    """Line-list rows counted by the canonical domain row of each domain (cases, first row). The domain rows
    are packed into one integer (mixed radix: each domain's table height) when it fits, so the count hashes
    one UInt64 column instead of one per domain."""
    ids, sizes = [d.id for d in domains], [max(d.table.height, 1) for d in domains]
    canonical = [pl.lit(d.canonical()).gather(pl.col(d.id)) for d in domains]
    strides, total = [], 1
    for n in sizes:
        strides.append(total)
        total *= n
    count = [pl.len().cast(pl.Int64).alias("cases"), pl.col(ROW).min()]
    if total >= 2**63 or any(good[i].null_count() for i in ids):
        return good.with_columns(c.alias(i) for c, i in zip(canonical, ids)).group_by(ids).agg(*count)
    packed = pl.sum_horizontal(*(c.cast(pl.UInt64) * stride for c, stride in zip(canonical, strides)))
    counted = good.lazy().select(packed.alias("__k"), ROW).group_by("__k").agg(*count).collect()
    return counted.select(*(((pl.col("__k") // stride) % n).cast(pl.UInt32).alias(i) for i, stride, n in zip(ids, strides, sizes)),
                          "cases", ROW)


def error_records(bad: pl.DataFrame, domains: list[Domain]) -> pl.DataFrame:
    """Wide flagged rows -> one record per (row, failed check)."""
    parts = []
    for d in domains:
        if d.chk not in bad.columns:
            continue
        rows = bad.filter(pl.col(d.chk).is_not_null())
        parts.append(rows.select(pl.col(ROW), pl.lit(d.field).alias("field"), pl.col(d.chk).alias("check"),
                                 _value(d).alias("value"), pl.col(d.sev).alias("severity")))
    return pl.concat([pl.DataFrame(schema=ERROR_SCHEMA), *(p.cast(ERROR_SCHEMA) for p in parts)])


def _value(d: Domain) -> pl.Expr:
    if d.id == "week_pair":
        return pl.format("{}-W{}", "epi_year", "epi_week")
    if d.id == "place_pair":
        return pl.format("{} / {}", pl.col("place_parent").fill_null("<missing>"), pl.col("place").fill_null("<missing>"))
    if d.id == "age_pair":
        return pl.format("{} {}", pl.col("age").fill_null("<missing>"), pl.col("age_unit").fill_null("<missing unit>"))
    return pl.col(d.on[-1]).fill_null("<missing>")
