"""The region's weekly products, from published datasets: endemic channels, the weekly summary, the bulletin.

Input: a warehouse holding `cases_reconciled` (vigila.regional.reconcile), `reporting` and `quarantine`, with the
configs vigila/regional/endemic.yaml, vigila/regional/summary.yaml and vigila/detect/detection.yaml; output: new versions of `endemic_channel` and
`weekly_summary` (atomic, idempotent) and `bulletins/<epi year>-W<ww>.html` in the warehouse. No Prefect here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from schemas.outputs import ENDEMIC_SCHEMA_VERSION, SUMMARY_SCHEMA_VERSION, EndemicChannel, WeeklySummary
from vigila.detect import alerts
from vigila.regional import bulletin, endemic, summary
from vigila.ingest import completeness
from vigila.warehouse import publish
from vigila.regional import population as pop
from vigila.warehouse.storage import Storage

SERIES = summary.SERIES


def _current(storage: Storage, name: str, *, required: bool = True) -> tuple[pl.DataFrame | None, str | None]:
    """The current version of dataset `name` (read whole) and its version id; (None, None) when absent and optional."""
    manifest = publish.current_manifest(storage, name)
    if manifest is None:
        if required:
            raise FileNotFoundError(f"{storage.root}: no published dataset {name!r}")
        return None, None
    return publish.scan(storage, name, version=manifest.version).collect(), manifest.version


def _unchanged(storage: Storage, name: str, fingerprint: str, force: bool) -> publish.Manifest | None:
    """The current manifest of `name` when it was built from the same inputs and config (and not `force`)."""
    return None if force else publish.built_from(storage, name, fingerprint)


def run_endemic(storage: Storage | str | Path, config: endemic.EndemicConfig, *, run_id: str,
                force: bool = False) -> dict[str, Any]:
    """Endemic channels (every configured method) of every reconciled series, for every year it has
    counts, published as `endemic_channel` (replaced whole); unchanged inputs and config publish nothing."""
    storage = Storage.open(storage)
    reconciled, version = _current(storage, "cases_reconciled")
    fingerprint = publish.fingerprint(input=version, config=config.model_dump(mode="json"))
    if current := _unchanged(storage, "endemic_channel", fingerprint, force):
        return {"status": "unchanged", "version": current.version, "rows": current.rows}
    channel = endemic.channel_from_config(reconciled.select(*SERIES, "epi_year", "epi_week", "cases"), config)
    channel = channel.with_columns(pl.lit(run_id).alias("run_id")).select(list(EndemicChannel.to_schema().columns))
    EndemicChannel.validate(channel)
    manifest = publish.commit(storage, "endemic_channel", partition_by=["method"], replace_all=channel, run_id=run_id,
                              schema_version=ENDEMIC_SCHEMA_VERSION,
                              extra={"fingerprint": fingerprint, "input": version, "config": config.model_dump(mode="json")})
    publish.write_catalog(storage)
    return {"status": "published", "version": manifest.version, "rows": channel.height,
            "series": channel.select(SERIES).n_unique()}


def run_summary(storage: Storage | str | Path, config: summary.SummaryConfig, *, run_id: str,
                detection: alerts.DetectionConfig | None = None, population: str | Path | None = None,
                force: bool = False) -> dict[str, Any]:
    """The weekly summary of the reconciled series, with their endemic channels, the `detection` methods
    (default vigila/detect/detection.yaml) run on those series, reporting statuses and populations (`population`:
    a CSV, default the bundled reference), published as `weekly_summary`."""
    storage = Storage.open(storage)
    detection = detection or alerts.load_config()
    reconciled, rec_v = _current(storage, "cases_reconciled")
    channel, ch_v = _current(storage, "endemic_channel", required=False)
    reporting, rep_v = _current(storage, "reporting", required=False)
    populations = pop.load(population)
    inputs = {"cases_reconciled": rec_v, "endemic_channel": ch_v, "reporting": rep_v}
    fingerprint = publish.fingerprint(inputs=inputs, population=populations.hash_rows().sum(), config=config.model_dump(mode="json"),
                               detection=detection.model_dump(mode="json"))
    if current := _unchanged(storage, "weekly_summary", fingerprint, force):
        return {"status": "unchanged", "version": current.version, "rows": current.rows, **latest_week_of(storage)}
    found = summary.detections(reconciled, detection, weeks=config.detection_weeks)
    frame = summary.build(reconciled, channel=channel, alarms=found, reporting=reporting, population=populations, config=config)
    frame = frame.with_columns(pl.lit(run_id).alias("run_id"))
    WeeklySummary.validate(frame)
    manifest = publish.commit(storage, "weekly_summary", partition_by=["disease"], replace_all=frame, run_id=run_id,
                              schema_version=SUMMARY_SCHEMA_VERSION,
                              extra={"fingerprint": fingerprint, "inputs": inputs, "config": config.model_dump(mode="json"),
                                     "detection": detection.model_dump(mode="json")})
    publish.write_catalog(storage)
    year, week = latest_week(frame)
    this_week = frame.filter((pl.col("epi_year") == year) & (pl.col("epi_week") == week))
    return {"status": "published", "version": manifest.version, "rows": frame.height, "epi_year": year, "epi_week": week,
            "signals": int(this_week["signal"].sum()), "not_reported": int(this_week["cases"].null_count())}


def latest_week(frame: pl.DataFrame) -> tuple[int | None, int | None]:
    """The region's latest epi week in a summary: the week of the latest week_start."""
    if frame.is_empty():
        return None, None
    row = frame.sort("week_start", "epi_year", "epi_week").row(-1, named=True)
    return row["epi_year"], row["epi_week"]


def latest_week_of(storage: Storage) -> dict[str, Any]:
    frame, _ = _current(storage, "weekly_summary", required=False)
    year, week = latest_week(frame) if frame is not None else (None, None)
    return {"epi_year": year, "epi_week": week}


def quality_notes(storage: Storage, week: pl.DataFrame) -> pl.DataFrame:
    """Per reporter of the bulletin week: rows quarantined (all time), the most frequent failed check,
    the week's reporting status and the last epi week it published."""
    ids = sorted({s for v in week["sources"].drop_nulls().to_list() for s in v.split(",")})
    frame = pl.DataFrame({"source_id": ids}, schema={"source_id": pl.Utf8})
    quarantine, _ = _current(storage, "quarantine", required=False)
    if quarantine is not None:
        q = (quarantine.filter(pl.col("severity") == "error").group_by("source_id")
             .agg(pl.col("row").n_unique().alias("rows_quarantined"), pl.col("check").mode().first().alias("top_check")))
        frame = frame.join(q, on="source_id", how="left")
    else:
        frame = frame.with_columns(pl.lit(None, pl.UInt32).alias("rows_quarantined"), pl.lit(None, pl.Utf8).alias("top_check"))
    published = completeness.last_published(storage, ids)           # scans only these sources' rows
    countries = (publish.scan(storage, "cases_weekly").filter(pl.col("source_id").is_in(ids))
                 .select("source_id", "country_iso3").unique().collect()
                 if publish.current_manifest(storage, "cases_weekly") and ids else pl.DataFrame(schema={"source_id": pl.Utf8, "country_iso3": pl.Utf8}))
    last = (countries.group_by("source_id").agg(pl.col("country_iso3").sort().str.join(","))
            .with_columns(pl.col("source_id").replace_strict({k: f"{y}-W{w:02d}" for k, (y, w) in published.items()},
                                                            default=None, return_dtype=pl.Utf8).alias("last_week_published")))
    frame = frame.join(last, on="source_id", how="left")
    reporting, _ = _current(storage, "reporting", required=False)
    if reporting is not None and week.height:
        y, w = week["epi_year"][0], week["epi_week"][0]
        st = reporting.filter((pl.col("epi_year") == y) & (pl.col("epi_week") == w)).select("source_id", pl.col("status").alias("reporting_status"))
        frame = frame.join(st, on="source_id", how="left")
    else:
        frame = frame.with_columns(pl.lit(None, pl.Utf8).alias("reporting_status"))
    return frame.with_columns(pl.col("rows_quarantined").fill_null(0).cast(pl.Int64)).select(bulletin.QUALITY_COLUMNS)


def write_bulletin(storage: Storage | str | Path, *, config: summary.SummaryConfig | None = None,
                   epi_year: int | None = None, epi_week: int | None = None, output: str | Path | None = None) -> dict[str, Any]:
    """The bulletin of an epi week (default: the summary's latest) from the published `weekly_summary`,
    written to `bulletins/<year>-W<ww>.html` in the warehouse (and to `output` when given)."""
    storage = Storage.open(storage)
    cfg = config or summary.load_config()
    frame, version = _current(storage, "weekly_summary")
    if epi_year is None or epi_week is None:
        epi_year, epi_week = latest_week(frame)
    week = frame.filter((pl.col("epi_year") == epi_year) & (pl.col("epi_week") == epi_week))
    if week.is_empty():
        weeks = frame.select("epi_year", "epi_week").unique().sort("epi_year", "epi_week")
        first, last = weeks.row(0), weeks.row(-1)
        raise ValueError(f"weekly_summary {version} has no epi week {epi_year}-W{epi_week:02d} "
                         f"(it covers {first[0]}-W{first[1]:02d} .. {last[0]}-W{last[1]:02d})")
    discrepancies, _ = _current(storage, "discrepancies", required=False)
    html = bulletin.render(frame, epi_year=epi_year, epi_week=epi_week, quality=quality_notes(storage, week),
                           discrepancies=discrepancies, incomplete=cfg.incomplete_statuses,
                           history_weeks=cfg.history_weeks, data_versions={"weekly_summary": version})
    key, data = f"bulletins/{epi_year}-W{epi_week:02d}.html", html.encode("utf-8")
    storage.write_bytes(key, data)
    if output is not None:
        bulletin.write_text(html, output)
    return {"uri": storage.uri(key), "output": str(output) if output else None, "epi_year": epi_year, "epi_week": epi_week,
            "signals": int(week["signal"].sum()), "bytes": len(data), "summary_version": version}


def run_markdown(result: dict[str, Any]) -> str:
    """The `regional_summary` flow run's artifact: what each step published and where the bulletin lies."""
    rec, ch, sm, b = (result.get(k, {}) for k in ("reconciliation", "endemic_channel", "weekly_summary", "bulletin"))
    lines = ["# Regional weekly summary", "",
             "| step | status | version | rows |", "|---|---|---|---:|"]
    for name, r in (("cases_reconciled", rec), ("endemic_channel", ch), ("weekly_summary", sm)):
        rows = r.get("rows", r.get("reconciled_rows", ""))
        lines.append(f"| {name} | {r.get('status', '')} | {r.get('version', '')} | {rows:,} |" if isinstance(rows, int)
                     else f"| {name} | {r.get('status', '')} | {r.get('version', '')} | {rows} |")
    if b:
        lines += ["", f"**Bulletin {b['epi_year']}-W{b['epi_week']:02d}**: {b['signals']} signal(s), {b['bytes']:,} bytes, "
                  f"at `{b['uri']}`"]
    return "\n".join(lines) + "\n"
