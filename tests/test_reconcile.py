"""Reconciliation: rules on small frames (every mode, basis, provenance and tolerance edge), the
config, the idempotent publish, and the two real Peru reporters (MINSA line list vs PAHO)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from schemas.harmonised import CasesWeekly
from schemas.outputs import CasesReconciled, Discrepancy
from vigila.core import epiweek
from vigila.ingest import pipeline
from vigila.warehouse import publish, read
from vigila.regional import reconcile
from vigila.config import ConfigError, load_source
from vigila.warehouse.storage import Storage

from conftest import SOURCES

LL, PAHO = "per_minsa_dengue_linelist", "paho_opendengue_national"
COLUMNS = list(CasesWeekly.to_schema().columns)


# --------------------------------------------------------------------------- small frames


def rows(source: str, counts: dict[int, int], *, country: str = "PER", level: str = "admin0", code: str | None = None,
         disease: str = "dengue", convention: str = "mmwr", year: int = 2021, split: bool = False) -> pl.DataFrame:
    """cases_weekly rows of one reporter and place: {epi_week: cases} in `year`. `split`: two rows per
    week (female/male) instead of one total, to check the weekly total is the sum."""
    code = code or country
    weeks = epiweek.week_starts(pl.DataFrame({"epi_year": [year] * len(counts), "epi_week": list(counts)},
                                             schema={"epi_year": pl.Int32, "epi_week": pl.Int32}), convention)
    out = []
    for (w, n) in counts.items():
        start = weeks.filter(pl.col("epi_week") == w)["week_start"][0]
        parts = [("female", n // 2), ("male", n - n // 2)] if split else [("all", n)]
        out += [dict(country_iso3=country, geo_level=level, geo_code=code, geo_name=f"name {code}",
                     admin1_code=code if level == "admin1" else None, admin1_name=f"name {code}" if level == "admin1" else None,
                     disease=disease, classification="total", sex=sex, age_group="all", age_band_source=None,
                     epi_year=year, epi_week=w, week_start=start,
                     cases=c, deaths=None, source_id=source, reporter_type="ministry", issue_date=dt.date(2024, 1, 1),
                     run_id="r") for sex, c in parts]
    return pl.DataFrame(out).select(COLUMNS).cast({"epi_year": pl.Int32, "epi_week": pl.Int32, "cases": pl.Int64,
                                                   "deaths": pl.Int64, "admin1_code": pl.Utf8, "admin1_name": pl.Utf8,
                                                   "age_band_source": pl.Utf8})


def config(**countries) -> reconcile.ReconcileConfig:
    return reconcile.ReconcileConfig.model_validate({"tolerance": 0.10, "min_difference": 10, "countries": countries})


def rule(*sources: str, mode: str = "authoritative", **more) -> dict:
    return {"mode": mode, "reporters": [s if isinstance(s, dict) else {"source": s} for s in sources], **more}


def run(frames: list[pl.DataFrame], cfg: reconcile.ReconcileConfig):
    rec, disc, problems = reconcile.reconcile(pl.concat(frames), cfg)
    return rec.sort(reconcile.WEEK), disc, problems


def test_authoritative_first_reporter_others_cross_check_and_fallback_fills_gaps():
    a, b = rows("a", {1: 100, 2: 50, 4: 7}), rows("b", {1: 104, 2: 80, 3: 9, 4: 0})
    rec, disc, problems = run([a, b], config(PER=rule("a", "b")))
    assert rec.select("epi_week", "cases", "basis", "sources", "cross_checks").rows() == [
        (1, 100, "authoritative", "a", "b"), (2, 50, "authoritative", "a", "b"),
        (3, 9, "fallback", "b", None), (4, 7, "authoritative", "a", "b")]
    assert problems == []
    # every week both report is compared, a = the authoritative one
    assert disc.select("epi_week", "source_a", "cases_a", "source_b", "cases_b", "difference").rows() == [
        (1, "a", 100, "b", 104, 4), (2, "a", 50, "b", 80, 30), (4, "a", 7, "b", 0, -7)]
    assert disc["relative_difference"].to_list() == pytest.approx([4 / 104, 30 / 80, -1.0])
    # 100 vs 104: within 10%; 50 vs 80: 37.5% and 30 cases apart; 7 vs 0: 100% but under the 10-case floor
    assert disc["exceeds"].to_list() == [False, True, False]


def test_fallback_off_leaves_the_gap_out_and_says_so():
    a, b = rows("a", {1: 100}), rows("b", {1: 90, 2: 80})
    rec, _, problems = run([a, b], config(PER=rule("a", "b", fallback=False)))
    assert rec["epi_week"].to_list() == [1]
    assert [(p["check"], p["row"]["geo_code"]) for p in problems] == [("no_authoritative_count", "PER")]
    assert "1 weeks left out" in problems[0]["value"]


def test_complementary_reporters_are_summed_and_never_compared():
    ministry, social = rows("ministry", {1: 100, 2: 40}), rows("social", {1: 30})
    rec, disc, _ = run([ministry, social], config(PER=rule("ministry", "social", mode="complementary")))
    assert rec.select("epi_week", "cases", "basis", "sources", "cross_checks").rows() == [
        (1, 130, "sum", "ministry,social", None), (2, 40, "sum", "ministry", None)]
    assert disc.height == 0


def test_country_without_rule_passes_one_reporter_through_and_flags_two():
    one = rows("x", {1: 5, 2: 6}, country="BOL", split=True)  # classification/sex rows summed per week
    two = [rows("p", {1: 10}, country="ECU"), rows("q", {1: 12}, country="ECU")]
    rec, disc, problems = run([one, *two], config())
    assert rec.select("country_iso3", "cases", "basis", "sources", "cross_checks").rows() == [
        ("BOL", 5, "single", "x", None), ("BOL", 6, "single", "x", None)]
    assert [(p["check"], p["row"]["country_iso3"], p["value"]) for p in problems] == [
        ("no_rule", "ECU", "reported by p,q; not reconciled (add the country)")]
    # the two ECU reporters are still compared, alphabetically
    assert disc.select("source_a", "source_b", "exceeds").rows() == [("p", "q", False)]
    with pytest.raises(ValueError, match="ECU admin0 ECU dengue: reported by p, q"):
        reconcile.reconcile(pl.concat([one, *two]), config().model_copy(update={"unlisted": "error"}))


def test_national_from_admin1_is_the_declared_sum_and_never_silent():
    lin = [rows("ll", {1: 7, 2: 3}, level="admin1", code="PE-LOR"), rows("ll", {1: 5}, level="admin1", code="PE-PIU")]
    paho = rows("paho", {1: 13, 2: 3})
    declared = config(PER=rule({"source": "ll", "national_from": "admin1"}, "paho"))
    rec, disc, problems = run([*lin, paho], declared)
    national = rec.filter(pl.col("geo_level") == "admin0")
    assert national.select("epi_week", "cases", "basis", "sources", "cross_checks", "geo_name").rows() == [
        (1, 12, "authoritative", "ll", "paho", "name PER"), (2, 3, "authoritative", "ll", "paho", "name PER")]
    # departamentos: only the line list covers them, so it is authoritative there (not a fallback)
    admin1 = rec.filter(pl.col("geo_level") == "admin1")
    assert admin1.select("geo_code", "epi_week", "cases", "basis", "cross_checks").rows() == [
        ("PE-LOR", 1, 7, "authoritative", None), ("PE-LOR", 2, 3, "authoritative", None),
        ("PE-PIU", 1, 5, "authoritative", None)]
    assert disc.select("geo_level", "epi_week", "cases_a", "cases_b").rows() == [("admin0", 1, 12, 13), ("admin0", 2, 3, 3)]
    assert problems == []
    # without the declaration the line list has no national figure: PAHO is the only one, and it is said
    rec, disc, problems = run([*lin, paho], config(PER=rule("ll", "paho")))
    national = rec.filter(pl.col("geo_level") == "admin0")
    assert national.select("cases", "basis", "sources").rows() == [(13, "authoritative", "paho"), (3, "authoritative", "paho")]
    assert disc.height == 0
    assert [(p["check"], p["row"]["source_id"]) for p in problems] == [("no_national_figure", "ll")]


def test_own_admin0_rows_replaced_by_declared_sum_are_reported():
    ll = [rows("ll", {1: 7}, level="admin1", code="PE-LOR"), rows("ll", {1: 99})]
    rec, _, problems = run(ll, config(PER=rule({"source": "ll", "national_from": "admin1"})))
    assert rec.filter(pl.col("geo_level") == "admin0")["cases"].to_list() == [7]
    assert [p["check"] for p in problems] == ["national_replaced"]


def test_unconfigured_reporter_of_a_listed_country_is_left_out_and_said():
    rec, _, problems = run([rows("a", {1: 5}), rows("stray", {1: 6, 2: 7})], config(PER=rule("a")))
    assert rec.select("epi_week", "sources").rows() == [(1, "a")]
    assert [(p["check"], p["row"]["source_id"]) for p in problems] == [("reporter_not_configured", "stray")]


def test_mmwr_and_iso_weeks_matched_in_a_year_where_their_labels_coincide():
    # 2021: MMWR and ISO week 10 are the same calendar week (Sunday Mar 7 / Monday Mar 8)
    mmwr, iso = rows("a", {10: 100}, convention="mmwr"), rows("b", {10: 100, 11: 50}, convention="iso")
    assert mmwr["week_start"][0].isoweekday() == 7 and iso["week_start"][0].isoweekday() == 1
    rec, disc, _ = run([mmwr, iso], config(PER=rule("a", "b")))
    assert rec.select("epi_week", "week_start", "sources", "cross_checks").rows() == [
        (10, mmwr["week_start"][0], "a", "b"), (11, iso["week_start"][1], "b", None)]
    assert disc.select("epi_week", "week_start", "difference").rows() == [(10, mmwr["week_start"][0], 0)]


def valid(rec: pl.DataFrame, disc: pl.DataFrame) -> None:
    """Both frames pass their published schemas, unique keys included."""
    stamp = [pl.lit("r").alias("run_id"), pl.lit(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)).alias("computed_at")]
    CasesReconciled.validate(rec.with_columns(stamp).select(reconcile.RECONCILED_COLUMNS))
    Discrepancy.validate(disc.with_columns(stamp[0]).select(reconcile.DISCREPANCY_COLUMNS))


def test_mmwr_and_iso_reporters_pair_calendar_weeks_where_the_labels_diverge():
    # MMWR 2025 has 53 weeks, ISO 2025 has 52: from Sunday 2025-12-28 on, the same calendar week is
    # MMWR 2025-W53 / ISO 2026-W01, MMWR 2026-W01 / ISO 2026-W02, ...
    mmwr = pl.concat([rows("a", {51: 100, 52: 200, 53: 300}, year=2025), rows("a", {1: 400, 2: 500}, year=2026)])
    iso = pl.concat([rows("b", {51: 101, 52: 202}, year=2025, convention="iso"),
                     rows("b", {1: 303, 2: 404, 3: 505, 4: 606}, year=2026, convention="iso")])
    d = dt.date
    assert iso.filter(pl.col("epi_year") == 2026, pl.col("epi_week") == 1)["week_start"][0] == d(2025, 12, 29)
    assert mmwr.filter(pl.col("epi_year") == 2026, pl.col("epi_week") == 1)["week_start"][0] == d(2026, 1, 4)
    rec, disc, problems = run([mmwr, iso], config(PER=rule("a", "b")))
    assert problems == []
    # one row per calendar week, labelled as the reporter whose count is used labels it
    assert rec.select("epi_year", "epi_week", "week_start", "cases", "basis", "cross_checks").rows() == [
        (2025, 51, d(2025, 12, 14), 100, "authoritative", "b"), (2025, 52, d(2025, 12, 21), 200, "authoritative", "b"),
        (2025, 53, d(2025, 12, 28), 300, "authoritative", "b"), (2026, 1, d(2026, 1, 4), 400, "authoritative", "b"),
        (2026, 2, d(2026, 1, 11), 500, "authoritative", "b"), (2026, 4, d(2026, 1, 19), 606, "fallback", None)]
    # each MMWR week compared with the ISO week that starts the next day, labelled in a's convention
    assert disc.select("epi_year", "epi_week", "week_start", "cases_a", "cases_b").rows() == [
        (2025, 51, d(2025, 12, 14), 100, 101), (2025, 52, d(2025, 12, 21), 200, 202),
        (2025, 53, d(2025, 12, 28), 300, 303), (2026, 1, d(2026, 1, 4), 400, 404), (2026, 2, d(2026, 1, 11), 500, 505)]
    valid(rec, disc)
    # ISO first: the same pairs, labelled in ISO weeks; MMWR 2025-W53 is never compared with anything else
    rec, disc, _ = run([mmwr, iso], config(PER=rule("b", "a")))
    assert disc.select("epi_year", "epi_week", "week_start", "cases_a", "cases_b").rows() == [
        (2025, 51, d(2025, 12, 15), 101, 100), (2025, 52, d(2025, 12, 22), 202, 200),
        (2026, 1, d(2025, 12, 29), 303, 300), (2026, 2, d(2026, 1, 5), 404, 400), (2026, 3, d(2026, 1, 12), 505, 500)]
    assert rec["epi_week"].to_list() == [51, 52, 1, 2, 3, 4] and rec["basis"].unique().to_list() == ["authoritative"]
    valid(rec, disc)


def test_labels_that_name_another_calendar_week_are_relabelled_never_duplicated():
    # a (MMWR, first) has only 2026-W02 (Jan 11); b (ISO) fills Dec 29 (its 2026-W01) and Jan 5 (its 2026-W02).
    # Kept as they are, b's 2026-W02 would collide with a's: it becomes MMWR 2026-W01, which would then
    # collide with b's own 2026-W01, which becomes MMWR 2025-W53.
    a = rows("a", {2: 70}, year=2026)
    b = rows("b", {1: 10, 2: 20}, year=2026, convention="iso")
    rec, disc, problems = run([a, b], config(PER=rule("a", "b")))
    d = dt.date
    assert rec.select("epi_year", "epi_week", "week_start", "cases", "basis", "sources").rows() == [
        (2025, 53, d(2025, 12, 28), 10, "fallback", "b"), (2026, 1, d(2026, 1, 4), 20, "fallback", "b"),
        (2026, 2, d(2026, 1, 11), 70, "authoritative", "a")]
    assert [(p["check"], p["row"]["source_id"]) for p in problems] == [("week_relabelled", "b")]
    assert problems[0]["value"].startswith("2 weeks used from b relabelled as MMWR (Sunday) weeks")
    assert disc.height == 0
    valid(rec, disc)


def test_weeks_starting_on_another_weekday_are_left_out_and_said():
    # a DHIS2-style reporter whose weeks start on Wednesday: three days off either convention
    wed = rows("c", {10: 90, 11: 95}).with_columns(pl.col("week_start") + pl.duration(days=3))
    assert set(wed["week_start"].dt.weekday()) == {3}
    rec, disc, problems = run([rows("a", {10: 100}), wed], config(PER=rule("a", "c")))
    assert rec.select("epi_week", "cases", "basis", "sources", "cross_checks").rows() == [(10, 100, "authoritative", "a", None)]
    assert disc.height == 0
    assert [(p["check"], p["column"], p["row"]) for p in problems] == [
        ("week_start_weekday", "week_start", {"country_iso3": "PER", "disease": "dengue", "source_id": "c"})]
    assert problems[0]["value"].startswith("2 place-weeks left out: weeks start on Wednesday")
    # alone in a country without a rule nothing is matched: it passes through as it is
    rec, _, problems = run([wed.with_columns(pl.lit("BOL").alias("country_iso3"), pl.lit("BOL").alias("geo_code"))], config())
    assert rec.select("week_start", "basis").rows() == [(w, "single") for w in wed["week_start"]] and problems == []


@pytest.mark.parametrize("a, b, exceeds", [
    (1, 2, False),       # 50% apart but 1 case: under the absolute floor
    (0, 0, False),       # nothing to compare: relative difference null
    (100, 111, False),   # 11 cases, 9.9%: within the relative tolerance
    (100, 112, True),    # 12 cases, 10.7%: beyond both
    (90, 100, False),    # exactly 10%: not beyond
    (200, 180, False),   # 20 cases, -10%: not beyond
    (200, 170, True),    # -15% and 30 cases
    (30, 40, False),     # 25% apart, 10 cases: not beyond the floor (strictly more is needed)
    (30, 41, True),
])
def test_tolerance_edges(a, b, exceeds):
    _, disc, _ = run([rows("a", {1: a}), rows("b", {1: b})], config(PER=rule("a", "b")))
    assert disc["exceeds"].to_list() == [exceeds]
    rel = disc["relative_difference"][0]
    assert (rel is None) if a == b == 0 else rel == pytest.approx((b - a) / max(a, b))
    assert disc.select("tolerance", "min_difference").row(0) == (0.10, 10)


def test_country_and_disease_overrides():
    cfg = config(PER=rule("a", "b", tolerance=0.5, min_difference=0,
                          diseases={"zika": {"mode": "complementary"}, "chikungunya": {"reporters": [{"source": "b"}, {"source": "a"}]}}))
    frames = [rows(s, {1: n}, disease=d) for d in ("dengue", "zika", "chikungunya") for s, n in (("a", 10), ("b", 16))]
    rec, disc, _ = run(frames, cfg)
    got = {r["disease"]: (r["cases"], r["basis"], r["sources"]) for r in rec.iter_rows(named=True)}
    assert got == {"dengue": (10, "authoritative", "a"), "zika": (26, "sum", "a,b"), "chikungunya": (16, "authoritative", "b")}
    # 6 cases, 37.5% apart: beyond the floor of 0 but within the country's tolerance of 50%
    assert disc.select("disease", "source_a", "tolerance", "min_difference", "exceeds").sort("disease").rows() == [
        ("chikungunya", "b", 0.5, 0, False), ("dengue", "a", 0.5, 0, False)]


# --------------------------------------------------------------------------- config


def test_default_config_makes_the_line_list_authoritative_for_peru():
    cfg = reconcile.load_config()
    per = cfg.rule("PER", "dengue")
    assert per is not None and per.mode == "authoritative" and per.fallback
    assert [(r.source, r.national_from) for r in per.reporters] == [(LL, "admin1"), (PAHO, "admin0")]
    assert cfg.rule("BRA", "dengue") is None


def test_config_layered_over_defaults(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("tolerance: 0.2\ncountries:\n  PER:\n    fallback: false\n")
    cfg = reconcile.load_config(path)
    per = cfg.rule("PER", "dengue")
    assert cfg.tolerance == 0.2 and per.tolerance == 0.2 and not per.fallback
    assert [r.source for r in per.reporters] == [LL, PAHO]  # the rest of the default rule is kept


@pytest.mark.parametrize("text, words", [
    ("countries:\n  Peru:\n    mode: authoritative\n    reporters: [{source: a}]\n", ["r.yaml:1", "ISO 3166-1 alpha-3"]),
    ("countries:\n  BOL:\n    mode: authoritative\n    reporters:\n      - source: a\n      - source: a\n",
     ["r.yaml:4", "countries.BOL.reporters", "listed twice"]),
    ("countries:\n  BOL:\n    mode: both\n    reporters: [{source: a}]\n", ["r.yaml:3", "countries.BOL.mode"]),
    ("countries:\n  BOL:\n    mode: authoritative\n    reporters: [{source: a, national_from: admin2}]\n",
     ["r.yaml:4", "national_from"]),
    ("tolerence: 0.2\n", ["r.yaml:1", "tolerence"]),
    ("countries:\n  BOL:\n    mode: authoritative\n    reporters: [{source: a}]\n    diseases: {dengu: {}}\n", ["dengu"]),
])
def test_config_errors_name_the_file_and_line(tmp_path, text, words):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        reconcile.load_config(path)
    assert all(w in str(e.value) for w in words), str(e.value)


# --------------------------------------------------------------------------- real Peru reporters


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    wh = tmp_path_factory.mktemp("reconcile") / "warehouse"
    for name in ("paho_opendengue_national.yaml", "per_minsa_dengue_linelist.yaml"):
        cfg = load_source(SOURCES / name)
        pipeline.ingest(cfg, cfg.location, wh, issue_date=dt.date(2025, 1, 10))
    return wh


@pytest.fixture(scope="module")
def reconciled(ingested):
    summary = reconcile.run_reconciliation(ingested, reconcile.load_config(), run_id="rec-1")
    return (summary, read.dataset(ingested, "cases_reconciled").collect(),
            read.dataset(ingested, "discrepancies").collect())


def test_publishes_both_datasets_valid_with_provenance(reconciled, ingested):
    summary, rec, disc = reconciled
    assert summary["status"] == "published" and summary["problems"] == []
    CasesReconciled.validate(rec.select(reconcile.RECONCILED_COLUMNS))
    Discrepancy.validate(disc.select(reconcile.DISCREPANCY_COLUMNS))
    assert set(rec["run_id"]) == set(disc["run_id"]) == {"rec-1"}
    storage = Storage.open(ingested)
    version = publish.current_manifest(storage, "cases_weekly").version
    for name in ("cases_reconciled", "discrepancies"):
        m = publish.current_manifest(storage, name)
        assert m.extra["input"] == version == summary["cases_weekly_version"]
        assert m.extra["config"]["countries"]["PER"]["reporters"][0]["source"] == LL
    # every other country has one reporter: passed through
    assert set(rec.filter(pl.col("country_iso3") != "PER")["basis"]) == {"single"}
    assert summary["rows"] == rec.height and summary["discrepancies"] == disc.height


def test_peru_national_series_uses_the_line_list_with_paho_as_cross_check(reconciled):
    _, rec, disc = reconciled
    per = rec.filter(pl.col("country_iso3") == "PER", pl.col("geo_level") == "admin0").sort("week_start")
    auth = per.filter(pl.col("basis") == "authoritative")
    # the line list's whole period, 2019-W01 (starting 2018-12-30) .. 2022-W52, week by week (no-case weeks count 0)
    assert set(auth["sources"]) == {LL}
    assert (auth["week_start"].min(), auth["week_start"].max(), auth.height) == (dt.date(2018, 12, 30), dt.date(2022, 12, 25), 209)
    # PAHO is the cross-check wherever it has the week (all but 2020, which PAHO gives as a yearly total only)
    checked = auth.filter(pl.col("cross_checks") == PAHO)
    assert checked.height == disc.filter(pl.col("country_iso3") == "PER").height == 157
    assert auth.filter(pl.col("cross_checks").is_null())["epi_year"].unique().to_list() == [2020]
    # PAHO fills the years before and after, as fallback
    fallback = per.filter(pl.col("basis") == "fallback")
    assert set(fallback["sources"]) == {PAHO} and fallback["cross_checks"].null_count() == fallback.height
    assert fallback.filter(pl.col("week_start").is_between(dt.date(2018, 12, 30), dt.date(2022, 12, 25))).height == 0
    assert (fallback["week_start"].min(), fallback["week_start"].max()) == (dt.date(2000, 1, 2), dt.date(2023, 12, 31))
    # the national line-list figure is the sum of its departamentos (declared national_from: admin1)
    dept = (rec.filter(pl.col("country_iso3") == "PER", pl.col("geo_level") == "admin1")
            .group_by("epi_year", "epi_week").agg(pl.col("cases").sum().alias("dept")))
    both = auth.join(dept, on=["epi_year", "epi_week"])
    assert both.height == 209 and (both["cases"] == both["dept"]).all()
    assert rec.filter(pl.col("geo_level") == "admin1", pl.col("country_iso3") == "PER")["geo_code"].n_unique() == 21


def test_peru_line_list_runs_below_paho_and_large_gaps_are_listed(reconciled, ingested):
    _, _, disc = reconciled
    per = disc.filter(pl.col("country_iso3") == "PER")
    assert set(zip(per["source_a"], per["source_b"])) == {(LL, PAHO)}
    # both feeds count Sunday-Saturday (MMWR) weeks: each shared week starts on the same Sunday in both
    paho = (read.cases_weekly(ingested).filter(pl.col("source_id") == PAHO, pl.col("country_iso3") == "PER")
            .select("epi_year", "epi_week", "week_start").unique().collect())
    same = per.join(paho, on=["epi_year", "epi_week"], suffix="_paho")
    assert same.height == 157 and (same["week_start"] == same["week_start_paho"]).all()
    assert (per["week_start"].dt.weekday() == 7).all()
    rel = per["relative_difference"]  # (PAHO - line list) / the larger: > 0 when the line list is below
    # measured: the line list is below PAHO in 138 of 157 weeks, by a median of 10.1%
    assert (rel > 0).sum() >= 0.85 * per.height
    assert 0.08 <= rel.median() <= 0.12
    # 2021 weeks 1-33 (PAHO's cleanest stretch): every week 3-10% below, most within the 2-7% quoted for these feeds
    early = per.filter(pl.col("epi_year") == 2021, pl.col("epi_week") <= 33)["relative_difference"]
    assert early.len() == 33 and early.min() > 0.03 and early.max() < 0.10
    assert early.is_between(0.02, 0.07).sum() >= 0.7 * early.len()
    # later weeks drift further apart (late 2022: 20-30%), and PAHO's 2019 weekly differences of cumulative
    # reports are noisy: those weeks are the ones listed beyond tolerance
    flagged = per.filter("exceeds")
    rule = (pl.col("difference").abs() > 10) & (pl.col("relative_difference").abs() > 0.10)
    assert per.filter(rule).height == flagged.height and flagged.height >= 90
    assert not early.gt(0.10).any() and per.filter(pl.col("epi_year") == 2021, pl.col("epi_week") <= 33)["exceeds"].sum() == 0
    assert flagged.filter(pl.col("epi_year") == 2022, pl.col("epi_week").is_between(45, 50)).height == 6
    # yearly, the line list is 9-14% below PAHO
    years = per.group_by("epi_year").agg(pl.col("cases_a").sum(), pl.col("cases_b").sum()).filter(pl.col("epi_year") != 2020)
    assert all(0.08 < 1 - a / b < 0.14 for a, b in years.select("cases_a", "cases_b").iter_rows())


def test_rerun_is_idempotent_force_and_config_change_publish(reconciled, ingested):
    storage = Storage.open(ingested)
    before = {n: publish.current_manifest(storage, n).version for n in ("cases_reconciled", "discrepancies")}
    again = reconcile.run_reconciliation(ingested, reconcile.load_config(), run_id="rec-2")
    assert again["status"] == "unchanged" and again["version"] == before["cases_reconciled"]
    assert again["exceeding"] == reconciled[0]["exceeding"]
    assert {n: publish.current_manifest(storage, n).version for n in before} == before
    # a run stopped between the two commits: only the stale dataset is published again
    cfg = reconcile.load_config().model_copy(update={"tolerance": 0.2})
    reconcile.run_reconciliation(ingested, cfg, run_id="rec-3")
    publish.commit(storage, "cases_reconciled", partition_by=["country_iso3"], schema_version="1.0.0", run_id="x",
                   replace_all=read.dataset(ingested, "cases_reconciled").collect(), extra={})
    disc_version = publish.current_manifest(storage, "discrepancies").version
    healed = reconcile.run_reconciliation(ingested, cfg, run_id="rec-4")
    assert healed["status"] == "published" and healed["discrepancies_version"] == disc_version
    assert set(read.dataset(ingested, "cases_reconciled").collect()["run_id"]) == {"rec-4"}
    assert healed["exceeding"] < reconciled[0]["exceeding"]  # a wider tolerance lists fewer weeks
    forced = reconcile.run_reconciliation(ingested, cfg, run_id="rec-5", force=True)
    assert forced["status"] == "published" and forced["discrepancies_version"] != disc_version
