"""Pure harmonisation functions: epi weeks, cumulative -> weekly, line lists, places, duplicates."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from epiweeks import Week

from vigila.core import epiweek
from vigila.ingest import plan
from vigila.ingest import harmonise as hz
from vigila.config import source_from_dict
from vigila.ingest.readers import ROW


def src(**over):
    base = {"id": "t_src", "country": "PER", "reporter": {"institution": "x", "type": "ministry"},
            "diseases": ["dengue"], "columns": {"epi_year": "y", "epi_week": "w", "cases": "c"}}
    base.update(over)
    return source_from_dict(base)


@pytest.mark.parametrize("convention, system", [("mmwr", "cdc"), ("iso", "iso")])
def test_dates_to_epi_weeks_match_epiweeks_over_years_with_week_53(convention, system):
    days = pl.date_range(dt.date(2014, 12, 20), dt.date(2027, 1, 10), eager=True)
    out = epiweek.add_weeks_from_dates(pl.DataFrame({"date": days}), "date", convention)
    expected = [Week.fromdate(d, system=system) for d in days.to_list()]
    assert out["epi_year"].to_list() == [w.year for w in expected]
    assert out["epi_week"].to_list() == [w.week for w in expected]
    assert out["week_start"].to_list() == [w.startdate() for w in expected]
    assert out["epi_week"].max() == 53
    starts = out["week_start"].dt.weekday().unique().to_list()
    assert starts == ([7] if convention == "mmwr" else [1])  # Sunday / Monday


def test_calendar_year_is_not_the_epi_year():
    # OpenDengue's `Year` for the week starting 2022-01-02 is 2022, but 2021-12-26..2022-01-01 is 2021-W52
    out = epiweek.add_weeks_from_dates(pl.DataFrame({"date": [dt.date(2022, 1, 1), dt.date(2021, 1, 2)]}), "date", "mmwr")
    assert out.select("epi_year", "epi_week").rows() == [(2021, 52), (2020, 53)]


def test_week_53_only_exists_in_53_week_years():
    pairs = pl.DataFrame({"epi_year": [2020, 2021, 2021, 2022], "epi_week": [53, 53, 54, 0]},
                         schema={"epi_year": pl.Int32, "epi_week": pl.Int32})
    out = epiweek.add_week_start(pairs, "mmwr")
    assert out["week_start"].to_list() == [dt.date(2020, 12, 27), None, None, None]


def raw(**cols):
    """A batch of text rows as the reader yields them (canonical names, `_row`)."""
    n = len(next(iter(cols.values())))
    return pl.DataFrame({ROW: list(range(1, n + 1)), **{k: [None if v is None else str(v) for v in vs] for k, vs in cols.items()}},
                        schema_overrides={ROW: pl.Int64})


def harmonise(source, **cols):
    good, errors, _ledger = plan.harmonise_batch(raw(**cols), source, hz.Context.build(source))
    return good, errors


def test_week_not_in_year_and_week_54_are_reported_and_the_rest_kept():
    good, errs = harmonise(src(), epi_year=[2021, 2021, 2020, 2021], epi_week=[53, 10, 53, 54], cases=[1, 2, 3, 4])
    assert sorted(good[ROW].to_list()) == [2, 3]
    assert sorted(errs.select(ROW, "check", "value").rows()) == [
        (1, "week_not_in_year", "2021-W53"), (4, "less_than_or_equal_to(53)", "54")]


def test_place_names_are_case_and_accent_insensitive_and_unknown_is_reported():
    s = src(geo_level="admin1", columns={"epi_year": "y", "epi_week": "w", "cases": "c", "place": "p"})
    good, errs = harmonise(s, epi_year=[2023] * 4, epi_week=[1] * 4, cases=[1] * 4,
                           place=["Apurímac", "san martin", "LORETO", "Atlantis"])
    assert good.sort(ROW)["geo_code"].to_list() == ["PE-APU", "PE-SAM", "PE-LOR"]
    assert errs.select(ROW, "check", "value").rows() == [(4, "unknown_place", "Atlantis")]


def test_country_names_to_iso3_and_unknown_country():
    s = src(country=None, columns={"week_start": "d", "cases": "c", "country": "n"})
    good, errs = harmonise(s, week_start=["2023-01-01"] * 3, cases=[5, 6, 7], country=["BOLIVIA", "VIRGIN ISLANDS (US)", "ATLANTIS"])
    assert good.sort(ROW).select("country_iso3", "geo_code").rows() == [("BOL", "BOL"), ("VIR", "VIR")]
    assert errs["check"].to_list() == ["unknown_country"]


def test_multi_country_admin1_places_resolve_per_country():
    s = src(country=None, geo_level="admin1",
            columns={"epi_year": "y", "epi_week": "w", "cases": "c", "country": "n", "place": "p"})
    good, errs = harmonise(s, epi_year=[2024] * 3, epi_week=[5] * 3, cases=[1, 2, 3],
                           country=["Peru", "Mexico", "Peru"], place=["Loreto", "Jalisco", "Jalisco"])
    assert good.sort(ROW)["geo_code"].to_list() == ["PE-LOR", "MX-JAL"]
    assert errs.select(ROW, "check").rows() == [(3, "unknown_place")]


def test_line_list_counts_are_summed_across_batches():
    s = src(shape="line_list", geo_level="admin1",
            columns={"epi_year": "y", "epi_week": "w", "place": "p", "sex": "s", "age": "a"})
    text = raw(epi_year=[2024] * 5, epi_week=[1, 1, 1, 2, 1], place=["Loreto", "LORETO", "Piura", "Loreto", "Loreto"],
               sex=["F", "F", "M", "F", "X"], age=[30, 34, "abc", 3, 31])
    planned = plan.run(text.lazy(), s, hz.Context.build(s), batch_rows=2)
    good, errs, n = planned.rows, planned.errors, planned.rows_read
    assert n == 5
    counts = {(r["geo_code"], r["epi_week"], r["sex"], r["age_group"]): r["cases"] for r in good.to_dicts()}
    assert counts == {("PE-LOR", 1, "female", "30-34"): 2, ("PE-PIU", 1, "male", "unknown"): 1,
                      ("PE-LOR", 2, "female", "00-04"): 1, ("PE-LOR", 1, "unknown", "30-34"): 1}
    # the odd age and sex are warnings: the cases still count, as 'unknown'
    assert sorted(errs.select(ROW, "check", "severity").rows()) == [(3, "type:number", "warning"),
                                                                     (5, "unmapped_sex", "warning")]


def weekly(values, weeks, year=2023):
    return pl.DataFrame({
        ROW: list(range(1, len(values) + 1)), "country_iso3": "PER", "geo_level": "admin0", "geo_code": "PER",
        "geo_name": "Peru", "disease": "dengue", "classification": "total", "sex": "all", "age_group": "all",
        "age_band_source": None, "epi_year": year, "epi_week": weeks, "week_start": None, "cases": values, "deaths": None,
    }, schema_overrides={"epi_year": pl.Int32, "epi_week": pl.Int32, "week_start": pl.Date, "deaths": pl.Int64,
                        "age_band_source": pl.Utf8})


def test_cumulative_to_weekly_keeps_a_decrease_visible():
    out, errs = hz.difference_cumulative(weekly([10, 25, 22, 30], [1, 2, 3, 4]))
    assert out.sort("epi_week").select("epi_week", "cases").rows() == [(1, 10), (2, 15), (4, 8)]
    [err] = errs.to_dicts()
    assert err["check"] == "cumulative_decrease" and err[ROW] == 3 and "weekly -3" in err["value"]


def test_cumulative_gap_and_late_start_cannot_be_attributed():
    out, errs = hz.difference_cumulative(weekly([40, 55, 70], [3, 4, 6]))
    assert out.select("epi_week", "cases").rows() == [(4, 15)]
    assert sorted(errs.select(ROW, "check").rows()) == [(1, "cumulative_gap"), (3, "cumulative_gap")]


def test_value_maps_must_use_controlled_values():
    with pytest.raises(ValueError, match="not one of"):
        hz.value_table("sex", {"M": "hombre"})


def test_excluded_values_are_set_aside_not_errors():
    s = src(shape="line_list", geo_level="admin1", exclude={"classification": ["5"]},
            columns={"epi_year": "y", "epi_week": "w", "place": "p", "classification": "c"},
            value_maps={"classification": {"10": "without_warning_signs"}})
    good, errs = harmonise(s, epi_year=[2024] * 3, epi_week=[1] * 3, place=["Loreto"] * 3, classification=["10", "5", "7"])
    assert good["cases"].sum() == 1
    assert sorted(errs.select(ROW, "check", "severity").rows()) == [
        (2, "excluded_value", "set_aside"), (3, "unmapped_classification", "error")]
