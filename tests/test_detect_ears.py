"""EARS C1-C3 equal R surveillance::earsC: bundled fixtures always, every shared reference when present."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from vigila.detect import ears

from conftest import FIXTURES, SHARED

BUNDLED = FIXTURES / "surveillance"
INPUTS = {"salmNewport_DE": "salmNewport_DE_total"}   # R aggregated the states: the shared total series


def cases(root: Path) -> list[tuple[Path, Path, str, dict]]:
    manifest = root / "manifest.json"
    if not manifest.exists():
        return []
    data_dir = root if root == BUNDLED else root.parent.parent / "data" / "surveillance"
    out = []
    for name, f in json.loads(manifest.read_text())["files"].items():
        data = data_dir / f"{INPUTS.get(f['dataset'], f['dataset'])}.csv"
        if f["method"].startswith("earsC") and data.exists():
            out.append(pytest.param(root / name, data, f["method"], f["control"], id=name))
    return out


def compare(reference: Path, data: Path, control: dict) -> None:
    series = pl.read_csv(data, infer_schema_length=None).select(pl.col("unit").alias("series_id"), "t", "cases")
    got = ears(series, method=control["method"], baseline=control.get("baseline", 7), alpha=control.get("alpha"),
               min_sigma=control.get("minSigma", 0))
    ref = pl.read_csv(reference, infer_schema_length=None)
    j = ref.select("t", pl.col("observed").alias("r_obs"), pl.col("upperbound").alias("r_ub"),
                   pl.col("alarm").cast(pl.Boolean).alias("r_alarm")).join(got, on="t", how="full", coalesce=True)
    assert j.height == ref.height == got.height
    assert (j["r_obs"] == j["observed"]).all()
    assert (j["r_ub"].is_null() == j["upperbound"].is_null()).all()
    finite = j.filter(pl.col("r_ub").is_not_null())
    rel = ((finite["upperbound"] - finite["r_ub"]).abs() / finite["r_ub"].abs().clip(lower_bound=1e-12))
    assert (rel <= 1e-6).all() or ((finite["upperbound"] - finite["r_ub"]).abs() <= 1e-9).all()
    assert (j["r_alarm"].fill_null(False) == j["alarm"].fill_null(False)).all()


@pytest.mark.parametrize("reference, data, method, control", cases(BUNDLED))
def test_bundled_reference(reference, data, method, control):
    compare(reference, data, control)


@pytest.mark.parametrize("reference, data, method, control", cases(SHARED / "reference" / "surveillance"))
def test_shared_reference(reference, data, method, control):
    compare(reference, data, control)


def test_many_series_at_once_equal_one_at_a_time():
    one = pl.read_csv(BUNDLED / "salmonella_agona.csv").select(pl.lit("a").alias("series_id"), "t", "cases")
    many = pl.concat([one, one.with_columns(pl.lit("b").alias("series_id"), pl.col("cases") * 3)])
    both = ears(many, method="C2")
    alone = ears(one.with_columns(pl.col("cases") * 3), method="C2")
    assert both.filter(pl.col("series_id") == "b")["upperbound"].equals(alone["upperbound"])
    assert both.filter(pl.col("series_id") == "a")["alarm"].equals(ears(one, method="C2")["alarm"])


def test_exact_tie_with_the_bound_is_no_alarm():
    flat = pl.DataFrame({"series_id": "x", "t": range(1, 10), "cases": [2] * 8 + [2]})
    out = ears(flat, method="C1")
    assert out["upperbound"].to_list() == [2.0, 2.0] and out["alarm"].to_list() == [False, False]
