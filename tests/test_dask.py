"""Flows and detection on a REAL Dask cluster started here: `dask scheduler` + two `dask worker` processes
(one process, one thread, a memory limit each) on 127.0.0.1, a real Prefect API (the session harness) and a
real S3 (SeaweedFS `weed mini`, from test_storage). Same answers as one process (real fixtures and synthetic
series), racing publishes on s3:// from both workers, a worker killed mid-run.

In: tests/fixtures/real sources, benchmarks/dask_load.py synthetic loads. Out: pass/skip.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from conftest import FIXTURES, ROOT, SOURCES
from test_storage import BUCKET, s3_settings  # noqa: F401  (the session's SeaweedFS)

sys.path.insert(0, str(ROOT / "benchmarks"))
import dask_load  # noqa: E402

pytest.importorskip("distributed")
pytest.importorskip("prefect_dask")

ISSUED = dt.date(2025, 1, 10)
REAL = FIXTURES / "real"
REAL_SOURCES = [REAL / "col_sivigila_malaria_complicada_2018" / "col_sivigila_malaria.yaml",
                REAL / "col_sivigila_malaria_mortalidad" / "col_sivigila_malaria_deaths.yaml",
                SOURCES / "paho_opendengue_national.yaml"]
# columns that name the run, the moment or the input's version id (a random suffix per warehouse), not the data
RUN_COLUMNS = ["run_id", "ingested_at", "computed_at", "cases_weekly_version"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    address: str
    dashboard: str
    procs: list[subprocess.Popen]

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=60)

    def worker_pids(self) -> dict[str, int]:
        with self.client() as c:
            return c.run(os.getpid)


@pytest.fixture(scope="module")
def cluster(prefect_harness, s3_settings, tmp_path_factory):  # noqa: F811
    """`dask scheduler` and two `dask worker` processes (nanny-supervised, --nworkers 1 --nthreads 1,
    --memory-limit 1.5GiB), reporting task runs to the session's Prefect API, reading S3 settings from AWS_*."""
    from prefect.settings import PREFECT_API_URL

    dask = str(Path(sys.executable).with_name("dask"))
    logs = tmp_path_factory.mktemp("dask")
    port, dash = _free_port(), _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]),
           "PREFECT_API_URL": PREFECT_API_URL.value(), "AWS_ENDPOINT_URL": s3_settings["endpoint"],
           "AWS_ACCESS_KEY_ID": s3_settings["access_key"], "AWS_SECRET_ACCESS_KEY": s3_settings["secret_key"],
           "AWS_REGION": s3_settings["region"], "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "3"}
    commands = [[dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", f"127.0.0.1:{dash}",
                 "--no-show"]]
    commands += [[dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--memory-limit", "1.5GiB",
                  "--host", "127.0.0.1", "--name", f"w{i}", "--no-dashboard", "--local-directory", str(logs / f"w{i}")]
                 for i in (1, 2)]
    procs = []
    for i, cmd in enumerate(commands):
        with open(logs / f"proc{i}.log", "wb") as out:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                          start_new_session=True))
        if i == 0:
            time.sleep(1)
    found = Cluster(address, f"http://127.0.0.1:{dash}/status", procs)
    try:
        with found.client() as c:
            c.wait_for_workers(2, timeout=120)
        yield found
    finally:
        for p in reversed(procs):   # workers first, then the scheduler; each process group (nanny + worker)
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.fixture(scope="module", autouse=True)
def s3_env(s3_settings):  # noqa: F811
    """This process reads the same S3 settings as the workers (Storage.open takes AWS_* by default)."""
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    os.environ.update({"AWS_ENDPOINT_URL": s3_settings["endpoint"], "AWS_ACCESS_KEY_ID": s3_settings["access_key"],
                       "AWS_SECRET_ACCESS_KEY": s3_settings["secret_key"], "AWS_REGION": s3_settings["region"]})
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def s3_root() -> str:
    return f"s3://{BUCKET}/dask-{uuid.uuid4().hex[:10]}/warehouse"


def frame(warehouse: str, name: str) -> pl.DataFrame:
    """A dataset as published, run columns dropped, rows sorted on every column."""
    from vigila.warehouse import read

    df = read.dataset(warehouse, name).collect()
    df = df.drop([c for c in RUN_COLUMNS if c in df.columns])
    return df.select(sorted(df.columns)).sort(sorted(df.columns), nulls_last=True)


FLOATS = ["expected", "upperbound"]


def assert_same_alerts(x: pl.DataFrame, y: pl.DataFrame) -> None:
    """Same rows, same values; the bounds to the last bits but rounding: Farrington's fits run vectorised over the
    series of a call (numpy reductions over batch-shaped arrays), so a series' bound can differ in its last bits
    with the other series of its block - as it does in one process when the set of series changes."""
    exact = [c for c in x.columns if c not in FLOATS]
    assert x.select(exact).equals(y.select(exact))
    for c in FLOATS:
        u, v = x[c], y[c]
        assert u.is_null().equals(v.is_null()), c
        diff = ((u - v).abs() / (v.abs() + 1e-12)).fill_null(0)
        assert diff.max() < 1e-9, (c, diff.max())


def assert_same(a: str, b: str, *names: str) -> None:
    from vigila.warehouse import publish, read
    from vigila.warehouse.storage import Storage

    for name in names:
        if name == "alerts":   # each warehouse's alerts name the cases_weekly version they were computed from
            for w in (a, b):
                version = publish.current_manifest(Storage.open(w), "cases_weekly").version
                assert read.dataset(w, "alerts").collect()["cases_weekly_version"].unique().to_list() == [version]
        x, y = frame(a, name), frame(b, name)
        if name == "alerts":
            key = ["method", "series_id", "week_start"]
            x, y = x.sort(key), y.sort(key)
            assert x.height > 0 and x.height == y.height
            assert_same_alerts(x, y)
            continue
        assert x.height > 0 and x.equals(y), f"{name}: {x.height} vs {y.height} rows differ"


def balanced(report: dict) -> None:
    for what in ("rows", "cases", "deaths"):
        if c := report.get(what):
            assert c["read"] == c["published"] + c["quarantined"] + c["set_aside"], (what, c)


def artifact_links(key: str) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return [a.data for a in found]


# --------------------------------------------------------------------------- (a) many sources, same answers


@pytest.fixture(scope="module")
def ingested(cluster, tmp_path_factory):
    """The same sources (3 real: two of one country x disease; 3 synthetic) ingested in one process and through the cluster in one run."""
    from flows.cluster import ingest_sources
    from vigila import oneoff

    base = tmp_path_factory.mktemp("ingest")
    paths = [*REAL_SOURCES, *dask_load.write_sources(base / "synthetic", 3, rows=104)]
    one, many = str(base / "one"), str(base / "cluster")
    singles = [oneoff.ingest_source(str(p), one, issue_date=ISSUED) for p in paths]
    reports = ingest_sources([str(p) for p in paths], many, issue_date=ISSUED, cluster=cluster.address)
    return paths, one, many, singles, reports


def test_many_sources_through_the_cluster_publish_what_one_process_publishes(cluster, ingested):
    paths, one, many, singles, reports = ingested
    assert [len(r) for r in reports] == [len(r) for r in singles]
    for single, dist in zip(singles, reports, strict=True):
        for a, b in zip(single, dist, strict=True):
            assert a["status"] == b["status"] == "published", (a["source_id"], b.get("error"))
            assert (a["rows"], a["cases"]) == (b["rows"], b["cases"])     # the same account, in rows and cases
            balanced(b)
    assert_same(one, many, "cases_weekly", "cases_revisions", "quarantine")
    assert set(frame(many, "reporting")["source_id"]) == set(frame(one, "reporting")["source_id"])
    assert any(cluster.dashboard.split("/status")[0] in link for link in artifact_links("ingest-dask-dashboard"))
    with cluster.client() as c:   # the sources ran as tasks on the workers
        executed = c.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(executed.values()) >= len(paths), executed


# --------------------------------------------------------------------------- (b) detection, same answers


def detect_config(tmp_path: Path, weeks: int = 12) -> str:
    methods = [{"method": "ears", "params": {"method": m}} for m in ("C1", "C2", "C3")]
    methods.append({"method": "farrington_flexible", "params": {}})
    return str(dask_load.detection_config(tmp_path / "detect.yaml", methods, weeks=weeks, levels=("admin0", "admin1", "admin2")))


def test_detection_by_blocks_on_the_cluster_equals_one_process(cluster, ingested, tmp_path):
    from flows.detect import detect_alerts
    from vigila.detect import alerts

    _, one, many, _, _ = ingested
    synthetic_one, synthetic_many = str(tmp_path / "syn-one"), str(tmp_path / "syn-cluster")
    dask_load.publish_cases_weekly(synthetic_one, 96, weeks=312)
    shutil.copytree(synthetic_one, synthetic_many)
    config = detect_config(tmp_path)
    for single, dist, blocks in ((one, many, 1), (synthetic_one, synthetic_many, 4)):   # real data; 96 series in 8 blocks
        expected = alerts.run_detection(single, alerts.load_config(config), run_id="one")
        got = detect_alerts(dist, config, cluster=cluster.address, block_series=blocks * 3)
        assert got["status"] == "published" and got["series"] == expected["series"] > 0
        assert got["alarms"] == expected["alarms"] and got["rows"] == expected["rows"]
        assert_same(single, dist, "alerts")
        assert detect_alerts(dist, config, cluster=cluster.address)["status"] == "unchanged"
    assert any(cluster.dashboard.split("/status")[0] in link for link in artifact_links("detect-dask-dashboard"))
    from vigila.warehouse.storage import Storage

    assert Storage.open(synthetic_many).list("staging") == []       # block files removed after the publish


# --------------------------------------------------------------------------- (c) S3 warehouse with the cluster


def test_workers_ingest_and_detect_on_s3(cluster, ingested, tmp_path):
    from flows.cluster import ingest_sources
    from flows.detect import detect_alerts
    from vigila.detect import alerts

    paths, one, _, _, _ = ingested
    root = s3_root()
    reports = ingest_sources([str(p) for p in paths[:2] + paths[3:]], root, issue_date=ISSUED, cluster=cluster.address)
    assert all(r["status"] == "published" for rs in reports for r in rs)
    local = str(tmp_path / "local")
    from vigila import oneoff

    for p in paths[:2] + paths[3:]:
        oneoff.ingest_source(str(p), local, issue_date=ISSUED)
    assert_same(local, root, "cases_weekly", "cases_revisions")
    config = detect_config(tmp_path)
    expected = alerts.run_detection(local, alerts.load_config(config), run_id="one")
    got = detect_alerts(root, config, cluster=cluster.address, block_series=4)
    assert got["alarms"] == expected["alarms"] and got["rows"] == expected["rows"]
    assert_same(local, root, "alerts")


RACERS, PER_TASK, ROWS = 20, 5, 3


def racing_commits(root: str, task: int) -> list[str]:
    """Runs on a worker: PER_TASK threads, each one commit appending ROWS rows tagged with its writer number."""
    from vigila.warehouse import publish
    from vigila.warehouse.storage import Storage

    storage = Storage.open(root)
    done: list[str] = []

    def one(k: int) -> None:
        writer = task * PER_TASK + k
        rows = pl.DataFrame({"part": [f"p{writer % 4}"] * ROWS, "writer": [writer] * ROWS, "n": list(range(ROWS))})
        done.append(publish.commit(storage, "race", partition_by=["part"], append={(f"p{writer % 4}",): rows},
                                   run_id=f"writer-{writer}", schema_version="1", grace_seconds=3600).version)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(PER_TASK)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done


def test_hundred_racing_publishes_from_both_workers_leave_no_torn_or_duplicated_version(cluster):
    from vigila.warehouse import publish
    from vigila.warehouse.storage import Storage

    root = s3_root()
    with cluster.client() as c:
        futures = [c.submit(racing_commits, root, i, pure=False) for i in range(RACERS)]
        versions = [v for f in futures for v in f.result()]
        who = c.who_has(futures)
    assert len({w for ws in who.values() for w in ws}) == 2                   # both workers published
    n = RACERS * PER_TASK
    assert len(versions) == len(set(versions)) == n
    storage = Storage.open(root)
    current = publish.current_manifest(storage, "race")
    assert current.sequence == n and current.rows == n * ROWS                 # no lost update
    rows = publish.scan(storage, "race").collect()
    assert sorted(rows["writer"].to_list()) == sorted(w for w in range(n) for _ in range(ROWS))   # each once
    stored = publish.list_versions(storage, "race")
    assert sorted(stored) == sorted(versions)                                # every commit kept (grace), none extra
    by_sequence = {}
    for v in stored:
        m = publish.read_manifest(storage, "race", v)
        assert m.sequence not in by_sequence, f"sequence {m.sequence} committed twice"
        by_sequence[m.sequence] = m
        assert m.rows == m.sequence * ROWS == sum(f.rows for f in m.files)  # each version whole
        for f in m.files:
            assert storage.exists(f"{m.path}/{f.path}")
    assert sorted(by_sequence) == list(range(1, n + 1))
    for s, m in by_sequence.items():                                         # one unbroken chain of parents
        assert m.parent == (by_sequence[s - 1].version if s > 1 else None)
    assert storage.read_json("datasets/race/_current.json")["version"] == by_sequence[n].version


# --------------------------------------------------------------------------- (d) a worker killed mid-run


def test_a_worker_killed_mid_detection_leaves_the_published_version_and_a_rerun_completes(cluster, tmp_path):
    from flows.detect import detect_alerts
    from vigila.detect import alerts
    from vigila.warehouse import publish
    from vigila.warehouse.storage import Storage

    wh = str(tmp_path / "wh")
    dask_load.publish_cases_weekly(wh, 160, weeks=312)
    config = detect_config(tmp_path, weeks=26)
    first = detect_alerts(wh, config, cluster=cluster.address, block_series=80)
    storage = Storage.open(wh)
    before = publish.current_manifest(storage, "alerts")
    assert first["version"] == before.version
    old_rows = frame(wh, "alerts")

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = detect_alerts(wh, config, cluster=cluster.address, block_series=8, force=True)
        except BaseException as exc:  # noqa: BLE001  the run may fail cleanly: that is allowed
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not storage.list("staging/detect") and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.1)                                                     # the first block written: mid-run
    pids = cluster.worker_pids()
    victim = sorted(pids)[0]
    assert thread.is_alive() and storage.list("staging/detect")             # mid-run: blocks written, not published
    os.kill(pids[victim], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    with cluster.client() as c:
        c.wait_for_workers(2, timeout=120)                                  # the nanny started a new worker process
    assert pids[victim] not in cluster.worker_pids().values()            # the killed process is gone
    now = publish.current_manifest(storage, "alerts")
    old = publish.read_manifest(storage, "alerts", before.version)          # the previous version, still whole
    assert publish.scan(storage, "alerts", version=old.version).collect().height == old.rows == before.rows
    print("after the kill:", outcome)
    if "error" in outcome:
        assert now.version == before.version                                # failed cleanly: nothing published
        assert frame(wh, "alerts").equals(old_rows)
    else:
        assert now.sequence == before.sequence + 1                          # lost blocks rerun: one new version
    again = detect_alerts(wh, config, cluster=cluster.address, block_series=8, force=True)
    assert again["status"] == "published" and again["series"] == 160
    expected_wh = str(tmp_path / "one")
    dask_load.publish_cases_weekly(expected_wh, 160, weeks=312)
    expected = alerts.run_detection(expected_wh, alerts.load_config(config), run_id="one")
    assert again["alarms"] == expected["alarms"]
    assert_same(expected_wh, wh, "alerts")
