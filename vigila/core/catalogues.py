"""National place-code catalogues (INDEC, IBGE, DIVIPOLA, INEGI, UBIGEO, CUT, ...) -> ISO 3166-2 and admin2 codes.

Input: the CSVs of ``vigila/reference/catalogues/`` (one per national code system, provenance in its
README.md); raw place codes or names of a file (text: "06", "6", "6.0" are one code). Output: lookup tables
and frames with ``geo_code``, ``geo_name``, ``admin1_code``, ``admin1_name`` added by a left join (nulls
for an unknown place: the caller quarantines it as ``unknown_place``).

Public API (for other modules and connectors, e.g. DHIS2 org-unit names):

- ``names()`` -> the catalogue names, ``country_of(name)`` -> its ISO 3166-1 alpha-3 country;
- ``catalogue(name)`` -> polars DataFrame, one row per place: level (admin1 / admin2 / admin3), code (the
  national code, zero-padded text), name, parent_code (national code of the place it lies in), iso_3166_2
  (the admin1's ISO code), accepts (list of national codes meaning this place), geo_code (the published
  code: ISO 3166-2 at admin1, ``<ISO3>-<national code>`` below, e.g. ``ARG-06371``, ``BRA-3550308``),
  admin1_name (the ISO 3166-2 name, as at admin1);
- ``admin1_lookup(country_iso3)`` -> (key, geo_code, geo_name): every admin1 key of the country, i.e. ISO
  names, codes and aliases (``places.admin1_table``) plus the national codes of every catalogue of that
  country (an admin2/admin3 code gives its admin1);
- ``place_key_expr(expr)`` -> the lookup key of a raw value (digits: ``#`` + the integer, so leading zeros and
  a ``.0`` do not matter; anything else: ``places.normalise``);
- ``resolve(frame, ...)`` -> the frame with the place columns added, at a level, from one column or a
  (parent, place) pair of columns (a code unique only within its parent, e.g. an Argentine department).
"""

from __future__ import annotations

import functools
from pathlib import Path

import polars as pl
import yaml

from vigila.core import places

FOLDER = Path(__file__).parents[1].joinpath("reference") / "catalogues"
LEVELS = ("admin1", "admin2", "admin3")
OUTPUTS = ("geo_code", "geo_name", "admin1_code", "admin1_name")
_DIGITS = r"^\s*0*([0-9]+?)(?:\.0+)?\s*$"


@functools.cache
def _registry() -> dict[str, dict]:
    return yaml.safe_load((FOLDER / "catalogues.yaml").read_text(encoding="utf-8"))


def names() -> list[str]:
    """The catalogue names a config may give as `place_codes`."""
    return sorted(_registry())


def country_of(name: str) -> str:
    """ISO 3166-1 alpha-3 of a catalogue; ValueError naming the known catalogues."""
    if name not in _registry():
        raise ValueError(f"unknown place_codes catalogue {name!r}; known: {', '.join(names())}")
    return _registry()[name]["country"]


def place_key_expr(expr: pl.Expr) -> pl.Expr:
    """Lookup key of raw place values: '#<integer>' for a number written with or without leading zeros
    (or as '6.0'), the normalised name otherwise."""
    text = expr.cast(pl.String)
    digits = text.str.contains(_DIGITS)
    return pl.when(digits).then(text.str.replace(_DIGITS, "#${1}")).otherwise(places.normalise_expr(text))


@functools.cache
def _iso_names() -> dict[str, str]:
    iso = pl.read_csv(places.ISO_3166_2, infer_schema=False)
    return dict(zip(iso["code"], iso["name"], strict=True))


@functools.cache
def catalogue(name: str) -> pl.DataFrame:
    """The catalogue as a DataFrame (see the module docstring for its columns); `accepts` is a list."""
    iso3 = country_of(name)
    df = pl.read_csv(FOLDER / f"{name}.csv", infer_schema=False).with_columns(
        pl.col("accepts").str.split("|"), pl.col("parent_code").fill_null(""))
    iso_names = _iso_names()
    return df.with_columns(
        pl.lit(iso3).alias("country_iso3"),
        pl.when(pl.col("level") == "admin1").then(pl.col("iso_3166_2"))
        .otherwise(pl.lit(f"{iso3}-") + pl.col("code")).alias("geo_code"),
        pl.col("iso_3166_2").replace_strict(iso_names, default=None).alias("admin1_name"),
    )


def _outputs(cat: pl.DataFrame) -> pl.DataFrame:
    """Per place: the published columns (admin1 keeps the ISO 3166-2 name, as name lookups give it)."""
    return cat.select(
        "level", "code", "parent_code", "accepts", "name", pl.col("geo_code"),
        pl.when(pl.col("level") == "admin1").then(pl.col("admin1_name")).otherwise(pl.col("name")).alias("geo_name"),
        pl.col("iso_3166_2").alias("admin1_code"), "admin1_name")


def _code_rows(cat: pl.DataFrame) -> pl.DataFrame:
    """One row per accepted code: key '#<int>' plus the place's outputs."""
    return (_outputs(cat).explode("accepts").filter(pl.col("accepts").is_not_null() & (pl.col("accepts") != ""))
            .with_columns(place_key_expr(pl.col("accepts")).alias("key")))


def _unique_names(rows: pl.DataFrame, within: list[str]) -> pl.DataFrame:
    """Name keys of `rows`, only where the normalised name names one place (within `within`)."""
    keyed = rows.with_columns(places.normalise_expr(pl.col("name")).alias("key"))
    return keyed.filter(pl.col("code").n_unique().over([*within, "key"]) == 1)


@functools.cache
def admin1_lookup(country_iso3: str) -> pl.DataFrame:
    """Columns key, geo_code, geo_name: ISO names/codes/aliases of the country's admin1, then every
    national code of its catalogues (an admin2 or admin3 code gives the admin1 it lies in)."""
    base = places.admin1_table(country_iso3.upper())
    parts = [base]
    for name in names():
        if country_of(name) != country_iso3.upper():
            continue
        cat = catalogue(name)
        named = _unique_names(_outputs(cat.filter(pl.col("level") == "admin1")), [])   # the catalogue's own spellings
        for rows in (_code_rows(cat), named):
            parts.append(rows.select("key", pl.col("admin1_code").alias("geo_code"), pl.col("admin1_name").alias("geo_name")))
    return pl.concat(parts).unique("key", keep="first", maintain_order=True)


@functools.cache
def level_table(name: str, level: str) -> pl.DataFrame:
    """Columns key + OUTPUTS for places of one level, looked up from one column: accepted national codes,
    and names that are unique in the country at that level (admin1 also takes ISO names, codes, aliases)."""
    cat = catalogue(name)
    if level == "admin1":
        iso = admin1_lookup(country_of(name)).select("key", "geo_code", "geo_name",
                                                     pl.col("geo_code").alias("admin1_code"), pl.col("geo_name").alias("admin1_name"))
        return iso
    rows = _outputs(cat.filter(pl.col("level") == level))
    codes = _code_rows(cat.filter(pl.col("level") == level))
    named = _unique_names(rows, [])
    return pl.concat([codes.select("key", *OUTPUTS), named.select("key", *OUTPUTS)]).unique("key", keep="first", maintain_order=True)


@functools.cache
def pair_table(name: str, level: str) -> pl.DataFrame:
    """Columns pkey, key + OUTPUTS: a place of `level` by (its parent's key, its own key within the parent).
    Parent keys: its accepted codes, unique names (admin1: ISO names, codes, aliases); own keys: accepted
    codes, the code without the parent's digits (Argentine department '371' of province '06' = 06371),
    and names unique within the parent. The digits cut are those of an accepted code, so a catalogue that
    accepts another coding (SNVS: CABA's Comuna 7 = 02007) also gets its local codes right ('007')."""
    cat = catalogue(name)
    parent_level = LEVELS[LEVELS.index(level) - 1]
    parents = cat.filter(pl.col("level") == parent_level)
    pkeys = pl.concat([_code_rows(parents).select("key", pl.col("code").alias("parent_code")),
                       _unique_names(_outputs(parents), []).select("key", pl.col("code").alias("parent_code"))])
    if parent_level == "admin1":   # and the ISO 3166-2 names, codes and aliases
        iso = places.admin1_table(country_of(name)).join(parents.select(pl.col("iso_3166_2").alias("geo_code"), "code"),
                                                         on="geo_code", how="inner")
        pkeys = pl.concat([pkeys, iso.select("key", pl.col("code").alias("parent_code"))])
    pkeys = pkeys.unique("key", keep="first").rename({"key": "pkey"})
    rows = _outputs(cat.filter(pl.col("level") == level))
    local = (rows.explode("accepts").filter(pl.col("accepts").str.starts_with(pl.col("parent_code")))
             .with_columns(pl.col("accepts").str.slice(pl.col("parent_code").str.len_chars()))
             .filter(pl.col("accepts") != "")
             .with_columns(place_key_expr(pl.col("accepts")).alias("key")))
    own = pl.concat([_code_rows(cat.filter(pl.col("level") == level)).select("parent_code", "key", *OUTPUTS),
                     local.select("parent_code", "key", *OUTPUTS),
                     _unique_names(rows, ["parent_code"]).select("parent_code", "key", *OUTPUTS)])
    own = own.unique(["parent_code", "key"], keep="first", maintain_order=True)
    return pkeys.join(own, on="parent_code", how="inner").select("pkey", "key", *OUTPUTS)


def resolve(frame: pl.DataFrame, column: str, name: str, level: str, parent: str | None = None) -> pl.DataFrame:
    """`frame` with OUTPUTS added from the catalogue: by `column` alone, or by (`parent`, `column`) when the
    place's code is unique only within its parent. Unknown places get nulls; row order is kept."""
    if level not in LEVELS:
        raise ValueError(f"catalogues hold admin1..admin3 places, not {level!r}")
    keyed = frame.with_columns(place_key_expr(pl.col(column)).alias("__key"))
    if parent is None:
        right = level_table(name, level).rename({"key": "__key"})
        return keyed.join(right, on="__key", how="left", maintain_order="left").drop("__key")
    keyed = keyed.with_columns(place_key_expr(pl.col(parent)).alias("__pkey"))
    right = pair_table(name, level).rename({"key": "__key", "pkey": "__pkey"})
    return keyed.join(right, on=["__pkey", "__key"], how="left", maintain_order="left").drop("__key", "__pkey")
