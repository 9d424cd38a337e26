"""The distributed detection publish streams: `scale.publish_blocks` over many small staged blocks (computed
here in one process by `scale.detect_block`, as cluster workers would) publishes exactly the `alerts` version
the one-process `alerts.run_detection` publishes (rows, order within each partition file, schema, summary),
while never collecting more than one block's rows.

In: synthetic series (benchmarks/dask_load.py; place codes made prefixes of one another on purpose: "ARG-1"
sorts after "ARG-10" in a series id but before it as a bare code). Out: pass/fail. No Dask, no Prefect.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import dask_load  # noqa: E402

from schemas.harmonised import SCHEMA_VERSION  # noqa: E402
from vigila.detect import alerts, scale  # noqa: E402
from vigila.ingest import pipeline  # noqa: E402
from vigila.warehouse import publish  # noqa: E402
from vigila.warehouse.storage import Storage  # noqa: E402

PLACES = len(dask_load.COUNTRIES) * len(dask_load.DISEASES)   # series i is place i // PLACES of its source x disease


def warehouse(path: Path, n_series: int = PLACES * 13, weeks: int = 70) -> str:
    frame = dask_load.synthetic_cases_weekly(n_series, weeks).with_columns(   # ARG-0 .. ARG-12, unpadded
        pl.format("{}-{}", "country_iso3", pl.col("geo_code").str.split("-").list.get(1).cast(pl.Int64) // PLACES)
        .alias("geo_code"))
    publish.commit(Storage.open(path), "cases_weekly", partition_by=pipeline.PARTITION_BY, replace_all=frame,
                   run_id="synthetic", schema_version=SCHEMA_VERSION)
    return str(path)


def test_publish_from_many_staged_blocks_equals_one_process_a_few_blocks_at_a_time(tmp_path, monkeypatch):
    one = warehouse(tmp_path / "one")
    many = str(tmp_path / "many")
    shutil.copytree(one, many)
    methods = [{"method": "ears", "params": {"method": m}} for m in ("C1", "C2", "C3")]
    path = dask_load.detection_config(tmp_path / "detect.yaml", methods, weeks=30, min_history=8)
    config = alerts.load_config(path).model_copy(update={"gaps": alerts.Gaps(sources={"arg_synthetic": "zero"})})

    expected = alerts.run_detection(one, config, run_id="one")
    plan = scale.plan_detection(many, config, block_series=9)
    assert len(plan["blocks"]) >= 30
    blocks = [scale.detect_block(many, config, plan, i, "many") for i in range(len(plan["blocks"]))]
    largest = max(b["rows"] for b in blocks)
    assert largest < expected["rows"] / 20

    collected: list[int] = []
    written: list[int] = []
    collect, write_table = pl.LazyFrame.collect, pq.ParquetWriter.write_table

    def spy_collect(self, *args, **kwargs):
        out = collect(self, *args, **kwargs)
        collected.append(out.height)
        return out

    def spy_write(self, table, *args, **kwargs):
        written.append(table.num_rows)
        return write_table(self, table, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(pl.LazyFrame, "collect", spy_collect)
        m.setattr(pq.ParquetWriter, "write_table", spy_write)
        m.setattr(scale, "CHECK_ROWS", 3 * largest)            # blocks are validated a few at a time
        got = scale.publish_blocks(many, config, plan, blocks, run_id="many")
    bound = 3 * largest + largest                             # under CHECK_ROWS, then one more block
    assert collected and max(collected) <= bound and max(collected) > largest   # a few blocks at once, never all
    assert sum(written) == expected["rows"] and max(written) <= bound

    assert {k: v for k, v in got.items() if k != "version"} == {k: v for k, v in expected.items() if k != "version"}
    a, b = (publish.current_manifest(Storage.open(w), alerts.DATASET) for w in (one, many))
    assert (a.columns, a.arrow_schema, a.rows) == (b.columns, b.arrow_schema, b.rows)
    assert [(f.partition, f.rows) for f in a.files] == [(f.partition, f.rows) for f in b.files]   # one file per method
    run = ["run_id", "computed_at"]
    for f in a.files:   # the same rows in the same order, file by file
        x, y = (publish.scan(Storage.open(w), alerts.DATASET, partitions=[f.partition]).drop(run).collect()
                for w in (one, many))
        assert x.height and x.equals(y)
    assert Storage.open(many).list("staging") == []
