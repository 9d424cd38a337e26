"""Detection input: `series.prepare` (validation, gaps) and `registry` (methods, params, output)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from vigila.detect import ears, registry
from vigila.detect.registry import detect, parse_params, parse_range
from vigila.detect.series import DetectInputError, prepare

from conftest import DEMO

D = dt.date(2019, 1, 6)   # a Sunday


def weeks(*offsets: int, series: str = "A", cases: list | None = None) -> pl.DataFrame:
    return pl.DataFrame({"series_id": series, "week_start": [D + dt.timedelta(weeks=o) for o in offsets],
                         "cases": cases if cases is not None else [10 + o for o in offsets]})


def demo_dengue(*iso3: str, until: str = "2019-12-31") -> pl.DataFrame:
    """Weekly national dengue totals from the bundled OpenDengue extract, as a detection input."""
    return (pl.read_csv(DEMO / "opendengue_paho_national_v1_3.csv.gz", infer_schema_length=None)
            .filter(pl.col("T_res") == "Week", pl.col("case_definition_standardised") == "Total",
                    pl.col("ISO_A0").is_in(iso3), pl.col("calendar_start_date").is_between(pl.lit("2015-01-01"), pl.lit(until)))
            .select(pl.col("ISO_A0").alias("series_id"), pl.col("calendar_start_date").alias("week_start"),
                    pl.col("dengue_total").alias("cases")))


def error(frame, **kw) -> str:
    with pytest.raises(DetectInputError) as e:
        prepare(frame, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


# ---- accepted inputs ----------------------------------------------------------------------------

def test_date_based_input_any_order_gives_sorted_contract():
    a, b = weeks(0, 1, 2, series="A"), weeks(0, 1, series="B", cases=[7, 8])
    shuffled = pl.concat([a, b]).reverse().with_columns(pl.col("week_start").cast(pl.String))  # ISO strings
    got = prepare(shuffled)
    assert got.columns == ["series_id", "t", "cases", "week_start"]
    assert got.schema["t"] == pl.Int64 and got.schema["cases"] == pl.Int64 and got.schema["week_start"] == pl.Date
    assert got["series_id"].to_list() == ["A", "A", "A", "B", "B"]
    assert got["t"].to_list() == [1, 2, 3, 1, 2]
    assert got["cases"].to_list() == [10, 11, 12, 7, 8]
    assert got.equals(prepare(pl.concat([a, b])))


def test_datetime_week_start_and_whole_float_cases_are_accepted():
    f = weeks(0, 1).with_columns(pl.col("week_start").cast(pl.Datetime), pl.col("cases").cast(pl.Float64))
    got = prepare(f)
    assert got["week_start"].to_list() == [D, D + dt.timedelta(weeks=1)] and got["cases"].dtype == pl.Int64


def test_index_based_input_keeps_t_and_one_series_when_series_id_is_absent():
    got = prepare(pl.DataFrame({"t": [3, 1, 2], "cases": [5, 3, 4], "population": [1e5, 1e5, 1e5]}))
    assert got.columns == ["series_id", "t", "cases", "population"]
    assert got["series_id"].to_list() == ["1"] * 3 and got["t"].to_list() == [1, 2, 3] and got["cases"].to_list() == [3, 4, 5]


def test_t_and_week_start_together_must_agree_and_t_is_kept():
    f = weeks(0, 1, 2).with_columns(t=pl.Series([53, 54, 55]))
    assert prepare(f)["t"].to_list() == [53, 54, 55]


def test_short_series_is_not_an_error_methods_give_null_bounds():
    f = weeks(0, 1, 2)
    assert prepare(f).height == 3
    out = detect(f, "ears", {"method": "C1"}, range=(1, 3))
    assert out["upperbound"].null_count() == 3 and out["alarm"].null_count() == 3


# ---- errors: one line naming series, week and row ---------------------------------------------

def test_duplicate_week_names_both_rows():
    msg = error(pl.concat([weeks(0, 1, 2), weeks(1, cases=[99])]))
    assert msg.startswith("series 'A', week 2019-01-13, row 4:") and "more than once" in msg and "row 2" in msg


def test_duplicate_t_in_index_based_input():
    msg = error(pl.DataFrame({"series_id": ["x", "x", "y"], "t": [1, 1, 1], "cases": [1, 2, 3]}))
    assert msg.startswith("series 'x', week t=1, row 2:") and "more than once" in msg


def test_dates_off_the_weekly_grid():
    f = weeks(0, 1).vstack(pl.DataFrame({"series_id": "A", "week_start": D + dt.timedelta(days=16), "cases": 1}))
    msg = error(f)
    assert msg.startswith("series 'A', week 2019-01-22, row 3:") and "7-day grid" in msg and "2019-01-06" in msg


def test_t_and_week_start_disagreeing_in_order():
    msg = error(weeks(0, 1, 2).with_columns(t=pl.Series([1, 3, 2])))
    assert msg.startswith("series 'A', week 2019-01-13, row 2:") and "t and week_start disagree" in msg


def test_t_jumping_while_dates_are_consecutive_is_a_disagreement():
    assert "t and week_start disagree" in error(weeks(0, 1, 2).with_columns(t=pl.Series([1, 2, 5])))


@pytest.mark.parametrize("cases, problem", [([1, None, 3], "cases is missing (null)"),
                                            ([1, -2, 3], "cases -2 is negative"),
                                            ([1.0, 2.5, 3.0], "cases 2.5 is not a whole number"),
                                            (["1", "two", "3"], "cases 'two' is not a number")])
def test_bad_counts(cases, problem):
    msg = error(weeks(0, 1, 2, cases=cases))
    assert msg == f"series 'A', week 2019-01-13, row 2: {problem}"


def test_bad_dates_and_t():
    assert "'2019-13-01' is not an ISO date" in error(pl.DataFrame({"week_start": ["2019-01-06", "2019-13-01"], "cases": [1, 2]}))
    assert "week_start is missing (null)" in error(pl.DataFrame({"week_start": [D, None], "cases": [1, 2]}))
    assert "t 0 is below 1" in error(pl.DataFrame({"t": [0, 1], "cases": [1, 2]}))
    assert "t 1.5 is not a whole number" in error(pl.DataFrame({"t": [1.0, 1.5], "cases": [1, 2]}))


def test_missing_columns_suggest_the_closest_name():
    assert error(pl.DataFrame({"t": [1], "casos": [1]})) == "missing column 'cases' (did you mean 'casos'?)"
    msg = error(pl.DataFrame({"weekstart": [D], "cases": [1]}))
    assert msg.startswith("missing column 'week_start' (dates) or 't'") and "did you mean 'weekstart'" in msg
    assert "columns are: dengue_total, date" in error(pl.DataFrame({"dengue_total": [1], "date": [D]}))
    assert error(pl.DataFrame({"t": [], "cases": []})) == "the input has no rows"


# ---- gaps -----------------------------------------------------------------------------------------

def test_gap_is_an_error_by_default_naming_the_first_gap():
    msg = error(pl.concat([weeks(0, 1, 4, 5, 9), weeks(0, 3, series="B")]))
    assert msg.startswith("series 'A', week 2019-02-03, row 3: gap: no row for the 2 week(s) 2019-01-20 to 2019-01-27")
    assert "consecutive weeks" in msg and "baseline" in msg and "'zero'" in msg and "'consecutive'" in msg


def test_gap_in_index_based_input():
    msg = error(pl.DataFrame({"t": [1, 2, 5], "cases": [1, 2, 3]}))
    assert msg.startswith("series '1', week t=5, row 3: gap: no row for the 2 week(s) t=3 to t=4 after week t=2")


def test_real_gap_in_the_demo_data():
    """OpenDengue has no 2020 weeks for Mexico: R would compare 2021 with 2019 as if a year apart."""
    msg = error(demo_dengue("MEX", until="2023-12-31"))
    assert msg.startswith("series 'MEX', week 2021-01-03") and "52 week(s) 2020-01-05 to 2020-12-27 after week 2019-12-29" in msg


def test_gaps_zero_fills_reported_zeros_and_carries_population_forward():
    f = weeks(0, 1, 4).with_columns(population=pl.Series([100, 200, 300]))
    got = prepare(f, gaps="zero")
    assert got["t"].to_list() == [1, 2, 3, 4, 5]
    assert got["cases"].to_list() == [10, 11, 0, 0, 14]
    assert got["week_start"].to_list() == [D + dt.timedelta(weeks=i) for i in range(5)]
    assert got["population"].to_list() == [100, 200, 200, 200, 300]


def test_gaps_zero_with_t_continues_the_users_t():
    got = prepare(pl.DataFrame({"t": [10, 11, 13], "cases": [1, 2, 3]}), gaps="zero")
    assert got["t"].to_list() == [10, 11, 12, 13] and got["cases"].to_list() == [1, 2, 0, 3]
    both = prepare(weeks(0, 2).with_columns(t=pl.Series([7, 9])), gaps="zero")
    assert both["t"].to_list() == [7, 8, 9]


def test_gaps_consecutive_is_rs_rows_as_weeks():
    got = prepare(weeks(0, 1, 4), gaps="consecutive")
    assert got["t"].to_list() == [1, 2, 3] and got["cases"].to_list() == [10, 11, 14]
    # R's own export (t counts rows across a date gap) is accepted and renumbered the same way
    assert prepare(weeks(0, 1, 4).with_columns(t=pl.Series([1, 2, 3])), gaps="consecutive")["t"].to_list() == [1, 2, 3]


def test_gaps_modes_on_real_data():
    mex = demo_dengue("MEX", until="2023-12-31")
    zero, rows = prepare(mex, gaps="zero"), prepare(mex, gaps="consecutive")
    assert zero.height == rows.height + 52 and rows.height == mex.height
    assert zero.filter(pl.col("week_start").dt.year() == 2020)["cases"].sum() == 0
    assert zero["cases"].sum() == rows["cases"].sum() == int(mex["cases"].sum())
    assert error(mex, gaps="sometimes").startswith("gaps must be one of error, zero, consecutive")


# ---- registry ---------------------------------------------------------------------------------

def test_methods_by_name():
    assert list(registry.METHODS) == ["ears", "farrington_flexible", "farrington", "cusum"]
    assert registry.METHODS["ears"] is ears
    with pytest.raises(DetectInputError, match="unknown method 'earz' \\(did you mean 'ears'\\?\\)"):
        detect(weeks(0), "earz")


def test_a_method_whose_module_is_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(registry._WHERE, "cusum", "vigila.detect.not_written_yet")
    assert "cusum" in registry.METHODS
    with pytest.raises(DetectInputError, match="method 'cusum' is not available"):
        registry.METHODS["cusum"]


def test_parse_params_converts_by_the_signature_defaults(monkeypatch):
    assert parse_params("ears", ["method=C3", "baseline=5", "alpha=0.01", "min_sigma=1"]) == \
        {"method": "C3", "baseline": 5, "alpha": 0.01, "min_sigma": 1.0}
    assert parse_params("ears", ["alpha=null"]) == {"alpha": None}

    def fake(frame, *, b=5, reweight=True, limit54=(5, 4), powertrans="2/3", pwni=None, range=None):
        pass

    monkeypatch.setattr(registry, "get_method", lambda name: fake)
    got = parse_params("fake", ["b=3", "reweight=false", "limit54=10,2", "powertrans=none", "pwni=26"])
    assert got == {"b": 3, "reweight": False, "limit54": (10, 2), "powertrans": "none", "pwni": 26}
    assert parse_params("fake", ["reweight=TRUE", "pwni=0.5", "limit54=(1, 1)"]) == {"reweight": True, "pwni": 0.5, "limit54": (1, 1)}


@pytest.mark.parametrize("pairs, message", [
    (["basline=3"], "unknown parameter 'basline' for ears (did you mean 'baseline'?); valid parameters: method, baseline, alpha, min_sigma"),
    (["baseline=3.5"], "--param baseline=3.5: baseline takes a whole number (default 7)"),
    (["min_sigma=lots"], "--param min_sigma=lots: min_sigma takes a number (default 0.0)"),
    (["baseline"], "--param 'baseline' is not key=value"),
    (["range=1:9"], "unknown parameter 'range' for ears; valid parameters: method, baseline, alpha, min_sigma; give range with --range"),
])
def test_parse_params_errors(pairs, message):
    with pytest.raises(DetectInputError) as e:
        parse_params("ears", pairs)
    assert str(e.value) == message


def test_parse_range():
    assert parse_range("53:312") == (53, 312)
    for bad in ("53", "0:5", "9:3", "a:b", "5:"):
        with pytest.raises(DetectInputError, match="START:END"):
            parse_range(bad)


def test_detect_output_columns_and_values_equal_the_method():
    f = demo_dengue("HND", "MEX")
    out = detect(f, "ears", {"method": "C2"})
    assert out.columns == list(registry.COLUMNS)
    direct = ears(prepare(f).drop("week_start"), method="C2")
    assert out.drop("week_start").equals(direct.drop("week_start").sort("series_id", "t"))
    starts = prepare(f).select("series_id", "t", "week_start")
    assert out.join(starts, on=["series_id", "t"])["week_start_right"].equals(out["week_start"])


def test_detect_without_dates_gives_null_week_start_and_keeps_extra_columns():
    f = pl.DataFrame({"t": range(1, 31), "cases": [3, 5, 4, 6, 2, 5] * 5})
    out = detect(f, "cusum", {"k": 1.0}, range=(10, 30))
    assert out.columns[:8] == list(registry.COLUMNS) and out.columns[8:] == ["cusum"]
    assert out["week_start"].dtype == pl.Date and out["week_start"].null_count() == out.height == 21


def test_detect_rejects_params_the_method_does_not_take():
    with pytest.raises(DetectInputError, match="unknown parameter 'h' for ears"):
        detect(weeks(0), "ears", {"h": 2})


@pytest.mark.parametrize("name, params", [("ears", {"method": "C3"}), ("cusum", {"k": 2.0}),
                                          ("farrington_flexible", {"b": 3}), ("farrington", {"b": 3})])
def test_every_registered_method_runs_through_detect_on_real_data(name, params):
    try:
        registry.METHODS[name]
    except DetectInputError:
        pytest.skip(f"{name} is not written yet")
    out = detect(demo_dengue("HND", "MEX"), name, params, range=(200, 261))
    assert out.columns[:8] == list(registry.COLUMNS) and out.height == 2 * 62
    assert out["week_start"].null_count() == 0 and out["week_start"].min() == dt.date(2018, 10, 28)
