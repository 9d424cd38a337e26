"""`make torture`: the long hostile-input runs, whole commands as a user runs them; figures to
benchmarks/results/torture.md (and .json).

1. kills: `vigila ingest` of the demo line list SIGKILLed at a random moment, N times, while a reader
   thread reads `cases_weekly` (polars and DuckDB); then one clean run. Counted: reads, torn reads (a
   read that is not one whole published version), processes the killed command left behind, whether
   the clean run recovered (published exactly the file's counts).
2. bombs: a gzip and an XLSX decompression bomb through `vigila check`: exit code, message, seconds, peak MB.
3. fuzz: tests/test_hostile.py's hypothesis fuzzers with VIGILA_FUZZ_EXAMPLES examples each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VIGILA = [sys.executable, "-m", "vigila.cli"]
PERU = ROOT / "sources" / "per_minsa_dengue_linelist.yaml"
PUBLISHED_CASES = 171_225          # the demo line list: cases published (57 quarantined)


def kills(n: int, work: Path, seed: int) -> dict:
    import polars as pl

    from vigila.warehouse import read

    wh = work / "kills-warehouse"
    rng = random.Random(seed)
    stop, reads, torn, problems = threading.Event(), 0, 0, []

    def reader() -> None:
        nonlocal reads, torn
        while not stop.is_set():
            try:
                total = read.cases_weekly(wh).select(pl.col("cases").sum()).collect().item()
            except FileNotFoundError:
                total = None                     # nothing published yet: a valid state
            except Exception as exc:             # any failure of a reader is a finding
                torn += 1
                problems.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            reads += 1
            if total is not None and total != PUBLISHED_CASES:
                torn += 1
                problems.append(f"read a total of {total}")
            time.sleep(0.01)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    orphans, killed_at = 0, []
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    try:
        for _ in range(n):
            proc = subprocess.Popen([*VIGILA, "ingest", str(PERU), "--warehouse", str(wh), "--force", "--quiet"],
                                    cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            delay = rng.uniform(0.5, 12)
            time.sleep(delay)
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            proc.kill()
            proc.wait()
            killed_at.append(round(delay, 2))
            time.sleep(0.5)
            orphans += sum(1 for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE)
        final = subprocess.run([*VIGILA, "ingest", str(PERU), "--warehouse", str(wh), "--force", "--quiet"],
                               cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        stop.set()
        thread.join(timeout=30)
    total = read.cases_weekly(wh).select(pl.col("cases").sum()).collect().item()
    return {"kills": n, "killed_after_s": killed_at, "reads": reads, "torn_reads": torn, "problems": problems[:5],
            "orphaned_processes": orphans, "recovered": final.returncode == 0 and total == PUBLISHED_CASES,
            "published_cases_after": total}


LAUNCH = ("import os, subprocess, sys, json\np = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,"
          " text=True)\nerr = p.stderr.read()\n_, status, ru = os.wait4(p.pid, 0)\n"
          "print(json.dumps([os.waitstatus_to_exitcode(status), ru.ru_maxrss, err]))")


def _run_check(config: Path, cwd: Path) -> dict:
    """`vigila check` from a small launcher process, so its ru_maxrss is its own (a child forked from a big
    process starts with that process's resident pages)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", LAUNCH, *VIGILA, "check", str(config)], cwd=ROOT, capture_output=True, text=True)
    code, maxrss, err = json.loads(res.stdout.strip().splitlines()[-1])
    return {"exit": code, "seconds": round(time.perf_counter() - t0, 2), "peak_mb": round(maxrss / 1024),
            "message": err.strip().splitlines()[0][:200] if err.strip() else ""}


def bombs(work: Path) -> dict:
    header = "departamento,anio,semana,casos\n"
    gz = work / "bomb.csv.gz"
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    line = b"Escuintla,2024,10,1\n" * 50_000
    with gz.open("wb") as f:
        f.write(z.compress(header.encode()))
        for _ in range(2000):                    # ~2 GB of CSV
            f.write(z.compress(line))
        f.write(z.flush())
    xlsx = work / "bomb.xlsx"
    with zipfile.ZipFile(xlsx, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/worksheets/sheet1.xml", "<row/>" * (350 * 2**20))   # ~2 GiB of XML
    out = {}
    for name, path, fmt in (("gzip", gz, "csv"), ("xlsx", xlsx, "xlsx")):
        cfg = work / f"{name}.yaml"
        cfg.write_text(f"id: bomb_{name}\ncountry: GTM\nreporter: {{institution: x}}\ndiseases: [dengue]\nformat: {fmt}\n"
                       f"geo_level: admin1\nlocation: {path.name}\n"
                       "columns: {place: departamento, epi_year: anio, epi_week: semana, cases: casos}\n")
        out[name] = {"compressed_mb": round(path.stat().st_size / 2**20, 1), **_run_check(cfg, work)}
    return out


def fuzz(examples: int) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_hostile.py", "-k", "fuzz"],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "VIGILA_FUZZ_EXAMPLES": str(examples)})
    return {"examples_per_fuzzer": examples, "fuzzers": 2, "passed": res.returncode == 0,
            "seconds": round(time.perf_counter() - t0, 1), "tail": res.stdout.strip().splitlines()[-1:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=15)
    ap.add_argument("--fuzz-examples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vigila-torture-") as tmp:
        work = Path(tmp)
        result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seed": args.seed,
                  "kills": kills(args.kills, work, args.seed), "bombs": bombs(work), "fuzz": fuzz(args.fuzz_examples)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "torture.json").write_text(json.dumps(result, indent=2))
    k, b, f = result["kills"], result["bombs"], result["fuzz"]
    lines = [f"# make torture — {result['when']} (seed {result['seed']})", "",
             "| run | figure |", "|---|---|",
             f"| `vigila ingest` SIGKILLed at random (0.5–12 s) | {k['kills']} kills, {k['reads']} reads while killing, "
             f"**{k['torn_reads']} torn**, **{k['orphaned_processes']} orphaned processes**, clean run after: "
             f"{'recovered' if k['recovered'] else 'NOT recovered'} ({k['published_cases_after']:,} cases) |"]
    for name, r in b.items():
        lines.append(f"| {name} bomb ({r['compressed_mb']} MB compressed) via `vigila check` | exit {r['exit']} in "
                     f"{r['seconds']} s, peak {r['peak_mb']} MB: {r['message']} |")
    lines.append(f"| hypothesis fuzz (readers, config loader) | {f['examples_per_fuzzer']} examples each, "
                 f"{'passed' if f['passed'] else 'FAILED'} in {f['seconds']} s |")
    (RESULTS / "torture.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(0 if k["torn_reads"] == 0 and k["orphaned_processes"] == 0 and k["recovered"] and f["passed"]
             and all(r["exit"] == 2 for r in b.values()) else 1)


if __name__ == "__main__":
    main()
