"""Alerts: the configured detection methods run on the published `cases_weekly`, published as `alerts`.

Input: a warehouse (`Storage`) and a `DetectionConfig` (vigila/detect/detection.yaml); output: a new
version of the `alerts` dataset (schemas.outputs.Alert) and a summary dict. No Prefect here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
import inspect
import json
from pathlib import Path
from typing import Any, Literal

import polars as pl
import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator

from schemas.harmonised import CasesWeekly
from schemas.outputs import ALERTS_SCHEMA_VERSION, Alert
from vigila.core import epiweek
from vigila.warehouse import publish, read
from vigila.operate import log as vlog
from vigila.config import Strict, load_layered
from vigila.detect import registry
from vigila.warehouse.storage import Storage

CONFIG_PATH = Path(__file__).with_name("detection.yaml")
DATASET = "alerts"
PARTITION_BY = ["method"]
SERIES_KEY = ["source_id", "country_iso3", "geo_level", "geo_code", "disease"]
ALERT_COLUMNS = list(Alert.to_schema().columns)
ORDER = ["method", "source_id", "disease", "series_id", "week_start"]
"""Row order of a published `alerts` version (by method: its partitions; then the order in which
`scale.plan_detection` cuts blocks, so a distributed publish can write blocks one after the other)."""
GapPolicy = Literal["split", "zero"]


# --------------------------------------------------------------------------- config


def method_defaults(method: str) -> dict[str, Any]:
    """Keyword parameters of a registered method with their defaults (`range` excluded)."""
    sig = inspect.signature(registry.get_method(method)).parameters
    return {k: p.default for k, p in sig.items() if p.kind is p.KEYWORD_ONLY and k != "range"}


class MethodRun(Strict):
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    min_history: int | None = Field(default=None, ge=0)

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        registry.get_method(v)                     # one line naming the methods
        return v

    @field_validator("params")
    @classmethod
    def _known_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if (method := info.data.get("method")) and (bad := [k for k in v if k not in (valid := method_defaults(method))]):
            raise ValueError(f"unknown parameter {bad[0]!r} for {method}; valid: {', '.join(valid)}")
        return v

    @property
    def label(self) -> str:
        """The `method` value of its rows: `name`, else e.g. ears_C2 (method + its variant)."""
        variant = self.params.get("method")
        return self.name or (f"{self.method}_{variant}" if variant else self.method)

    def effective_params(self) -> dict[str, Any]:
        return {**method_defaults(self.method), **self.params}


class Gaps(Strict):
    default: GapPolicy = "split"
    sources: dict[str, GapPolicy] = Field(default_factory=dict)


class DetectionConfig(Strict):
    methods: list[MethodRun] = Field(min_length=1)
    levels: list[Literal["admin0", "admin1", "admin2", "admin3"]] = Field(min_length=1)
    diseases: list[str] | None = None
    weeks: int = Field(default=52, ge=1)
    min_history: int = Field(default=10, ge=0)
    gaps: Gaps = Field(default_factory=Gaps)

    @field_validator("diseases")
    @classmethod
    def _known_diseases(cls, v: list[str] | None) -> list[str] | None:
        from vigila.core.vocab import DISEASES, require_known

        require_known(v or [], DISEASES, "disease")
        return v

    @model_validator(mode="after")
    def _unique_labels(self) -> DetectionConfig:
        labels = [m.label for m in self.methods]
        if dup := next((x for x in labels if labels.count(x) > 1), None):
            raise ValueError(f"two method runs are labelled {dup!r}; give one a distinct `name`")
        return self


def load_config(path: str | Path | None = None) -> DetectionConfig:
    """vigila/detect/detection.yaml with the YAML at `path` (if given) layered over it; `ConfigError`
    naming the file, line and key on any problem."""
    return load_layered(path, CONFIG_PATH, DetectionConfig, what="detection config")


# --------------------------------------------------------------------------- series


def epi_weeks(dates: pl.Series) -> pl.DataFrame:
    """week_start -> epi_year, epi_week (MMWR for a Sunday start, ISO for a Monday start)."""
    sunday = dates.dt.weekday() == 7
    return pl.concat([epiweek.weeks_of_dates(dates.filter(sunday), "mmwr"),
                      epiweek.weeks_of_dates(dates.filter(~sunday), "iso")]).select(
        pl.col("date").alias("week_start"), "epi_year", "epi_week")


def weekly_series(rows: pl.LazyFrame | pl.DataFrame, gaps: Gaps) -> pl.DataFrame:
    week = [*SERIES_KEY, "week_start"]
    only_totals = ([col for col, total in (("classification", "total"), ("sex", "all"), ("age_group", "all"))
                    if rows[col].null_count() == 0 and (rows[col] == total).all()]
                   if isinstance(rows, pl.DataFrame) and rows.height else [])
    rows = rows.lazy()
    for col, total in (("classification", "total"), ("sex", "all"), ("age_group", "all")):
        if col in only_totals:                   # every row a total: the filter would keep them all (no window)
            continue
        is_total = pl.col(col) == total          # a source's total row for a week, when present, is used alone
        rows = rows.filter(is_total | ~is_total.any().over(week))
    weekly = _sum_weeks(rows.select(*week, "geo_name", "epi_year", "epi_week", "cases").collect(), week)
    policy = pl.col("source_id").replace_strict(gaps.sources, default=gaps.default, return_dtype=pl.String)
    zero = weekly.filter(policy == "zero")
    if zero.height:  # every week of the source's period; a week without a row had no cases
        period = zero.group_by("source_id", "geo_level", "disease").agg(
            pl.date_ranges(pl.col("week_start").min(), pl.col("week_start").max(), "1w").alias("week_start")).explode("week_start")
        grid = zero.select(*SERIES_KEY, "geo_name").unique(SERIES_KEY).join(period, on=["source_id", "geo_level", "disease"])
        zero = grid.join(zero.drop("geo_name"), on=week, how="left").with_columns(
            pl.col("cases").is_null().alias("imputed"), pl.col("cases").fill_null(0))
        weeks = epi_weeks(zero.filter("imputed")["week_start"])
        zero = zero.join(weeks, on="week_start", how="left", suffix="_i").with_columns(
            pl.col("epi_year").fill_null(pl.col("epi_year_i")), pl.col("epi_week").fill_null(pl.col("epi_week_i")))
        weekly = pl.concat([weekly.filter(policy != "zero"), zero.select(weekly.columns)]).sort(week, maintain_order=True)
    return (runs(weekly, SERIES_KEY, presorted=True)
            .select(pl.format("{}|{}|{}", "geo_code", "disease", "source_id").alias("series_id"), "segment", "t",
                    "week_start", "epi_year", "epi_week", "cases", "imputed", "source_id", "country_iso3", "geo_level",
                    pl.when(pl.col("geo_level") != "admin0").then("geo_code").alias("place"),
                    pl.when(pl.col("geo_level") != "admin0").then("geo_name").alias("place_name"), "disease"))


def _changes(keys: list[str]) -> pl.Expr:
    """True on a row whose `keys` differ from the previous row's (and on the first row): in a frame sorted by
    them, the first row of each group — found by comparing neighbours, not by hashing the text of every key."""
    return pl.any_horizontal(pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys).fill_null(True)


def _sum_weeks(rows: pl.DataFrame, week: list[str]) -> pl.DataFrame:
    """Rows -> one per (series, week_start), sorted by `week`: cases summed, geo_name and the epi week of the
    week's first row (input order), `imputed` False. Sorted first (stable), then neighbours compared, so the
    many-key text group_by (~2x the sort on 5 M rows) is never run; a file of one row per week adds nothing up."""
    rows = rows.sort(week, maintain_order=True).with_columns(_changes(week).alias("__new"))
    if not rows["__new"].all():
        rows = (rows.with_columns(pl.col("__new").cum_sum().alias("__g"))
                .group_by("__g", maintain_order=True)
                .agg(pl.col(*week, "geo_name", "epi_year", "epi_week").first(), pl.col("cases").sum()))
    return rows.select(*week, "geo_name", "epi_year", "epi_week", "cases", pl.lit(False).alias("imputed"))


def runs(weekly: pl.DataFrame, keys: list[str], presorted: bool = False) -> pl.DataFrame:
    """Weekly rows of series `keys`, sorted, with `segment` (the unbroken run of weeks a row is in: a missing
    week starts a new one, 0 first) and `t` (1-based week index within it) — what the methods read as
    consecutive weeks. Window-free: the series' and runs' first rows are found by comparing neighbours."""
    if not presorted:
        weekly = weekly.sort(*keys, "week_start", maintain_order=True)
    first = _changes(keys)
    start = first | (pl.col("week_start").diff().dt.total_days() != 7).fill_null(True)
    i = pl.int_range(pl.len(), dtype=pl.Int64)
    return (weekly.with_columns(first.alias("__s"), start.alias("__r"))
            .with_columns(pl.col("__r").cum_sum().cast(pl.Int64).alias("__k"))
            .with_columns((pl.col("__k") - pl.when("__s").then("__k").forward_fill()).alias("segment"),
                          (i - pl.when("__r").then(i).forward_fill() + 1).alias("t"))
            .drop("__s", "__r", "__k"))


def build_series(cases_weekly: pl.LazyFrame | pl.DataFrame, level: str, disease: str, gaps: Gaps | None = None) -> pl.DataFrame:
    """`cases_weekly` rows -> one weekly series per source x place at `level` for `disease`: series_id,
    segment (unbroken run), t (1-based within it), week_start, epi_year, epi_week, cases (summed over
    classification, sex, age group), imputed, source_id, country_iso3, geo_level, place, place_name, disease."""
    rows = cases_weekly.lazy().filter(pl.col("geo_level") == level, pl.col("disease") == disease)
    return weekly_series(rows, gaps or Gaps())


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class Windowed:
    """Series keyed for the methods (`_key`: the series_id, or series_id#segment when some series has a gap) and
    their last `weeks` weeks: what every method of a run shares (`windowed`), built once, not once per method."""
    keyed: pl.DataFrame
    window: pl.DataFrame
    weeks: int


def windowed(series: pl.DataFrame, weeks: int) -> Windowed:
    """`keyed` also holds `__last_t`, the highest t of the row's key in the window (null: none there): a method
    reads the keys whose last t passes its min_history, a filter instead of a join per method."""
    segmented = series.height and (series["segment"].max() or 0) > 0
    key = pl.format("{}#{}", "series_id", "segment") if segmented else pl.col("series_id")
    inside = pl.col("week_start") > pl.col("week_start").max().over("series_id") - pl.duration(weeks=weeks)
    keyed = (series.with_columns(key.alias("_key"), inside.alias("__in"))
             .with_columns(pl.col("t").filter("__in").max().over("_key").alias("__last_t")))
    return Windowed(keyed.drop("__in"), keyed.filter("__in").drop("__in", "__last_t"), weeks)


def evaluate(series: pl.DataFrame | Windowed, run: MethodRun, *, weeks: int, min_history: int) -> pl.DataFrame:
    """One call of `run`'s method over every series: the last `weeks` weeks of each series with
    expected/upperbound/alarm, null where a week has fewer than `min_history` earlier weeks. Several methods
    over the same series: pass `windowed(series, weeks)` to each."""
    need = min_history if run.min_history is None else run.min_history
    shared = series if isinstance(series, Windowed) else windowed(series, weeks)
    if shared.weeks != weeks:
        raise ValueError(f"the series were windowed to {shared.weeks} weeks, not {weeks}")
    keyed, window = shared.keyed, shared.window
    evaluable = window.filter(pl.col("t") > need)
    result = pl.DataFrame(schema={"_key": pl.String, "t": pl.Int64, "expected": pl.Float64,
                                  "upperbound": pl.Float64, "alarm": pl.Boolean})
    if evaluable.height:
        frame = keyed.filter(pl.col("__last_t") > need)    # the series with a week to evaluate, all their weeks
        out = registry.detect(frame.select(pl.col("_key").alias("series_id"), "t", "week_start", "cases"), run.method,
                              run.params, range=(evaluable["t"].min(), evaluable["t"].max()))
        result = out.select(pl.col("series_id").alias("_key"), *result.columns[1:])
    ok = pl.col("t") > need
    return window.join(result, on=["_key", "t"], how="left").with_columns(
        *(pl.when(ok).then(c).alias(c) for c in ("expected", "upperbound", "alarm")),
        pl.col("cases").alias("observed"), pl.lit(run.label).alias("method"),
        pl.lit(json.dumps(run.effective_params(), sort_keys=True)).alias("params"))


def evaluate_methods(series: pl.DataFrame, config: DetectionConfig, /, **fields: Any) -> list[pl.DataFrame]:
    """`evaluate` of every configured method over `series` (one shared `windowed`), each in its own logged
    `detect` stage (the CLI shows them) carrying `fields` (e.g. the block)."""
    parts, shared = [], windowed(series, config.weeks)
    for i, run in enumerate(config.methods, 1):
        with vlog.stage("detect", method=run.label, step=f"{i}/{len(config.methods)}", **fields) as logged:
            parts.append(evaluate(shared, run, weeks=config.weeks, min_history=config.min_history))
            logged.update(rows=parts[-1].height, alarms=int(parts[-1]["alarm"].sum() or 0))
    return parts


SERIES_INPUT = [*SERIES_KEY, "week_start", "geo_name", "epi_year", "epi_week", "cases", "classification", "sex",
                "age_group"]   # the cases_weekly columns `weekly_series` reads


def input_manifest(storage: Storage, as_of: dt.date | None) -> tuple[str, publish.Manifest]:
    """The dataset detection reads (cases_weekly, or cases_revisions for `as_of`) and its current manifest."""
    name = "cases_weekly" if as_of is None else "cases_revisions"
    manifest = publish.current_manifest(storage, name)
    if manifest is None:
        raise FileNotFoundError(f"{storage.root}: no published dataset {name!r}; ingest a source first")
    return name, manifest


def input_rows(storage: Storage, name: str, version: str, as_of: dt.date | None, config: DetectionConfig | None = None,
               partitions: list[tuple[str, ...]] | None = None) -> pl.LazyFrame:
    """The weekly counts of version `version` of `name` (as known on `as_of`), lazily, in `partitions` when given;
    with `config`, only its levels' and diseases' rows and the columns detection reads (half the memory)."""
    rows = read.with_contract_columns(publish.scan(storage, name, version=version, partitions=partitions), name)
    if as_of is not None:
        rows = read.latest_issue(rows.filter(pl.col("issue_date") <= as_of))
    rows = rows.select(list(CasesWeekly.to_schema().columns))
    if config is None:
        return rows
    return rows.filter(pl.col("geo_level").is_in(config.levels),
                       pl.col("disease").is_in(config.diseases) if config.diseases else pl.lit(True)).select(SERIES_INPUT)


def published_input(storage: Storage, as_of: dt.date | None, config: DetectionConfig | None = None
                    ) -> tuple[pl.DataFrame, str]:
    """The weekly counts (as published, or as known on `as_of`; see `input_rows` for `config`) and the version
    id they were read from (pinned: the rows are that version's)."""
    name, manifest = input_manifest(storage, as_of)
    return input_rows(storage, name, manifest.version, as_of, config).collect(), manifest.version


def summarise(alerts: pl.DataFrame, **info: Any) -> dict[str, Any]:
    """Series evaluated, alarms per method, alarms in each series' latest week per method."""
    latest = alerts.filter(pl.col("week_start") == pl.col("week_start").max().over("series_id"))
    count = lambda df: dict(sorted(df.group_by("method").agg(pl.col("alarm").sum()).iter_rows()))  # noqa: E731
    return {**info, "series": alerts["series_id"].n_unique(), "rows": alerts.height,
            "evaluated": alerts.filter(pl.col("upperbound").is_not_null()).height,
            "alarms": count(alerts), "latest_week_alarms": count(latest)}


def run_detection(storage: Storage | str | Path, config: DetectionConfig, *, run_id: str,
                  as_of: dt.date | None = None, force: bool = False) -> dict[str, Any]:
    """Run every configured method on every series and publish `alerts` (the whole dataset,
    atomically). The same input version, `as_of` and config as the current version publish
    nothing (status "unchanged") unless `force`."""
    storage = Storage.open(storage)
    rows, version = published_input(storage, as_of, config)
    fingerprint = publish.fingerprint(input=version, as_of=str(as_of), config=config.model_dump(mode="json"))
    current = publish.built_from(storage, DATASET, fingerprint)
    if current and not force:
        return summarise(publish.scan(storage, DATASET).collect(), status="unchanged", version=current.version,
                         cases_weekly_version=version)
    series = weekly_series(rows, config.gaps)
    del rows
    computed_at = dt.datetime.now(dt.UTC)
    alerts = pl.concat(evaluate_methods(series, config, series=series["series_id"].n_unique()))
    alerts = alerts.with_columns(
        pl.lit(version).alias("cases_weekly_version"), pl.lit(as_of, pl.Date).alias("as_of"), pl.lit(run_id).alias("run_id"),
        pl.lit(computed_at).cast(pl.Datetime("us", "UTC")).alias("computed_at"),
    ).select(ALERT_COLUMNS).sort(ORDER)
    Alert.validate(alerts)
    manifest = publish.commit(storage, DATASET, partition_by=PARTITION_BY, replace_all=alerts, run_id=run_id,
                              schema_version=ALERTS_SCHEMA_VERSION,
                              extra={"fingerprint": fingerprint, "input": version, "as_of": str(as_of) if as_of else None,
                                     "config": config.model_dump(mode="json")})
    publish.write_catalog(storage)
    return summarise(alerts, status="published", version=manifest.version, cases_weekly_version=version)
