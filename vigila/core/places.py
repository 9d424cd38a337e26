"""Place-name reference tables and vectorised name -> code mapping.

Inputs: raw place names (str, polars Series/columns) and the alias YAML files under
``vigila/reference/``. Outputs: lookup tables ``(key, code, name)`` built from pycountry
plus aliases, and frames with ISO 3166 code/name columns added by a left join.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import polars as pl
import yaml

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

# Separators collapsed into one space; identical pattern for `re` and polars (Rust regex).
_SEPARATORS = r"[\s\-_.,'’()/]+"
_SEP_RE = re.compile(_SEPARATORS)
_KEY = "__vigila_key"


def normalise(name: str) -> str:
    """Case-, accent- and punctuation-insensitive key: "san  Martín (Perú)" -> "SAN MARTIN PERU"."""
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    return _SEP_RE.sub(" ", stripped.upper()).strip()


def normalise_expr(expr: pl.Expr) -> pl.Expr:
    """Vectorised `normalise` for a string expression (nulls stay null)."""
    return (
        expr.cast(pl.String)
        .str.normalize("NFKD")
        .str.replace_all(r"\p{Mn}", "")
        .str.to_uppercase()
        .str.replace_all(_SEPARATORS, " ")
        .str.strip_chars()
    )


def _load_aliases(relative: str) -> dict[str, str]:
    """Read a {raw_name: code} YAML file under vigila/reference/ ({} if it does not exist)."""
    path = importlib.resources.files("vigila").joinpath("reference", *relative.split("/"))
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    bad = {k: v for k, v in data.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:  # e.g. an unquoted `NO:` key parses as a boolean
        raise TypeError(f"{relative}: non-string alias entries {bad!r}")
    return data


def _table(rows: Iterable[tuple[str | None, str, str]], code_col: str, name_col: str) -> pl.DataFrame:
    """(raw key, code, name) rows -> normalised, de-duplicated table; first row per key wins."""
    schema = {"key": pl.String, code_col: pl.String, name_col: pl.String}
    return (
        pl.DataFrame([(normalise(k), c, n) for k, c, n in rows if k], schema=schema, orient="row")
        .filter(pl.col("key") != "")
        .unique("key", keep="first", maintain_order=True)
    )


def table_from_aliases(aliases: dict[str, str], base: pl.DataFrame) -> pl.DataFrame:
    """Overlay {raw_name: code} aliases on a ``(key, code, name)`` table; aliases win.

    Names of alias rows are taken from `base` by code. Raises ValueError for codes that
    are not in `base` or for two raw names with the same key but different codes.
    """
    key_col, code_col, name_col = base.columns[:3]
    keyed: dict[str, str] = {}
    for raw, code in aliases.items():
        key, code = normalise(raw), code.strip().upper()
        if key and keyed.setdefault(key, code) != code:
            raise ValueError(f"alias {raw!r} -> {code} conflicts with {keyed[key]} for key {key!r}")
    extra = pl.DataFrame(
        list(keyed.items()), schema={key_col: pl.String, code_col: pl.String}, orient="row"
    )
    names = base.select(code_col, name_col).unique(code_col, keep="first", maintain_order=True)
    unknown = sorted(set(extra[code_col]) - set(names[code_col]))
    if unknown:
        raise ValueError(f"alias codes not in the base table: {unknown}")
    extra = extra.join(names, on=code_col, how="left", maintain_order="left")
    rest = base.filter(~pl.col(key_col).is_in(extra[key_col].implode()))
    return pl.concat([extra, rest.select(extra.columns)])


ISO_3166_1 = Path(__file__).parents[1].joinpath("reference") / "iso3166_1.csv"   # pycountry's ISO 3166-1, as a file
ISO_3166_2 = Path(__file__).parents[1].joinpath("reference") / "iso3166_2.csv"   # pycountry's ISO 3166-2, as a file


def write_iso_files() -> None:
    """(Re)write the ISO 3166 files from pycountry (tests keep them equal to the installed pycountry):
    reading 5,000 subdivisions from a CSV costs milliseconds, pycountry's database a quarter second."""
    import pycountry
    
    fields = ("name", "common_name", "official_name", "alpha_3", "alpha_2")
    pl.DataFrame([{f: getattr(c, f, None) for f in fields} for c in pycountry.countries],
                 schema={f: pl.String for f in fields}).write_csv(ISO_3166_1)
    pl.DataFrame([{"country_code": s.country_code, "code": s.code, "name": s.name, "parent_code": s.parent_code}
                  for s in pycountry.subdivisions], schema={c: pl.String for c in ("country_code", "code", "name", "parent_code")}
                 ).sort("code").write_csv(ISO_3166_2)


@functools.cache
def _iso1() -> pl.DataFrame:
    return pl.read_csv(ISO_3166_1, infer_schema=False)


@functools.cache
def country_table() -> pl.DataFrame:
    """Columns key, iso3, name: ISO 3166-1 names and codes (pycountry's) plus reference/countries.yaml aliases."""
    fields = ("name", "common_name", "official_name", "alpha_3", "alpha_2")  # key priority order
    iso = _iso1()
    rows = [(value, iso3, name) for field in fields
            for value, iso3, name in zip(iso[field], iso["alpha_3"], iso["name"], strict=True)]
    return table_from_aliases(_load_aliases("countries.yaml"), _table(rows, "iso3", "name"))


@functools.cache
def admin1_table(country_iso3: str) -> pl.DataFrame:
    """Columns key, geo_code, geo_name: ISO 3166-2 subdivisions of one country plus aliases.

    Keys are the normalised subdivision name, the full code ("PE-AMA") and the part after the
    dash ("AMA"); names win over codes on collisions, and top-level subdivisions win over
    nested ones (all levels are kept, e.g. Dominican provinces sit under regions).
    Aliases come from reference/admin1/<ISO3>.yaml when present, health areas that are parts of one
    admin1 from reference/admin1/parts/<ISO3>.yaml (`admin1_parts`), published names that replace
    pycountry's from reference/admin1/names/<ISO3>.yaml.
    """
    country = _iso1().filter(pl.col("alpha_3") == country_iso3.upper())
    if country.height == 0:
        raise ValueError(f"unknown ISO 3166-1 alpha-3 code: {country_iso3!r}")
    alpha_2, alpha_3 = country.row(0, named=True)["alpha_2"], country.row(0, named=True)["alpha_3"]
    subs = sorted(pl.read_csv(ISO_3166_2, infer_schema=False).filter(pl.col("country_code") == alpha_2).iter_rows(named=True),
                  key=lambda s: (s["parent_code"] is not None, s["code"]))
    # admin1/names/<ISO3>.yaml: code -> the name to publish where pycountry's is ambiguous (LA-VI and LA-VT are both
    # "Viangchan"); pycountry's name of such a code stops being a key (it would pick one of the two silently)
    names = _load_aliases(f"admin1/names/{alpha_3}.yaml")
    subs = [{**s, "key": None if s["code"] in names else s["name"], "name": names.get(s["code"], s["name"])} for s in subs]
    rows = [(s["name"], s["code"], s["name"]) for s in subs] + [(s["key"], s["code"], s["name"]) for s in subs]
    rows += [(key, s["code"], s["name"]) for s in subs for key in (s["code"], s["code"].split("-", 1)[1])]
    base = _table(rows, "geo_code", "geo_name")
    # admin1/parts/<ISO3>.yaml: health areas that are parts of one admin1 (summed into it, see admin1_parts)
    return table_from_aliases({**_load_aliases(f"admin1/{alpha_3}.yaml"), **_load_aliases(f"admin1/parts/{alpha_3}.yaml")},
                              base)


@functools.cache
def admin1_parts(country_iso3: str) -> frozenset[str]:
    """Normalised names of the health areas declared in reference/admin1/parts/<ISO3>.yaml: each lies wholly in
    one admin1 and, with the other parts of it, makes it up (Guatemala's DAS Petén Norte, Sur Occidental and
    Sur Oriental are Petén). `admin1_table` resolves them to their admin1; several of them may be summed into
    it, which two units named by the admin1 itself may not."""
    return frozenset(normalise(k) for k in _load_aliases(f"admin1/parts/{country_iso3.upper()}.yaml"))


def map_places(
    frame: Frame,
    column: str,
    table: pl.DataFrame,
    *,
    code_col: str = "geo_code",
    name_col: str | None = "geo_name",
) -> Frame:
    """Add `code_col` (and `name_col`) to `frame` by a left join of normalise(`column`) on a
    ``(key, code, name)`` table. Unknown or null names give nulls; row order is kept."""
    key_col, tcode, tname = table.columns[:3]
    existing = set(frame.collect_schema().names())
    clash = {code_col, name_col} & existing
    if clash:
        raise ValueError(f"columns already present: {sorted(c for c in clash if c)}")
    right = table.select(
        pl.col(key_col).alias(_KEY),
        pl.col(tcode).alias(code_col),
        *([pl.col(tname).alias(name_col)] if name_col else []),
    )
    if isinstance(frame, pl.LazyFrame):
        right = right.lazy()
    return (
        frame.with_columns(normalise_expr(pl.col(column)).alias(_KEY))
        .join(right, on=_KEY, how="left", maintain_order="left", validate="m:1")
        .drop(_KEY)
    )


def resolve(names: pl.Series | Iterable[str | None], table: pl.DataFrame) -> pl.DataFrame:
    """One row per input name, in order: columns ``raw`` plus the table's code and name columns."""
    _, tcode, tname = table.columns[:3]
    raw = pl.DataFrame({"raw": pl.Series(names, dtype=pl.String)})
    return map_places(raw, "raw", table, code_col=tcode, name_col=tname)
