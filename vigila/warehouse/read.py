"""Analyst reads of published datasets as polars LazyFrames: filters, and `as_of` for revisions.

Input: a warehouse root (path or s3:// URL) and filters; output: LazyFrames with the documented
schema (docs/data_dictionary.md), and `versions()` tables of a dataset's stored versions.

Filters (all optional, keyword-only, combined with AND):

- ``disease``: a code or name/alias (``"dengue"``, ``"Dengue"``) or a list of them;
- ``country``: ISO 3166-1 alpha-3 (``"PER"``), alpha-2 (``"PE"``) or name (``"Perú"``), or a list;
- ``source``: a ``source_id`` or a list of them;
- ``weeks``: one week spec or a ``(first, last)`` pair, both ends included, either end None for open.
  A spec is ``"2024-W05"`` (epi year and week, the source's own convention), ``(2024, 5)`` the same,
  ``2024`` a whole epi year, or a date (``dt.date`` or ``"2024-02-01"``) meaning the epi week that
  contains it (by ``week_start``). ``weeks="2024-W05"`` is that week; ``weeks=2024`` that year.
- ``as_of`` (date, ISO text, or datetime): for ``cases_weekly`` the counts as known on that date
  (latest issue with ``issue_date`` on or before it); for ``revisions`` the issues up to it; for
  every other dataset the published VERSION that was current at the end of that day (UTC), among
  the versions still stored (``versions()`` lists them; publish keeps the last few).

Filters on partition columns (country_iso3 and disease of cases_*, method of alerts, source_id of
quarantine/reporting) prune the files read from the manifest; the rest become LazyFrame filters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl
import pycountry

from vigila.warehouse.contract import contract
from vigila.core import places, vocab
from vigila.warehouse import publish
from vigila.warehouse.storage import Storage

# reader function -> published dataset name
DATASETS = {
    "cases_weekly": "cases_weekly",
    "revisions": "cases_revisions",
    "quarantine": "quarantine",
    "alerts": "alerts",
    "reporting": "reporting",
    "reconciled": "cases_reconciled",
    "discrepancies": "discrepancies",
    "endemic_channel": "endemic_channel",
    "weekly_summary": "weekly_summary",
}

Values = str | Iterable[str] | None
WeekSpec = str | int | tuple[int, int] | dt.date


# -- filter values ------------------------------------------------------------------------------
def _as_list(values: Values) -> list[str] | None:
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)


def diseases(values: Values) -> list[str] | None:
    """Disease codes for codes/names/aliases; ValueError naming the unknown one and the codes."""
    out = []
    for v in _as_list(values) or []:
        code = vocab.disease_code(v) if isinstance(v, str) else None
        if code is None:
            raise ValueError(f"unknown disease {v!r}; known: {', '.join(sorted(vocab.DISEASES))}")
        out.append(code)
    return out if values is not None else None


def countries(values: Values) -> list[str] | None:
    """ISO 3166-1 alpha-3 codes for alpha-3/alpha-2 codes or names (pycountry plus Vigila's aliases)."""
    out = []
    for v in _as_list(values) or []:
        text = v.strip() if isinstance(v, str) else ""
        hit = pycountry.countries.get(alpha_3=text.upper()) if len(text) == 3 else None
        hit = hit or (pycountry.countries.get(alpha_2=text.upper()) if len(text) == 2 else None)
        code = hit.alpha_3 if hit else places.resolve([text], places.country_table())["iso3"][0] if text else None
        if code is None:
            raise ValueError(f"unknown country {v!r}: give an ISO 3166-1 alpha-3 or alpha-2 code or an English "
                             "country name (pycountry), e.g. 'PER', 'PE' or 'Peru'")
        out.append(code)
    return out if values is not None else None


def _week_bound(spec: WeekSpec | None, end: bool) -> pl.Expr | None:
    """Predicate for one end of a week range (end=False: the first week, True: the last)."""
    if spec is None:
        return None
    if isinstance(spec, str) and "-W" in spec.upper():
        year, week = spec.upper().split("-W", 1)
        try:
            spec = (int(year), int(week))
        except ValueError:
            raise ValueError(f"bad week {spec!r}: expected 'YYYY-Www', e.g. '2024-W05'") from None
    elif isinstance(spec, str):
        try:
            spec = dt.date.fromisoformat(spec)
        except ValueError:
            raise ValueError(f"bad week {spec!r}: expected 'YYYY-Www', (year, week), a year or a date") from None
    if isinstance(spec, dt.datetime):
        spec = spec.date()
    if isinstance(spec, dt.date):  # the week containing the date
        return pl.col("week_start") <= spec if end else pl.col("week_start") > spec - dt.timedelta(days=7)
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = (spec, 53 if end else 1)
    if isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(x, int) for x in spec):
        year, week = spec
        if not (1 <= week <= 53):
            raise ValueError(f"bad week {spec!r}: (year, week) needs a week in 1..53; for a range of years "
                             "give ((2023, 1), (2024, 53)) or ('2023-W01', '2024-W53')")
        ordinal = pl.col("epi_year").cast(pl.Int64) * 100 + pl.col("epi_week")
        return ordinal <= year * 100 + week if end else ordinal >= year * 100 + week
    raise ValueError(f"bad week {spec!r}: expected 'YYYY-Www', (year, week), a year or a date")


def weeks_filter(weeks: Any) -> pl.Expr | None:
    """The predicate of a ``weeks=`` argument (see the module docstring), or None."""
    if weeks is None:
        return None
    is_pair = isinstance(weeks, (tuple, list)) and len(weeks) == 2 and not all(isinstance(x, int) for x in weeks)
    first, last = weeks if is_pair else (weeks, weeks)
    parts = [p for p in (_week_bound(first, False), _week_bound(last, True)) if p is not None]
    return pl.all_horizontal(parts) if parts else None


def _moment(as_of: dt.date | dt.datetime | str) -> dt.datetime:
    """End of the `as_of` day in UTC (a datetime is taken as given; naive means UTC)."""
    if isinstance(as_of, str):
        as_of = dt.datetime.fromisoformat(as_of) if "T" in as_of else dt.date.fromisoformat(as_of)
    if not isinstance(as_of, dt.datetime):
        as_of = dt.datetime.combine(as_of, dt.time.max)
    return as_of if as_of.tzinfo else as_of.replace(tzinfo=dt.UTC)


# -- versions -------------------------------------------------------------------------------------
def versions(warehouse: str | Storage, name: str) -> pl.DataFrame:
    """A dataset's committed versions still stored, oldest first: version, sequence, created_at (UTC),
    rows, run_id, current. ``name`` is a dataset name (``cases_revisions``) or a reader's (``revisions``)."""
    storage = Storage.open(warehouse)
    name = DATASETS.get(name, name)
    history = publish.history(storage, name)
    if not history:
        raise FileNotFoundError(f"{storage.root}: no published dataset {name!r}")
    return pl.DataFrame(
        {
            "version": [m.version for m in history],
            "sequence": [m.sequence for m in history],
            "created_at": [dt.datetime.fromisoformat(m.created_at) for m in history],
            "rows": [m.rows for m in history],
            "run_id": [m.run_id for m in history],
            "current": [i == len(history) - 1 for i in range(len(history))],
        },
        schema={"version": pl.String, "sequence": pl.Int64, "created_at": pl.Datetime("us", "UTC"),
                "rows": pl.Int64, "run_id": pl.String, "current": pl.Boolean},
    )


def _version_at(storage: Storage, name: str, as_of: dt.date | dt.datetime | str) -> publish.Manifest:
    moment = _moment(as_of)
    history = publish.history(storage, name)
    if not history:
        raise FileNotFoundError(f"{storage.root}: no published dataset {name!r}")
    before = [m for m in history if dt.datetime.fromisoformat(m.created_at) <= moment]
    if not before:
        raise ValueError(f"{name}: as_of {as_of} is before the oldest stored version ({history[0].version}, "
                         f"published {history[0].created_at}); stored versions: see read.versions(warehouse, {name!r})")
    return before[-1]


# -- reading --------------------------------------------------------------------------------------
def dataset(
    warehouse: str | Storage,
    name: str,
    *,
    disease: Values = None,
    country: Values = None,
    source: Values = None,
    weeks: Any = None,
    as_of: dt.date | dt.datetime | str | None = None,
) -> pl.LazyFrame:
    """The current version of any published dataset (or the one current at the end of `as_of`),
    filtered (module docstring). A filter on a column the dataset lacks is a ValueError."""
    storage = Storage.open(warehouse)
    m = _version_at(storage, name, as_of) if as_of is not None else publish.current_manifest(storage, name)
    if m is None:
        raise FileNotFoundError(f"{storage.root}: no published dataset {name!r}")
    columns = set(m.columns) | set(m.partition_by)
    wanted = {"disease": diseases(disease), "country_iso3": countries(country), "source_id": _as_list(source)}
    wanted = {c: v for c, v in wanted.items() if v is not None}
    week_pred = weeks_filter(weeks)
    needed = list(wanted) + (["epi_year", "epi_week", "week_start"] if week_pred is not None else [])
    lacking = [c for c in needed if c not in columns]
    if lacking:
        raise ValueError(f"{name} has no column {lacking[0]!r} to filter on; its columns: {', '.join(sorted(columns))}")
    partitions = None
    if any(c in m.partition_by for c in wanted):  # prune files by their partition values
        index = {c: i for i, c in enumerate(m.partition_by)}
        partitions = [f.partition for f in m.files
                      if all(f.partition[index[c]] in v for c, v in wanted.items() if c in index)]
    frame = with_contract_columns(publish.scan(storage, name, m.version, partitions), name)
    predicates = [pl.col(c).is_in(v) for c, v in wanted.items()] + ([week_pred] if week_pred is not None else [])
    return frame.filter(*predicates) if predicates else frame


def with_contract_columns(frame: pl.LazyFrame, name: str) -> pl.LazyFrame:
    """A version published under an older schema, with the columns its contract gained since as nulls
    (cases_weekly / cases_revisions before 1.2.0 have no age_band_source: no source band was kept)."""
    if name not in ("cases_weekly", "cases_revisions"):
        return frame
    have = set(frame.collect_schema().names())
    schema = contract(name).polars_schema()
    return frame.with_columns(pl.lit(None, schema[c]).alias(c) for c in schema if c not in have)


def latest_issue(revisions: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Latest issue of each key (by issue date, then ingest time): `cases_weekly` from revisions."""
    return revisions.lazy().sort("issue_date", "ingested_at").group_by(contract("cases_weekly").unique).agg(pl.all().last())


def _issue_date(as_of: dt.date | dt.datetime | str) -> dt.date:
    if isinstance(as_of, str):
        as_of = dt.date.fromisoformat(as_of[:10])
    return as_of.date() if isinstance(as_of, dt.datetime) else as_of


def cases_weekly(warehouse: str | Storage, *, disease: Values = None, country: Values = None,
                 source: Values = None, weeks: Any = None, as_of: dt.date | str | None = None) -> pl.LazyFrame:
    """Weekly counts as currently published, or as known on `as_of` (latest issue on or before it)."""
    columns = contract("cases_weekly").columns
    filters = {"disease": disease, "country": country, "source": source, "weeks": weeks}
    if as_of is None:
        return dataset(warehouse, "cases_weekly", **filters).select(columns)
    known = revisions(warehouse, **filters, as_of=as_of)
    return latest_issue(known).select(columns)


def revisions(warehouse: str | Storage, *, disease: Values = None, country: Values = None,
              source: Values = None, weeks: Any = None, as_of: dt.date | str | None = None) -> pl.LazyFrame:
    """Every issue of every weekly count (cases_revisions); with `as_of`, the issues dated up to it."""
    frame = dataset(warehouse, "cases_revisions", disease=disease, country=country, source=source, weeks=weeks)
    return frame if as_of is None else frame.filter(pl.col("issue_date") <= _issue_date(as_of))


def _reader(function: str):
    name = DATASETS[function]

    def read(warehouse: str | Storage, *, disease: Values = None, country: Values = None, source: Values = None,
             weeks: Any = None, as_of: dt.date | dt.datetime | str | None = None) -> pl.LazyFrame:
        return dataset(warehouse, name, disease=disease, country=country, source=source, weeks=weeks, as_of=as_of)

    read.__name__ = read.__qualname__ = function
    read.__doc__ = (f"The `{name}` dataset, filtered; `as_of`: the version current at the end of that day "
                    "(see the module docstring).")
    return read


_quarantine = _reader("quarantine")


def quarantine(warehouse: str | Storage, *, disease: Values = None, country: Values = None, source: Values = None,
               weeks: Any = None, as_of: dt.date | dt.datetime | str | None = None) -> pl.LazyFrame:
    """The `quarantine` dataset, filtered (see the module docstring): one record per (row, failed check) with
    the row's cases. A warehouse where nothing was ever quarantined gives an empty frame of the contract.
    Cases lost by a source: `.filter(severity == "error").unique(["file_sha256", "row"])["cases"].sum()`."""
    storage = Storage.open(warehouse)
    if as_of is None and publish.current_manifest(storage, "quarantine") is None and storage.exists("catalog.json"):
        return pl.DataFrame(schema=contract("quarantine").polars_schema()).lazy()
    return _quarantine(storage, disease=disease, country=country, source=source, weeks=weeks, as_of=as_of)
alerts = _reader("alerts")
reporting = _reader("reporting")
reconciled = _reader("reconciled")
discrepancies = _reader("discrepancies")
endemic_channel = _reader("endemic_channel")
weekly_summary = _reader("weekly_summary")

__all__: Sequence[str] = ["DATASETS", "countries", "dataset", "diseases", "latest_issue", "versions",
                          "weeks_filter", *DATASETS]
