"""Reconciliation of the reporters of one country: one weekly series per place, and their discrepancies.

Input: the published `cases_weekly` and a `ReconcileConfig` (vigila/regional/reconciliation.yaml); output:
new versions of `cases_reconciled` (schemas.outputs.CasesReconciled) and `discrepancies`
(schemas.outputs.Discrepancy), and a summary dict. No Prefect here.

Each reporter's weekly total per place comes from `vigila.detect.alerts.weekly_series` (the same aggregation as
detection: summed over classification, sex and age group, a total row counting alone). A reporter's
national figure is its own admin0 rows, or the sum of its admin1 rows when its rule says
`national_from: admin1`; nothing is summed up without that declaration. Only admin0 and admin1
rows are reconciled.

Weeks are matched on the calendar, not on their labels: a week's key is its week_start snapped to
the Sunday on or before it (a Monday-start ISO week minus one day), so an MMWR and an ISO week that
share 6 of their 7 days pair up even where the two calendars number them differently (ISO 2026-W01,
from Monday 2025-12-29, is MMWR 2025-W53, from Sunday 2025-12-28). A reconciled row carries the
epi_year, epi_week and week_start of the reporter whose count it uses (the first of `sources`);
where that label already names another calendar week of the place's series (the conventions
alternate across a year boundary), the row is relabelled in the convention of the place's
first-ranked reporter and a `week_relabelled` problem says so, so (place, epi_year, epi_week) stays
unique. A discrepancy row is labelled in source_a's convention. A reporter whose weeks start on
neither Sunday nor Monday (e.g. DHIS2 Wednesday weeks) cannot be matched: its place-weeks are left
out of reconciliation and comparison (problem `week_start_weekday`); a place it alone reports in a
country without a rule still passes through (basis `single`), as nothing is matched there.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from schemas.outputs import (DISCREPANCIES_SCHEMA_VERSION, RECONCILED_SCHEMA_VERSION, CasesReconciled,
                             Discrepancy)
from vigila.warehouse import publish
from vigila.detect.alerts import Gaps, published_input, weekly_series
from vigila.config import Strict, load_layered
from vigila.warehouse.storage import Storage

CONFIG_PATH = Path(__file__).with_name("reconciliation.yaml")
RECONCILED, DISCREPANCIES = "cases_reconciled", "discrepancies"
PARTITION_BY = ["country_iso3"]
PLACE = ["country_iso3", "geo_level", "geo_code", "disease"]
WEEK = [*PLACE, "epi_year", "epi_week"]
CAL = [*PLACE, "_cal"]  # a place's calendar week: week_start snapped to the Sunday on or before it
RECONCILED_COLUMNS = list(CasesReconciled.to_schema().columns)
DISCREPANCY_COLUMNS = list(Discrepancy.to_schema().columns)
Mode = Literal["authoritative", "complementary"]


# --------------------------------------------------------------------------- config


class Reporter(Strict):
    source: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    national_from: Literal["admin0", "admin1"] = "admin0"


def _unique_sources(reporters: list[Reporter] | None) -> list[Reporter] | None:
    ids = [r.source for r in reporters or []]
    if dup := next((s for s in ids if ids.count(s) > 1), None):
        raise ValueError(f"reporter {dup!r} is listed twice")
    return reporters


class DiseaseRule(Strict):
    """Per-disease overrides of a country's rule (unset keys: the country's)."""

    mode: Mode | None = None
    reporters: list[Reporter] | None = Field(default=None, min_length=1)
    fallback: bool | None = None
    tolerance: float | None = Field(default=None, ge=0)
    min_difference: int | None = Field(default=None, ge=0)

    _check_reporters = field_validator("reporters")(_unique_sources)


class CountryRule(Strict):
    mode: Mode
    reporters: list[Reporter] = Field(min_length=1)
    fallback: bool = True
    tolerance: float | None = Field(default=None, ge=0)
    min_difference: int | None = Field(default=None, ge=0)
    diseases: dict[str, DiseaseRule] = Field(default_factory=dict)

    _check_reporters = field_validator("reporters")(_unique_sources)

    @field_validator("diseases")
    @classmethod
    def _known_diseases(cls, v: dict[str, DiseaseRule]) -> dict[str, DiseaseRule]:
        from vigila.core.vocab import DISEASES, require_known

        require_known(list(v), DISEASES, "disease")
        return v


class Rule(Strict):
    """The rule in force for one country and disease (country rule + disease overrides + globals)."""

    mode: Mode
    reporters: list[Reporter]
    fallback: bool
    tolerance: float
    min_difference: int


class ReconcileConfig(Strict):
    gaps: Gaps = Field(default_factory=Gaps)
    tolerance: float = Field(default=0.10, ge=0)
    min_difference: int = Field(default=10, ge=0)
    unlisted: Literal["skip", "error"] = "skip"
    countries: dict[str, CountryRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _iso3_keys(self) -> ReconcileConfig:
        if bad := next((k for k in self.countries if not (len(k) == 3 and k.isalpha() and k.isupper())), None):
            raise ValueError(f"country {bad!r} is not an ISO 3166-1 alpha-3 code (e.g. PER)")
        return self

    def rule(self, country: str, disease: str) -> Rule | None:
        """The rule for `country` and `disease`, or None when the country is not listed."""
        c = self.countries.get(country)
        if c is None:
            return None
        d = c.diseases.get(disease, DiseaseRule())
        pick = lambda k: v if (v := getattr(d, k)) is not None else getattr(c, k)  # noqa: E731
        tol, floor = pick("tolerance"), pick("min_difference")
        return Rule(mode=pick("mode"), reporters=pick("reporters"), fallback=pick("fallback"),
                    tolerance=self.tolerance if tol is None else tol,
                    min_difference=self.min_difference if floor is None else floor)


def load_config(path: str | Path | None = None) -> ReconcileConfig:
    """vigila/regional/reconciliation.yaml with the YAML at `path` (if given) layered over it; `ConfigError`
    naming the file, line and key on any problem."""
    return load_layered(path, CONFIG_PATH, ReconcileConfig, what="reconciliation config")


# --------------------------------------------------------------------------- reporters' weekly totals

_WEEKLY = {"source_id": pl.String, "country_iso3": pl.String, "geo_level": pl.String, "geo_code": pl.String,
           "geo_name": pl.String, "disease": pl.String, "epi_year": pl.Int32, "epi_week": pl.Int32,
           "week_start": pl.Date, "cases": pl.Int64}


def _problem(check: str, column: str, row: dict[str, Any], value: str) -> dict[str, Any]:
    return {"check": check, "column": column, "row": row, "value": value}


def _rules_table(weekly: pl.DataFrame, config: ReconcileConfig) -> pl.DataFrame:
    """One row per listed country x disease present x configured reporter: its priority and rule."""
    rows = []
    for country, disease in weekly.select("country_iso3", "disease").unique().sort("country_iso3", "disease").iter_rows():
        if (rule := config.rule(country, disease)) is None:
            continue
        for priority, r in enumerate(rule.reporters):
            rows.append((country, disease, r.source, priority, r.national_from, rule.mode, rule.fallback,
                         rule.tolerance, rule.min_difference))
    return pl.DataFrame(rows, orient="row", schema={
        "country_iso3": pl.String, "disease": pl.String, "source_id": pl.String, "priority": pl.Int64,
        "national_from": pl.String, "mode": pl.String, "fallback": pl.Boolean, "tolerance": pl.Float64,
        "min_difference": pl.Int64})


def reporter_weeks(cases_weekly: pl.DataFrame | pl.LazyFrame, config: ReconcileConfig
                   ) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Every reporter's weekly count per place (admin0 and admin1), national figures derived as each
    rule declares; and the problems found (structured: check, column, row, value)."""
    series = weekly_series(cases_weekly.lazy().filter(pl.col("geo_level").is_in(["admin0", "admin1"])), config.gaps)
    weekly = series.select(
        "source_id", "country_iso3", "geo_level", pl.coalesce("place", "country_iso3").alias("geo_code"),
        pl.col("place_name").alias("geo_name"), "disease", "epi_year", "epi_week", "week_start", "cases",
    ).cast(_WEEKLY)
    rules = _rules_table(weekly, config)
    problems: list[dict[str, Any]] = []
    derive = rules.filter(pl.col("national_from") == "admin1").select("country_iso3", "disease", "source_id")
    key = ["country_iso3", "disease", "source_id"]
    own = weekly.filter(pl.col("geo_level") == "admin0").join(derive, on=key, how="semi")
    for row in own.group_by(key).len().sort(key).iter_rows(named=True):
        problems.append(_problem("national_replaced", "geo_level", {k: row[k] for k in key},
                                 f"{row['len']} own admin0 weeks replaced by the sum of its admin1 rows (national_from: admin1)"))
    national = (weekly.filter(pl.col("geo_level") == "admin1").join(derive, on=key, how="semi")
                .group_by("source_id", "country_iso3", "disease", "epi_year", "epi_week")
                .agg(pl.col("week_start").min(), pl.col("cases").sum())
                .with_columns(pl.lit("admin0").alias("geo_level"), pl.col("country_iso3").alias("geo_code"),
                              pl.lit(None, pl.String).alias("geo_name")))
    weekly = pl.concat([weekly.join(own, on=[*key, "geo_level", "epi_year", "epi_week"], how="anti"),
                        national.select(list(_WEEKLY)).cast(_WEEKLY)])
    # a listed reporter with admin1 rows but no national figure: said, never summed silently
    has0 = weekly.filter(pl.col("geo_level") == "admin0").select(key).unique()
    quiet = (weekly.filter(pl.col("geo_level") == "admin1").select(key).unique()
             .join(rules.select(key), on=key, how="semi").join(has0, on=key, how="anti").sort(key))
    for row in quiet.iter_rows(named=True):
        problems.append(_problem("no_national_figure", "national_from", row,
                                 "admin1 rows only and national_from: admin0; not in the national series"))
    return weekly.sort(*WEEK, "source_id"), problems


def _country_names(cases_weekly: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    from vigila.core.places import country_table

    published = (cases_weekly.lazy().filter(pl.col("geo_level") == "admin0")
                 .group_by("country_iso3").agg(pl.col("geo_name").first().alias("name")).collect())
    iso = country_table().select(pl.col("iso3").alias("country_iso3"), "name").unique("country_iso3")
    return pl.concat([published, iso.join(published, on="country_iso3", how="anti")])


# --------------------------------------------------------------------------- reconciliation

_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _calendar_week(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with `_cal`: week_start itself for a Sunday start (MMWR), the day before for a
    Monday start (ISO), null for any other weekday (such a week matches no Sunday or Monday week)."""
    day = pl.col("week_start").dt.weekday()  # Monday 1 .. Sunday 7
    return frame.with_columns(pl.when(day == 7).then(pl.col("week_start"))
                              .when(day == 1).then(pl.col("week_start") - pl.duration(days=1)).alias("_cal"))


def _odd_weekdays(frame: pl.DataFrame, problems: list[dict[str, Any]]) -> pl.DataFrame:
    """`frame` without its weeks that start on neither Sunday nor Monday, each reporter's said."""
    key = ["country_iso3", "disease", "source_id"]
    odd = frame.filter(pl.col("_cal").is_null())
    for row in (odd.group_by(key).agg(pl.len(), pl.col("week_start").dt.weekday().unique().sort().alias("days"))
                .sort(key).iter_rows(named=True)):
        days = "/".join(_WEEKDAYS[d - 1] for d in row["days"])
        problems.append(_problem("week_start_weekday", "week_start", {k: row[k] for k in key},
                                 f"{row['len']} place-weeks left out: weeks start on {days}, neither Sunday (MMWR) nor "
                                 "Monday (ISO), so they cannot be matched to the other reporters' calendar weeks"))
    frame = frame.filter(pl.col("_cal").is_not_null())
    twice = frame.filter(pl.len().over([*CAL, "source_id"]) > 1)  # one reporter with both a Sunday and a Monday week
    for row in twice.group_by(key).len().sort(key).iter_rows(named=True):
        problems.append(_problem("calendar_week_twice", "week_start", {k: row[k] for k in key},
                                 f"{row['len']} place-weeks left out: the reporter has weeks starting on a Sunday and on the "
                                 "Monday after it, so two of its weeks fall on one calendar week"))
    return frame.join(twice.select(*CAL, "source_id"), on=[*CAL, "source_id"], how="anti", nulls_equal=True)


def _unique_labels(reconciled: pl.DataFrame, primary: pl.DataFrame, problems: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows whose (epi_year, epi_week) label is also another calendar week's in the same place
    (a Sunday-start and a Monday-start reporter used in turn across a year whose numbering differs)
    relabelled in the convention of the place's first-ranked reporter (`primary`: PLACE, _sunday),
    until every label of a place is unique; one problem per place and reporter relabelled."""
    from vigila.core.epiweek import weeks_of_dates

    frame = reconciled.join(primary, on=PLACE, how="left").with_columns(
        (pl.col("week_start").dt.weekday() == 7).alias("_own_sunday"))
    moved = []
    while True:
        clash = (pl.len().over(WEEK) > 1) & (pl.col("_own_sunday") != pl.col("_sunday"))
        hit = frame.filter(clash)
        if hit.is_empty():
            break
        moved.append(hit.select(*PLACE, pl.col("sources").str.split(",").list.first().alias("source_id"), "_sunday"))
        fixed = []
        for sunday, part in hit.group_by("_sunday"):
            start = pl.col("_cal") + pl.duration(days=0 if sunday[0] else 1)
            part = part.with_columns(start.alias("week_start"))
            labels = weeks_of_dates(part["week_start"], "mmwr" if sunday[0] else "iso").select(
                pl.col("date").alias("week_start"), "epi_year", "epi_week")
            fixed.append(part.drop("epi_year", "epi_week").join(labels, on="week_start", how="left")
                         .with_columns(pl.col("_sunday").alias("_own_sunday")))
        frame = pl.concat([frame.filter(~clash), *[f.select(frame.columns) for f in fixed]])
    if moved:
        for row in (pl.concat(moved).group_by(*PLACE, "source_id", "_sunday").len().sort(PLACE, "source_id")
                    .iter_rows(named=True)):
            convention = "MMWR (Sunday)" if row["_sunday"] else "ISO (Monday)"
            problems.append(_problem("week_relabelled", "epi_week", {k: row[k] for k in [*PLACE, "source_id"]},
                                     f"{row['len']} weeks used from {row['source_id']} relabelled as {convention} weeks, the "
                                     "convention of the place's first reporter: their own label names another calendar week"))
    return frame.drop("_sunday", "_own_sunday")


def reconcile(cases_weekly: pl.DataFrame | pl.LazyFrame, config: ReconcileConfig
              ) -> tuple[pl.DataFrame, pl.DataFrame, list[dict[str, Any]]]:
    """`cases_weekly` -> (reconciled rows, discrepancy rows, problems); frames without run_id /
    computed_at. See the module docstring and vigila/regional/reconciliation.yaml for the rules."""
    weekly, problems = reporter_weeks(cases_weekly, config)
    weekly = _calendar_week(weekly)
    rules = _rules_table(weekly, config)
    listed = rules.select("country_iso3", "disease").unique()
    key = ["country_iso3", "disease", "source_id"]

    # listed country: a reporter its rule does not name is left out, and said
    strays = weekly.join(listed, on=["country_iso3", "disease"], how="semi").join(rules.select(key), on=key, how="anti")
    for row in strays.group_by(key).len().sort(key).iter_rows(named=True):
        problems.append(_problem("reporter_not_configured", "source_id", {k: row[k] for k in key},
                                 f"{row['len']} place-weeks left out: add the source to countries.{row['country_iso3']}.reporters"))
    ruled = _odd_weekdays(weekly.join(rules, on=key, how="inner"), problems)
    # unlisted country: a place with one reporter passes through; with several, it needs a rule
    free = weekly.join(listed, on=["country_iso3", "disease"], how="anti").with_columns(
        pl.col("source_id").n_unique().over(PLACE).alias("_n"))
    clash = free.filter(pl.col("_n") > 1)
    for row in clash.group_by(PLACE).agg(pl.col("source_id").unique().sort()).sort(PLACE).iter_rows(named=True):
        if config.unlisted == "error":
            raise ValueError(f"{row['country_iso3']} {row['geo_level']} {row['geo_code']} {row['disease']}: reported by "
                             f"{', '.join(row['source_id'])} and the country has no rule in the reconciliation config")
        problems.append(_problem("no_rule", "country_iso3", {k: row[k] for k in PLACE},
                                 "reported by " + ",".join(row["source_id"]) + "; not reconciled (add the country)"))
    clash = _odd_weekdays(clash, problems)
    single = free.filter(pl.col("_n") == 1).with_columns(
        pl.lit("single").alias("basis"), pl.col("source_id").alias("sources"), pl.lit(None, pl.String).alias("cross_checks"))

    # rank among the reporters that publish the place at all: a reporter that never covers a
    # level (PAHO has no departamentos) does not make the first one that does a fallback
    ruled = ruled.with_columns(pl.col("priority").rank("dense").over(PLACE).cast(pl.Int64).sub(1).alias("rank"))
    # one row per place and calendar week; its labels are those of the first-ranked reporter with the week
    by_week = (ruled.sort("rank").group_by(CAL, maintain_order=True).agg(
        pl.col("epi_year", "epi_week").first(),
        pl.col("source_id"), pl.col("cases"), pl.col("week_start"), pl.col("geo_name").drop_nulls().first(),
        pl.col("rank").first().alias("top"), pl.col("mode", "fallback").first()))
    auth = by_week.filter(pl.col("mode") == "authoritative")
    unfilled = auth.filter(pl.col("top") > 0, ~pl.col("fallback"))
    for row in unfilled.group_by(PLACE).agg(pl.len(), pl.col("source_id").list.first().unique().sort()).sort(PLACE).iter_rows(named=True):
        problems.append(_problem("no_authoritative_count", "fallback", {k: row[k] for k in PLACE},
                                 f"{row['len']} weeks left out (fallback: false); reported only by " + ",".join(row["source_id"])))
    auth = auth.join(unfilled.select(CAL), on=CAL, how="anti").with_columns(
        pl.when(pl.col("top") == 0).then(pl.lit("authoritative")).otherwise(pl.lit("fallback")).alias("basis"),
        pl.col("source_id").list.first().alias("sources"),
        pl.when(pl.col("source_id").list.len() > 1).then(pl.col("source_id").list.slice(1).list.join(","))
        .alias("cross_checks"),
        pl.col("cases").list.first(), pl.col("week_start").list.first())
    summed = by_week.filter(pl.col("mode") == "complementary").with_columns(
        pl.lit("sum").alias("basis"), pl.col("source_id").list.join(",").alias("sources"),
        pl.lit(None, pl.String).alias("cross_checks"), pl.col("cases").list.sum(), pl.col("week_start").list.first())
    columns = [*WEEK, "_cal", "geo_name", "week_start", "cases", "basis", "sources", "cross_checks"]
    reconciled = pl.concat([f.select(columns) for f in (single, auth, summed)])
    primary = ruled.filter(pl.col("rank") == 0).group_by(PLACE).agg(
        (pl.col("week_start").first().dt.weekday() == 7).alias("_sunday"))
    reconciled = _unique_labels(reconciled, primary, problems).drop("_cal")
    names = _country_names(cases_weekly)
    reconciled = (reconciled.join(names, on="country_iso3", how="left")
                  .with_columns(pl.coalesce("geo_name", "name", "geo_code").alias("geo_name")).drop("name")
                  .sort(WEEK))

    # discrepancies: two reporters of the same population (not complementary ones) in one place and
    # calendar week, labelled (epi_year, epi_week, week_start) as source_a labels it
    same = pl.concat([
        ruled.filter(pl.col("mode") == "authoritative").select(*WEEK, "_cal", "week_start", "source_id", "cases", "rank",
                                                                "tolerance", "min_difference"),
        clash.with_columns(pl.col("source_id").rank("dense").over(PLACE).cast(pl.Int64).alias("rank"),
                           pl.lit(config.tolerance).alias("tolerance"), pl.lit(config.min_difference, pl.Int64).alias("min_difference"))
        .select(*WEEK, "_cal", "week_start", "source_id", "cases", "rank", "tolerance", "min_difference"),
    ])
    pairs = (same.join(same.select(*CAL, "source_id", "cases", "rank"), on=CAL, suffix="_b")
             .filter(pl.col("rank") < pl.col("rank_b")))
    diff = pl.col("cases_b") - pl.col("cases_a")
    larger = pl.max_horizontal("cases_a", "cases_b")
    discrepancies = (pairs.rename({"source_id": "source_a", "cases": "cases_a"}).rename({"source_id_b": "source_b"})
                     .with_columns(diff.alias("difference"),
                                   pl.when(larger > 0).then(diff / larger).alias("relative_difference"))
                     .with_columns(((pl.col("difference").abs() > pl.col("min_difference"))
                                    & (pl.col("relative_difference").abs() > pl.col("tolerance"))).fill_null(False)
                                   .alias("exceeds"))
                     .sort(*CAL, "rank", "rank_b").drop("_cal"))
    return reconciled, discrepancies, problems


# --------------------------------------------------------------------------- publishing


def summarise(reconciled: pl.DataFrame, discrepancies: pl.DataFrame, **info: Any) -> dict[str, Any]:
    """Rows per basis, countries, place-weeks compared (discrepancies) and those beyond tolerance."""
    count = lambda df, col: dict(sorted(df.group_by(col).len().iter_rows()))  # noqa: E731
    return {**info, "rows": reconciled.height, "basis": count(reconciled, "basis"),
            "countries": reconciled["country_iso3"].n_unique(), "discrepancies": discrepancies.height,
            "exceeding": int(discrepancies["exceeds"].sum() or 0)}


def run_reconciliation(storage: Storage | str | Path, config: ReconcileConfig, *, run_id: str,
                       force: bool = False) -> dict[str, Any]:
    """Reconcile the published `cases_weekly` and publish `discrepancies` then `cases_reconciled`
    (each whole dataset in one atomic commit, both with the run's fingerprint). The same input
    version and config as both current versions publish nothing (status "unchanged") unless
    `force`; a dataset whose fingerprint already matches (a run stopped between the two commits)
    is not published again."""
    storage = Storage.open(storage)
    rows, version = published_input(storage, None)
    fingerprint = publish.fingerprint(input=version, config=config.model_dump(mode="json"))
    current = {name: publish.built_from(storage, name, fingerprint) for name in (RECONCILED, DISCREPANCIES)}
    fresh = {name: m is not None for name, m in current.items()}
    if all(fresh.values()) and not force:
        return summarise(publish.scan(storage, RECONCILED).collect(), publish.scan(storage, DISCREPANCIES).collect(),
                         status="unchanged", version=current[RECONCILED].version,  # type: ignore[union-attr]
                         discrepancies_version=current[DISCREPANCIES].version,  # type: ignore[union-attr]
                         cases_weekly_version=version, problems=current[RECONCILED].extra.get("problems", []))  # type: ignore[union-attr]
    reconciled, discrepancies, problems = reconcile(rows, config)
    computed_at = pl.lit(dt.datetime.now(dt.UTC)).cast(pl.Datetime("us", "UTC")).alias("computed_at")
    reconciled = reconciled.with_columns(pl.lit(run_id).alias("run_id"), computed_at).select(RECONCILED_COLUMNS)
    discrepancies = discrepancies.with_columns(pl.lit(run_id).alias("run_id")).select(DISCREPANCY_COLUMNS)
    CasesReconciled.validate(reconciled)
    Discrepancy.validate(discrepancies)
    extra = {"fingerprint": fingerprint, "input": version, "config": config.model_dump(mode="json"), "problems": problems}
    versions = {}
    for name, frame, schema_version in ((DISCREPANCIES, discrepancies, DISCREPANCIES_SCHEMA_VERSION),
                                        (RECONCILED, reconciled, RECONCILED_SCHEMA_VERSION)):
        if fresh[name] and not force:
            versions[name] = current[name].version  # type: ignore[union-attr]
            continue
        versions[name] = publish.commit(storage, name, partition_by=PARTITION_BY, replace_all=frame, run_id=run_id,
                                        schema_version=schema_version, extra=extra).version
    publish.write_catalog(storage)
    return summarise(reconciled, discrepancies, status="published", version=versions[RECONCILED],
                     discrepancies_version=versions[DISCREPANCIES], cases_weekly_version=version, problems=problems)
