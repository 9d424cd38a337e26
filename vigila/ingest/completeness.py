"""Reporting completeness and timeliness: per source and epi week, expected vs received, on time /
late / partial / missing / pending; and the per-source summary behind `vigila status`.

Input: a warehouse (its `cases_revisions`, `cases_weekly` and `reports/<source>/<run>.json`),
source configs (`schedule.deadline`, `schedule.timezone`, `epiweek`) and the time to evaluate at
(`today`, injected: nothing here reads the clock). Output: frames of the `Reporting` contract
(schemas/outputs.py); `publish_completeness` commits them as the `reporting` dataset (atomic, one
partition per source). Pure: no Prefect, so `vigila status` works offline.

A week's *units* are the place x disease pairs the source has ever published (one per disease for
a national reporter; each departamento for Peru's line list). A unit is received for week W when
`cases_revisions` holds a row of it for W, at the time of its first such row (`ingested_at`).
Weeks run from the source's first published week to the last week that has ended by `today`
(plus any later week already received); a source that has published nothing owes one unit (the
report) a week from `schedule.expected_from` when it declares one, else nothing.
A DHIS2 analytics source with `dhis2.data_set` publishes an explicit zero for each cell analytics
omitted at an org unit x week that sent its report (connectors.dhis2), so such a unit counts as
received here; a unit-week without a report publishes nothing and stays missing.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from collections.abc import Iterable
from typing import Any

import polars as pl

from vigila.warehouse.contract import contract, schema_version
from vigila.core import epiweek
from vigila.warehouse import publish
from vigila.config import SourceConfig, parse_deadline
from vigila.warehouse.storage import Storage

DATASET = "reporting"
REPORTING = contract("reporting")
COLUMNS = REPORTING.columns
UTC = dt.UTC
INCOMPLETE = ("partial", "missing")


def _now(today: dt.date | dt.datetime) -> dt.datetime:
    """`today` as an aware UTC time: a date is its start (00:00 UTC), a naive datetime is UTC."""
    if isinstance(today, dt.datetime):
        return (today if today.tzinfo else today.replace(tzinfo=UTC)).astimezone(UTC)
    return dt.datetime.combine(today, dt.time(), UTC)


def deadline_of(week_start: dt.date, source: SourceConfig) -> dt.datetime:
    """When the report of the week starting `week_start` is due (UTC): `schedule.deadline`'s weekday
    and time in the week after it, in the source's timezone; without one, the end of that week."""
    tz = zoneinfo.ZoneInfo(source.schedule.timezone)
    next_week = week_start + dt.timedelta(days=7)
    if source.schedule.deadline is None:
        local = dt.datetime.combine(next_week + dt.timedelta(days=7), dt.time(), tz)
    else:
        day, hour, minute = parse_deadline(source.schedule.deadline)
        date = next_week + dt.timedelta(days=(day - next_week.weekday()) % 7)
        local = dt.datetime.combine(date, dt.time(hour, minute), tz)
    return local.astimezone(UTC)


def _validated(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame, once the `reporting` contract holds on it (a failure here is a defect of this module)."""
    errors = REPORTING.failures(frame.with_row_index("_row", offset=1).with_columns(pl.col("_row").cast(pl.Int64)))
    if errors.height:
        first = errors.row(0, named=True)
        raise ValueError(f"reporting contract: {first['field']} {first['check']} at row {first['_row']}: {first['value']}")
    return frame


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=REPORTING.polars_schema())


def _received(storage: Storage, ids: list[str]) -> pl.DataFrame:
    """One row per source x unit x week: when the unit's first row for the week was published."""
    schema = {"source_id": pl.Utf8, "country_iso3": pl.Utf8, "geo_code": pl.Utf8, "disease": pl.Utf8, "epi_year": pl.Int32,
              "epi_week": pl.Int32, "week_start": pl.Date, "first": pl.Datetime("us", "UTC")}
    if not ids or publish.current_manifest(storage, "cases_revisions") is None:
        return pl.DataFrame(schema=schema)
    return (publish.scan(storage, "cases_revisions")
            .filter(pl.col("source_id").is_in(ids))
            .group_by("source_id", "country_iso3", "geo_code", "disease", "epi_year", "epi_week")
            .agg(pl.col("week_start").first(), pl.col("ingested_at").min().alias("first"))
            .collect().select(list(schema)).cast(schema))


def _weeks(source: SourceConfig, got: pl.DataFrame, now: dt.datetime) -> pl.DataFrame:
    """The weeks a source owes: its first published week .. the last week ended by `now` (local)."""
    first = got["week_start"].min()
    local_today = now.astimezone(zoneinfo.ZoneInfo(source.schedule.timezone)).date()
    starts = pl.date_range(first, local_today - dt.timedelta(days=7), "7d", eager=True) \
        if first <= local_today - dt.timedelta(days=7) else pl.Series([], dtype=pl.Date)
    received_starts = got.select("week_start").unique()["week_start"]
    starts = pl.concat([starts.alias("week_start"), received_starts]).unique().sort()
    table = epiweek.weeks_of_dates(starts, source.epiweek)
    # a received week keeps its own (epi_year, epi_week) label; the calendar fills the rest
    return (table.select("epi_year", "epi_week", "week_start")
            .join(got.select("epi_year", "epi_week").unique(), on=["epi_year", "epi_week"], how="anti")
            .vstack(got.select("epi_year", "epi_week", "week_start").unique(["epi_year", "epi_week"]))
            .unique(["epi_year", "epi_week"]).sort("week_start", "epi_year", "epi_week"))


def _units(source: SourceConfig, got: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Received units per week: place x disease for aggregate reports; the disease alone for a line
    list (a place without cases has no row there, so only the report as a whole can be missing)."""
    unit = ["disease"] if source.shape == "line_list" else ["geo_code", "disease"]
    return (got.group_by(*unit, "epi_year", "epi_week")
            .agg(pl.col("week_start").first(), pl.col("first").min())
            .with_columns(pl.col("week_start").min().over(unit).alias("unit_start"))), unit


def _never_published(source: SourceConfig, now: dt.datetime) -> pl.DataFrame:
    """A source with `schedule.expected_from` and nothing published: one unit (the report) owed each week
    from that week to the last week ended by `now` (local), none received: missing, or pending before its deadline."""
    first = epiweek.weeks_of_dates(pl.Series([source.schedule.expected_from]), source.epiweek)["week_start"][0]
    last = now.astimezone(zoneinfo.ZoneInfo(source.schedule.timezone)).date() - dt.timedelta(days=7)
    if first > last:
        return _empty()
    weeks = epiweek.weeks_of_dates(pl.date_range(first, last, "7d", eager=True), source.epiweek)
    deadlines = {d: deadline_of(d, source) for d in weeks["week_start"].to_list()}
    return (weeks.select("epi_year", "epi_week", "week_start")
            .with_columns(pl.lit(source.id).alias("source_id"), pl.lit(1).alias("expected"), pl.lit(0).alias("received"),
                          pl.lit(0).alias("received_on_time"), pl.lit(0.0).alias("completeness"),
                          pl.col("week_start").replace_strict(deadlines, return_dtype=pl.Datetime("us", "UTC")).alias("deadline"),
                          pl.lit(None).alias("first_received_at"), pl.lit(None).alias("last_received_at"),
                          pl.lit(now).alias("as_of"))
            .with_columns(pl.when(pl.col("deadline") > pl.lit(now)).then(pl.lit("pending")).otherwise(pl.lit("missing"))
                          .alias("status"))
            .select(COLUMNS).cast(REPORTING.polars_schema()).sort("week_start"))


def _source_frame(source: SourceConfig, got: pl.DataFrame, now: dt.datetime) -> pl.DataFrame:
    if got.height == 0:
        return _empty() if source.schedule.expected_from is None else _never_published(source, now)
    got, unit = _units(source, got)
    weeks = _weeks(source, got, now)
    # a unit is expected from its first published week on
    starts = got.unique(unit)["unit_start"].sort()
    weeks = weeks.with_columns(starts.search_sorted(weeks["week_start"], side="right").cast(pl.Int64).alias("expected"))
    deadlines = {d: deadline_of(d, source) for d in weeks["week_start"].unique().to_list()}
    weeks = weeks.with_columns(pl.col("week_start").replace_strict(
        deadlines, return_dtype=pl.Datetime("us", "UTC")).alias("deadline"))
    per_week = (got.join(weeks.select("epi_year", "epi_week", "deadline"), on=["epi_year", "epi_week"])
                .group_by("epi_year", "epi_week")
                .agg(pl.len().cast(pl.Int64).alias("received"),
                     (pl.col("first") <= pl.col("deadline")).sum().cast(pl.Int64).alias("received_on_time"),
                     pl.col("first").min().alias("first_received_at"),
                     pl.col("first").max().alias("last_received_at")))
    frame = weeks.join(per_week, on=["epi_year", "epi_week"], how="left").with_columns(
        pl.col("received", "received_on_time").fill_null(0))
    expected = pl.col("expected")
    complete = pl.col("received") >= expected
    frame = frame.with_columns(
        pl.lit(source.id).alias("source_id"),
        (pl.col("received") / expected).cast(pl.Float64).alias("completeness"),
        pl.when(complete & (pl.col("received_on_time") >= expected)).then(pl.lit("on_time"))
        .when(complete).then(pl.lit("late"))
        .when(pl.col("deadline") > pl.lit(now)).then(pl.lit("pending"))
        .when(pl.col("received") == 0).then(pl.lit("missing"))
        .otherwise(pl.lit("partial")).alias("status"),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("as_of"),
    )
    return frame.select(COLUMNS).cast(REPORTING.polars_schema()).sort("week_start")


def completeness(warehouse: str | Storage, sources: Iterable[SourceConfig], *,
                 today: dt.date | dt.datetime, by_country: bool = False) -> pl.DataFrame:
    """The `reporting` frame: one row per source x epi week, evaluated at `today` (validated).
    by_country=True: one row per source x country x epi week (plus `country_iso3`), each country of a
    multi-country file (PAHO's) with its own units and weeks, from its own first published week on."""
    storage, now = Storage.open(warehouse), _now(today)
    sources = list(sources)
    got = _received(storage, [s.id for s in sources])
    if by_country:
        mine = {s.id: got.filter(pl.col("source_id") == s.id) for s in sources}
        # each country's frame is a Reporting frame of its own (one row per source x week), plus the country
        groups = [(s, c, g) for s in sources for (c,), g in mine[s.id].group_by("country_iso3")]
        groups += [(s, s.country, mine[s.id]) for s in sources if mine[s.id].is_empty() and s.country]  # expected_from
        parts = [_validated(_source_frame(s, g, now)).with_columns(pl.lit(c, pl.Utf8).alias("country_iso3"))
                 for s, c, g in groups]
        return pl.concat([_empty().with_columns(pl.lit(None, pl.Utf8).alias("country_iso3")), *parts]).sort(
            "source_id", "country_iso3", "week_start")
    parts = [_source_frame(s, got.filter(pl.col("source_id") == s.id), now) for s in sources]
    frame = pl.concat([_empty(), *parts]).sort("source_id", "week_start")
    return _validated(frame)


def publish_completeness(storage: str | Storage, sources: Iterable[SourceConfig], today: dt.date | dt.datetime,
                         *, run_id: str | None = None) -> publish.Manifest:
    """Compute `completeness` and commit it as the `reporting` dataset: each given source's partition
    is replaced (others are kept), in one atomic commit; the catalog is refreshed."""
    storage, sources = Storage.open(storage), list(sources)
    frame = completeness(storage, sources, today=today)
    run_id = run_id or _now(today).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    replace = {(s.id,): frame.filter(pl.col("source_id") == s.id) for s in sources}
    manifest = publish.commit(storage, DATASET, partition_by=["source_id"], schema_version=schema_version("reporting"),
                              run_id=run_id, replace=replace, extra={"as_of": _now(today).isoformat()})
    publish.write_catalog(storage)
    return manifest


# --------------------------------------------------------------------------- status summary


def _when(report: dict) -> str:
    return str(report.get("finished_at") or report.get("published_at") or report.get("started_at") or "")


def record_run(storage: Storage, source_id: str, *, run_id: str | None, status: str, error: str | None = None,
               flow_run: str | None = None, lost: dict[str, float] | None = None, counts: dict | None = None) -> None:
    """Remember the source's last run whatever its outcome (`reports/<source>/last_run.json`): published,
    unchanged, failed or crashed, with the error's first line; `vigila status` shows it."""
    first = (error or "").strip().splitlines()[0][:300] if error else None
    storage.write_json(f"reports/{source_id}/last_run.json",
                       {"run_id": run_id, "flow_run": flow_run, "status": status, "error": first, "lost": lost, **(counts or {}),
                        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})


def last_run(storage: Storage, source_id: str) -> dict | None:
    """The source's last run: the newer of `reports/<source>/last_run.json` (every outcome, written by the
    flow and its failure hook) and `latest.json` (every publish, also without Prefect), or None."""
    runs = []
    for key in (f"reports/{source_id}/last_run.json", f"reports/{source_id}/latest.json"):
        if storage.exists(key):
            r = storage.read_json(key)
            runs.append({"run_id": r.get("run_id"), "status": r.get("status"), "at": r.get("at") or _when(r) or None,
                         "error": r.get("error"), "lost": r.get("lost") or lost_share(r),
                         **{w: r[w] for w in ("rows", "cases", "deaths") if isinstance(r.get(w), dict)}})
    return max(runs, key=lambda r: r["at"] or "") if runs else None


def lost_share(report: dict) -> dict[str, float] | None:
    """Share of rows / cases quarantined by a published run (from its report), for `vigila status`."""
    shares = {w: round(report[w]["quarantined"] / report[w]["read"], 4)
              for w in ("rows", "cases") if isinstance(report.get(w), dict) and report[w].get("read")}
    return shares or None


def last_published(storage: Storage, ids: list[str], by_country: bool = False) -> dict[Any, tuple[int, int]]:
    """source_id (by_country: (source_id, country_iso3)) -> (epi_year, epi_week) of its latest published week in
    cases_weekly (only these sources' rows read)."""
    if not ids or publish.current_manifest(storage, "cases_weekly") is None:
        return {}
    keys = ["source_id", "country_iso3"] if by_country else ["source_id"]
    latest = (publish.scan(storage, "cases_weekly").filter(pl.col("source_id").is_in(ids))
              .group_by(keys).agg(pl.col("epi_year", "epi_week").sort_by("week_start").last())
              .collect())
    return {r[0] if len(keys) == 1 else r[:2]: r[-2:] for r in latest.select(*keys, "epi_year", "epi_week").iter_rows()}


def _countries(storage: Storage, sources: list[SourceConfig]) -> dict[str, list[str]]:
    ids = [s.id for s in sources if s.country is None]
    if not ids or publish.current_manifest(storage, "cases_weekly") is None:
        return {}
    found = (publish.scan(storage, "cases_weekly").filter(pl.col("source_id").is_in(ids))
             .select("source_id", "country_iso3").unique().collect())
    return {sid: sorted(g["country_iso3"].to_list()) for (sid,), g in found.group_by("source_id")}


def summarise(frame: pl.DataFrame, source: SourceConfig, now: dt.datetime, weeks: int = 12) -> dict[str, Any]:
    """Completeness of the last `weeks` due weeks (deadline passed) and the overdue flag of one source:
    overdue when the latest due week is partial or missing, since the deadline of the first of the
    trailing missing weeks (nothing received), or of the latest due week when it is partial."""
    mine = frame.filter(pl.col("source_id") == source.id)
    due = mine.filter(pl.col("deadline") <= now).sort("week_start")
    if due.height == 0:  # nothing published yet (overdue unknown), or only weeks not yet due
        return {"completeness_pct": None, "on_time_pct": None, "weeks": 0, "overdue": None if mine.height == 0 else False,
                "overdue_since": None, "weeks_missing": 0}
    last = due.tail(weeks)
    expected = last["expected"].sum()
    statuses = due["status"].to_list()
    run = 0  # trailing weeks with nothing received
    while run < len(statuses) and statuses[-1 - run] == "missing":
        run += 1
    overdue = statuses[-1] in INCOMPLETE
    since = due["deadline"][len(statuses) - max(run, 1)] if overdue else None
    return {"completeness_pct": round(100 * last["received"].sum() / expected, 1) if expected else None,
            "on_time_pct": round(100 * last["received_on_time"].sum() / expected, 1) if expected else None,
            "weeks": last.height, "overdue": overdue,
            "overdue_since": since.isoformat() if since else None, "weeks_missing": run}


def status_by_country(warehouse: str | Storage, sources: Iterable[SourceConfig], *, today: dt.date | dt.datetime,
                      weeks: int = 12) -> list[dict[str, Any]]:
    """`status` per source x country: which countries of a multi-country file are late. Each country is
    judged on its own units and weeks (`completeness(by_country=True)`); the last run is the source's."""
    storage, now, sources = Storage.open(warehouse), _now(today), list(sources)
    frame = completeness(storage, sources, today=now, by_country=True)
    published = last_published(storage, [s.id for s in sources], by_country=True)
    rows = []
    for s in sources:
        run = last_run(storage, s.id)
        for country in frame.filter(pl.col("source_id") == s.id)["country_iso3"].unique().sort().to_list():
            rows.append(_status_row(s, {"country": country}, run, published.get((s.id, country)),
                                    summarise(frame.filter(pl.col("country_iso3") == country), s, now, weeks)))
    return rows


def _status_row(s: SourceConfig, where: dict[str, Any], run: dict | None, week: tuple[int, int] | None,
                summary: dict[str, Any]) -> dict[str, Any]:
    """One row of `status` / `status_by_country`: the source, where (country...), last run and week, summary."""
    return {"source": s.id, **where, "last_run": run, "last_week_published": f"{week[0]}-W{week[1]:02d}" if week else None,
            **summary, "deadline": s.schedule.deadline, "timezone": s.schedule.timezone}


def status(warehouse: str | Storage, sources: Iterable[SourceConfig], *, today: dt.date | dt.datetime,
           weeks: int = 12) -> list[dict[str, Any]]:
    """One dict per source for `vigila status`: country, last run (from the warehouse's run reports),
    last epi week published, completeness of the last `weeks` due weeks (%), overdue and since when."""
    storage, now, sources = Storage.open(warehouse), _now(today), list(sources)
    frame = completeness(storage, sources, today=now)
    ids = [s.id for s in sources]
    published = last_published(storage, ids)
    countries = _countries(storage, sources)
    rows = []
    for s in sources:
        found = [s.country] if s.country else countries.get(s.id, [])
        where = {"country": (", ".join(found) if len(found) <= 3 else f"{len(found)} countries") or None, "countries": found}
        rows.append(_status_row(s, where, last_run(storage, s.id), published.get(s.id), summarise(frame, s, now, weeks)))
    return rows
