"""vigila.warehouse.read on a warehouse of the bundled real sources: each filter against an independent polars
read of the version's Parquet files, `as_of` over two issues and two published versions, errors, and
the README's read snippets (docs/snippets/, included verbatim) run as written."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from schemas.harmonised import KEY
from vigila.detect import alerts
from vigila.ingest import completeness
from vigila.regional import reconcile
from vigila.ingest import pipeline
from vigila.warehouse import publish, read
from vigila.config import load_source
from vigila.warehouse.storage import Storage

from conftest import DEMO, ROOT, SOURCES

FIRST, SECOND = dt.date(2025, 1, 10), dt.date(2025, 2, 10)
PAHO, PERU = "paho_opendengue_national", "per_minsa_dengue_linelist"
SNIPPETS = ROOT / "docs" / "snippets"
BUMP = 1000  # the second issue revises Peru's first five weeks of 2023 upwards by this


def revised_paho(path: Path) -> Path:
    """The OpenDengue file with Peru's 2023 weeks 1-5 (weekly rows) raised by BUMP: a later issue."""
    raw = pl.read_csv(DEMO / "opendengue_paho_national_v1_3.csv.gz", infer_schema_length=0)
    hit = ((pl.col("ISO_A0") == "PER") & (pl.col("T_res") == "Week")
           & pl.col("calendar_start_date").is_between(pl.lit("2023-01-01"), pl.lit("2023-01-29")))
    assert raw.filter(hit).height == 5
    out = raw.with_columns(pl.when(hit).then((pl.col("dengue_total").cast(pl.Int64) + BUMP).cast(pl.String))
                           .otherwise(pl.col("dengue_total")).alias("dengue_total"))
    with gzip.open(path, "wb") as f:
        out.write_csv(f)
    return path


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    """PAHO + Peru line list issued FIRST, PAHO revised on SECOND; `reporting` published twice
    (moments between and after recorded), `alerts` by EARS C2 only, `cases_reconciled`/`discrepancies`."""
    tmp = tmp_path_factory.mktemp("read")
    wh = tmp / "warehouse"
    paho, peru = load_source(SOURCES / f"{PAHO}.yaml"), load_source(SOURCES / f"{PERU}.yaml")
    for cfg in (paho, peru):
        pipeline.ingest(cfg, cfg.location, wh, issue_date=FIRST)
    pipeline.ingest(paho, revised_paho(tmp / "paho_revised.csv.gz"), wh, issue_date=SECOND)
    first = completeness.publish_completeness(wh, [paho, peru], dt.datetime(2024, 2, 15, tzinfo=dt.UTC))
    between = dt.datetime.now(dt.UTC)
    second = completeness.publish_completeness(wh, [paho, peru], dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
    config = tmp / "ears.yaml"
    config.write_text("methods:\n  - method: ears\n    params: {method: C2, baseline: 7, alpha: 0.001}\n")
    alerts.run_detection(Storage.open(wh), alerts.load_config(config), run_id="read-test")
    reconcile.run_reconciliation(wh, reconcile.load_config(), run_id="read-test")
    return {"path": wh, "reporting": (first, second), "between": between}


def raw(wh, name: str) -> pl.DataFrame:
    """Independent read: every Parquet file of the current version, hive partitions parsed by polars."""
    uri = publish.current_uri(Storage.open(wh["path"]), name)
    return pl.read_parquet(f"{uri}/**/*.parquet", hive_partitioning=True)


def same(got: pl.DataFrame, want: pl.DataFrame, key: list[str]) -> None:
    assert got.height == want.height and got.height > 0
    cols = sorted(set(got.columns) & set(want.columns) - {"country_iso3", "disease", "source_id", "method"})
    assert got.sort(key).select(cols).equals(want.sort(key).select(cols))


ORDINAL = pl.col("epi_year") * 100 + pl.col("epi_week")
CASES = [  # (filters, independent predicate on the raw files)
    ({"country": ["Peru", "BR"]}, pl.col("country_iso3").is_in(["PER", "BRA"])),
    ({"country": "pe", "disease": "Dengue"}, (pl.col("country_iso3") == "PER") & (pl.col("disease") == "dengue")),
    ({"weeks": ("2023-W01", "2023-W10")}, ORDINAL.is_between(202301, 202310)),
    ({"weeks": 2022}, pl.col("epi_year") == 2022),
    ({"weeks": "2021-W07", "source": PERU}, (ORDINAL == 202107) & (pl.col("source_id") == PERU)),
    ({"weeks": (None, (2005, 20)), "country": "MEX"}, (ORDINAL <= 200520) & (pl.col("country_iso3") == "MEX")),
    ({"weeks": (dt.date(2023, 3, 15), "2023-04-30")},  # weeks containing these dates, by week_start
     (pl.col("week_start") + dt.timedelta(days=6) >= dt.date(2023, 3, 15)) & (pl.col("week_start") <= dt.date(2023, 4, 30))),
]


@pytest.mark.parametrize("filters, predicate", CASES, ids=[str(f) for f, _ in CASES])
def test_cases_weekly_filters_equal_an_independent_filter_of_the_files(wh, filters, predicate):
    everything = raw(wh, "cases_weekly")
    want = everything.filter(predicate)
    assert 0 < want.height < everything.height
    same(read.cases_weekly(wh["path"], **filters).collect(), want, KEY)


def test_alerts_and_reporting_filters(wh):
    a = raw(wh, "alerts")
    want = a.filter(pl.col("country_iso3") == "PER", ORDINAL >= 202340)
    same(read.alerts(wh["path"], country="Peru", disease="dengue", weeks=("2023-W40", None)).collect(), want,
         ["series_id", "method", "t"])
    r = raw(wh, "reporting")
    want = r.filter(pl.col("source_id") == PAHO, pl.col("epi_year") == 2023)
    same(read.reporting(wh["path"], source=PAHO, weeks=2023).collect(), want, ["source_id", "week_start"])


def test_reconciled_and_discrepancies_filters(wh):
    r = raw(wh, "cases_reconciled")
    want = r.filter(pl.col("country_iso3").is_in(["PER", "BRA"]), ORDINAL.is_between(202201, 202226))
    same(read.reconciled(wh["path"], country=["PE", "BRA"], weeks=("2022-W01", "2022-W26")).collect(), want,
         ["geo_code", "disease", "epi_year", "epi_week"])
    d = raw(wh, "discrepancies")
    got = read.discrepancies(wh["path"], country="PER", disease="dengue").collect()
    assert got.height == d.filter(pl.col("country_iso3") == "PER", pl.col("disease") == "dengue").height


def test_partition_filters_prune_the_files_read(wh):
    plan = read.cases_weekly(wh["path"], country=["PER", "BOL"], weeks=2023).explain()
    scanned = set(re.findall(r"country_iso3=([A-Z]{3})", plan))
    assert scanned == {"PER", "BOL"}
    assert len(set(re.findall(r"country_iso3=([A-Z]{3})", read.cases_weekly(wh["path"]).explain()))) > 40


def test_as_of_reads_each_issue(wh):
    rev = raw(wh, "cases_revisions").filter(pl.col("source_id") == PAHO, pl.col("country_iso3") == "PER",
                                            pl.col("epi_year") == 2023, pl.col("epi_week") <= 5)
    first = rev.filter(pl.col("issue_date") == FIRST).sort("epi_week")["cases"]
    second = rev.filter(pl.col("issue_date") == SECOND).sort("epi_week")["cases"]
    assert (second - first).to_list() == [BUMP] * 5

    def cases(**kw):
        got = read.cases_weekly(wh["path"], source=PAHO, country="PER", weeks=("2023-W01", "2023-W05"), **kw)
        return got.sort("epi_week").collect()["cases"]

    assert cases(as_of=FIRST).equals(first) and cases(as_of="2025-02-09").equals(first)
    assert cases(as_of=SECOND).equals(second) and cases().equals(second)
    assert read.cases_weekly(wh["path"], as_of=FIRST - dt.timedelta(days=1)).collect().height == 0
    # weeks not revised are the same in both issues and in cases_weekly
    later = read.cases_weekly(wh["path"], country="PER", weeks=("2023-W06", "2023-W20"), as_of=FIRST).collect()
    same(later, raw(wh, "cases_weekly").filter(pl.col("country_iso3") == "PER", ORDINAL.is_between(202306, 202320)), KEY)
    issues = read.revisions(wh["path"], country="PER", source=PAHO, weeks="2023-W03").collect()
    assert sorted(issues["issue_date"].to_list()) == [FIRST, SECOND]
    assert read.revisions(wh["path"], country="PER", source=PAHO, weeks="2023-W03", as_of=FIRST).collect().height == 1


def test_versions_and_as_of_pick_the_version_current_then(wh):
    first, second = wh["reporting"]
    v = read.versions(wh["path"], "reporting")
    assert v["version"].to_list() == [first.version, second.version]
    assert v["current"].to_list() == [False, True] and v["created_at"].is_sorted()
    assert v["rows"].to_list() == [first.rows, second.rows]

    def evaluated(as_of):
        return read.reporting(wh["path"], as_of=as_of).select(pl.col("as_of").unique()).collect()["as_of"].to_list()

    assert evaluated(wh["between"]) == [dt.datetime(2024, 2, 15, tzinfo=dt.UTC)]
    assert evaluated(dt.datetime.now(dt.UTC)) == evaluated(dt.date.today()) == [dt.datetime(2024, 3, 1, tzinfo=dt.UTC)]
    with pytest.raises(ValueError, match="before the oldest stored version"):
        read.reporting(wh["path"], as_of=dt.date.today() - dt.timedelta(days=1))
    assert read.versions(wh["path"], "revisions")["sequence"].to_list() == [1, 2, 3]


def test_history_follows_parents_and_stops_at_vacuumed_versions(tmp_path):
    storage = Storage.open(tmp_path / "wh")
    made = [publish.commit(storage, "d", partition_by=[], schema_version="1", run_id=str(i), keep=2, grace_seconds=0,
                           replace_all=pl.DataFrame({"x": [i]})) for i in range(4)]
    assert [m.version for m in publish.history(storage, "d")] == [m.version for m in made[-3:]]
    assert publish.history(storage, "never") == []


@pytest.mark.parametrize("call, message", [
    (lambda w: read.cases_weekly(w, disease="dengve"), r"unknown disease 'dengve'; known: .*dengue"),
    (lambda w: read.cases_weekly(w, country="Atlantis"), r"unknown country 'Atlantis'.*alpha-3"),
    (lambda w: read.cases_weekly(w, weeks="2023-W99"), r"week in 1\.\.53"),
    (lambda w: read.cases_weekly(w, weeks="last week"), r"bad week 'last week'"),
    (lambda w: read.quarantine(w, disease="dengue"), r"quarantine has no column 'disease'.*source_id"),
    (lambda w: read.reporting(w, country="PER"), r"reporting has no column 'country_iso3'"),
])
def test_clear_errors(wh, call, message):
    with pytest.raises(ValueError, match=message):
        call(wh["path"])


def test_unpublished_dataset_is_named(wh):
    with pytest.raises(FileNotFoundError, match="weekly_summary"):
        read.weekly_summary(wh["path"])
    with pytest.raises(FileNotFoundError, match="no published dataset 'weekly_summary'"):
        read.versions(wh["path"], "weekly_summary")


# -- README snippets ------------------------------------------------------------------------------
@pytest.fixture()
def in_warehouse_parent(wh, tmp_path):
    """A working directory where ./warehouse is the test warehouse, as the snippets assume."""
    os.symlink(wh["path"], tmp_path / "warehouse")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield wh
    os.chdir(cwd)


def run(snippet: str) -> dict:
    text = (SNIPPETS / snippet).read_text()
    assert text in (ROOT / "README.md").read_text(), f"README.md must include docs/snippets/{snippet} verbatim"
    scope: dict = {}
    exec(compile(text, snippet, "exec"), scope)  # noqa: S102 (our own documentation)
    return scope


def test_readme_vigila_snippet(in_warehouse_parent):
    wh = in_warehouse_parent
    got = run("read_vigila.py")
    cw = raw(wh, "cases_weekly")
    same(got["peru_brazil"], cw.filter(pl.col("country_iso3").is_in(["PER", "BRA"]), ORDINAL.is_between(202301, 202310)), KEY)
    assert got["known_then"].filter(pl.col("source_id") == PAHO, pl.col("epi_week") == 1)["issue_date"].item() == FIRST
    assert got["reporting_then"]["as_of"].unique().to_list() == [dt.datetime(2024, 2, 15, tzinfo=dt.UTC)]


def test_readme_duckdb_snippet(in_warehouse_parent):
    got = run("read_duckdb.py")
    want = (raw(in_warehouse_parent, "cases_weekly").filter(pl.col("country_iso3").is_in(["PER", "BRA"]))
            .group_by("country_iso3", "epi_year").agg(pl.col("cases").sum()).sort("country_iso3", "epi_year"))
    assert [(c, y, int(n)) for c, y, n in got["totals"]] == want.rows()
    assert got["peru_2023"] == want.filter(pl.col("country_iso3") == "PER", pl.col("epi_year") == 2023)["cases"].item()


def test_readme_pandas_snippet(in_warehouse_parent):
    got = run("read_pandas.py")
    want = raw(in_warehouse_parent, "cases_weekly").filter(pl.col("country_iso3").is_in(["PER", "BRA"]))
    assert len(got["dengue"]) == want.height and int(got["dengue"]["cases"].sum()) == want["cases"].sum()
    alerts_want = raw(in_warehouse_parent, "alerts").filter(pl.col("country_iso3") == "PER", ORDINAL >= 202340)
    assert len(got["alerts"]) == alerts_want.height > 0


def test_readme_r_snippet_is_included_and_parses():
    text = (SNIPPETS / "read_arrow.R").read_text()
    assert text in (ROOT / "README.md").read_text()
    if shutil.which("Rscript") is None:
        pytest.skip("R not installed (the R arrow snippet is only checked for syntax where R is)")
    subprocess.run(["Rscript", "-e", f"invisible(parse(file='{SNIPPETS / 'read_arrow.R'}'))"], check=True)
