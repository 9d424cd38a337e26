"""vigila against R `surveillance` on every weekly dataset shipped with the R package, for every method and
parameter set of ../shared's manifest (EARS C1/C2/C3 and C3 without alpha, classic Farrington, Farrington
flexible with defaults and the Noufaily nbPlugin/muan settings, CUSUM; --methods examples: the vignette's and
help page's calls), last `--weeks` weeks of each series.

    .venv/bin/python benchmarks/r_differential.py [--weeks 104] [--datasets stsNewport,fluBYBW/9576]
        [--index-too] [--methods manifest|examples|all] [--out DIR] [--reuse] [--fixtures DIR] [--md FILE]

Needs Rscript with the `surveillance` package (apt-get install r-cran-surveillance). Every unit of a
multi-unit dataset is its own series; date-based datasets are compared as R has them (reference weeks by
date) and, with --index-too, also as index-based series (reference weeks t - 52 i). Weeks where R stops with
an error (farringtonFlexible without b years of history) must be null bounds without alarm in vigila.
Prints one line per dataset x method and a total; exits 1 if anything differs. --md FILE writes that table as
Markdown (benchmarks/results/r_differential.md: every dataset, --index-too). --fixtures DIR writes, for the
chosen datasets (or units: `dataset/unit`), the input series and R's results as CSV
(see tests/fixtures/surveillance/r_datasets).
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_detect_r_differential import MANIFEST_EXAMPLES, MANIFEST_METHODS, R_SCHEMA, differential, r_status  # noqa: E402

EXPORT = r"""
suppressPackageStartupMessages(library(surveillance))
items <- data(package = "surveillance")$results[, "Item"]
out <- list()
for (item in sub(" .*", "", items)) {
  e <- new.env()
  suppressWarnings(try(data(list = item, package = "surveillance", envir = e), silent = TRUE))
  for (o in ls(e)) {
    x <- get(o, e)
    if (!(class(x)[1] %in% c("sts", "disProg"))) next
    s <- if (is(x, "sts")) x else disProg2sts(x)
    if (s@freq != 52) next
    for (j in seq_len(ncol(s))) {
      u <- colnames(s)[j]
      if (is.null(u) || is.na(u)) u <- as.character(j)
      ws <- if (s@epochAsDate) format(as.Date(s@epoch, origin = "1970-01-01")) else ""
      out[[length(out) + 1]] <- data.frame(dataset = o, unit = u, t = seq_len(nrow(s)), cases = s@observed[, j],
                                           week_start = ws, start_year = s@start[1], start_week = s@start[2])
    }
  }
}
data(campyDE)   # a data.frame; ../shared's references build sts(observed = case, epoch = date, epochAsDate = TRUE)
out[[length(out) + 1]] <- data.frame(dataset = "campyDE", unit = "cases", t = seq_len(nrow(campyDE)),
                                     cases = campyDE$case, week_start = format(campyDE$date), start_year = NA,
                                     start_week = NA)
write.csv(do.call(rbind, out), commandArgs(trailingOnly = TRUE)[1], row.names = FALSE, na = "")
"""


def export(path: Path) -> pl.DataFrame:
    """Every weekly (freq 52) sts/disProg of R surveillance, one row per unit-week."""
    script = path.with_suffix(".R")
    script.write_text(EXPORT)
    subprocess.run(["Rscript", str(script), str(path)], check=True, capture_output=True, text=True)
    frame = pl.read_csv(path, infer_schema_length=None, schema_overrides={"week_start": pl.String, "unit": pl.String})
    return frame.with_columns(pl.col("week_start").replace("", None).str.to_date(),
                              pl.format("{}/{}", "dataset", "unit").alias("series_id"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weeks", type=int, default=104, help="last weeks of each series evaluated (default 104)")
    ap.add_argument("--datasets", help="comma-separated R object names, or dataset/unit for one unit of a "
                                       "multivariate one (default: every weekly dataset)")
    ap.add_argument("--index-too", action="store_true", help="also compare date-based datasets as index-based")
    ap.add_argument("--out", type=Path, help="keep the work files (series, calls, R output, summary) here")
    ap.add_argument("--fixtures", type=Path, help="write the chosen datasets' series and R's results here")
    ap.add_argument("--reuse", action="store_true", help="compare with R's output of an earlier run in --out")
    ap.add_argument("--md", type=Path, help="write the dataset x method table as Markdown here")
    ap.add_argument("--methods", choices=("manifest", "examples", "all"), default="manifest",
                    help="manifest: its parameter sets for ../shared's series (default); examples: its vignette "
                         "and help-page calls; all: both")
    args = ap.parse_args()
    if (why := r_status()) is not None:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    work = args.out or Path(tempfile.mkdtemp(prefix="vigila_r_"))
    work.mkdir(parents=True, exist_ok=True)
    data = export(work / "weekly.csv")
    if args.datasets:
        chosen = args.datasets.split(",")
        data = data.filter(pl.col("dataset").is_in([c for c in chosen if "/" not in c])
                           | pl.col("series_id").is_in([c for c in chosen if "/" in c]))
    if args.index_too:
        idx = (data.filter(pl.col("week_start").is_not_null())
               .with_columns(pl.format("{}_idx", "dataset").alias("dataset"),
                             pl.format("{}_idx/{}", "dataset", "unit").alias("series_id"),
                             pl.lit(None, pl.Date).alias("week_start"),
                             pl.col("start_year").fill_null(2000), pl.col("start_week").fill_null(1)))
        data = pl.concat([data, idx])
    series = data.select("series_id", "t", "cases", "week_start", "start_year", "start_week")
    methods = {"manifest": MANIFEST_METHODS, "examples": MANIFEST_EXAMPLES,
               "all": MANIFEST_METHODS + MANIFEST_EXAMPLES}[args.methods]
    out = differential(series, methods, work, weeks=args.weeks, reuse=args.reuse, timeout=None)
    pairs = pl.DataFrame(out.pairs).with_columns(pl.col("series_id").str.split("/").list.first().alias("dataset"))
    summary = (pairs.group_by("dataset", "method", maintain_order=True)
               .agg(pl.len().alias("series"), pl.col("weeks").sum(), pl.col("stopped").sum(),
                    pl.col("bounds").sum(), pl.col("alarms_r").sum(), pl.col("max_rel").max(),
                    pl.col("differences").sum(), pl.col("bounds_differ").sum(), pl.col("alarms_differ").sum(),
                    pl.col("stopped_null").sum())
               .sort("dataset", "method"))
    summary.write_csv(work / "summary.csv")
    with pl.Config(tbl_rows=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        print(summary)
    print(f"{data['dataset'].n_unique()} datasets, {series['series_id'].n_unique()} series, {out.compared} "
          f"(series, method) pairs, {out.weeks} weeks with an R result, {out.stopped} weeks where R stops; max "
          f"relative bound difference {out.max_rel:.3g}; {len(out.problems)} differences")
    for p in out.problems[:60]:
        print("  ", p)
    if args.md:
        write_markdown(args.md, summary, data, series, out, " ".join(["benchmarks/r_differential.py", *sys.argv[1:]]))
    if args.fixtures:
        write_fixtures(args.fixtures, data, work)
    print(f"work files in {work}")
    return 1 if out.problems else 0


def r_versions() -> str:
    code = 'cat(R.version.string, "; surveillance", format(packageVersion("surveillance")))'
    return subprocess.run(["Rscript", "-e", code], capture_output=True, text=True).stdout.strip()


def write_markdown(path: Path, summary: pl.DataFrame, data: pl.DataFrame, series: pl.DataFrame, out,
                   command: str) -> None:
    """The dataset x method table, its totals per method and the differences, as Markdown."""
    reasons = (pl.concat(out.reasons).group_by("method", "r_error", "no_bound_reason").agg(pl.col("weeks").sum())
               .sort("method", "r_error", "no_bound_reason", nulls_last=True))

    def fmt(x: float) -> str:
        return "0" if x == 0 else f"{x:.1e}"

    per_method = (summary.group_by("method").agg(pl.col("series").sum(), pl.col("weeks").sum(),
                                                 pl.col("stopped").sum(), pl.col("stopped_null").sum(),
                                                 pl.col("max_rel").max(), pl.col("bounds_differ").sum(),
                                                 pl.col("alarms_differ").sum()).sort("method"))
    lines = [
        "# vigila against R `surveillance` on every weekly dataset shipped with the R package",
        "",
        f"{r_versions()}. Written by `.venv/bin/python {command}`.",
        "",
        f"**{data['dataset'].n_unique()} datasets** (each date-based one also as index-based, `_idx`), "
        f"**{series['series_id'].n_unique()} series** (every unit of a multivariate dataset on its own), "
        f"{out.compared} (series, method) pairs over the last 104 weeks of each series: **{out.weeks} weeks** "
        f"where R answers, of which **{sum(summary['bounds_differ'])} bounds differ** by more than 1e-4 "
        f"relative (largest relative difference {out.max_rel:.2g}) and **{sum(summary['alarms_differ'])} "
        f"alarms differ**; **{out.stopped} weeks where R stops** with an error, of which vigila gives null "
        f"bounds without alarm on {sum(summary['stopped_null'])}.",
        "",
        "Columns: *weeks*: weeks where R answers (a bound, or NA); *max diff*: largest |vigila - R| / max(1, |R|) "
        "of an upper bound; *bounds ≠*: weeks whose bounds differ (one null, or beyond 1e-4); *alarms ≠*: weeks "
        "whose alarms differ; *R stops*: weeks where R stops with an error (the call run again week by week); "
        "*null*: of those, weeks where vigila gives a null bound and no alarm (the documented behaviour).",
        "",
        "## Per method",
        "",
        "| method | series | weeks | max diff | bounds ≠ | alarms ≠ | R stops | null |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {r['method']} | {r['series']} | {r['weeks']} | {fmt(r['max_rel'])} | {r['bounds_differ']} | "
          f"{r['alarms_differ']} | {r['stopped']} | {r['stopped_null']} |" for r in per_method.iter_rows(named=True)),
        "",
        "## Null bounds: R's error or NA, and vigila's `no_bound_reason`",
        "",
        "Weeks where either side has no bound (R's error message cut at 48 characters, or R's NA, or R's bound "
        "where vigila has none; see `vigila/detect/farrington.py` NO_BOUND_REASONS).",
        "",
        "| method | R | vigila's no_bound_reason | weeks |",
        "|---|---|---|---:|",
        *(f"| {r['method']} | {r['r_error']} | {r['no_bound_reason'] or '(a bound)'} | {r['weeks']} |"
          for r in reasons.iter_rows(named=True)),
        "",
        "## Differences",
        "",
        "Weeks where a fit races to a single count among zeros and whether R stops hangs on rounding (see "
        "`vigila/detect/farrington.py`) are listed here with the rest.",
        "",
        *([f"- {p}" for p in out.problems] or ["None."]),
        "",
        "## Dataset × method",
        "",
        "| dataset | method | series | weeks | max diff | bounds ≠ | alarms ≠ | R stops | null |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {r['dataset']} | {r['method']} | {r['series']} | {r['weeks']} | {fmt(r['max_rel'])} | "
          f"{r['bounds_differ']} | {r['alarms_differ']} | {r['stopped']} | {r['stopped_null']} |"
          for r in summary.iter_rows(named=True)),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def write_fixtures(root: Path, data: pl.DataFrame, work: Path) -> None:
    """For each dataset: `<dataset>.csv.gz`, the input series (dataset, unit, t, week_start, cases), and
    `<dataset>.r_results.csv.gz`, R's output of every call on it (method, series_id, t, upperbound, alarm,
    expected, error)."""
    root.mkdir(parents=True, exist_ok=True)
    r = pl.concat([pl.read_csv(p, infer_schema_length=None, schema_overrides=R_SCHEMA)
                   for p in sorted(work.glob("r_out*.csv"))])
    r = r.filter(pl.col("series_id").is_in(data["series_id"].unique().implode()))
    for (dataset,), rows in data.group_by("dataset"):
        gz(rows.select("dataset", "unit", "t", "week_start", "cases").sort("unit", "t"), root / f"{dataset}.csv.gz")
        gz(r.filter(pl.col("series_id").str.starts_with(f"{dataset}/")).rename({"call_id": "method"})
           .sort("method", "series_id", "t"), root / f"{dataset}.r_results.csv.gz")


def gz(frame: pl.DataFrame, path: Path) -> None:
    with gzip.GzipFile(path, "wb", mtime=0) as f:        # mtime 0: the same content gives the same bytes
        f.write(frame.write_csv().encode())


if __name__ == "__main__":
    sys.exit(main())
