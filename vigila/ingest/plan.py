"""The ingest plan: raw text rows -> harmonised rows + one error record per failed check.

Input: a LazyFrame of text columns named by canonical field (plus `_row`) and the source config.
Output: harmonised rows (line lists already counted) and error records (_row, field, check,
value, severity). The file is read in eager batches. In each batch, every *distinct* raw value
of each mapped field (surveillance columns repeat a few hundred values over millions of rows)
is cast, validated against the raw pandera contract and harmonised once, into a small *domain
table* (by the field handlers of `vigila.ingest.fields`); rows are then matched to their domain rows
by index and split into good and bad.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from vigila.ingest import fields as handlers
from vigila.ingest import harmonise as hz
from vigila.ingest.cast import LINE, ROW_KEY
from vigila.ingest.fields import Domain, country_names
from vigila.warehouse.contract import contract
from vigila.config import SourceConfig
from vigila.ingest.readers import ROW, RaggedRows, ReadError

ERROR_SCHEMA = hz.HARMONISE_ERROR_SCHEMA  # _row, field, check, value, severity


def build_domains(distinct: dict[str, pl.DataFrame], source: SourceConfig, ctx: hz.Context) -> list[Domain]:
    """One domain table per distinct-value group, built by its field handler (`handlers.HANDLERS`), in stage
    order; the source's exclude / include lists then apply to the groups they name (`Handler.scoped`)."""
    env = handlers.Env(source, ctx, contract(f"raw_{source.shape}"), frozenset(hz.SOFT_FIELDS.get(source.shape, set())))
    built = [(h, h.build(raw, env, group)) for group, raw in distinct.items() if (h := handlers.handler_for(group, source))]
    built.sort(key=lambda hd: hd[0].stage)   # stable: within a stage, the order of distinct_values
    out = []
    for h, d in built:
        if h.scoped and d.field in source.exclude:
            d = handlers.excluding(d, source.exclude[d.field])
        if h.scoped and d.field in source.include:
            d = handlers.including(d, source.include[d.field])
        out.append(d)
    return out


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
    # (an integer hash), decoded to text; a batch of text (a caller other than harmonise_batch) is encoded here
    batch = encoded(batch)
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
            name = country_names().filter(pl.col("country_iso3") == source.country)["geo_name"]
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
                 else pl.lit(None, pl.Utf8).alias("age_band_source"))   # a declared source band kept (vigila.ingest.agebands)
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
    errors: pl.DataFrame | pl.LazyFrame   # one record per (row, failed check); with `spill`, a scan of the spilled files
    rows_read: int
    ledger: pl.DataFrame    # LEDGER_SCHEMA: count files, every row's own cases / deaths and line / row-key hashes;
                            # line lists, only the rows that are deaths (a case each)


def run(lf: pl.LazyFrame, source: SourceConfig, ctx: hz.Context, exclude: pl.Series | None = None,
        batch_rows: int = BATCH_ROWS, spill: Path | None = None) -> Planned:
    """Harmonised rows, error records, rows read and the ledger, in eager batches of `batch_rows`
    so memory stays bounded whatever the file size. With `spill` (a folder), each batch's error records
    are written there as they come and `errors` is a LazyFrame over them: a file whose rows mostly fail
    (a SINAN export's ~35 % discarded notifications: millions of records) holds none of them in memory."""
    goods, errors, ledgers, n_rows = [], [], [], 0
    if spill is not None:     # emptied first: a run read again (`RaggedRows`) leaves no record of the first try
        shutil.rmtree(spill, ignore_errors=True)
        spill.mkdir(parents=True)
    for batch in _batches(lf, batch_rows):
        n_rows += batch.height
        if n_rows > source.limits.max_rows:
            raise ReadError(f"more than {source.limits.max_rows:,} data rows (limits.max_rows): refused while reading")
        good, bad, ledger = harmonise_batch(batch, source, ctx, exclude)
        goods.append(good)
        if spill is not None and bad.height:
            bad.write_parquet(spilled := spill / f"errors-{len(errors):05d}.parquet", compression="lz4")
            errors.append(spilled)
        elif spill is None:
            errors.append(bad)
        ledgers.append(ledger)
        if source.shape == "line_list" and len(goods) >= 4:   # every batch repeats most place-weeks: add them up as
            goods = [_sum_counts(goods)]                       # we go, so memory stays flat however long the file
    empty_ledger = pl.DataFrame(schema=LEDGER_SCHEMA)
    if spill is not None:
        errs = pl.scan_parquet(errors) if errors else pl.LazyFrame(schema=ERROR_SCHEMA)
    else:
        errs = pl.concat(errors) if errors else pl.DataFrame(schema=ERROR_SCHEMA)
    if not goods:
        return Planned(pl.DataFrame(), errs, 0, empty_ledger)
    good = _sum_counts(goods) if source.shape == "line_list" and len(goods) > 1 else pl.concat(goods)
    return Planned(good, errs, n_rows, pl.concat([empty_ledger, *ledgers], how="diagonal_relaxed"))


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
            if "more fields than defined" in str(e):   # a strict parse (readers.RawTable.recount) met a long row
                raise RaggedRows(str(e).splitlines()[0]) from None
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
