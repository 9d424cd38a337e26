"""Two `vigila ingest` processes (no Prefect) publishing into one cases_weekly partition (country x disease)
at once lose nothing: `pipeline.partition_locks` holds the partition from the read of its revisions to the
cases_weekly commit (each `publish.commit` alone locks only itself).

In: two synthetic weekly-count sources of one country and disease (synthetic: the race needs two sources of one
partition; benchmarks/dask_load.py's template), real child processes (tests/_ingest_racer.py). Out: pass/fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import dask_load  # noqa: E402

RACER = Path(__file__).with_name("_ingest_racer.py")
WEEKS = 30


def sources(folder: Path) -> list[Path]:
    paths = dask_load.write_sources(folder, 1, rows=WEEKS)
    yaml_text, csv = paths[0].read_text(), folder / "src000.csv"
    out = []
    for n in (1, 2):   # the same country x disease, two reporters
        path = folder / f"racer{n}.yaml"
        path.write_text(yaml_text.replace("id: syn000_arg_dengue", f"id: racer{n}_arg_dengue")
                        .replace("Synthetic ministry ARG 0", f"Synthetic ministry ARG {n}"))
        out.append(path)
    assert csv.exists() and "id: syn000_arg_dengue" in yaml_text
    return out


def race(tmp_path: Path, *extra: str) -> pl.DataFrame:
    from vigila.warehouse import read

    warehouse, go = tmp_path / "wh", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    procs = [subprocess.Popen([sys.executable, str(RACER), str(warehouse), str(src), str(go), "3", *extra],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for src in sources(tmp_path / "sources")]
    go.touch()
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()[-2000:]
    return read.dataset(str(warehouse), "cases_weekly").collect()


def test_two_ingest_processes_racing_into_one_partition_lose_no_revision(tmp_path):
    weekly = race(tmp_path)
    counts = dict(weekly.group_by("source_id").len().iter_rows())
    assert counts == {"racer1_arg_dengue": WEEKS, "racer2_arg_dengue": WEEKS}


def test_the_race_is_real_without_the_partition_locks(tmp_path):
    """The same race with `partition_locks` switched off in the children: one source's rows vanish from
    cases_weekly (its revisions stay): the test above passes because of the locks, not because of timing."""
    weekly = race(tmp_path, "nolock")
    assert weekly["source_id"].n_unique() == 1 and weekly.height == WEEKS
