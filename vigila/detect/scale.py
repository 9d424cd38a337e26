"""Scale-out helpers (no Prefect, no Dask here): detection cut into blocks of series that cluster workers
compute from the warehouse Parquet themselves, streamed block by block into one atomic `alerts` publish; the
leases of a publish.

In: a warehouse (`Storage` or root), a `DetectionConfig`, the pinned input version; out: a plan (blocks of
(source_id, disease) groups with the partitions they read, JSON-able), one block's result as a Parquet file
under `staging/detect/<run_id>/`, then the published `alerts` version and the same summary as
`alerts.run_detection`. Only small dicts and warehouse keys travel between the steps, never frames.

A block is a set of places of (source_id, disease) groups: every step of `alerts.weekly_series` and
`alerts.evaluate` groups within one place of one group (a series id is place|disease|source), except the
`zero` gap policy, whose period is per source x level x disease: such a group is never cut. So a block
computes exactly the rows the one-process run computes, and its size is bounded by `block_series`.
`run_blocks` runs the same blocks one after the other in this process (the one-off command and the flow
without a cluster): memory of one block, whatever the warehouse's size.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from vigila.detect import alerts
from vigila.detect.arrays import recycle_memory
from vigila.warehouse import publish
from vigila.operate import log as vlog
from vigila.operate.runtime import CLUSTER_ENV, cluster_address  # noqa: F401  (light; flows read them here)
from vigila.warehouse.storage import Storage

BLOCK_SERIES = 500
"""Series per detection block (about: a block is cut only between places; a `zero`-gap group is never cut)."""
CHECK_ROWS = 400_000
"""Rows `publish_blocks` validates at once (whole blocks): a pandera validation costs ~80 ms a call before any
row (20 blocks of 500 series: 1.6 s), ~0.3 µs a row after."""
GROUP = ["source_id", "disease"]
STAGING = "staging/detect"


# --------------------------------------------------------------------------- detection


def plan_detection(warehouse: str | Storage, config: alerts.DetectionConfig, *, as_of: dt.date | None = None,
                   force: bool = False, block_series: int = BLOCK_SERIES) -> dict[str, Any]:
    """What a distributed detection run does: {"status": "unchanged", summary...} when the current `alerts`
    was built from the same input version, as_of and config (and not `force`), else {"input", "version",
    "fingerprint", "series", "blocks": [{"ranges": [[source, disease, first place, last place]...], "partitions":
    [[country, disease]...], "series": n}]}: blocks of about `block_series` series, cut only between places (and
    never inside a (source, disease) of a source under the `zero` gap policy), in `alerts.ORDER` (source, disease,
    then places in series id order: "first"/"last" place bound that order). Reads only the key columns."""
    storage = Storage.open(warehouse)
    name, manifest = alerts.input_manifest(storage, as_of)
    fingerprint = publish.fingerprint(input=manifest.version, as_of=str(as_of), config=config.model_dump(mode="json"))
    current = publish.built_from(storage, alerts.DATASET, fingerprint)
    if current and not force:
        return alerts.summarise(publish.scan(storage, alerts.DATASET).collect(), status="unchanged",
                                version=current.version, cases_weekly_version=manifest.version)
    keys = (alerts.input_rows(storage, name, manifest.version, as_of, config).select(alerts.SERIES_KEY).unique()
            .group_by([*GROUP, "geo_code"]).agg(pl.len().alias("series"), pl.col("country_iso3").unique().alias("countries"))
            .sort([*GROUP, _series_id("geo_code")])   # = alerts.ORDER: blocks are published one after the other
            .select(*GROUP, "geo_code", "series", "countries")
            .collect(engine="streaming"))   # region scale: never all rows' keys at once
    units: list[list[Any]] = []   # [source, disease, first place, last place, series, countries]: never cut inside
    for source_id, disease, code, n, countries in keys.iter_rows():
        whole = config.gaps.sources.get(source_id, config.gaps.default) == "zero"   # its period spans the group
        last = units[-1] if units else None
        if whole and last and last[:2] == [source_id, disease]:
            last[3], last[4], last[5] = code, last[4] + n, last[5] | set(countries)
        else:
            units.append([source_id, disease, code, code, n, set(countries)])
    blocks: list[dict[str, Any]] = []
    for source_id, disease, lo, hi, n, countries in units:
        if not blocks or (blocks[-1]["series"] and blocks[-1]["series"] + n > block_series):
            blocks.append({"ranges": [], "partitions": set(), "series": 0})
        block = blocks[-1]
        if block["ranges"] and block["ranges"][-1][:2] == [source_id, disease]:
            block["ranges"][-1][3] = hi                  # places of one group are contiguous in the sort
        else:
            block["ranges"].append([source_id, disease, lo, hi])
        block["partitions"] |= {(c, disease) for c in countries}
        block["series"] += n
    for block in blocks:
        block["partitions"] = [list(p) for p in sorted(block["partitions"])]
    return {"status": "planned", "input": name, "version": manifest.version, "fingerprint": fingerprint,
            "as_of": as_of.isoformat() if as_of else None, "series": int(keys["series"].sum()), "blocks": blocks}


def _series_id(code: str) -> pl.Expr:
    """The series id of place column `code` in its (source, disease): places of a group are ordered and
    cut by it, as `alerts.ORDER` sorts them ("BR10|..." before "BR1|...", unlike the bare codes)."""
    return pl.format("{}|{}|{}", code, "disease", "source_id")


def block_key(run_id: str, index: int) -> str:
    return f"{STAGING}/{run_id}/block-{index:05d}.parquet"


def detect_block(warehouse: str | Storage, config: alerts.DetectionConfig, plan: dict[str, Any], index: int,
                 run_id: str) -> dict[str, Any]:
    """Block `index` of `plan`: read its partitions of the pinned input from the warehouse, every configured
    method on its series, the rows written to `block_key(run_id, index)`. Returns {"key", "rows", "series",
    "alarms"} ("key" None when the block has no rows to write). Idempotent: a rerun rewrites the same key."""
    storage = Storage.open(warehouse)
    block = plan["blocks"][index]
    as_of = _as_of(plan)
    with vlog.stage("detect_block", block=index, series=block["series"], ranges=len(block["ranges"])) as logged:
        ranges = pl.DataFrame(block["ranges"], schema=[*GROUP, "_first", "_last"], orient="row")
        rows = (alerts.input_rows(storage, plan["input"], plan["version"], as_of, config,
                                   [tuple(p) for p in block["partitions"]])
                .join(ranges.lazy(), on=GROUP, how="inner")        # a group is at most one range of a block
                .filter(_series_id("geo_code") >= _series_id("_first"), _series_id("geo_code") <= _series_id("_last"))
                .drop("_first", "_last").collect())
        series = alerts.weekly_series(rows, config.gaps)
        del rows
        result = pl.concat(alerts.evaluate_methods(series, config, block=index), how="vertical_relaxed")
        key = None
        if result.height:
            key = block_key(run_id, index)
            storage.write_parquet(key, result)
        logged.update(rows=result.height, alarms=int(result["alarm"].sum() or 0))
    return {"key": key, "rows": result.height, "series": series["series_id"].n_unique(),
            "alarms": int(result["alarm"].sum() or 0)}


def publish_blocks(warehouse: str | Storage, config: alerts.DetectionConfig, plan: dict[str, Any],
                   blocks: list[dict[str, Any]], *, run_id: str) -> dict[str, Any]:
    """The blocks' rows (their staged Parquet files, `blocks` in plan order) as one new `alerts` version,
    committed atomically like `alerts.run_detection` (same columns, row order, manifest extras, summary); the
    staging folder is then removed. Streams: staged blocks are read and sorted one at a time, validated and
    counted CHECK_ROWS rows (whole blocks) at a time, and appended to their method partitions' files (blocks are
    cut in `alerts.ORDER`, see `plan_detection`), so the publish holds about CHECK_ROWS rows (or one block)
    whatever the region's size."""
    storage = Storage.open(warehouse)
    keys = [b["key"] for b in blocks if b.get("key")]
    if not keys:   # nothing to evaluate anywhere: the one-process path publishes the (empty) result
        return alerts.run_detection(storage, config, run_id=run_id, as_of=_as_of(plan), force=True)
    opts = storage.storage_options()
    computed_at = dt.datetime.now(dt.UTC)
    total: dict[str, Any] = {"series": 0, "rows": 0, "evaluated": 0, "alarms": {}, "latest_week_alarms": {}}
    seen: set[str] = set()

    def checked(pending: list[pl.DataFrame]) -> pl.DataFrame:
        frame = pl.concat(pending)     # blocks in plan order, each sorted: each method's rows stay in ORDER
        pending.clear()
        alerts.Alert.validate(frame)
        _add(total, alerts.summarise(frame))
        return frame

    def frames():
        pending: list[pl.DataFrame] = []
        for key in keys:
            frame = pl.scan_parquet(storage.uri(key), storage_options=opts).with_columns(
                pl.lit(plan["version"]).alias("cases_weekly_version"), pl.lit(_as_of(plan), pl.Date).alias("as_of"),
                pl.lit(run_id).alias("run_id"), pl.lit(computed_at).cast(pl.Datetime("us", "UTC")).alias("computed_at"),
            ).select(alerts.ALERT_COLUMNS).sort(alerts.ORDER).collect()
            ids = set(frame["series_id"].unique().to_list())
            if ids & seen:   # a series split over two blocks would be evaluated twice (and its rows duplicated)
                raise ValueError(f"{key}: series {sorted(ids & seen)[:3]} also in an earlier block")
            seen.update(ids)
            pending.append(frame)
            if sum(f.height for f in pending) >= CHECK_ROWS:
                yield checked(pending)
        if pending:
            yield checked(pending)

    manifest = publish.commit(storage, alerts.DATASET, partition_by=alerts.PARTITION_BY, replace_all=frames(), run_id=run_id,
                              schema_version=alerts.ALERTS_SCHEMA_VERSION,
                              extra={"fingerprint": plan["fingerprint"], "input": plan["version"], "as_of": plan.get("as_of"),
                                     "config": config.model_dump(mode="json"), "blocks": len(plan["blocks"])})
    publish.write_catalog(storage)
    storage.delete_prefix(f"{STAGING}/{run_id}")
    return {"status": "published", "version": manifest.version, "cases_weekly_version": plan["version"], **total}


def run_blocks(warehouse: str | Storage, config: alerts.DetectionConfig, *, run_id: str, as_of: dt.date | None = None,
               force: bool = False, block_series: int = BLOCK_SERIES) -> dict[str, Any]:
    """`alerts.run_detection` in this process, by blocks: the plan, each block detected and staged in turn, then
    the streamed publish; the same `alerts` rows and summary, in the memory of one block of `block_series`
    series instead of the whole region's series at once (10 k series x 520 weeks: 0.97 GB, not 3.7 GB). What
    `vigila alerts` / `vigila demo` and the flow without a cluster run; a failed block publishes nothing."""
    plan = plan_detection(warehouse, config, as_of=as_of, force=force, block_series=block_series)
    if plan["status"] == "unchanged":
        return plan
    recycle_memory()     # block after block: the next block reuses the freed memory instead of faulting it in again
    try:
        blocks = [detect_block(warehouse, config, plan, i, run_id) for i in range(len(plan["blocks"]))]
    except BaseException:
        Storage.open(warehouse).delete_prefix(f"{STAGING}/{run_id}")
        raise
    return publish_blocks(warehouse, config, plan, blocks, run_id=run_id)


def _add(total: dict[str, Any], part: dict[str, Any]) -> None:
    """`alerts.summarise` of the rows so far plus one block's (series never span blocks)."""
    for k in ("series", "rows", "evaluated"):
        total[k] += part[k]
    for k in ("alarms", "latest_week_alarms"):
        total[k] = dict(sorted({m: total[k].get(m, 0) + part[k].get(m, 0) for m in {*total[k], *part[k]}}.items()))


def _as_of(plan: dict[str, Any]) -> dt.date | None:
    return dt.date.fromisoformat(plan["as_of"]) if plan.get("as_of") else None


# --------------------------------------------------------------------------- ingest


def staged_partitions(harmonised: str) -> list[tuple[str, str]]:
    """(country_iso3, disease) partitions of `cases_weekly` a staged harmonised file will touch."""
    return [tuple(r) for r in pl.scan_parquet(harmonised).select("country_iso3", "disease").unique()
            .sort("country_iso3", "disease").collect().iter_rows()]


def partition_lease(country_iso3: str, disease: str) -> str:
    """Name of the lease serialising publishes into one `cases_weekly` partition (a publish reads the
    partition's revisions, then replaces it: two sources of one country x disease must not interleave)."""
    return f"publish-part-{country_iso3}-{disease}".lower()
