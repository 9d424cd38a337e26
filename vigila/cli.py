"""`vigila` command line: ingest, check, demo, dictionary, catalog, detect, status, serve, deploy.

Input: source YAMLs, report files, a warehouse root; output: rich tables on the terminal, exit
status 0 (ok), 1 (rows failed a check), 2 (a user error: one line, no traceback).
`check`, `detect` and `status` never start Prefect; `ingest` and `demo` run the Prefect flows,
`serve` and `deploy` turn the source configs into Prefect deployments. Long commands show their
progress on stderr when it is a terminal (`--quiet`: never), from the `vigila.operate.log` stage events.
"""



import datetime as dt
import json
import os
import re
import logging
import sys
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.file_proxy import FileProxy
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.markup import escape as esc
from rich.text import Text

from vigila.operate import log as vlog

# Only typer, rich and the standard library at import: `vigila --help` must not pay for polars, pandera,
# pydantic or Prefect. Each command imports what it needs when it runs.

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Vigila: regional epidemiological surveillance pipeline.")
out = Console(width=None if sys.stdout.isatty() else 140, emoji=False)   # a cell's ":x:" stays text
err = Console(stderr=True, emoji=False)
ROOT = Path(__file__).resolve().parents[1]
DEMO_SOURCES = ["paho_opendengue_national.yaml", "per_minsa_dengue_linelist.yaml"]


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {esc(message)}", highlight=False, soft_wrap=True, emoji=False)
    raise typer.Exit(code)


@contextmanager
def _user_errors():
    from connectors.base import FetchError
    from vigila.config import ConfigError
    from vigila.ingest.readers import ReadError

    try:
        yield
    except (ConfigError, ReadError, FetchError, FileNotFoundError) as e:
        _fail(str(e))


@contextmanager
def _row_progress(label: str, quiet: bool = False):
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed:,} rows"), TimeElapsedColumn(), console=err, transient=True,
                  disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task(label, total=None)
        yield lambda n: bar.advance(task, n)


QUIET = Annotated[bool, typer.Option("--quiet", "-q", help="no progress display on stderr")]
INGEST_STAGES = ["fetch", "land", "parse", "harmonise", "validate", "publish"]  # in order, per file


class StageDisplay:
    """A `vigila.operate.log` listener drawing one progress line per source (its current stage of
    INGEST_STAGES, rows read) and one per detection method; thread-safe (tasks may run in threads)."""

    def __init__(self, bar: Progress):
        self.bar, self.lines, self.lock = bar, {}, threading.Lock()
        self.waiting = bar.add_task("starting", who="vigila", rows="", total=None)

    def _line(self, who: str, total: int | None) -> int:
        if self.waiting is not None:
            self.bar.remove_task(self.waiting)
            self.waiting = None
        if who not in self.lines:
            self.lines[who] = self.bar.add_task("", who=who, rows="", total=total)
        return self.lines[who]

    def __call__(self, rec: dict) -> None:
        name, phase = rec["event"], rec["phase"]
        with self.lock:
            if "method" in rec:                                   # one detection method
                line = self._line(f"{name} {rec['method']}", 1)
                if phase == "start":
                    self.bar.update(line, description=(f"{rec['series']:,} series" if "series" in rec else "all series")   # counted as they go
                                    + f" ({rec.get('step', '')})")
                else:
                    self.bar.update(line, completed=1, description=f"{rec.get('status')}: {rec.get('alarms', 0):,} alarms "
                                                                   f"in {rec.get('rows', 0):,} series-weeks")
            elif name in INGEST_STAGES and "source" in rec:      # a stage of one source's file
                line = self._line(rec["source"], len(INGEST_STAGES))
                done = INGEST_STAGES.index(name) + (phase == "end")
                self.bar.update(line, completed=done, description=f"{name}…" if phase == "start" else
                                f"{name} {rec.get('status')}")
                if rec.get("rows") is not None and name in ("harmonise", "publish"):
                    self.bar.update(line, rows=f"{rec['rows']:,} rows")
            elif name == "report" and rec.get("status") == "unchanged":
                self.bar.update(self._line(rec["source"], len(INGEST_STAGES)), completed=len(INGEST_STAGES),
                                description="unchanged: nothing to publish")
            elif name == "ingest" and phase == "end":            # a source's whole run
                self.bar.update(self._line(rec["source"], len(INGEST_STAGES)), completed=len(INGEST_STAGES),
                                description=f"{rec.get('status')}: {rec.get('files', 0)} file(s)")
            elif phase == "start":                               # any other stage: a spinner line
                who = rec.get("source") or name
                self.bar.update(self._line(who, len(INGEST_STAGES) if name == "ingest" else None),
                                description=f"{name}…" if who != name else "running…")
            elif phase == "end" and (rec.get("source") or name) in self.lines:
                line, who = self.lines[rec.get("source") or name], rec.get("source") or name
                if who == name:   # a step of its own (e.g. reconcile): finished
                    self.bar.update(line, total=1, completed=1, description=" ".join(
                        str(v) for v in (rec.get("status"), rec.get("version"), rec.get("epi_week")) if v))
                else:
                    self.bar.update(line, description=f"{name} {rec.get('status', 'done')}")


class _AboveDisplay(FileProxy):
    """A file whose lines `err` prints (above its live display, unwrapped); unlike rich's own proxy,
    consoles writing to it keep it instead of unwrapping it to the real stderr."""

    def __init__(self, console: Console, file) -> None:
        super().__init__(console, file)
        self._console, self._pending = console, ""

    @property
    def rich_proxied_file(self):
        return self

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass


@contextmanager
def _prefect_console_through():
    """Prefect's console log lines printed above the live display instead of across it."""
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = {h for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs")
                for h in logging.getLogger(name).handlers if isinstance(h, PrefectConsoleHandler)}
    saved = [(h, h.console.file) for h in handlers]
    for h, file in saved:
        h.console.file = _AboveDisplay(err, file)
    try:
        yield
    finally:
        for h, file in saved:
            h.console.file = file


@contextmanager
def stage_progress(quiet: bool = False, prefect: bool = False):
    """Show the `vigila.operate.log` stages of the work inside (on stderr, only when a terminal and not QUIET)."""
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[who]}"), BarColumn(bar_width=20),
                  TextColumn("{task.description}"), TextColumn("[dim]{task.fields[rows]}"), TimeElapsedColumn(),
                  console=err, transient=True, disable=quiet or not err.is_terminal) as bar:
        if bar.disable:
            yield
            return
        display = StageDisplay(bar)
        with _prefect_console_through() if prefect else nullcontext(), vlog.listening(display):
            yield


ACCOUNT = [("read", "read"), ("published", "published"), ("quarantined", "quarantined (not published)"),
           ("set_aside", "set aside (out of scope, e.g. yearly totals)")]


def print_report(report: dict, *, title: str | None = None) -> None:
    """The data-quality report: rows and cases (and deaths) read = published + quarantined + set aside,
    the harmonised rows published, the failed checks, and why a rejected run published nothing."""
    if report.get("status") == "unchanged":
        out.print(f"[yellow]{esc(report['source_id'])}[/]: {esc(report['notes'][0])} (sha256 {report['file']['sha256'][:12]})")
        return
    status = report.get("status", "processed")
    color = {"published": "green", "rejected": "bold red"}.get(status, "yellow")
    t = Table(title=title or f"{report['source_id']} — data-quality report ([{color}]{status}[/])", title_justify="left",
              show_edge=False)
    counted = [w for w in ("rows", "cases", "deaths") if isinstance(report.get(w), dict)]
    for w in counted:
        t.add_column(w, justify="right")
    t.add_column("", style="bold")
    passed = {"rejected": "passed the checks (not published: the run is rejected)",
              "checked": "would be published"}.get(status, "published")
    for key, label in ACCOUNT:
        t.add_row(*(f"{report[w][key]:,}" for w in counted), passed if key == "published" else label)
    out.print(t)
    if "harmonised_rows" in report:
        out.print(f"{report['harmonised_rows']:,} harmonised weekly rows ({report['cases_published']:,} cases)"
                  + (f"; {report['revisions_added']:,} new revisions published" if "revisions_added" in report else ""))
    if report.get("rows_without_count"):
        out.print(f"[yellow]{report['rows_without_count']:,} rows have no readable count (not in the cases column)[/]")
    if report.get("by_check"):
        c = Table(show_edge=False, title="by check", title_justify="left")
        for col in ("severity", "check", "column", "rows", "cases", "first row", "example value"):
            c.add_column(col, justify="right" if col in ("rows", "cases", "first row") else "left")
        for r in report["by_check"]:
            color = {"error": "red", "warning": "yellow"}.get(r["severity"], "cyan")
            c.add_row(f"[{color}]{r['severity']}[/]", esc(r["check"]), esc(r["column"] or ""), f"{r['rows']:,}",
                      "" if r.get("cases") is None else f"{r['cases']:,}", str(r["first_row"]), esc(str(r["example"])[:60]))
        out.print(c)
    for reason in report.get("rejected_because") or []:
        out.print(f"[bold red]rejected:[/] {esc(reason)}")
    for note in report.get("notes", []):
        out.print(f"[dim]note: {esc(note)}[/]")


def print_failures(first, total: int) -> None:
    """The first failing records (`pipeline.check_head`) of `total`."""
    if total == 0:
        return
    t = Table(title=f"failures (first {first.height} of {total:,})", title_justify="left", show_edge=False)
    for col in ("row", "column", "check", "value", "severity"):
        t.add_column(col, justify="right" if col == "row" else "left")
    for r in first.iter_rows(named=True):
        t.add_row(str(r["row"]), esc(r["column"] or ""), esc(r["check"]), esc(str(r["value"])[:60]), r["severity"])
    out.print(t)


EXIT_REJECTED = 3   # a run (or check) whose data would not be published: too much quarantined, nothing to publish


@app.command()
def check(source: Annotated[Path, typer.Argument(help="source config YAML")],
          file: Annotated[Path | None, typer.Argument(help="the report file to validate (default: the config's location)")] = None,
          limit: Annotated[int, typer.Option(help="failure rows to list")] = 50,
          json_out: Annotated[Path | None, typer.Option("--json", help="also save the report as JSON here")] = None,
          quiet: QUIET = False) -> None:
    """Validate FILE (or what the config's `location` holds) against SOURCE without publishing.
    Exit 0: every row passed; 1: some rows failed a check; 2: the file cannot be read as described;
    3: the run would be rejected (nothing published)."""
    from vigila.ingest import pipeline
    from vigila.config import load_source

    with _user_errors():
        cfg = load_source(source)
        fetched = [] if file is not None else pipeline.fetch(_location_of(cfg, source), cfg)
        try:
            paths = [file] if file is not None else [Path(f.path) for f in fetched if not f.not_modified]
            results = []
            for path in paths:
                with _row_progress(f"checking {path.name}", quiet) as progress:
                    results.append(pipeline.check_head(cfg, path, limit, progress=progress))
        finally:
            for f in fetched:
                f.discard()
    if json_out:   # written first: nothing printed below can lose it
        json_out.write_text(json.dumps(results[0][0] if len(results) == 1 else [r for r, *_ in results], indent=2, default=str))
    for report, first, total in results:
        print_report(report)
        print_failures(first, total)
    reports = [r for r, *_ in results]
    raise typer.Exit(EXIT_REJECTED if any(r["rejected_because"] for r in reports)
                     else 1 if any(r["rows_quarantined"] for r in reports) else 0)


def _location_of(cfg, path: Path) -> str:
    if not cfg.location:
        _fail(f"{path}: no FILE given and the config has no `location`")
    return cfg.location


def _import_flows() -> None:
    # Without PREFECT_API_URL Prefect starts a temporary server: 11-24 s here, more on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    import flows.detect  # noqa: F401  imports Prefect (and sets up its logging) only for commands that orchestrate
    import flows.ingest  # noqa: F401
    import flows.regional  # noqa: F401


CLUSTER = Annotated[str | None, typer.Option("--cluster", help="Dask scheduler address (e.g. tcp://10.0.0.5:8786; default: "
                                             "$VIGILA_DASK_ADDRESS): the flows' tasks run on that cluster's workers; "
                                             "needs a Prefect API the workers reach too")]


def _cluster(given: str | None) -> str | None:
    """The cluster address (option, else VIGILA_DASK_ADDRESS), after checking a Prefect API is configured."""
    from vigila.operate.runtime import cluster_address, prefect_api_configured

    address = cluster_address(given)
    if address and not prefect_api_configured():
        _fail(f"--cluster {address}: the workers report their task runs to a Prefect API; set PREFECT_API_URL "
              "(the same for the workers) or run without a cluster")
    return address


FLOW = Annotated[bool | None, typer.Option("--flow/--no-flow", help="run as a Prefect flow run (default: only when a "
                                           "Prefect API is configured; without one, a flow run starts a temporary server)")]
NO_API_HINT = ("runs are recorded in the warehouse (reports/, `vigila status`); to see them in the Prefect UI, "
               "set PREFECT_API_URL or run `vigila serve`")


def _date_option(value: str | None, option: str) -> dt.date | None:
    """A YYYY-MM-DD option's date (None when not given); a one-line error naming the option otherwise."""
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        _fail(f"{option} {value!r} is not a YYYY-MM-DD date")


def _use_flows(flow: bool | None) -> bool:
    from vigila.operate.runtime import prefect_api_configured

    return prefect_api_configured() if flow is None else flow


def _run_source(source: Path, warehouse: str, location: str | None, issue_date: dt.date | None, force: bool,
                flows: bool) -> list[dict]:
    """One source's reports through the `ingest_source` flow (Prefect) or the same steps in this process."""
    from vigila.config import load_source

    load_source(source)  # fail fast, with one line, before anything starts
    if not flows:
        from vigila import oneoff

        return oneoff.ingest_source(str(source), warehouse, location, issue_date, force)
    _import_flows()
    from flows.ingest import ingest_source

    return ingest_source(str(source), warehouse, location, issue_date, force)


def _run_sources_on_cluster(sources: list[Path], warehouse: str, location: str | None, issue_date: dt.date | None,
                            force: bool, address: str) -> list[dict]:
    """Every source as a task on the Dask cluster at ADDRESS: one `ingest_sources` (or `ingest_source`) flow run."""
    from vigila.config import load_source

    for source in sources:
        load_source(source)  # fail fast, with one line, before anything starts
    _import_flows()
    if len(sources) == 1:
        from flows.ingest import ingest_source

        return ingest_source(str(sources[0]), warehouse, location, issue_date, force, cluster=address)
    from flows.cluster import ingest_sources

    return [r for rs in ingest_sources([str(s) for s in sources], warehouse, issue_date, force, cluster=address) for r in rs]


@app.command()
def ingest(sources: Annotated[list[Path], typer.Argument(help="source config YAML(s)", show_default=False)],
           warehouse: Annotated[str, typer.Option(help="warehouse root: a folder or s3://bucket/prefix")] = "warehouse",
           file: Annotated[str | None, typer.Option(help="a file, glob or folder instead of the config's location")] = None,
           issue_date: Annotated[str | None, typer.Option(help="issue date YYYY-MM-DD (default: config, else today)")] = None,
           force: Annotated[bool, typer.Option(help="re-process bytes that were already ingested")] = False,
           flow: FLOW = None, quiet: QUIET = False, cluster: CLUSTER = None) -> None:
    """Fetch, validate, harmonise and publish each SOURCE's reports (a Prefect flow run when an API is configured;
    with --cluster, one `ingest_sources` run whose sources are tasks on the Dask cluster).
    Exit 3 when a report is rejected (too much quarantined, nothing to publish)."""
    from vigila.ingest import pipeline

    address = _cluster(cluster)
    flows = _use_flows(flow) or bool(address)
    with _user_errors():
        when = _date_option(issue_date, "--issue-date")
        if file and len(sources) > 1:
            _fail("--file goes with one SOURCE")
        try:
            with stage_progress(quiet, prefect=flows):
                if address:
                    reports = _run_sources_on_cluster(sources, warehouse, file, when, force, address)
                else:
                    reports = [r for s in sources for r in _run_source(s, warehouse, file, when, force, flows)]
        except pipeline.RunRejected as e:
            print_report(e.report)
            err.print(f"[bold red]rejected:[/] {esc(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_REJECTED) from None
    for r in reports:
        print_report(r)
    out.print(f"warehouse: [bold]{esc(warehouse)}[/]")
    if not flows:
        out.print(f"[dim]{NO_API_HINT}[/]")


@app.command()
def demo(warehouse: Annotated[str, typer.Option(help="where to publish")] = "warehouse", flow: FLOW = None,
         quiet: QUIET = False, cluster: CLUSTER = None) -> None:
    """Ingest the bundled real reports (PAHO national dengue, Peru's line list), run detection, build the
    regional weekly summary and the bulletin of the latest week, summarise."""
    address = _cluster(cluster)
    flows = _use_flows(flow) or bool(address)
    with _user_errors():
        if flows:
            _import_flows()
            from flows.detect import detect_alerts
            from flows.regional import regional_summary
        else:
            from vigila.oneoff import detect_alerts, regional_summary
        with stage_progress(quiet, prefect=flows):
            demo_sources = [ROOT / "sources" / name for name in DEMO_SOURCES]
            if address:
                reports = _run_sources_on_cluster(demo_sources, warehouse, None, None, False, address)
                detection = detect_alerts(warehouse, cluster=address)   # by blocks of series on the workers
            else:
                reports = [r for s in demo_sources for r in _run_source(s, warehouse, None, None, False, flows)]
                detection = detect_alerts(warehouse)  # vigila/detect/detection.yaml on the published cases_weekly
            regional = regional_summary(warehouse)  # reconcile -> endemic channels -> weekly summary -> bulletin
        for r in reports:
            print_report(r)
    summarise(warehouse)
    print_alarms(warehouse, detection)
    print_regional(regional)
    if not flows:
        out.print(f"[dim]{NO_API_HINT}[/]")


@app.command("alerts")
def alerts_command(warehouse: Annotated[str, typer.Option(help="warehouse root: a folder or s3://bucket/prefix")] = "warehouse",
                   config: Annotated[Path | None, typer.Option(help="detection YAML, layered over vigila/detect/detection.yaml")] = None,
                   as_of: Annotated[str | None, typer.Option(help="YYYY-MM-DD: detect on cases_weekly as known that day")] = None,
                   force: Annotated[bool, typer.Option(help="publish again when input, as-of and config are unchanged")] = False,
                   flow: FLOW = None, quiet: QUIET = False, cluster: CLUSTER = None) -> None:
    """Run the weekly detection (the `detect_alerts` flow: every configured method on every series of the
    published cases_weekly) and publish `alerts`; in this process when no Prefect API is configured."""
    address = _cluster(cluster)
    flows = _use_flows(flow) or bool(address)
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")   # before numpy's import: blocks reuse memory (recycle_memory)
    with _user_errors():
        when = _date_option(as_of, "--as-of")
        from vigila.detect import alerts

        alerts.load_config(config)   # fail fast, naming the file and line
        if flows:
            _import_flows()
            from flows.detect import detect_alerts
        else:
            from vigila.oneoff import detect_alerts
        with stage_progress(quiet, prefect=flows):
            kwargs = {"cluster": address} if address else {}
            summary = detect_alerts(warehouse, str(config) if config else None, when, force, **kwargs)
    out.print(f"alerts {summary['version']} ({summary['status']}): {summary['series']:,} series, {summary['rows']:,} rows, "
              f"alarms {', '.join(f'{m} {n:,}' for m, n in summary['alarms'].items()) or 'none'}")
    if not quiet and sum(summary["alarms"].values()):
        print_alarms(warehouse, summary)
    if not flows:
        out.print(f"[dim]{NO_API_HINT}[/]")


def print_regional(result: dict) -> None:
    """What the regional_summary flow published, and the bulletin's signals."""
    rec, s, b = result["reconciliation"], result["weekly_summary"], result["bulletin"]
    basis = ", ".join(f"{k} {v:,}" for k, v in rec.get("basis", {}).items())
    out.print(f"cases_reconciled {rec['version']}: {rec['rows']:,} rows ({basis}); discrepancies: {rec['discrepancies']:,} "
              f"place-weeks compared, {rec['exceeding']:,} beyond tolerance")
    out.print(f"weekly_summary {s['version']}: {s['rows']:,} rows; latest week {s['epi_year']}-W{s['epi_week']:02d}")
    out.print(f"bulletin {b['epi_year']}-W{b['epi_week']:02d}: {b['signals']} signal(s) -> [bold]{b['uri']}[/] "
              "(other weeks: vigila bulletin --week YYYY-Www)")


def print_alarms(warehouse: str, summary: dict, limit: int = 25) -> None:
    """The most recent alarm of each country in the published `alerts` (any place, any method)."""
    import polars as pl

    from vigila.warehouse import read

    alarms = read.dataset(warehouse, "alerts").filter(pl.col("alarm")).collect()
    latest = (alarms.filter(pl.col("week_start") == pl.col("week_start").max().over("country_iso3"))
              .sort("country_iso3", "method", "series_id").group_by("country_iso3", maintain_order=True)
              .agg(pl.all().first(), pl.col("method").unique(maintain_order=True).alias("methods"),
                   pl.col("series_id").n_unique().alias("series"))
              .sort("week_start", "country_iso3", descending=[True, False]))
    t = Table(title=f"alerts {summary['version']}: most recent alarm per country (of {summary['series']} series; alarms "
              f"{', '.join(f'{m} {n:,}' for m, n in summary['alarms'].items())})", title_justify="left", show_edge=False)
    for col in ("country", "place", "epi week", "week_start", "observed", "expected", "upperbound", "method"):
        t.add_column(col, justify="right" if col in ("observed", "expected", "upperbound") else "left")
    for r in latest.head(limit).iter_rows(named=True):
        more = f" (+{r['series'] - 1} more)" if r["series"] > 1 else ""
        t.add_row(r["country_iso3"], (r["place_name"] or "national") + more, f"{r['epi_year']}-W{r['epi_week']:02d}",
                  str(r["week_start"]), f"{r['observed']:,}", *("" if r[c] is None else f"{r[c]:,.1f}" for c in ("expected", "upperbound")),
                  ", ".join(r["methods"]))
    out.print(t)
    if latest.height > limit:
        out.print(f"[dim]... and {latest.height - limit} more countries: read.dataset(warehouse, 'alerts')[/]")


def summarise(warehouse: str) -> None:
    import polars as pl

    from vigila.warehouse import publish
    from vigila.warehouse.storage import Storage

    storage = Storage.open(warehouse)
    weekly = publish.scan(storage, "cases_weekly")
    by = (weekly.group_by("source_id", "geo_level").agg(pl.len().alias("rows"), pl.col("geo_code").n_unique().alias("places"),
                                                       pl.col("cases").sum(), pl.col("week_start").min().alias("from"),
                                                       pl.col("week_start").max().alias("to")).sort("source_id").collect())
    t = Table(title="cases_weekly", title_justify="left", show_edge=False)
    for c in by.columns:
        t.add_column(c, justify="right" if by[c].dtype.is_numeric() else "left")
    for row in by.iter_rows():
        t.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    out.print(t)
    catalog = storage.read_json("catalog.json")
    c = Table(title=f"catalog: {storage.uri('catalog.json')}", title_justify="left", show_edge=False)
    for col in ("dataset", "rows", "version", "read it from"):
        c.add_column(col, justify="right" if col == "rows" else "left", overflow="fold")
    for ds in catalog.get("datasets", []):
        c.add_row(ds["name"], f"{ds['rows']:,}", ds["version"], publish.current_uri(storage, ds["name"]))
    out.print(c)


@app.command()
def bulletin(warehouse: Annotated[str, typer.Option(help="warehouse root: a folder or s3://bucket/prefix")] = "warehouse",
             week: Annotated[str | None, typer.Option(help="epi week YYYY-Www (default: the latest in weekly_summary)")] = None,
             output: Annotated[Path | None, typer.Option(help="also write the HTML here")] = None,
             config: Annotated[Path | None, typer.Option(help="summary config layered over vigila/regional/summary.yaml")] = None) -> None:
    """Write the weekly bulletin (HTML) of an epi week from the published weekly_summary (no Prefect)."""
    from vigila.regional import regional, summary

    with _user_errors():
        year = wk = None
        if week is not None:
            m = re.fullmatch(r"(\d{4})-?W(\d{1,2})", week.strip(), flags=re.IGNORECASE)
            if not m:
                _fail(f"--week {week!r} is not an epi week like 2024-W07")
            year, wk = int(m[1]), int(m[2])
        try:
            r = regional.write_bulletin(warehouse, config=summary.load_config(config), epi_year=year, epi_week=wk, output=output)
        except ValueError as e:
            _fail(str(e))
    out.print(f"bulletin {r['epi_year']}-W{r['epi_week']:02d}: {r['signals']} signal(s), {r['bytes']:,} bytes -> "
              f"[bold]{r['output'] or r['uri']}[/]" + (f" (also {r['uri']})" if r["output"] else ""))


@app.command("config-reference")
def config_reference(docs: Annotated[Path, typer.Option(help="folder to write into")] = ROOT / "docs") -> None:
    """Write the source-config reference and the catalogue of checks (docs/config_reference.md, docs/checks.md)."""
    from vigila import configdoc

    docs.mkdir(parents=True, exist_ok=True)
    for name, render in configdoc.DOCS.items():
        (docs / name).write_text(render())
        out.print(f"wrote {docs / name}")


@app.command()
def dictionary(output: Annotated[Path, typer.Option(help="Markdown file to write")] = ROOT / "docs" / "data_dictionary.md") -> None:
    """Write the data dictionary generated from the schemas, and schemas/contracts.json (the contracts the
    ingest checks with polars, compiled from the same models)."""
    from vigila.warehouse import contract
    from vigila.warehouse import dictionary as dd

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(dd.markdown())
    out.print(f"wrote {output}")
    out.print(f"wrote {contract.write_contracts()}")


def _deployments(sources: Path, warehouse: str, from_source: bool, cluster: str | None = None) -> list:
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from flows.deploy import deployments_for

    found = deployments_for(sources, warehouse, from_source=from_source, cluster=cluster)
    if not found:
        _fail(f"{sources}: no source config with a `schedule.cron`")
    return found


def _print_deployments(deployments: list, title: str, ids: list[str] | None = None) -> None:
    from flows.deploy import full_name

    t = Table(title=title, title_justify="left", show_edge=False)
    for col in ("deployment", "schedule", "timezone", "tags", *(["id"] if ids else [])):
        t.add_column(col, overflow="fold")
    for i, d in enumerate(deployments):
        s = d.schedules[0].schedule if d.schedules else None
        t.add_row(full_name(d), getattr(s, "cron", ""), getattr(s, "timezone", "") or "", ", ".join(d.tags),
                  *([ids[i]] if ids else []))
    out.print(t)


@app.command()
def serve(sources: Annotated[Path, typer.Option(help="folder of source configs")] = ROOT / "sources",
          warehouse: Annotated[str, typer.Option(help="warehouse root: a folder or s3://bucket/prefix")] = "warehouse",
          limit: Annotated[int | None, typer.Option(help="most flow runs at a time (default: no limit)")] = None,
          cluster: CLUSTER = None) -> None:
    """Serve every scheduled source's deployment (and detect-alerts, check-overdue) from this process until Ctrl-C.
    With --cluster (or VIGILA_DASK_ADDRESS) the ingests and detection run their tasks on that Dask cluster."""
    from vigila.operate.runtime import cluster_address

    with _user_errors():
        found = _deployments(sources, warehouse, from_source=False, cluster=cluster_address(cluster))
    _print_deployments(found, f"serving {len(found)} deployments (Ctrl-C stops; schedules are paused on exit)")
    from flows.deploy import serve_all

    serve_all(found, limit=limit)


@app.command()
def deploy(work_pool: Annotated[str, typer.Option("--work-pool", help="Prefect work pool whose workers run the flows")],
           sources: Annotated[Path, typer.Option(help="folder of source configs")] = ROOT / "sources",
           warehouse: Annotated[str, typer.Option(help="warehouse root: a folder or s3://bucket/prefix")] = "warehouse",
           cluster: CLUSTER = None) -> None:
    """Register every scheduled source's deployment (and detect-alerts, check-overdue) on the Prefect server at PREFECT_API_URL.
    With --cluster (or VIGILA_DASK_ADDRESS) the deployments carry that Dask scheduler address as their `cluster`."""
    from vigila.operate.runtime import cluster_address

    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        _fail("PREFECT_API_URL is not set: point it at your Prefect server (e.g. http://127.0.0.1:4200/api); "
              "without one there is nowhere to register deployments (`vigila serve` needs no server)")
    with _user_errors():
        found = _deployments(sources, warehouse, from_source=True, cluster=cluster_address(cluster))
        from flows.deploy import ensure_process_pool, register

        if ensure_process_pool(work_pool):
            out.print(f"created work pool [bold]{work_pool}[/] (type process)")
        ids = [i for _, i in register(found, work_pool)]
    _print_deployments(found, f"registered {len(found)} deployments on {PREFECT_API_URL.value()} (work pool {work_pool})", ids)
    out.print(f"start a worker in this checkout: [bold]prefect worker start --pool {work_pool} --type process[/]")


@app.command()
def status(warehouse: Annotated[str, typer.Option(help="warehouse root: a folder or s3://bucket/prefix")] = "warehouse",
           sources: Annotated[list[Path] | None, typer.Option("--source", help="a source YAML or a folder of them "
                                                               "(repeatable; default: sources/)")] = None,
           weeks: Annotated[int, typer.Option(min=1, help="weeks of the completeness column")] = 12,
           today: Annotated[str | None, typer.Option(help="evaluate at this date YYYY-MM-DD (default: now)")] = None,
           by_country: Annotated[bool, typer.Option("--by-country", help="one row per source x country: which "
                                                    "countries of a multi-country file are late")] = False,
           json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of the table")] = False) -> None:
    """Reporting status per source: last run, last epi week published, completeness, overdue (no Prefect)."""
    from vigila.ingest import completeness
    from vigila.config import ConfigError, load_source, source_paths

    with _user_errors():
        try:
            when = dt.datetime.now(dt.UTC) if today is None else dt.date.fromisoformat(today)
        except ValueError:
            _fail(f"--today {today!r} is not a YYYY-MM-DD date")
        paths = [p for s in (sources or [ROOT / "sources"]) for p in source_paths(s)]
        configs, broken = [], []
        for p in paths:   # one broken config is shown as broken; the others are still reported
            try:
                configs.append(load_source(p))
            except ConfigError as e:
                broken.append({"source": p.stem, "config": str(p), "broken": str(e)})
        rows = (completeness.status_by_country if by_country else completeness.status)(
            warehouse, configs, today=when, weeks=weeks)
    if json_out:
        sys.stdout.write(json.dumps(rows + broken, indent=2, default=str) + "\n")
        raise typer.Exit(1 if broken else 0)
    t = Table(title=f"reporting status of {warehouse} (as of {when:%Y-%m-%d %H:%M} UTC)" if isinstance(when, dt.datetime)
              else f"reporting status of {warehouse} (as of {when})", title_justify="left", show_edge=False)
    for col in ("source", "country", "last run", "last epi week", f"complete {weeks}w", "overdue"):
        t.add_column(col, justify="right" if col.startswith("complete") else "left")
    for r in rows:
        run = r["last_run"]
        pct = "" if r["completeness_pct"] is None else f"{r['completeness_pct']:.0f}%"
        overdue = ("no data" if r["overdue"] is None else "no" if not r["overdue"]
                   else f"[red]yes[/], since {r['overdue_since'][:16].replace('T', ' ')} UTC")
        t.add_row(esc(r["source"]), r["country"] or "", _run_cell(run), r["last_week_published"] or "none", pct, overdue)
    for b in broken:
        t.add_row(esc(b["source"]), "", "[red]broken config[/]", "", "", esc(b["broken"]))
    out.print(t)
    if broken:
        raise typer.Exit(1)


def _run_cell(run: dict | None) -> str:
    """`vigila status`'s last run: when, its status (red unless it published), the share it lost."""
    if not run:
        return "never"
    status = run["status"] or "?"
    lost = run.get("lost") or {}
    most = max(lost.values(), default=0)
    share = f" (lost {most:.{0 if most >= 0.1 else 2}%}" + (" of cases)" if lost.get("cases", -1) >= lost.get("rows", 0) else " of rows)")
    when = (run["at"] or "")[:16].replace("T", " ")
    failed = status not in ("published", "unchanged")
    return f"{when} " + (f"[red]{esc(status)}[/]" if failed else status) + (share if lost and (failed or max(lost.values()) > 0) else "")


def _table_format(path: Path, flag: str) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".parquet"]:
        return "parquet"
    if suffixes[-1:] == [".csv"] or (flag == "--input" and suffixes[-2:] == [".csv", ".gz"]):
        return "csv"
    _fail(f"{flag} {path}: use a .csv{' or .csv.gz' if flag == '--input' else ''} or .parquet file")


@app.command()
def detect(input_file: Annotated[Path, typer.Option("--input", help="weekly counts: CSV or Parquet with cases, week_start and/or t[, series_id][, population]")],
           method: Annotated[str, typer.Option(help="ears | farrington_flexible | farrington | cusum")],
           output: Annotated[Path, typer.Option(help="results: .csv or .parquet")],
           param: Annotated[list[str] | None, typer.Option(help="a method parameter key=value (repeatable), e.g. method=C2")] = None,
           weeks: Annotated[str | None, typer.Option("--range", help="START:END weeks to evaluate (R's 1-based t); default: the method's")] = None,
           gaps: Annotated[str, typer.Option(help="missing weeks inside a series: error | zero | consecutive (R: rows are weeks)")] = "error",
           top: Annotated[int, typer.Option(help="alarms to list")] = 10,
           quiet: QUIET = False) -> None:
    """Run an aberration-detection method over every series of INPUT (no Prefect)."""
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")   # before numpy's import: blocks reuse memory (recycle_memory)
    import polars as pl

    from vigila.detect import registry
    from vigila.detect.arrays import recycle_memory

    recycle_memory()

    kind, out_kind = _table_format(input_file, "--input"), _table_format(output, "--output")
    try:
        params = registry.parse_params(method, param)
        span = registry.parse_range(weeks) if weeks else None
        with stage_progress(quiet):
            try:
                with vlog.stage("read", source=input_file.name):
                    # a Parquet file is read in slices as the blocks need them (its series contiguous in order, as
                    # usual); a CSV whole. Either way results go to the output block by block: nothing holds them all
                    source = _parquet_slices(input_file) if kind == "parquet" else pl.read_csv(input_file, infer_schema_length=None)
            except FileNotFoundError:
                _fail(f"--input {input_file}: no such file")
            except pl.exceptions.PolarsError as e:
                _fail(f"--input {input_file}: cannot read it ({str(e).splitlines()[0]})")
            with vlog.stage("detect", method=method, step="1/1") as logged:
                try:
                    summary = _detect_to_file(source, output, out_kind, method, params, span, gaps, top)
                except registry.NeedsWholeInput:    # series not in order or a bad row: sort it whole, name the row
                    summary = _detect_to_file(pl.read_parquet(input_file), output, out_kind, method, params, span, gaps, top)
                logged.update(series=summary["series"], rows=summary["rows"], alarms=summary["alarms"])
    except (ValueError, NotImplementedError) as e:  # DetectInputError and the methods' parameter checks
        _fail(str(e))
    except pl.exceptions.PolarsError as e:          # a Parquet slice that cannot be read
        _fail(f"--input {input_file}: cannot read it ({str(e).splitlines()[0]})")
    t = Table(title=f"{method} on {input_file.name}", title_justify="left", show_edge=False, show_header=False)
    t.add_column(justify="right")
    t.add_column(style="bold")
    for n, what in ((summary["series"], "series"), (summary["rows"], "series-weeks evaluated"),
                    (summary["bounded"], "with a bound (enough history)"), (summary["alarms"], "alarms")):
        t.add_row(f"{n:,}", what)
    out.print(t)
    if summary["rows"] == 0:
        out.print(f"[yellow]no week evaluated: the series are shorter than {method}'s history or --range lies outside them[/]")
    latest = summary["latest"]
    if summary["alarms"] and top > 0:
        a = Table(title=f"latest alarms ({min(top, summary['alarms'])} of {summary['alarms']:,})", title_justify="left", show_edge=False)
        for col in ("series_id", "t", "week_start", "observed", "expected", "upperbound"):
            a.add_column(col, justify="left" if col in ("series_id", "week_start") else "right")
        for r in latest.iter_rows(named=True):
            a.add_row(r["series_id"], str(r["t"]), str(r["week_start"] or ""),
                      *(f"{r[c]:,.1f}" if r[c] is not None else "" for c in ("observed", "expected", "upperbound")))
        out.print(a)
    out.print(f"wrote {output}")


DETECT_SLICE = 1_000_000          # rows of a Parquet input read at a time by `vigila detect`


def _parquet_slices(path: Path):
    """A Parquet file's rows in order, DETECT_SLICE at a time (only the row groups a slice needs are read);
    its row count is read now, so a missing or unreadable file fails here."""
    import polars as pl

    scan = pl.scan_parquet(path)
    n = scan.select(pl.len()).collect().item()

    def slices():
        for at in range(0, max(n, 1), DETECT_SLICE):
            yield scan.slice(at, DETECT_SLICE).collect()
    return slices()


def _arrow_block(block, runs):
    """A result block as an Arrow table for the Parquet writer: series_id and method dictionary-encoded from their
    runs (one per series; one method), the other columns as polars exports them."""
    import numpy as np
    import polars as pl
    import pyarrow as pa

    text = {"series_id": runs, "method": block.select(pl.col("method").rle()).unnest("method")}
    table = block.drop(*text).to_arrow(compat_level=pl.CompatLevel.oldest())
    for name, r in text.items():
        codes = np.repeat(np.arange(r.height, dtype=np.int32), r["len"].to_numpy())   # not pa.array: it imports pandas
        codes = pa.Array.from_buffers(pa.int32(), len(codes), [None, pa.py_buffer(codes)])
        words = r["value"].cast(pl.String).to_arrow(compat_level=pl.CompatLevel.oldest())
        table = table.add_column(block.columns.index(name), name, pa.DictionaryArray.from_arrays(codes, words))
    # the key columns never hold a null (prepare refuses them): written as required, no definition levels to
    # encode (~12 % of the writer's CPU on 51 M rows); a block that broke this would fail the writer's schema check
    fields = [f.with_nullable(f.name not in _REQUIRED or table[f.name].null_count > 0) for f in table.schema]
    return pa.Table.from_arrays(table.columns, schema=pa.schema(fields))


_REQUIRED = ("series_id", "t", "observed", "method")


def _detect_to_file(source, output: Path, out_kind: str, method: str, params: dict, span, gaps: str, top: int) -> dict:
    """`registry.detect_blocks` written block by block to `output` (via a temporary file beside it, renamed when
    complete; a writer thread encodes one block while the next is detected); returns the counts for the
    summary and the `top` latest alarms."""
    from concurrent.futures import ThreadPoolExecutor

    import polars as pl

    from vigila.operate import textsafe
    from vigila.detect import registry

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    counts = {"series": 0, "rows": 0, "bounded": 0, "alarms": 0}
    latest: list = []
    newest = [pl.col("week_start"), pl.col("t")]
    state: dict = {}

    def write(block: pl.DataFrame, runs: pl.DataFrame) -> None:
        if out_kind == "parquet":
            import pyarrow.parquet as pq

            table = _arrow_block(block, runs)
            if "writer" not in state:      # the text columns arrive dictionary-encoded (nothing to hash); no Arrow
                state["writer"] = pq.ParquetWriter(   # schema stored: readers see plain text, not categoricals
                    partial, table.schema, compression="snappy", use_dictionary=["series_id", "method"], store_schema=False,
                    write_statistics=["series_id", "t", "week_start"])     # min/max where a reader filters
            state["writer"].write_table(table, row_group_size=1 << 20)
        else:               # series ids come from the user's file: no formula reaches a spreadsheet
            if "file" not in state:
                state["file"] = partial.open("wb")
            textsafe.frame(block).write_csv(state["file"], include_header=state.setdefault("header", True))
            state["header"] = False

    try:
        with ThreadPoolExecutor(1) as pool:
            pending = None
            for block in registry.detect_blocks(source, method, params, span, gaps):
                runs = block.select(pl.col("series_id").rle()).unnest("series_id")    # a block: whole series in order
                counts["series"] += runs.height
                counts["rows"] += block.height
                counts["bounded"] += block["upperbound"].is_not_null().sum()
                alarms = block.filter(pl.col("alarm").fill_null(False))
                counts["alarms"] += alarms.height
                if alarms.height and top > 0:
                    latest.append(alarms.sort(newest, descending=True, nulls_last=True, maintain_order=True).head(top))
                if pending is not None:
                    pending.result()
                pending = pool.submit(write, block, runs)
            if pending is not None:
                pending.result()
        if "writer" in state:
            state.pop("writer").close()
        if "file" in state:
            state.pop("file").close()
        partial.replace(output)
    finally:
        for handle in (state.get("writer"), state.get("file")):
            if handle is not None:
                handle.close()
        partial.unlink(missing_ok=True)
    counts["latest"] = (pl.concat(latest).sort(newest, descending=True, nulls_last=True, maintain_order=True).head(top)
                        if latest else None)
    return counts


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
