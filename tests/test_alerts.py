"""Alerts on real data: the demo reports ingested, every configured method run, `alerts` published."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import duckdb
import polars as pl
import pytest

from schemas.outputs import Alert
from vigila.detect import alerts
from vigila.ingest import pipeline
from vigila.warehouse import publish, read
from vigila.config import ConfigError, load_source
from vigila.detect.ears import ears
from vigila.detect.farrington import farrington_flexible
from vigila.warehouse.storage import Storage

from conftest import SOURCES

ISSUED = dt.date(2025, 1, 10)
ABW = "ABW|dengue|paho_opendengue_national"


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    wh = tmp_path_factory.mktemp("alerts") / "ingested"
    for name in ("paho_opendengue_national.yaml", "per_minsa_dengue_linelist.yaml"):
        cfg = load_source(SOURCES / name)
        pipeline.ingest(cfg, cfg.location, wh, issue_date=ISSUED)
    return wh


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def detected(ingested, tmp_path_factory):
    wh = copy(ingested, tmp_path_factory.mktemp("alerts") / "detected")
    summary = alerts.run_detection(Storage.open(wh), alerts.load_config(), run_id="test-run-1")
    return wh, summary, read.dataset(wh, "alerts").collect()


def national(wh, iso3: str) -> pl.DataFrame:
    """An independent series: the country's admin0 weekly counts, t = 1..n (ABW reported every week)."""
    rows = (read.cases_weekly(wh).filter(pl.col("country_iso3") == iso3, pl.col("geo_level") == "admin0")
            .group_by("week_start").agg(pl.col("cases").sum()).sort("week_start").collect())
    return rows.with_columns(pl.lit(iso3).alias("series_id"), pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("t"))


@pytest.mark.parametrize("label, call", [
    ("ears_C2", lambda f: ears(f, method="C2", baseline=7, alpha=0.001)),
    ("farrington_flexible", lambda f: farrington_flexible(f)),
])
def test_alerts_equal_the_method_called_directly(detected, label, call):
    wh, _, got = detected
    series = national(wh, "ABW")
    assert (series["week_start"].diff().dt.total_days().drop_nulls() == 7).all()   # no gap: nothing to split
    direct = call(series)
    mine = got.filter(pl.col("series_id") == ABW, pl.col("method") == label).sort("week_start")
    assert mine.height == 52 and mine["week_start"].max() == series["week_start"].max()
    j = mine.join(direct, on="t", how="left", suffix="_r")
    assert (j["week_start"] == series["week_start"].gather(j["t"] - 1)).all()
    assert (j["observed"] == j["observed_r"]).all()
    for c in ("expected", "upperbound", "alarm"):
        assert j[c].is_null().equals(j[f"{c}_r"].is_null()), c
        assert j[c].eq_missing(j[f"{c}_r"]).all(), c
    assert j["upperbound"].is_not_null().any()


def test_params_and_input_version_are_recorded(detected):
    wh, summary, got = detected
    storage = Storage.open(wh)
    config = alerts.load_config()
    for run in config.methods:
        params = got.filter(pl.col("method") == run.label)["params"].unique().to_list()
        assert [json.loads(p) for p in params] == [json.loads(json.dumps(run.effective_params()))]
    ears_params = json.loads(got.filter(pl.col("method") == "ears_C2")["params"][0])
    assert ears_params == {"method": "C2", "baseline": 7, "alpha": 0.001, "min_sigma": 0.0}
    assert json.loads(got.filter(pl.col("method") == "farrington_flexible")["params"][0])["b"] == 5  # a default, recorded
    weekly = publish.current_manifest(storage, "cases_weekly").version
    assert got["cases_weekly_version"].unique().to_list() == [weekly] == [summary["cases_weekly_version"]]
    assert got["run_id"].unique().to_list() == ["test-run-1"]
    manifest = publish.current_manifest(storage, "alerts")
    assert manifest.extra["input"] == weekly and manifest.extra["config"]["min_history"] == config.min_history
    assert {f.partition for f in manifest.files} == {("ears_C2",), ("farrington_flexible",)}
    Alert.validate(got.select(list(Alert.to_schema().columns)))
    assert summary["alarms"] == {m: int(got.filter(pl.col("method") == m)["alarm"].sum()) for m in ("ears_C2", "farrington_flexible")}


def test_rerun_is_idempotent(detected):
    wh, first, got = detected
    storage = Storage.open(wh)
    versions = publish.list_versions(storage, "alerts")
    again = alerts.run_detection(storage, alerts.load_config(), run_id="test-run-2")
    assert again["status"] == "unchanged" and again["version"] == first["version"]
    assert publish.list_versions(storage, "alerts") == versions                    # nothing written
    forced = alerts.run_detection(storage, alerts.load_config(), run_id="test-run-3", force=True)
    assert forced["status"] == "published" and forced["version"] != first["version"]
    new = read.dataset(wh, "alerts").collect()
    key = ["method", "series_id", "week_start"]
    assert new.drop("run_id", "computed_at").sort(key).equals(got.drop("run_id", "computed_at").sort(key))
    assert {k: v for k, v in forced.items() if k != "version"} == {k: v for k, v in first.items() if k != "version"}


def test_national_and_departamento_series_with_the_gap_policies(detected):
    wh, _, got = detected
    ears_rows = got.filter(pl.col("method") == "ears_C2")
    assert set(ears_rows["geo_level"]) == {"admin0", "admin1"}
    assert ears_rows.filter(pl.col("geo_level") == "admin0")["place"].is_null().all()
    lor = ears_rows.filter(pl.col("series_id") == "PE-LOR|dengue|per_minsa_dengue_linelist")
    assert lor.height == 52 and lor["place"].unique().to_list() == ["PE-LOR"] and lor["country_iso3"][0] == "PER"
    assert lor["week_start"].max() == dt.date(2022, 12, 25) and lor["upperbound"].is_not_null().all()
    # the line list is zero-filled over its period: a departamento with few cases still has every week
    weekly = (read.cases_weekly(wh).filter(pl.col("geo_code") == "PE-ARE").group_by("week_start")
              .agg(pl.col("cases").sum()).collect())
    are = ears_rows.filter(pl.col("place") == "PE-ARE").join(weekly, on="week_start", how="left")
    assert are.height == 52 and (are["imputed"] == are["cases"].is_null()).all()
    assert (are["observed"] == are["cases"].fill_null(0)).all() and are["t"].max() == 209
    # a count report's missing weeks are not invented: ARG sent no weeks for 2020-2022, so its
    # series restarts at t = 1 on 2023-01-01 (53 weeks to 2023-12-31: the last 52 are t = 2..53)
    arg = ears_rows.filter(pl.col("country_iso3") == "ARG").sort("week_start")
    assert not arg["imputed"].any() and arg["t"].to_list() == list(range(2, 54))
    assert arg["week_start"][0] == dt.date(2023, 1, 8)
    assert arg.filter(pl.col("t") <= 10)["upperbound"].is_null().all()             # min_history: 10 earlier weeks
    assert arg.filter(pl.col("t") > 10)["upperbound"].is_not_null().all()
    per = (read.cases_weekly(wh).filter(pl.col("geo_level") == "admin1").group_by("week_start")
           .agg(pl.col("cases").sum()).filter(pl.col("week_start") > dt.date(2021, 12, 26)).collect())
    assert ears_rows.filter(pl.col("geo_level") == "admin1")["observed"].sum() == per["cases"].sum()


def test_too_little_history_gives_null_bounds(detected, ingested):
    _, _, got = detected
    tto = got.filter(pl.col("country_iso3") == "TTO")                  # one reported week in 2013
    assert tto.height == 2 and tto.select("expected", "upperbound", "alarm").null_count().row(0) == (2, 2, 2)
    series = alerts.build_series(read.cases_weekly(ingested), "admin1", "dengue",
                                 alerts.Gaps(sources={"per_minsa_dengue_linelist": "zero"}))
    for run in alerts.load_config().methods:
        out = alerts.evaluate(series, run, weeks=52, min_history=10_000)
        assert out.height == 21 * 52 and out["upperbound"].is_null().all() and out["alarm"].is_null().all()


def test_methods_sharing_one_window_give_what_each_gives_alone(ingested):
    """`alerts.windowed` is built once per run and read by every method; series with gaps (several segments) are
    keyed series_id#segment, others by their series_id. A window built for other weeks is refused."""
    series = alerts.build_series(read.cases_weekly(ingested), "admin1", "dengue")      # gaps: split
    assert series["segment"].max() > 0
    for frame in (series, series.filter(pl.col("segment") == 0)):
        shared = alerts.windowed(frame, 52)
        for run in alerts.load_config().methods:
            alone = alerts.evaluate(frame, run, weeks=52, min_history=10)
            assert alone.height and alerts.evaluate(shared, run, weeks=52, min_history=10).equals(alone)
    with pytest.raises(ValueError, match="windowed to 52 weeks, not 26"):
        alerts.evaluate(shared, run, weeks=26, min_history=10)


def test_as_of_reads_what_was_known(detected, tmp_path):
    wh, _, got = detected
    wh = copy(wh, tmp_path / "wh")
    same = alerts.run_detection(wh, alerts.load_config(), run_id="as-of", as_of=ISSUED)
    assert same["status"] == "published" and same["rows"] == got.height and same["alarms"] == alerts.summarise(got)["alarms"]
    assert read.dataset(wh, "alerts").select(pl.col("as_of").unique()).collect().item() == ISSUED
    before = alerts.run_detection(wh, alerts.load_config(), run_id="as-of-0", as_of=ISSUED - dt.timedelta(days=1))
    assert before["rows"] == 0 and read.dataset(wh, "alerts").collect().height == 0


def test_duckdb_reads_the_alerts_version_folder(detected):
    wh, summary, got = detected
    uri = publish.current_uri(Storage.open(wh), "alerts")
    rows, methods, alarms = duckdb.sql(
        f"select count(*), count(distinct method), count(*) filter (where alarm) "
        f"from read_parquet('{uri}/**/*.parquet', hive_partitioning=true)").fetchall()[0]
    assert rows == got.height == summary["rows"] and methods == 2 and alarms == sum(summary["alarms"].values())
    catalog = json.loads((wh / "catalog.json").read_text())
    assert "alerts" in {d["name"] for d in catalog["datasets"]}


@pytest.mark.parametrize("text, words", [
    ("methods:\n  - method: ears\n    params: {baselin: 7}\n", ":3: methods.0.params: unknown parameter 'baselin' for ears"),
    ("methods:\n  - method: earz\n", ":2: methods.0.method: unknown method 'earz' (did you mean 'ears'?)"),
    ("weeks: 0\n", ":1: weeks: Input should be greater than or equal to 1"),
    ("gaps: {sources: {x: fill}}\n", "gaps.sources.x: Input should be 'split' or 'zero'"),
])
def test_config_errors_name_the_file_and_line(tmp_path, text, words):
    path = tmp_path / "detection.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        alerts.load_config(path)
    assert str(e.value).startswith(str(path)) and words in str(e.value)


def test_flow_publishes_alerts(prefect_harness, ingested, tmp_path):
    from flows.detect import detect_alerts

    wh = copy(ingested, tmp_path / "wh")
    summary = detect_alerts(str(wh))
    assert summary["status"] == "published" and summary["series"] == 71
    assert read.dataset(wh, "alerts").select(pl.len()).collect().item() == summary["rows"]
    assert detect_alerts(str(wh))["status"] == "unchanged"


def test_the_alerts_command_publishes_what_the_flow_computes(ingested, detected, tmp_path):
    """`vigila alerts` (the weekly detection as a command, no Prefect API): the same `alerts` rows as
    run_detection; a second run publishes nothing; --config narrows the methods; a bad --as-of is refused."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}

    def vigila(*args):
        return subprocess.run([sys.executable, "-m", "vigila.cli", "alerts", *map(str, args)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    wh = copy(ingested, tmp_path / "wh")
    run = vigila("--warehouse", wh)
    assert run.returncode == 0, run.stderr
    assert "(published): 71 series" in run.stdout and "PREFECT_API_URL" in run.stdout
    key = ["method", "series_id", "week_start"]
    got = read.dataset(wh, "alerts").collect().drop("run_id", "computed_at").sort(key)
    assert got.equals(detected[2].drop("run_id", "computed_at").sort(key))
    again = vigila("--warehouse", wh, "--quiet")
    assert again.returncode == 0 and "(unchanged)" in again.stdout
    (cfg := tmp_path / "c1.yaml").write_text("methods:\n  - method: ears\n    params: {method: C1}\n")
    narrowed = vigila("--warehouse", wh, "--config", cfg, "--quiet")
    assert narrowed.returncode == 0, narrowed.stderr
    assert read.dataset(wh, "alerts").select(pl.col("method").unique()).collect()["method"].to_list() == ["ears_C1"]
    bad = vigila("--warehouse", wh, "--as-of", "2024-13-01")
    assert bad.returncode == 2 and "--as-of" in bad.stderr


def _reference_runs(rows: list[dict]) -> dict:
    """(a, b, week_start) -> (segment, t), by walking each series' sorted weeks in Python."""
    out, by = {}, {}
    for r in rows:
        by.setdefault((r["a"], r["b"]), []).append(r["week_start"])
    for key, weeks in by.items():
        segment, t, prev = 0, 0, None
        for w in sorted(weeks):
            if prev is not None and (w - prev).days != 7:
                segment, t = segment + 1, 0
            t += 1
            out[(*key, w)] = (segment, t)
            prev = w
    return out


def test_series_runs_and_weekly_sums_match_a_plain_walk():
    """`runs` and `_sum_weeks` find series and unbroken runs by comparing sorted neighbours (no window, no text
    hash): on random series with null keys, gaps and repeated weeks they give what a plain walk gives."""
    import numpy as np

    rng = np.random.default_rng(20261203)
    for trial in range(150):
        n = int(rng.integers(1, 200))
        frame = pl.DataFrame({
            "a": pl.Series(rng.choice(["x", "y", "z"], n)).replace("z", None), "b": rng.choice(["p", "q"], n),
            "week_start": [dt.date(2020, 1, 5) + dt.timedelta(weeks=int(w)) for w in rng.integers(0, 30, n)],
            "geo_name": [f"n{i}" for i in range(n)], "epi_year": 2020, "epi_week": 1, "cases": rng.integers(0, 9, n)})
        key = ["a", "b", "week_start"]
        summed = alerts._sum_weeks(frame, key)
        want = frame.group_by(key).agg(pl.col("geo_name").first(), pl.col("cases").sum())   # first: input order
        assert summed.select(want.columns).sort(key, nulls_last=True).equals(want.sort(key, nulls_last=True)), trial
        assert summed.equals(summed.sort(key, maintain_order=True)) and not summed["imputed"].any()
        got = alerts.runs(summed.sample(fraction=1.0, shuffle=True, seed=trial), ["a", "b"])
        ref = _reference_runs(summed.to_dicts())
        assert {(r["a"], r["b"], r["week_start"]): (r["segment"], r["t"]) for r in got.iter_rows(named=True)} == ref, trial
