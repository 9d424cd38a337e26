"""The ingest pipeline as plain functions: land -> process (parse, validate, harmonise) -> publish.

Inputs: a source config, a local file, a warehouse (`Storage`); outputs: landed raw bytes with
provenance, staged Parquet (harmonised rows, quarantine records), published datasets and a
data-quality report (dict, also saved as JSON). Prefect flows call these steps as tasks. Each
stage (fetch, land, parse, harmonise, validate, publish) logs one `vigila.operate.log` line and tells
the progress listeners.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import polars as pl
from epiweeks import Week

from vigila.ingest import harmonise as hz
from vigila.ingest import plan
from vigila.operate import log as vlog
from vigila.ingest.cast import select_fields
from vigila.config import SourceConfig
from vigila.ingest.readers import ROW, RaggedRows, ReadError, read_raw
from vigila.warehouse.contract import contract, dictionary_docs, schema_version

PARTITION_BY = ["country_iso3", "disease"]
Progress = Callable[[int], None]
WEEKLY, REVISIONS, QUARANTINE = contract("cases_weekly"), contract("cases_revisions"), contract("quarantine")
QUARANTINE_COLUMNS = QUARANTINE.columns
KEY = WEEKLY.unique
SCHEMA_VERSION = schema_version()


@dataclass(frozen=True)
class Landed:
    source_id: str
    sha256: str
    size: int
    key: str                 # raw object key in the warehouse
    original_name: str
    fetched_at: str
    already_ingested: bool   # the same bytes were published by an earlier run


@dataclass(frozen=True)
class Processed:
    harmonised: Path         # staged Parquet, CasesWeekly contract
    quarantine: Path         # staged Parquet, QuarantineRecord contract
    report: dict


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def epi_week_label(day: dt.date) -> str:
    """`<epi year>-W<week>` (MMWR/CDC weeks) of a day: the epi week of a run's issue date."""
    week = Week.fromdate(day, system="cdc")
    return f"{week.year}-W{week.week:02d}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- land


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def land(storage: Storage, source: SourceConfig, path: str | Path, *, origin: str | None = None) -> Landed:
    """Copy the raw bytes to `raw/<source>/<sha256>` (once: content-addressed, immutable) with the
    provenance record of their first arrival; the same bytes arriving again add nothing."""
    landed, _ = _land(storage, source, Path(path), origin, lambda store: store())
    return landed


def land_beside(storage: Storage, source: SourceConfig, path: str | Path, executor: Executor, *,
                origin: str | None = None) -> tuple[Landed, Future]:
    """`land`, with only the hash computed here: the copy (and its provenance record) runs on `executor`, so it
    overlaps the processing; the caller waits for the returned future before anything is published."""
    return _land(storage, source, Path(path), origin, executor.submit)


def _land(storage: Storage, source: SourceConfig, path: Path, origin: str | None,
          run: Callable[[Callable[[], None]], Future | None]) -> tuple[Landed, Future | None]:
    with vlog.stage("land", source=source.id, file=path.name) as logged:
        digest = sha256_file(path)
        ext = "".join(s for s in path.suffixes[-2:] if len(s) <= 8) or ".bin"
        ext = ".report.json" if ext.lower() == ".json" else ext.lower()   # <sha256>.json is the provenance record
        key = f"raw/{source.id}/{digest}{ext}"
        fetched_at = _now()
        provenance = {"source_id": source.id, "sha256": digest, "size": path.stat().st_size, "key": key,
                      "original_name": path.name, "origin": origin or str(path.resolve()), "fetched_at": fetched_at}

        def store() -> None:       # the raw bytes first, then their provenance record
            if not storage.exists(key):
                storage.put_file(key, path)
            if not storage.exists(f"raw/{source.id}/{digest}.json"):
                storage.write_json(f"raw/{source.id}/{digest}.json", provenance)

        copy = run(store)
        done = storage.exists(f"raw/{source.id}/ingested/{digest}.json")
        landed = Landed(source.id, digest, provenance["size"], key, path.name, fetched_at, done)
        logged.update(sha256=landed.sha256[:12], bytes=landed.size, already_ingested=landed.already_ingested)
    return landed, copy


# --------------------------------------------------------------------------- process


HARMONISE_CHECKS = r"^(unknown_|unmapped_|temporal_resolution|week_not_in_year|excluded_value)"


def _error_records(errors: pl.DataFrame | pl.LazyFrame, source: SourceConfig, run_id: str, sha: str,
                   stage: str | None) -> pl.LazyFrame:
    """Error records -> quarantine records; `stage` None: raw-contract or harmonisation by check."""
    have = errors.collect_schema().names()
    column = pl.col("field")
    for field, name in source.mapped.items():   # a when-chain, not replace(): replace is not streamed (1.4 GB
        column = pl.when(pl.col("field") == field).then(pl.lit(name)).otherwise(column)   # on 15 M records)
    return errors.lazy().select(
        pl.lit(source.id).alias("source_id"), pl.lit(run_id).alias("run_id"), pl.lit(sha).alias("file_sha256"),
        pl.col(ROW).cast(pl.Int64).alias("row"),
        column.cast(pl.Utf8).alias("column") if "field" in have else pl.lit(None, pl.Utf8).alias("column"),
        pl.col("check"), pl.col("value").cast(pl.Utf8).str.slice(0, source.limits.max_value_chars),
        (pl.col("severity") if "severity" in have else pl.lit("error")).alias("severity"),
        (pl.lit(stage) if stage else pl.when(pl.col("check").str.contains(HARMONISE_CHECKS))
         .then(pl.lit("harmonise")).otherwise(pl.lit("raw"))).alias("stage"),
    )


class UndeclaredSubRows(ReadError):
    """A count file holds several different rows per place-week and its config does not say what they are."""


def process(path: str | Path, source: SourceConfig, *, run_id: str, file_sha256: str, issue_date: dt.date,
            workdir: Path, progress: Progress | None = None) -> Processed:
    """Parse, validate and harmonise one file into staged Parquet under `workdir`.

    Stages logged: `parse` (open the file: format, encoding, header), `harmonise` (read every row
    through the raw checks and the harmonisation, one pass), `validate` (rows sharing a place-week,
    cumulative counts and the CasesWeekly contract). The report accounts for every row and case."""
    started = _now()
    workdir.mkdir(parents=True, exist_ok=True)
    common = {"source": source.id, "run_id": run_id, "epi_week": epi_week_label(issue_date)}
    with vlog.stage("parse", **common, file=Path(path).name) as logged:
        table = read_raw(path, source, workdir)
        logged.update(format=table.format, encoding=table.encoding)
    try:
        with vlog.stage("harmonise", **common) as logged:
            try:
                planned, parse_errs = _plan(table, source, issue_date, workdir)
            except RaggedRows:           # the byte counts could not rule out a short row beside a long one
                table = table.recount()
                planned, parse_errs = _plan(table, source, issue_date, workdir)
            rows, errors, rows_read = planned.rows, planned.errors, planned.rows_read
            if rows_read == 0:
                raise ReadError(f"{Path(path).name}: header only, no data rows")
            logged.update(rows=rows_read, problems=parse_errs.height + errors.select(pl.len()).collect().item())
        if progress:
            progress(rows_read)
        vlog.progress("rows", **common, rows=rows_read)
        with vlog.stage("validate", **common) as logged:
            if "field" not in parse_errs.columns:
                parse_errs = parse_errs.with_columns(pl.lit(None, pl.Utf8).alias("field"))
            qparts = [_error_records(parse_errs, source, run_id, file_sha256, "parse"),
                      _error_records(errors, source, run_id, file_sha256, None)]
            rows, shape_errs, undeclared = _finish_shape(rows, planned.ledger, source)
            if undeclared.height:
                raise UndeclaredSubRows(sub_rows_message(table, undeclared, source))
            qparts.append(_error_records(shape_errs, source, run_id, file_sha256, "harmonise"))
            rows = _stamp(rows, source, run_id, issue_date)
            final_errs = WEEKLY.failures(rows.select(ROW, *WEEKLY.columns))
            qparts.append(_error_records(final_errs, source, run_id, file_sha256, "harmonised"))
            rows = rows.filter(~pl.col(ROW).is_in(final_errs[ROW].implode()))
            logged.update(rows=rows.height)
    finally:
        table.close()
    records = pl.concat([pl.LazyFrame(schema=QUARANTINE.polars_schema()),
                         *(_with_counts(q, planned.ledger, source).select(QUARANTINE_COLUMNS) for q in qparts)])
    paths = workdir / "harmonised.parquet", workdir / "quarantine.parquet"
    harmonised = rows.select(WEEKLY.columns)
    harmonised.write_parquet(paths[0])
    if table.locate:     # a layout (a spreadsheet's cells): small, located whole; the report counts cells
        quarantine = records.collect()
        table.locate(quarantine).select(QUARANTINE_COLUMNS).write_parquet(paths[1])
    else:                # streamed from the spilled records: a file of millions of failing rows is never held
        records.sink_parquet(paths[1])
        quarantine = pl.scan_parquet(paths[1])
    report = _report(source, run_id, file_sha256, table, rows_read, harmonised, quarantine, planned.ledger, issue_date, started)
    (workdir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return Processed(paths[0], paths[1], report)


def _plan(table, source: SourceConfig, issue_date: dt.date, workdir: Path) -> tuple[plan.Planned, pl.DataFrame]:
    """The table's rows through the plan, its parse-stage problems (rows with a wrong field count) held back."""
    lf = select_fields(table.frame, table.columns, source)
    parse_errs = table.bad_rows if table.bad_rows is not None else pl.DataFrame(schema={ROW: pl.Int64, "check": pl.Utf8, "value": pl.Utf8})
    planned = plan.run(lf, source, hz.Context.build(source, issue_date), exclude=parse_errs[ROW], spill=workdir / "errors")
    return planned, parse_errs


def _with_counts(records: pl.LazyFrame, ledger: pl.DataFrame, source: SourceConfig) -> pl.LazyFrame:
    """Quarantine records with their row's own cases and deaths (line lists: 1 case; a death when flagged)."""
    if source.shape == "line_list":
        one = pl.col("row") >= 1
        out = records.join(ledger.lazy().select(pl.col(ROW).alias("row"), pl.col("deaths").alias("__d")), on="row",
                           how="left", maintain_order="left")
        return out.with_columns(pl.when(one).then(pl.lit(1, pl.Int64)).alias("cases"),
                                (pl.when(one).then(pl.col("__d").fill_null(0)) if source.columns.deaths
                                 else pl.lit(None, pl.Int64)).alias("deaths"))
    return records.join(ledger.lazy().select(pl.col(ROW).alias("row"), "cases", "deaths"), on="row", how="left",
                        maintain_order="left")


SUB_ROW_EXAMPLES = 3


def sub_rows_message(table, undeclared: pl.DataFrame, source: SourceConfig) -> str:
    """One paragraph for the data team: which rows share a place-week, in which columns they differ,
    and the two ways to declare them."""
    groups = undeclared["__group"].n_unique()
    raw = (table.frame.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
           .join(undeclared.lazy(), on=ROW).collect().sort(ROW))
    differ = [c for c in table.columns if raw.group_by("__group").agg(pl.col(c).n_unique()).get_column(c).max() > 1]
    examples = (raw.group_by("__group", maintain_order=True).agg(pl.col(ROW).head(2)).head(SUB_ROW_EXAMPLES)
                .get_column(ROW).to_list())
    shown = "; ".join(f"rows {' and '.join(map(str, e))}" for e in examples)
    if table.locate is not None:           # a layout's rows are cells: name the file's lines and columns
        cells = [r for e in examples for r in e]
        at = table.locate(pl.DataFrame({"row": cells, "column": [None] * len(cells)}, schema={"row": pl.Int64, "column": pl.Utf8}))
        where = {c: f"line {r} ({col})" for c, r, col in zip(at["__cell"], at["row"], at["column"])}
        shown = "; ".join(" and ".join(where[r] for r in e) for e in examples)
    mapped = set(source.mapped.values())
    key = [c for c in differ if c not in mapped] or differ
    return (f"{undeclared.height:,} rows share {groups:,} place-weeks with other rows ({shown}); they differ in "
            f"{', '.join(differ[:8]) or 'no column'}. Say what they are in the source config: `aggregate: sum` if they are "
            f"sub-rows to add up (sub-areas, age bands, sexes not mapped), or `row_key: [{', '.join(key[:6])}, ...]` "
            "(the columns that identify one row, with the week) if they are repeated deliveries of one row")


def _finish_shape(rows: pl.DataFrame, ledger: pl.DataFrame, source: SourceConfig
                  ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    if "deaths" not in rows.columns:
        rows = rows.with_columns(pl.lit(None, pl.Int64).alias("deaths"))
    none = pl.DataFrame(schema={ROW: pl.Int64, "__group": pl.UInt32})
    if source.shape == "line_list":
        return rows, pl.DataFrame(schema=hz.HARMONISE_ERROR_SCHEMA), none
    more = pl.col("deaths") > pl.col("cases")        # a row's own counts (before sub-rows are summed)
    implausible = rows.filter(more.fill_null(False)).select(
        ROW, pl.lit("deaths").alias("field"), pl.lit("deaths_exceed_cases").alias("check"),
        pl.format("{} deaths > {} cases", "deaths", "cases").alias("value"), pl.lit("error").alias("severity"))
    rows = rows.filter(~more.fill_null(False))
    rows, sub_errs, undeclared = hz.resolve_sub_rows(rows, ledger, source)
    sub_errs = pl.concat([implausible, sub_errs])
    if source.shape == "cumulative_counts":
        rows, cum_errs = hz.difference_cumulative(rows)
        return rows, pl.concat([sub_errs, cum_errs]), undeclared
    return rows, sub_errs, undeclared


def _stamp(rows: pl.DataFrame, source: SourceConfig, run_id: str, issue_date: dt.date) -> pl.DataFrame:
    issue = pl.lit(issue_date, pl.Date)
    if "issue_date" in rows.columns:
        issue = pl.col("issue_date").fill_null(issue)
    return rows.with_columns(
        pl.lit(source.id).alias("source_id"), pl.lit(source.reporter.type).alias("reporter_type"),
        issue.alias("issue_date"), pl.lit(run_id).alias("run_id"),
        pl.col("epi_year", "epi_week").cast(pl.Int32), pl.col("cases", "deaths").cast(pl.Int64),
    )


def accounting(source: SourceConfig, rows_read: int, harmonised: pl.DataFrame, quarantine: pl.DataFrame | pl.LazyFrame,
               ledger: pl.DataFrame) -> dict:
    """Rows, cases (and deaths where mapped) read = published + quarantined + set aside, each row in
    exactly one category: set aside (out of scope) wins over quarantined (an error), which wins over
    published; a row listed under several checks is counted once. Count files: a row's cases are its own
    count (a count that cannot be read is no case: `rows_without_count`); line lists: one case a row.
    Cumulative files are accounted in rows only (their cases are differences of the rows' counts)."""
    in_file = quarantine.lazy().filter(pl.col("row").is_between(1, rows_read))
    aside, held = (in_file.filter(pl.col("severity") == sev).select(pl.col("row").unique()).collect()["row"]
                   for sev in ("set_aside", "error"))
    held = held.filter(~held.is_in(aside.implode()))
    out = {"rows": {"read": rows_read, "published": rows_read - aside.len() - held.len(),
                    "quarantined": held.len(), "set_aside": aside.len()}}
    values = ["cases"] + (["deaths"] if source.columns.deaths else [])
    if source.shape == "cumulative_counts":
        return out
    for v in values:
        published = int(harmonised[v].sum() or 0)
        if source.shape == "line_list" and v == "cases":
            out[v] = {"read": rows_read, "published": published, "quarantined": held.len(), "set_aside": aside.len()}
        else:
            own = ledger.select(ROW, pl.col(v).alias("n"))
            out[v] = {"read": int(own["n"].sum() or 0), "published": published,
                      "quarantined": int(own.filter(pl.col(ROW).is_in(held.implode()))["n"].sum() or 0),
                      "set_aside": int(own.filter(pl.col(ROW).is_in(aside.implode()))["n"].sum() or 0)}
        c = out[v]
        c["unaccounted"] = c["read"] - c["published"] - c["quarantined"] - c["set_aside"]
    if source.shape != "line_list":
        out["rows_without_count"] = int(ledger["cases"].null_count())
    return out


MOJIBAKE = r"Ã[\x80-\xbf]|Â[\xa0-\xbf]|Ã\s"   # UTF-8 bytes of á, é, ñ... read as Latin-1 / cp1252


def _encoding_hint(quarantine: pl.DataFrame | pl.LazyFrame, encoding: str | None) -> list[str]:
    """A note when names that matched nothing look like UTF-8 read as Latin-1 ('JUNÃ\x8dN' for 'JUNÍN')."""
    unknown = (quarantine.lazy().filter(pl.col("check").str.starts_with("unknown_"), pl.col("value").str.contains(MOJIBAKE))
               .select("row", "value").collect())
    if unknown.height == 0:
        return []
    return [f"{unknown['row'].n_unique():,} unknown names look like UTF-8 text read as {encoding or 'Latin-1'} (e.g. "
            f"{unknown['value'][0]!r}): the file is probably UTF-8; set csv.encoding: utf-8"]


def verdict(source: SourceConfig, counts: dict) -> list[str]:
    """Why this run must not publish (empty: it may). A status never flatters: a run that lost more than
    `limits.max_quarantined_share` of its rows or cases, or would publish fewer than
    `limits.min_published_rows` rows, is rejected; so is one whose cases do not add up."""
    limits, reasons = source.limits, []
    for what in ("rows", "cases"):
        c = counts.get(what)
        if c and c["read"] > 0 and c["quarantined"] / c["read"] > limits.max_quarantined_share:
            reasons.append(f"{c['quarantined'] / c['read']:.1%} of the {what} read were quarantined ({c['quarantined']:,} of "
                           f"{c['read']:,}; limits.max_quarantined_share {limits.max_quarantined_share:.0%})")
    if counts["rows"]["published"] < limits.min_published_rows:
        reasons.append(f"{counts['rows']['published']:,} rows would be published (limits.min_published_rows "
                       f"{limits.min_published_rows})")
    for what in ("cases", "deaths"):
        if counts.get(what, {}).get("unaccounted"):
            reasons.append(f"{counts[what]['unaccounted']:,} {what} are not accounted for (read != published + "
                           "quarantined + set aside): a defect of Vigila, please report it")
    return reasons


def _report(source, run_id, sha, table, rows_read, harmonised, quarantine, ledger, issue_date, started) -> dict:
    shown = (table.locate(quarantine).lazy() if table.locate
             else quarantine.lazy().with_columns(pl.col("row").alias("__cell")))
    by_check = (shown.group_by("severity", "stage", "check", "column", maintain_order=True)   # rows: the file's own
                .agg(pl.col("__cell").n_unique().alias("rows"), pl.col("cases").sum().alias("cases"),  # (a layout's line)
                     pl.col("row").min().alias("first_row"), pl.col("value").first().alias("example"))
                .sort("severity", "rows", "check", descending=[False, True, False]).collect())
    counts = accounting(source, rows_read, harmonised, quarantine, ledger)
    reasons = verdict(source, counts)
    notes = [*table.notes, *_encoding_hint(quarantine, table.encoding)]
    return {
        "source_id": source.id, "run_id": run_id, "status": "processed",
        "file": {"sha256": sha, "format": table.format, "encoding": table.encoding, "delimiter": table.delimiter},
        "issue_date": str(issue_date), "started_at": started, "finished_at": _now(),
        **counts,
        "rows_read": rows_read,
        "rows_quarantined": counts["rows"]["quarantined"],
        "rows_set_aside": counts["rows"]["set_aside"],
        "harmonised_rows": harmonised.height,
        "cases_published": int(harmonised["cases"].sum() or 0),
        "rejected_because": reasons,
        "by_check": by_check.to_dicts(),
        "notes": notes,
    }


# --------------------------------------------------------------------------- publish


def _publish_quarantine(storage: Storage, source: SourceConfig, sha: str, staged: Path, common: dict) -> dict:
    """Replace this file's earlier quarantine records (a re-run reports the same rows once) by the staged
    ones; the source's partition is streamed (the older files' records, then these), never held whole."""
    from vigila.warehouse import publish  # publishing needs pyarrow; `check` does not

    records = pl.scan_parquet(staged)
    current = publish.current_manifest(storage, "quarantine")
    old = (publish.scan(storage, "quarantine", partitions=[(source.id,)])
           if current else pl.LazyFrame(schema=QUARANTINE.polars_schema()))
    new_rows = records.select(pl.len()).collect().item()
    if new_rows == 0 and old.filter(pl.col("file_sha256") == sha).select(pl.len()).collect().item() == 0:
        return {}
    older = pl.concat([pl.LazyFrame(schema=QUARANTINE.polars_schema()), old.filter(pl.col("file_sha256") != sha)],
                      how="diagonal_relaxed")   # records published before quarantine carried cases have none
    merged = pl.concat([older.select(QUARANTINE_COLUMNS), records.select(QUARANTINE_COLUMNS)])
    return {"quarantine": publish.commit(storage, "quarantine", partition_by=["source_id"],
                                         replace={(source.id,): merged}, **common).version}


def _new_revisions(staged: pl.DataFrame, existing: pl.DataFrame) -> pl.DataFrame:
    """Staged rows that change what is known as of their issue date (the rest add nothing)."""
    if existing.height == 0:
        return staged
    key = pl.struct(KEY).hash(13).alias("__key")   # as one value: a key column may be null (age_band_source)
    prior = existing.sort("issue_date", "ingested_at").group_by([*KEY, "issue_date"]).agg(
        pl.col("cases", "deaths").last()).sort("issue_date").select(key, "issue_date", "cases", "deaths")
    joined = staged.with_columns(key).sort("issue_date").join_asof(prior.rename({"cases": "__c", "deaths": "__d"}),
                                                                   on="issue_date", by="__key", strategy="backward",
                                                                   check_sortedness=False)
    same = (pl.col("__c") == pl.col("cases")) & pl.col("__d").eq_missing(pl.col("deaths"))
    return joined.filter(~same.fill_null(False)).drop("__c", "__d", "__key")


def _partition_frames(df: pl.DataFrame) -> dict[tuple[str, ...], pl.DataFrame]:
    return {tuple(k): part for k, part in df.partition_by(PARTITION_BY, as_dict=True).items()}


def _weekly_lags_revisions(storage: Storage) -> bool:
    """True when `cases_weekly` was not rebuilt from the current `cases_revisions` version: a publish
    committed new revisions and died before committing `cases_weekly` (two datasets, two commits).
    A `cases_weekly` that records no revisions version (written before this check existed) is trusted."""
    from vigila.warehouse import publish

    revisions = publish.current_manifest(storage, "cases_revisions")
    if revisions is None:
        return False
    weekly = publish.current_manifest(storage, "cases_weekly")
    if weekly is None:
        return True
    recorded = weekly.extra.get("revisions_version")
    return recorded is not None and recorded != revisions.version


def publish_run(storage: Storage, source: SourceConfig, landed: Landed, processed: Processed, run_id: str) -> dict:
    """Publish staged rows: append new revisions, rebuild touched `cases_weekly` partitions as the
    latest issue per key, replace this file's quarantine records, save the report, refresh the catalog."""
    fields = {"source": source.id, "run_id": run_id, "epi_week": epi_week_label(dt.date.fromisoformat(processed.report["issue_date"]))}
    with vlog.stage("publish", **fields) as logged, partition_locks(storage, processed):
        report = _publish_run(storage, source, landed, processed, run_id)
        logged.update(rows=report["harmonised_rows"], revisions=report["revisions_added"],
                      quarantined=report["rows_quarantined"], versions=report["versions"])
    return report


@contextlib.contextmanager
def partition_locks(storage: Storage, processed: Processed) -> Iterator[list[tuple[str, ...]]]:
    """Storage locks (`Storage.lock`: fcntl locally, a lease object on S3) on every `cases_weekly` partition
    the staged file touches, taken in sorted order (no deadlock) and held from the read of the partitions'
    revisions to the `cases_weekly` commit: each `publish.commit` locks only itself, so two publishes into
    one country x disease (any two processes, with or without Prefect, whose flow also takes
    `scale.partition_lease` limits) would each rebuild the partition from the revisions read before the
    other's commit, and the first one's rows would vanish from `cases_weekly`. When `cases_weekly` lags its
    revisions (a run died between its two commits), this run rebuilds every partition: it locks every
    partition of `cases_revisions` too. None for a rejected run."""
    from vigila.warehouse import publish

    parts: set[tuple[str, ...]] = set()
    if not processed.report.get("rejected_because"):
        parts = set(pl.scan_parquet(processed.harmonised).select(PARTITION_BY).unique().collect().iter_rows())
        if _weekly_lags_revisions(storage):
            parts |= {f.partition for f in publish.current_manifest(storage, "cases_revisions").files}
    ordered = sorted(parts)
    with contextlib.ExitStack() as stack:
        for part in ordered:
            stack.enter_context(storage.lock(f"datasets/cases_weekly/.partition-{'-'.join(part)}.lock".lower()))
        yield ordered


class RunRejected(RuntimeError):
    """The run's data was not published: it lost too much (report["rejected_because"]). Carries the report."""

    def __init__(self, report: dict):
        super().__init__(f"{report['source_id']}: rejected, nothing published: " + "; ".join(report["rejected_because"]))
        self.report = report


def _reject_run(storage: Storage, source: SourceConfig, landed: Landed, processed: Processed, run_id: str) -> dict:
    """A run that must not publish: its quarantine records are published (the data team fixes rows from
    them), its report saved as `rejected` with the reasons and recorded as the source's last run."""
    from vigila.warehouse import publish

    from vigila.ingest import completeness

    versions = _publish_quarantine(storage, source, landed.sha256, processed.quarantine,
                                   {"schema_version": SCHEMA_VERSION, "run_id": run_id})
    report = dict(processed.report)
    reason = "; ".join(report["rejected_because"])
    report.update(status="rejected", error=reason, versions=versions, revisions_added=0, finished_at=_now(),
                  file={**report["file"], "key": landed.key, "size": landed.size, "original_name": landed.original_name},
                  notes=[*report.get("notes", []), f"nothing from this file was published: {reason}"])
    storage.write_json(f"reports/{source.id}/{run_id}.json", report)
    completeness.record_run(storage, source.id, run_id=run_id, status="rejected", error=reason, lost=completeness.lost_share(report),
                            counts={w: report[w] for w in ("rows", "cases", "deaths") if w in report})
    publish.write_catalog(storage)
    return report


def _upgraded(revisions: pl.LazyFrame) -> pl.LazyFrame:
    """Revisions written under an older schema, with the nullable columns added since as nulls (1.2.0:
    admin1_code, admin1_name, age_band_source), so a warehouse of an older version keeps publishing."""
    from vigila.warehouse import read

    return read.with_contract_columns(revisions, "cases_revisions")


def _publish_run(storage: Storage, source: SourceConfig, landed: Landed, processed: Processed, run_id: str) -> dict:
    from vigila.warehouse import publish, read

    if processed.report.get("rejected_because"):
        return _reject_run(storage, source, landed, processed, run_id)
    staged = pl.read_parquet(processed.harmonised)
    ingested_at = dt.datetime.now(dt.UTC)
    revisions_cols = REVISIONS.columns
    new_parts: dict[tuple[str, ...], pl.DataFrame] = {}
    weekly_parts: dict[tuple[str, ...], pl.DataFrame] = {}
    empty = pl.DataFrame(schema=REVISIONS.polars_schema())
    has_revisions = publish.current_manifest(storage, "cases_revisions") is not None
    for key, part in _partition_frames(staged).items():
        existing = empty if not has_revisions else pl.concat([empty, read.with_contract_columns(publish.scan(
            storage, "cases_revisions", partitions=[key]), "cases_revisions").select(revisions_cols).collect()])
        new = _new_revisions(part, existing).with_columns(pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias("ingested_at"))
        if new.height:
            new_parts[key] = new.select(revisions_cols)
            weekly_parts[key] = read.latest_issue(pl.concat([existing, new.select(revisions_cols)])).collect().select(
                WEEKLY.columns).sort("geo_code", "epi_year", "epi_week", "classification", "sex", "age_group")
    common = {"schema_version": SCHEMA_VERSION, "run_id": run_id}
    versions = {}
    lagging = _weekly_lags_revisions(storage)      # a run died between the two commits below
    if new_parts:
        versions["cases_revisions"] = publish.commit(storage, "cases_revisions", partition_by=PARTITION_BY,
                                                     append=new_parts, **common).version
    if new_parts or lagging:
        revisions = versions.get("cases_revisions") or publish.current_manifest(storage, "cases_revisions").version
        extra = {"revisions_version": revisions}   # which cases_revisions version this cases_weekly is the latest issue of
        if lagging:   # rebuild every partition from the revisions: the dead run's partitions are unknown here
            with vlog.stage("heal_cases_weekly", source=source.id, run_id=run_id, revisions=revisions) as logged:
                rebuilt = (read.latest_issue(read.with_contract_columns(publish.scan(storage, "cases_revisions"),
                                                                        "cases_revisions").select(revisions_cols)).collect()
                           .select(WEEKLY.columns).sort(*PARTITION_BY, "geo_code", "epi_year", "epi_week",
                                                                           "classification", "sex", "age_group"))
                logged.update(rows=rebuilt.height)
            versions["cases_weekly"] = publish.commit(storage, "cases_weekly", partition_by=PARTITION_BY,
                                                      replace_all=rebuilt, extra=extra, **common).version
        else:
            versions["cases_weekly"] = publish.commit(storage, "cases_weekly", partition_by=PARTITION_BY,
                                                      replace=weekly_parts, extra=extra, **common).version
    versions.update(_publish_quarantine(storage, source, landed.sha256, processed.quarantine, common))
    report = dict(processed.report)
    report.update(status="published", revisions_added=sum(p.height for p in new_parts.values()),
                  versions=versions, published_at=_now(),
                  file={**report["file"], "key": landed.key, "size": landed.size, "original_name": landed.original_name})
    markdown, as_json = dictionary_docs()
    storage.write_bytes("docs/data_dictionary.md", markdown.encode())
    storage.write_json("docs/data_dictionary.json", as_json)
    storage.write_json(f"reports/{source.id}/{run_id}.json", report)
    storage.write_json(f"reports/{source.id}/latest.json", report)
    storage.write_json(f"raw/{source.id}/ingested/{landed.sha256}.json", {"run_id": run_id, "at": _now()})
    publish.write_catalog(storage)
    return report


# --------------------------------------------------------------------------- all steps


def resolve_issue_date(source: SourceConfig, override: dt.date | None = None) -> dt.date:
    return override or source.issue_date.fixed or dt.datetime.now(dt.UTC).date()


def ingest(source: SourceConfig, path: str | Path, warehouse: str | Path | Storage, *, run_id: str | None = None,
           issue_date: dt.date | None = None, force: bool = False, progress: Progress | None = None,
           origin: str | None = None) -> dict:
    """Land, process and publish one file without orchestration (the flow runs the same steps)."""
    from vigila.warehouse.storage import Storage

    storage = Storage.open(warehouse)
    run_id = run_id or new_run_id()
    # the raw copy (a large file: its write and fsync) runs beside the processing; nothing is published before it ends
    with ThreadPoolExecutor(1, thread_name_prefix="vigila-land") as copying, \
            tempfile.TemporaryDirectory(prefix="vigila-run-") as tmp:
        landed, copy = land_beside(storage, source, path, copying, origin=origin)
        if landed.already_ingested and not force:
            copy.result()
            return unchanged_report(source, landed, run_id)
        try:
            processed = process(path, source, run_id=run_id, file_sha256=landed.sha256,
                                issue_date=resolve_issue_date(source, issue_date), workdir=Path(tmp), progress=progress)
        except ReadError as e:
            copy.result()
            reject(storage, source, landed, run_id, e)
            raise
        copy.result()   # a failed copy raises here: nothing is published
        report = publish_run(storage, source, landed, processed, run_id)
    if report["status"] == "rejected":
        raise RunRejected(report)
    return report


def reject(storage: Storage, source: SourceConfig, landed: Landed, run_id: str, error: BaseException) -> dict:
    """The report of a file that could not be read at all (`ReadError`: empty, binary, wrong encoding, a
    required column missing...): status `rejected`, the reason, the landed file; saved as
    `reports/<source>/<run_id>.json` so the ministry's data team finds why nothing was published.
    `latest.json` is left to published runs; the caller re-raises (the run fails and is alerted)."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    report = {"source_id": source.id, "run_id": run_id, "status": "rejected", "error": reason, "finished_at": _now(),
              "file": {"sha256": landed.sha256, "key": landed.key, "original_name": landed.original_name},
              "notes": [f"the file could not be read: {reason}", "nothing from this file was published; the raw "
                        f"bytes are kept at {landed.key}"]}
    storage.write_json(f"reports/{source.id}/{run_id}.json", report)
    return report


def unchanged_report(source: SourceConfig, landed: Landed, run_id: str) -> dict:
    return {"source_id": source.id, "run_id": run_id, "status": "unchanged",
            "file": {"sha256": landed.sha256, "key": landed.key, "original_name": landed.original_name},
            "notes": ["the same bytes were already ingested; nothing to publish"]}


def fetch_and_ingest(source: SourceConfig, warehouse: str | Path | Storage, *, location: str | None = None,
                     run_id: str | None = None, issue_date: dt.date | None = None, force: bool = False,
                     progress: Progress | None = None) -> list[dict]:
    """Fetch `location` (default: the config's) with its connector and ingest each report, without
    Prefect: the `ingest_source` flow's steps, conditional-request state included."""
    from vigila.warehouse.storage import Storage

    import connectors  # the core does not need the connectors to parse, check or publish a file

    storage = Storage.open(warehouse)
    where = location or source.location
    if not where:
        raise ValueError(f"{source.id}: no `location` in the config and none given")
    kind = connectors.connector_for(where).kind
    state = {} if force else load_fetch_state(storage, source.id, kind)
    run_id = run_id or new_run_id()
    fetched = fetch(where, source, state)
    reports = []
    try:
        for i, got in enumerate(fetched):
            if got.not_modified:
                reports.append(not_modified_report(source, got.origin, state, f"{run_id}-{i}"))
                continue
            try:
                report = ingest(source, got.path, storage, run_id=f"{run_id}-{i}", issue_date=issue_date, force=force,
                                progress=progress, origin=got.origin)
            except RunRejected as e:     # the other reports are still tried
                report = e.report
            if report["status"] != "rejected":   # a 304 may only ever stand for published bytes
                save_fetch_state(storage, source.id, kind, got.origin, got.validators, report["file"])
            reports.append(report)
    finally:
        for got in fetched:
            got.discard()
    rejected = [r for r in reports if r["status"] == "rejected"]
    if rejected:
        raise RunRejected(rejected[0])
    return reports


# --------------------------------------------------------------------------- fetch state


def fetch(location: str, source: SourceConfig, state: dict | None = None) -> list:
    """`connectors.fetch` as the logged `fetch` stage: the reports (`connectors.Fetched`) at LOCATION."""
    import connectors

    kind = connectors.connector_for(location).kind
    with vlog.stage("fetch", source=source.id, kind=kind) as logged:
        fetched = connectors.fetch(location, source=source, state=state)
        logged.update(files=len(fetched), not_modified=sum(bool(f.not_modified) for f in fetched))
    return fetched


def fetch_state_key(source_id: str, kind: str) -> str:
    return f"state/{kind}/{source_id}.json"


def load_fetch_state(storage: Storage, source_id: str, kind: str) -> dict:
    """What earlier publishes of this source remember per origin (e.g. HTTP ETag / Last-Modified)."""
    key = fetch_state_key(source_id, kind)
    return storage.read_json(key) if storage.exists(key) else {}


def save_fetch_state(storage: Storage, source_id: str, kind: str, origin: str, validators: dict, file: dict) -> None:
    """Remember `origin`'s validators with the raw file they describe. Call only once that file is
    published (or was already): a 304 later means "this file", so it must be in the warehouse."""
    if not validators:
        return
    key = fetch_state_key(source_id, kind)
    with storage.lock(f"state/{kind}/.{source_id}.lock"):
        state = load_fetch_state(storage, source_id, kind)
        state[origin] = {**validators, "sha256": file["sha256"], "key": file.get("key"),
                         "original_name": file.get("original_name"), "saved_at": _now()}
        storage.write_json(key, state)


def not_modified_report(source: SourceConfig, origin: str, state: dict, run_id: str) -> dict:
    """The "unchanged" report of a report the origin says is not modified (nothing was downloaded)."""
    entry = state.get(origin, {})
    return {"source_id": source.id, "run_id": run_id, "status": "unchanged",
            "file": {"sha256": entry.get("sha256", ""), "key": entry.get("key"), "original_name": entry.get("original_name")},
            "notes": [f"not modified since the last publish (HTTP 304 from {origin}); nothing downloaded or published"]}


def check(source: SourceConfig, path: str | Path, *, progress: Progress | None = None) -> tuple[dict, pl.DataFrame]:
    """Validate only: the report and the quarantine records, nothing written to a warehouse."""
    return _check(source, path, progress, pl.read_parquet)


def check_head(source: SourceConfig, path: str | Path, limit: int, *, progress: Progress | None = None
               ) -> tuple[dict, pl.DataFrame, int]:
    """`check` for a terminal: the report, the first `limit` failing records (set-aside rows excluded) by row,
    and how many failing records there are: never every record (a file whose rows mostly fail has millions)."""
    def first(staged: Path) -> tuple[pl.DataFrame, int]:
        failing = pl.scan_parquet(staged).filter(pl.col("severity") != "set_aside")
        return failing.sort("row", maintain_order=True).head(limit).collect(), failing.select(pl.len()).collect().item()

    report, (head, n) = _check(source, path, progress, first)
    return report, head, n


def _check(source: SourceConfig, path: str | Path, progress: Progress | None, records: Callable[[Path], Any]):
    if not Path(path).is_file():
        raise ReadError(f"{path}: no such file")
    with tempfile.TemporaryDirectory(prefix="vigila-check-") as tmp:
        processed = process(path, source, run_id="check", file_sha256=sha256_file(Path(path)),
                            issue_date=resolve_issue_date(source), workdir=Path(tmp), progress=progress)
        report = {**processed.report, "status": "rejected" if processed.report["rejected_because"] else "checked"}
        return report, records(processed.quarantine)
