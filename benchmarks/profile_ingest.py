"""Stage profile of Vigila's check / ingest on a benchmark line list: where the seconds and the memory go.

Input: a CSV from `gen_linelist.py` (default /tmp/vigila-bench/linelist_2m.csv, generated when
missing) and `source_brazil_sinan.yaml`. Vigila's functions are wrapped *in this process only*
(monkeypatching module attributes; no Vigila file is touched), so each call records inclusive and
self seconds; a sampler thread attributes RSS (anonymous and file-backed, from /proc/self/status)
to the stages active at each sample. Lazy collects show as "polars engine <- <caller>"; eager
DataFrame methods called directly stay in their caller's self time.

Output: a table on stdout and `benchmarks/results/profile_<mode>_<rows>.md` (+ `.json`).

CLI:  python benchmarks/profile_ingest.py [--rows 2000000 | --csv FILE] [--mode check|ingest]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import polars as pl  # noqa: E402

from bench_ingest import BENCH_DIR, RESULTS, SOURCE_YAML, code_fingerprint, data_roots_env, ensure_csv, label  # noqa: E402

STACK: list[str] = []
TOTAL: dict[str, float] = defaultdict(float)
CHILD: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
PEAK: dict[str, tuple[float, float]] = {}   # stage -> (max anon MB, file MB at that moment)
ORDER: list[str] = []


class stage:  # noqa: N801 - used like a function
    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        if self.name not in TOTAL:
            ORDER.append(self.name)
        STACK.append(self.name)
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        dt_ = time.perf_counter() - self.t0
        STACK.pop()
        TOTAL[self.name] += dt_
        CALLS[self.name] += 1
        if STACK:
            CHILD[STACK[-1]] += dt_


def wrap(module, attr: str, name: str | None = None) -> None:
    fn = getattr(module, attr)
    label_ = name or f"{module.__name__.split('.')[-1]}.{attr}"

    @functools.wraps(fn)
    def timed(*a, **k):
        with stage(label_):
            return fn(*a, **k)

    setattr(module, attr, timed)


def wrap_collect_batches() -> None:
    orig = pl.LazyFrame.collect_batches

    def collect_batches(self, *a, **k):
        it = iter(orig(self, *a, **k))
        while True:
            with stage("polars: next CSV batch (collect_batches)"):
                try:
                    b = next(it)
                except StopIteration:
                    return
            yield b

    pl.LazyFrame.collect_batches = collect_batches


def wrap_method(cls, attr: str, name: str) -> None:
    orig = getattr(cls, attr)

    @functools.wraps(orig)
    def timed(self, *a, **k):
        with stage(name):
            return orig(self, *a, **k)

    setattr(cls, attr, timed)


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.stop_flag, self.max_total = threading.Event(), (0.0, 0.0, "")

    @staticmethod
    def read() -> tuple[float, float]:
        anon = file = 0.0
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1]) / 1024
            elif line.startswith("RssFile:"):
                file = int(line.split()[1]) / 1024
        return anon, file

    def run(self):
        while not self.stop_flag.is_set():
            anon, file = self.read()
            for s in set(STACK):
                if anon > PEAK.get(s, (0.0, 0.0))[0]:
                    PEAK[s] = (anon, file)
            if anon + file > sum(self.max_total[:2]):
                self.max_total = (anon, file, " > ".join(STACK))
            time.sleep(0.01)


MODULES = ("ingest.pipeline", "ingest.plan", "ingest.readers", "ingest.cast", "ingest.validate", "ingest.harmonise",
           "ingest.fields", "core.epiweek", "core.places", "warehouse.publish", "warehouse.storage")   # under vigila.
CHEAP = {"typed_expr", "normalise_expr", "age_band_expr", "normalise", "_number", "_integer", "_date", "_now",
         "polars_schema", "new_run_id", "label"}   # expression builders and trivia: not worth a row


def instrument() -> list[str]:
    """Wrap every function of Vigila's pipeline modules, in every Vigila namespace that holds it
    (a `from x import f` binding is wrapped too), plus a few polars entry points; returns the
    module names found (the pipeline is being rewritten: modules come and go)."""
    import importlib
    import inspect

    mods = {}
    for name in MODULES:
        try:
            mods[name.rsplit(".", 1)[-1]] = importlib.import_module(f"vigila.{name}")
        except ImportError:
            continue
    for mod in mods.values():
        for attr, obj in list(vars(mod).items()):
            if (inspect.isfunction(obj) and obj.__module__.startswith("vigila.") and attr not in CHEAP
                    and not attr.startswith("__")):
                wrap(mod, attr, f"{obj.__module__.split('.')[-1]}.{obj.__name__}")
    if "storage" in mods:
        for attr in ("put_file", "write_parquet", "write_json", "copy"):
            if hasattr(mods["storage"].Storage, attr):
                wrap_method(mods["storage"].Storage, attr, f"storage.Storage.{attr}")
    if "harmonise" in mods and hasattr(mods["harmonise"], "Context"):
        ctx_cls = mods["harmonise"].Context
        orig = ctx_cls.build.__func__
        ctx_cls.build = classmethod(lambda cls, *a, **k: _timed_call("harmonise.Context.build", orig, cls, *a, **k))
    wrap_method(pl.DataFrame, "write_parquet", "polars: DataFrame.write_parquet")
    # polars engine time, labelled by the Vigila function that asked for it (eager DataFrame
    # methods go through LazyFrame.collect too, so this splits each function's time into
    # "polars engine" and Python/glue)
    orig_collect, orig_collect_all = pl.LazyFrame.collect, pl.collect_all

    def collect(self, *a, **k):
        return _timed_call(f"polars engine <- {_caller()}", orig_collect, self, *a, **k)

    pl.LazyFrame.collect = collect
    pl.collect_all = lambda *a, **k: _timed_call(f"polars engine <- {_caller()}", orig_collect_all, *a, **k)
    wrap_collect_batches()
    return list(mods)


def _caller() -> str:
    return next((s for s in reversed(STACK) if not s.startswith("polars")), "?")


def _timed_call(name, fn, *a, **k):
    with stage(name):
        return fn(*a, **k)


def render(rows: int, mode: str, wall: float, sampler: Sampler, report: dict, code: str) -> tuple[str, dict]:
    table = []
    for name in ORDER:
        if TOTAL[name] < 0.005:
            continue
        anon, file = PEAK.get(name, (0.0, 0.0))
        table.append({"stage": name, "calls": CALLS[name], "inclusive_s": round(TOTAL[name], 3),
                      "self_s": round(TOTAL[name] - CHILD[name], 3), "self_share": round((TOTAL[name] - CHILD[name]) / wall, 3),
                      "peak_anon_mb": round(anon), "file_mb_at_peak": round(file)})
    table.sort(key=lambda r: -r["self_s"])
    anon, file, where = sampler.max_total
    lines = [f"# Vigila {mode} stage profile, {rows:,} rows", "",
             f"Written by `benchmarks/profile_ingest.py`. Wall {wall:.2f} s in `pipeline.{mode}` (a wrapper costs ~1 µs per call).",
             f"Peak sampled RSS {anon + file:.0f} MB ({anon:.0f} MB anonymous + {file:.0f} MB file-backed) inside: `{where}`.",
             "Self = inclusive minus wrapped callees; `process` self time is the loop glue in pipeline.process",
             "(lines not in a wrapped function). Peak anon MB = max anonymous RSS while the stage was on the stack.",
             f"Vigila code {code}; stages under 5 ms left out.", "",
             "| stage | calls | inclusive s | self s | self % of wall | peak anon MB |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| `{r['stage']}` | {r['calls']} | {r['inclusive_s']:.2f} | {r['self_s']:.2f} | {100 * r['self_share']:.1f} | {r['peak_anon_mb']:,} |"
              for r in table]
    lines += ["", f"Rows read {report.get('rows_read'):,}, quarantined {report.get('rows_quarantined'):,}, "
              f"weekly rows {report.get('harmonised_rows'):,}.", ""]
    data = {"rows": rows, "mode": mode, "vigila_code": code, "wall_s": round(wall, 2), "peak": {"anon_mb": round(anon), "file_mb": round(file), "stack": where},
            "stages": table}
    return "\n".join(lines), data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=None, help="rows of the generated list (default 2 M; with --csv: the file as it is)")
    ap.add_argument("--csv", type=Path, help="a line list to profile (generated with --rows when given)")
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--mode", choices=("check", "ingest"), default="check")
    ap.add_argument("--no-save", action="store_true")
    a = ap.parse_args(argv)
    if a.csv is None or a.rows is not None:      # a given file is never regenerated over unless --rows says so
        a.rows = a.rows or 2_000_000
        csv = a.csv or BENCH_DIR / f"linelist_{label(a.rows)}.csv"
        ensure_csv(csv, a.rows, a.seed)
    else:
        csv = a.csv
        with csv.open("rb") as f:
            a.rows = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b"")) - 1

    from vigila.ingest import pipeline
    from vigila.config import load_source

    os.environ.update(data_roots_env())       # the source config's location is the generated list under BENCH_DIR
    source = load_source(SOURCE_YAML)
    code = code_fingerprint()
    instrument()
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    if a.mode == "check":
        report, _ = pipeline.check(source, csv)
    else:
        wh = Path(tempfile.mkdtemp(prefix="profile-wh-", dir=BENCH_DIR))
        try:
            report = pipeline.ingest(source, csv, wh)
        finally:
            shutil.rmtree(wh, ignore_errors=True)
    wall = time.perf_counter() - t0
    sampler.stop_flag.set()
    sampler.join()
    text, data = render(a.rows, a.mode, wall, sampler, report, code)
    print(text)
    if not a.no_save:
        RESULTS.mkdir(exist_ok=True)
        base = RESULTS / f"profile_{a.mode}_{a.rows}"
        base.with_suffix(".md").write_text(text)
        base.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
