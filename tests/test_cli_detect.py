"""`vigila detect` end to end in a subprocess, on weekly dengue from the bundled OpenDengue extract."""

from __future__ import annotations

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
