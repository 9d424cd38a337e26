"""The regional weekly summary: one row per disease x place x epi week, for analysts and the bulletin.

Input: reconciled weekly counts, endemic channels, detection results on those series (`detections`),
reporting statuses and populations (polars
frames of the published datasets) and a `SummaryConfig` (vigila/regional/summary.yaml); output: a frame of
schemas.outputs.WeeklySummary. Pure polars; no Prefect, no storage (vigila/regional/regional.py publishes it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import Field

from vigila.regional import endemic
from vigila.config import Strict, load_layered

CONFIG_PATH = Path(__file__).with_name("summary.yaml")
SERIES = ["country_iso3", "geo_level", "geo_code", "disease"]
STATUS_ORDER = ["missing", "partial", "late", "pending", "on_time"]   # worst first


class SignalRule(Strict):
    alarm: bool = True
    min_cases: int = Field(default=5, ge=0)
    zones: list[Literal["success", "safety", "alert", "epidemic"]] = Field(default_factory=lambda: ["epidemic"])


class SummaryConfig(Strict):
    levels: list[Literal["admin0", "admin1"]] = Field(default_factory=lambda: ["admin0", "admin1"], min_length=1)  # reconciled levels
    detection_weeks: int = Field(default=260, ge=1, le=5200)
    threshold_method: str | None = "ears_C2"
    endemic_method: Literal["bortman", "quartile"] = "bortman"
    change_weeks: int = Field(default=4, ge=1, le=52)
    ytd_years: int = Field(default=5, ge=1, le=50)
    ytd_min_years: int = Field(default=1, ge=1, le=50)
    stale_after_weeks: int = Field(default=26, ge=0)
    signal: SignalRule = Field(default_factory=SignalRule)
    incomplete_statuses: list[Literal["on_time", "late", "partial", "missing", "pending"]] = Field(
        default_factory=lambda: ["partial", "missing", "pending"])
    history_weeks: int = Field(default=52, ge=4, le=520)


def load_config(path: str | Path | None = None) -> SummaryConfig:
    """vigila/regional/summary.yaml with the YAML at `path` layered over it (`ConfigError` naming file, line, key)."""
    return load_layered(path, CONFIG_PATH, SummaryConfig, what="summary config")


# --------------------------------------------------------------------------- the weekly grid


def _grid(reconciled: pl.DataFrame, stale_after_weeks: int) -> pl.DataFrame:
    """Every week of every series from its first report to the region's latest week (dormant series:
    to their last report; a run of more than `stale_after_weeks` missing weeks is left out), with the
    reported rows joined; weeks without a report have null cases and carry the series' reporters
    forward (they are who should have reported)."""
    if reconciled.is_empty():
        return reconciled.with_columns(pl.lit(None, pl.Boolean).alias("reported"))
    latest = reconciled["week_start"].max()
    stale = 7 * stale_after_weeks
    # A series is cut where more than `stale_after_weeks` weeks are missing in a row (a reporter that
    # stopped for years is not "not reported" for every week of them); its last part reaches the region's
    # latest week unless that part is dormant too.
    parts = (reconciled.select(*SERIES, "week_start").unique().sort(*SERIES, "week_start")
             .with_columns(((pl.col("week_start").diff().dt.total_days() - 7) > stale).fill_null(False)
                           .cum_sum().over(SERIES).alias("_part")))
    bounds = (parts.group_by(*SERIES, "_part").agg(pl.col("week_start").min().alias("first"), pl.col("week_start").max().alias("last"))
              .with_columns((pl.col("_part") == pl.col("_part").max().over(SERIES)).alias("_final"))
              .with_columns(pl.when(~pl.col("_final") | ((pl.lit(latest) - pl.col("last")).dt.total_days() > stale))
                            .then(pl.col("last"))
                            # a series' own weekday (Sunday MMWR / Monday ISO) up to the region's latest week
                            .otherwise(pl.col("last") + pl.duration(days=7 * ((pl.lit(latest) - pl.col("last")).dt.total_days() // 7)))
                            .alias("until")))
    weeks = (bounds.select(*SERIES, pl.date_ranges("first", "until", interval="1w").alias("week_start"))
             .explode("week_start"))
    out = weeks.join(reconciled, on=[*SERIES, "week_start"], how="left", maintain_order="left")
    by = pl.col("week_start")
    carry = ["geo_name", "sources", "basis"]
    out = out.sort(*SERIES, "week_start").with_columns(
        pl.col("cases").is_not_null().alias("reported"),
        *[pl.col(c).forward_fill().over(SERIES, order_by=by) for c in carry])
    # Epi year/week of the added weeks: a Sunday start is an MMWR week, a Monday start an ISO week.
    missing = out.filter(pl.col("epi_year").is_null())
    if missing.height:
        from vigila.detect import alerts

        table = alerts.epi_weeks(missing["week_start"].unique()).select(
            "week_start", pl.col("epi_year").alias("_y"), pl.col("epi_week").alias("_w"))
        out = (out.join(table, on="week_start", how="left", maintain_order="left")
               .with_columns(pl.coalesce("epi_year", "_y").alias("epi_year"), pl.coalesce("epi_week", "_w").alias("epi_week"))
               .drop("_y", "_w"))
    return out


# --------------------------------------------------------------------------- the measures


def _trend(df: pl.DataFrame, cfg: SummaryConfig) -> pl.DataFrame:
    """change against the previous `change_weeks` weeks; year-to-date against the same weeks of previous years."""
    order = pl.col("week_start")
    k = cfg.change_weeks
    prev = (pl.col("cases").cast(pl.Float64).shift(1).rolling_mean(k, min_samples=k).over(SERIES, order_by=order))
    adjacent = (pl.col("week_start") - pl.col("week_start").shift(k).over(SERIES, order_by=order)) == pl.duration(weeks=k)
    prev = pl.when(adjacent).then(prev)          # the k rows before are the k weeks before (no cut gap between)
    df = df.with_columns(prev.alias("prev4_mean"),
                         pl.col("cases").fill_null(0).cum_sum().over([*SERIES, "epi_year"], order_by=order).alias("ytd_cases"))
    df = df.with_columns(pl.when(pl.col("prev4_mean") > 0).then(pl.col("cases") / pl.col("prev4_mean") - 1).alias("change_prev4"))
    # A year-to-date is complete when every week 1..w of the year was reported; only complete ones are
    # compared (a week not reported would count as 0 cases). A previous year without a week 53 lends its
    # week-52 total to week 53.
    complete = pl.col("reported").cast(pl.Int32).cum_sum().over([*SERIES, "epi_year"], order_by=order) == pl.col("epi_week")
    df = df.with_columns(complete.alias("_ytd_complete"))
    ytd = df.filter("_ytd_complete").select(*SERIES, "epi_year", "epi_week", "ytd_cases")
    lend53 = (ytd.filter(pl.col("epi_week") == 52)
              .join(df.filter(pl.col("epi_week") == 53).select(*SERIES, "epi_year"), on=[*SERIES, "epi_year"], how="anti")
              .with_columns(pl.lit(53, pl.Int32).alias("epi_week")))
    base = pl.concat([ytd, lend53])
    earlier = pl.concat([base.with_columns((pl.col("epi_year") + k).alias("epi_year")) for k in range(1, cfg.ytd_years + 1)])
    means = (earlier.group_by(*SERIES, "epi_year", "epi_week")
             .agg(pl.col("ytd_cases").mean().alias("ytd_previous_mean"), pl.len().alias("_n"))
             .filter(pl.col("_n") >= cfg.ytd_min_years).drop("_n"))
    df = df.join(means, on=[*SERIES, "epi_year", "epi_week"], how="left", maintain_order="left")
    return df.with_columns(pl.when((pl.col("ytd_previous_mean") > 0) & pl.col("_ytd_complete"))
                           .then(pl.col("ytd_cases") / pl.col("ytd_previous_mean")).alias("ytd_ratio")).drop("_ytd_complete")


def _endemic(df: pl.DataFrame, channel: pl.DataFrame | None, cfg: SummaryConfig) -> pl.DataFrame:
    cols = ["endemic_lower", "endemic_median", "endemic_upper"]
    if channel is None or channel.is_empty():
        df = df.with_columns(*[pl.lit(None, pl.Float64).alias(c) for c in cols])
    else:
        if channel["per"].is_not_null().any():
            raise ValueError("the summary compares weekly counts with the endemic channel: publish it on counts (endemic.yaml per: null)")
        ch = (channel.filter(pl.col("method") == cfg.endemic_method)
              .select(*SERIES, "epi_year", "epi_week",
                      *[pl.col(c.removeprefix("endemic_")).cast(pl.Float64).alias(c) for c in cols]))
        df = df.join(ch, on=[*SERIES, "epi_year", "epi_week"], how="left", maintain_order="left")
    return df.with_columns(pl.when(pl.col("endemic_upper").is_not_null()).then(pl.lit(cfg.endemic_method)).alias("endemic_method"),
                           endemic.zone("cases", "endemic_lower", "endemic_median", "endemic_upper").alias("endemic_zone"))


def detections(reconciled: pl.DataFrame, config, *, weeks: int) -> pl.DataFrame:
    """Every detection method of `config` (an alerts.DetectionConfig, vigila/detect/detection.yaml) run on the
    reconciled series themselves — the counts the summary shows, whatever their basis (one reporter, a
    fallback, a sum, a national figure summed from departamentos) — over each series' last `weeks`
    weeks. Unbroken runs of weeks are evaluated separately (a gap is never read as consecutive weeks).
    Output: the series keys, epi_year, epi_week, method, upperbound, alarm."""
    from vigila.detect import alerts

    rows = reconciled.filter(pl.col("geo_level").is_in(config.levels),
                             pl.col("disease").is_in(config.diseases) if config.diseases else pl.lit(True))
    series = alerts.runs(rows, SERIES).with_columns(pl.format("{}|{}", "geo_code", "disease").alias("series_id"))
    empty = pl.DataFrame(schema={**{k: pl.Utf8 for k in SERIES}, "epi_year": pl.Int32, "epi_week": pl.Int32,
                                 "method": pl.Utf8, "upperbound": pl.Float64, "alarm": pl.Boolean})
    if series.is_empty():
        return empty
    shared = alerts.windowed(series, weeks)
    parts = [alerts.evaluate(shared, run, weeks=weeks, min_history=config.min_history).select(empty.columns)
             for run in config.methods]
    return pl.concat(parts)


def _alarms(df: pl.DataFrame, found: pl.DataFrame | None, cfg: SummaryConfig) -> pl.DataFrame:
    """Alarms of the detection methods on the row's own series (any method), and the upper bound of
    `threshold_method` as its threshold."""
    if found is None or found.is_empty():
        return df.with_columns(pl.lit(None, pl.Float64).alias("threshold"), pl.lit(None, pl.Utf8).alias("threshold_method"),
                               pl.lit(None, pl.Boolean).alias("alarm"), pl.lit(None, pl.Utf8).alias("alarm_methods"))
    agg = (found.group_by(*SERIES, "epi_year", "epi_week").agg(
        pl.when(pl.col("alarm").is_not_null().any()).then(pl.col("alarm").fill_null(False).any()).alias("alarm"),
        pl.col("method").filter(pl.col("alarm").fill_null(False)).unique().sort().str.join(",").alias("alarm_methods"),
        pl.col("upperbound").filter(pl.col("method") == cfg.threshold_method).first().alias("threshold")))
    df = df.join(agg, on=[*SERIES, "epi_year", "epi_week"], how="left", maintain_order="left")
    return df.with_columns(pl.when(pl.col("alarm_methods") == "").then(None).otherwise("alarm_methods").alias("alarm_methods"),
                           pl.when(pl.col("threshold").is_not_null()).then(pl.lit(cfg.threshold_method)).alias("threshold_method"))


def _reporting(df: pl.DataFrame, reporting: pl.DataFrame | None) -> pl.DataFrame:
    """The reporting status of the row's reporters for the week (the worst of them) and their completeness."""
    if reporting is None or reporting.is_empty():
        return df.with_columns(pl.lit(None, pl.Utf8).alias("reporting_status"), pl.lit(None, pl.Float64).alias("completeness"))
    rank = {s: i for i, s in enumerate(STATUS_ORDER)}
    used = (df.select("epi_year", "epi_week", pl.col("sources").str.split(",")).with_row_index("_row")
            .explode("sources").rename({"sources": "source_id"}))
    rep = reporting.select("source_id", "epi_year", "epi_week", "status", "completeness").with_columns(
        pl.col("status").replace_strict(rank, default=len(rank)).alias("_rank"))
    agg = (used.join(rep, on=["source_id", "epi_year", "epi_week"], how="inner")
           .group_by("_row").agg(pl.col("status").sort_by("_rank").first().alias("reporting_status"),
                                 pl.col("completeness").min()))
    return df.with_row_index("_row").join(agg, on="_row", how="left", maintain_order="left").drop("_row")


def country_names(codes: pl.Series) -> pl.DataFrame:
    """ISO 3166-1 alpha-3 -> the country's common name (pycountry), for the distinct codes given."""
    import pycountry

    rows = []
    for code in codes.drop_nulls().unique().sort().to_list():
        c = pycountry.countries.get(alpha_3=code)
        rows.append((code, getattr(c, "common_name", None) or (c.name if c else code)))
    return pl.DataFrame(rows, schema={"country_iso3": pl.Utf8, "country_name": pl.Utf8}, orient="row")


def _single_country_sources(reconciled: pl.DataFrame) -> list[str]:
    """Reporters (and reporter combinations) whose counts cover exactly one country."""
    return (reconciled.group_by("sources").agg(pl.col("country_iso3").n_unique().alias("n"))
            .filter(pl.col("n") == 1)["sources"].to_list())


def build(reconciled: pl.DataFrame, *, channel: pl.DataFrame | None = None, alarms: pl.DataFrame | None = None,
          reporting: pl.DataFrame | None = None, population: pl.DataFrame | None = None,
          config: SummaryConfig | None = None) -> pl.DataFrame:
    """The weekly summary of every series of `reconciled` (cases_reconciled) at the configured levels."""
    from schemas.outputs import WeeklySummary
    from vigila.regional import population as pop

    cfg = config or SummaryConfig()
    rows = reconciled.filter(pl.col("geo_level").is_in(cfg.levels))
    df = _grid(rows.select(*SERIES, "geo_name", "epi_year", "epi_week", "week_start", "cases", "sources", "basis"),
               cfg.stale_after_weeks)
    df = _trend(df, cfg)
    df = _endemic(df, channel, cfg)
    df = _alarms(df, alarms, cfg)
    df = _reporting(df, reporting)
    if population is not None:
        df = pop.per_100k(df, population, column="incidence_100k").drop("population_year")
    else:
        df = df.with_columns(pl.lit(None, pl.Int64).alias("population"), pl.lit(None, pl.Float64).alias("incidence_100k"))
    df = df.join(country_names(df["country_iso3"]), on="country_iso3", how="left", maintain_order="left")
    signal = pl.col("endemic_zone").is_in(cfg.signal.zones).fill_null(False)
    if cfg.signal.alarm:
        signal = signal | pl.col("alarm").fill_null(False)
    signal = signal & (pl.col("cases").fill_null(0) >= cfg.signal.min_cases)
    # A reporter's status is about all its units: it says something about this row's count only when the
    # reporter covers this one country (a national line list, a ministry); a regional compilation like
    # PAHO's is "partial" whenever any country is missing, which says nothing about the countries present.
    one_country = pl.col("_single_country")
    note = (pl.when(~pl.col("reported")).then(pl.lit("not reported this week"))
            .when(pl.col("reporting_status").is_in(cfg.incomplete_statuses) & one_country)
            .then(pl.format("reporting {}: counts may be incomplete", pl.col("reporting_status")))
            .when(pl.col("basis") == "fallback").then(pl.format("fallback reporter {}", pl.col("sources"))))
    df = df.with_columns(_single_country=pl.col("sources").is_in(_single_country_sources(reconciled)))
    df = df.with_columns(signal.alias("signal"), note.alias("signal_note"),
                         *[pl.when(pl.col("_single_country")).then(c).alias(c) for c in ("reporting_status", "completeness")])
    columns = [c for c in WeeklySummary.to_schema().columns if c != "run_id"]
    return df.select(columns).sort(
        "disease", "country_iso3", "geo_level", "geo_code", "week_start")
