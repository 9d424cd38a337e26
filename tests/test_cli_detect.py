"""`vigila detect` end to end in a subprocess, on weekly dengue from the bundled OpenDengue extract."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from vigila.detect import ears

from conftest import FIXTURES, ROOT
from test_detect_input import demo_dengue

INPUT = FIXTURES / "detect" / "dengue_hnd_mex_2015_2019.csv"
COLUMNS = ["series_id", "t", "week_start", "observed", "expected", "upperbound", "alarm", "method"]


def vigila(*args: str | Path, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *python_flags, "-m", "vigila.cli", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_bundled_fixture_is_the_demo_extract():
    built = demo_dengue("HND", "MEX").with_columns(pl.col("cases").cast(pl.Int64)).sort("series_id", "week_start")
    assert pl.read_csv(INPUT).equals(built)


def test_ears_c2_from_the_command_line_equals_ears(tmp_path):
    shuffled = tmp_path / "dengue.csv"
    pl.read_csv(INPUT).sample(fraction=1.0, shuffle=True, seed=7).write_csv(shuffled)   # input order does not matter
    run = vigila("detect", "--input", shuffled, "--method", "ears", "--param", "method=C2",
                 "--output", tmp_path / "alarms.csv", python_flags=("-X", "importtime"))
    assert run.returncode == 0, run.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "vigila.detect.ears" in imported and not any(m.split(".")[0] == "prefect" for m in imported)
    assert "alarms" in run.stdout and "latest alarms" in run.stdout and "wrote" in run.stdout

    got = pl.read_csv(tmp_path / "alarms.csv", try_parse_dates=True)
    assert got.columns == COLUMNS
    series = (pl.read_csv(INPUT).sort("series_id", "week_start")
              .with_columns(pl.int_range(1, pl.len() + 1).over("series_id").alias("t")))
    want = ears(series.select("series_id", "t", "cases"), method="C2")
    assert got.height == want.height == 2 * (261 - 9)   # C2: first week evaluated is baseline + 3
    assert got.drop("week_start").equals(want.drop("week_start").sort("series_id", "t"))
    assert got.join(series, on=["series_id", "t"])["week_start_right"].str.to_date().equals(got["week_start"])
    assert got["alarm"].sum() > 0


def test_parquet_in_and_out_equal_csv(tmp_path):
    pl.read_csv(INPUT).with_columns(pl.col("week_start").str.to_date()).write_parquet(tmp_path / "in.parquet")
    for name, source in (("a.csv", INPUT), ("b.parquet", tmp_path / "in.parquet")):
        run = vigila("detect", "--input", source, "--method", "ears", "--param", "method=C3", "--param", "alpha=0.01",
                     "--range", "20:261", "--output", tmp_path / name)
        assert run.returncode == 0, run.stderr
    csv, parquet = pl.read_csv(tmp_path / "a.csv", try_parse_dates=True), pl.read_parquet(tmp_path / "b.parquet")
    assert parquet.columns == COLUMNS and parquet.schema["week_start"] == pl.Date
    assert parquet.height == 2 * 242 and (parquet["method"] == "ears_C3").all()
    assert csv.equals(parquet)


def test_unknown_param_exits_2_naming_valid_params(tmp_path):
    run = vigila("detect", "--input", INPUT, "--method", "ears", "--param", "baselin=5", "--output", tmp_path / "x.csv")
    assert run.returncode == 2
    assert run.stderr.strip() == ("error: unknown parameter 'baselin' for ears (did you mean 'baseline'?); "
                                  "valid parameters: method, baseline, alpha, min_sigma")
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["--method", "ears", "--input", "missing.csv"], "--input missing.csv: no such file"),
    (["--method", "ears", "--input", INPUT, "--range", "9-20"], "range '9-20' is not START:END"),
    (["--method", "nope", "--input", INPUT], "unknown method 'nope'"),
    (["--method", "ears", "--input", INPUT, "--param", "method=C9"], "method must be C1, C2 or C3"),
    (["--method", "ears", "--input", INPUT.with_suffix(".txt")], ".txt: use a .csv or .csv.gz or .parquet file"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, args, message):
    run = vigila("detect", *args, "--output", tmp_path / "x.csv")
    assert run.returncode == 2 and message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_real_gap_fails_by_default_and_zero_fills_it(tmp_path):
    source = tmp_path / "mex.csv"
    demo_dengue("MEX", until="2023-12-31").write_csv(source)
    run = vigila("detect", "--input", source, "--method", "ears", "--output", tmp_path / "x.parquet")
    assert run.returncode == 2 and "series 'MEX', week 2021-01-03" in run.stderr
    run = vigila("detect", "--input", source, "--method", "ears", "--gaps", "zero", "--output", tmp_path / "x.parquet")
    assert run.returncode == 0, run.stderr
    out = pl.read_parquet(tmp_path / "x.parquet")
    assert out.filter(pl.col("week_start").dt.year() == 2020)["observed"].sum() == 0
    assert out["t"].max() == 470   # 2015-01-04 .. 2023-12-31, the 52 missing weeks counted as 0


# --- results block by block (issue 15): the same rows, columns and order as the whole-frame implementation ---

def whole_detect(frame, method, params=None, range=None, gaps="error"):
    """The implementation before blocks: prepare the whole input, run the method, join week_start back, sort."""
    from vigila.detect.registry import COLUMNS as COLS, get_method
    from vigila.detect.series import prepare

    series = prepare(frame, gaps=gaps)
    result = get_method(method)(series, range=range, **(params or {}))
    weeks = series.select("series_id", "t", (pl.col("week_start") if "week_start" in series.columns
                                             else pl.lit(None, pl.Date).alias("week_start")))
    extras = [c for c in result.columns if c not in COLS]
    typed = result.drop("week_start", strict=False).with_columns(
        pl.col("series_id").cast(pl.String), pl.col("t").cast(pl.Int64), pl.col("observed", "expected", "upperbound").cast(pl.Float64),
        pl.col("alarm").cast(pl.Boolean), pl.col("method").cast(pl.String))
    return typed.join(weeks, on=["series_id", "t"], how="left").select(*COLS, *extras).sort("series_id", "t")


def random_series(n: int, seed: int, weeks: int = 160, dated: bool = False, first_t: int = 1) -> pl.DataFrame:
    """n series of 1..weeks weeks (some too short for any history), random ids, Poisson/overdispersed counts."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, weeks + 1, n)
    lengths[rng.random(n) < 0.7] = weeks
    ids = sorted({f"{chr(65 + rng.integers(0, 26))}{rng.integers(0, 10 ** 6)}" for _ in range(n)})
    lengths = lengths[:len(ids)]
    level = np.repeat(np.exp(rng.uniform(-1, 5, len(ids))), lengths)
    frame = pl.DataFrame({"series_id": np.repeat(ids, lengths),
                          "t": np.concatenate([np.arange(first_t, first_t + k) for k in lengths]),
                          "cases": rng.poisson(level * rng.gamma(3, 1 / 3, len(level)))})
    if dated:
        start = dt.date(2015, 1, 4)
        frame = frame.with_columns(week_start=pl.lit(start) + pl.duration(weeks=pl.col("t") - first_t)).drop("t")
    return frame


@pytest.mark.parametrize("method, params, span", [
    ("ears", {"method": "C1"}, None), ("ears", {"method": "C2"}, None), ("ears", {"method": "C3", "alpha": 0.01}, (20, 150)),
    ("cusum", {}, (100, 160)),
])
def test_blocks_equal_the_whole_frame_result(method, params, span):
    from vigila.detect.registry import detect, detect_blocks

    frame = random_series(3000, seed=15)
    want = whole_detect(frame, method, params, span)
    blocks = list(detect_blocks(frame, method, params, span, rows=20_000))
    assert len(blocks) > 10
    assert pl.concat(blocks).equals(want)
    assert detect(frame, method, params, span).equals(want)
    stream = list(detect_blocks(frame.iter_slices(7_777), method, params, span, rows=20_000))   # row batches
    assert pl.concat(stream).equals(want)


@pytest.mark.parametrize("variant", ["shuffled", "dated", "first_t", "int_ids", "consecutive", "no_series_id", "float_cases",
                                     "gap_zero", "gap_consecutive", "dated_gap_zero"])
def test_blocks_equal_the_whole_frame_result_on_input_variants(variant):
    from vigila.detect.registry import detect_blocks

    frame, gaps = random_series(600, seed=16, dated=variant.startswith("dated"), first_t=5 if variant in ("first_t", "consecutive") else 1), "error"
    if variant == "shuffled":
        frame = frame.sample(fraction=1.0, shuffle=True, seed=3)
    elif variant == "int_ids":      # ids sorted as text by prepare ("10" before "9"): contiguous but not in that order
        frame = frame.with_columns(pl.col("series_id").rank("dense").cast(pl.Int64))
    elif variant == "consecutive":
        gaps = "consecutive"
    elif variant == "no_series_id":
        frame = frame.filter(pl.col("series_id") == pl.col("series_id").first()).drop("series_id")
    elif variant == "float_cases":
        frame = frame.with_columns(pl.col("cases").cast(pl.Float64))
    elif variant.endswith(("gap_zero", "gap_consecutive")):   # weeks missing inside some series: prepare fills or renumbers
        frame, gaps = frame.filter(pl.int_range(pl.len()) % 97 != 50), variant.rsplit("_", 1)[1]
    want = whole_detect(frame, "ears", {"method": "C2"}, None, gaps)
    assert pl.concat(list(detect_blocks(frame, "ears", {"method": "C2"}, None, gaps, rows=5_000))).equals(want)
    if variant not in ("shuffled", "int_ids", "no_series_id"):      # streams in series_id order
        stream = detect_blocks(frame.iter_slices(3_001), "ears", {"method": "C2"}, None, gaps, rows=5_000)
        assert pl.concat(list(stream)).equals(want)


def test_farrington_flexible_blocks_equal_the_whole_frame_result():
    from vigila.detect.registry import detect_blocks

    frame = random_series(150, seed=17, weeks=330)
    params = {"b": 3}
    want = whole_detect(frame, "farrington_flexible", params, (250, 330))
    got = pl.concat(list(detect_blocks(frame.iter_slices(4_000), "farrington_flexible", params, (250, 330), rows=10_000)))
    assert got.equals(want) and want["upperbound"].is_not_null().sum() > 1000


def test_a_stream_out_of_order_or_failing_asks_for_the_whole_input():
    from vigila.detect.registry import NeedsWholeInput, detect_blocks

    frame = random_series(200, seed=18)
    with pytest.raises(NeedsWholeInput):
        list(detect_blocks(frame.reverse().iter_slices(1_000), "ears", {}, rows=3_000))
    bad = frame.with_columns(pl.when(pl.int_range(pl.len()) == frame.height - 5).then(-1).otherwise(pl.col("cases")).alias("cases"))
    with pytest.raises(NeedsWholeInput):
        list(detect_blocks(bad.iter_slices(1_000), "ears", {}, rows=3_000))


def test_cli_parquet_read_and_written_in_blocks_equals_the_whole_result(tmp_path, monkeypatch):
    """The command's own path, in slices of 1,000 rows and blocks of 3,000; a sorted and an unsorted input;
    a bad row deep in the file is named as before (its row number in the whole file)."""
    from vigila import cli
    from vigila.detect import registry

    monkeypatch.setattr(cli, "DETECT_SLICE", 1_000)
    monkeypatch.setattr(registry, "BLOCK_ROWS", 3_000)
    frame = random_series(400, seed=19)
    want = whole_detect(frame, "ears", {"method": "C3"})
    for name, data in (("sorted", frame), ("unsorted", frame.sample(fraction=1.0, shuffle=True, seed=1))):
        data.write_parquet(source := tmp_path / f"{name}.parquet", row_group_size=700)
        for out in (tmp_path / f"{name}.parquet.out.parquet", tmp_path / f"{name}.csv"):
            try:
                summary = cli._detect_to_file(cli._parquet_slices(source), out, out.suffix[1:], "ears", {"method": "C3"}, None, "error", 5)
            except registry.NeedsWholeInput:
                assert name == "unsorted"
                summary = cli._detect_to_file(pl.read_parquet(source), out, out.suffix[1:], "ears", {"method": "C3"}, None, "error", 5)
            got = pl.read_parquet(out) if out.suffix == ".parquet" else pl.read_csv(out, schema=want.schema)
            assert got.equals(want)
            assert summary["rows"] == want.height and summary["alarms"] == want["alarm"].sum()
            assert summary["series"] == want["series_id"].n_unique()
            assert summary["latest"].equals(want.filter("alarm").sort("week_start", "t", descending=True, nulls_last=True,
                                                                     maintain_order=True).head(5))
            assert not list(tmp_path.glob(".*partial"))
    bad = frame.with_columns(pl.when(pl.int_range(pl.len()) == frame.height - 5).then(-1).otherwise(pl.col("cases")).alias("cases"))
    bad.write_parquet(tmp_path / "bad.parquet")
    run = vigila("detect", "--input", tmp_path / "bad.parquet", "--method", "ears", "--output", tmp_path / "bad.csv")
    assert run.returncode == 2 and f"row {frame.height - 4}: cases -1 is negative" in run.stderr
    assert not (tmp_path / "bad.csv").exists()
    twice = pl.concat([frame.slice(0, 20_000), frame.slice(19_999)])      # a week twice, deep in the file
    with pytest.raises(ValueError) as whole:
        whole_detect(twice, "ears")
    with pytest.raises(ValueError) as blocks:
        registry.detect(twice, "ears")
    assert str(blocks.value) == str(whole.value) and "appears more than once" in str(whole.value)
