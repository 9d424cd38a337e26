"""The weekly bulletin: one self-contained HTML page per epi week, built from `weekly_summary`.

Input: a `weekly_summary` frame (one row per series x week: cases, thresholds, endemic channel,
alarms, reporting status; see REQUIRED) and optionally a data-quality frame (QUALITY_COLUMNS, one
row per source). Output: an HTML string (`render`) or file (`write`) with the week's signals table,
an epidemic curve per signalled series, a countries x diseases overview and the data-quality notes.

Charts are Altair (Vega-Lite) specs with their data inline, drawn in the page by vega-embed, whose
JavaScript (vl-convert's bundle) is inlined once: the page needs no network when viewed. Pure: no Prefect, no clock
unless `generated_at` is omitted.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import html
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import altair as alt
import polars as pl

from schemas.outputs import ZONES

REQUIRED = [
    "disease", "country_iso3", "country_name", "geo_level", "geo_code", "geo_name", "epi_year", "epi_week",
    "week_start", "cases", "sources", "basis", "incidence_100k", "change_prev4", "ytd_ratio", "endemic_method",
    "endemic_lower", "endemic_median", "endemic_upper", "endemic_zone", "threshold", "threshold_method",
    "alarm", "alarm_methods", "reporting_status", "completeness", "signal", "signal_note",
]
# The data-quality frame: one row per source. rows_quarantined: rows that failed a blocking check in
# the latest run; top_check: the most frequent failed check; last_week_published: e.g. "2024-W05".
QUALITY_COLUMNS = ["source_id", "country_iso3", "rows_quarantined", "top_check", "reporting_status", "last_week_published"]
SERIES = ["disease", "country_iso3", "geo_level", "geo_code"]
ZONE_COLOURS = ["#66bd63", "#fee08b", "#fdae61", "#d73027"]
ZONE_LABELS = {"success": "success (below lower)", "safety": "safety (lower-median)",
               "alert": "alert (median-upper)", "epidemic": "epidemic (above upper)"}
# Overview cell states: a zone, reported without an endemic channel, or not reported at all.
CELL_STATES = [*ZONES, "no channel", "not reported"]
CELL_COLOURS = [*ZONE_COLOURS, "#deebf7", "#969696"]
INCOMPLETE_STATUSES = ("partial", "missing", "pending")   # summary.yaml incomplete_statuses' default: late is complete
CASES_COLOUR = "#253494"
THRESHOLD_COLOUR = "#7a0177"


class BulletinInputError(ValueError):
    """The summary or quality frame lacks columns the bulletin needs."""


# ---------------------------------------------------------------------------------------------- public


def render(summary: pl.DataFrame, *, epi_year: int, epi_week: int, quality: pl.DataFrame | None = None,
           discrepancies: pl.DataFrame | None = None, incomplete: Sequence[str] = INCOMPLETE_STATUSES,
           title: str = "Vigila weekly surveillance bulletin", history_weeks: int = 52,
           generated_at: dt.datetime | None = None, data_versions: Mapping[str, str] | None = None) -> str:
    """The bulletin of `epi_year`-W`epi_week` as one self-contained HTML document."""
    _require(summary, REQUIRED, "weekly_summary")
    if quality is not None:
        _require(quality, QUALITY_COLUMNS, "quality")
    generated_at = generated_at or dt.datetime.now(dt.UTC)
    summary = summary.with_columns(pl.coalesce("country_name", "country_iso3").alias("country_name"))
    week = summary.filter((pl.col("epi_year") == epi_year) & (pl.col("epi_week") == epi_week))
    week_start = week["week_start"].min() if week.height else None
    # MMWR (Sunday) and ISO (Monday) series of the same epi week start a day apart: the window ends at the later one
    history = _history(summary, week["week_start"].max() if week.height else None, history_weeks)
    signals = _signals(week)

    specs: dict[str, dict] = {}
    curves_html = []
    by_series = history.sort("week_start").partition_by(SERIES, as_dict=True) if signals.height else {}
    for i, row in enumerate(signals.iter_rows(named=True)):
        chart_id = f"curve-{i}"
        specs[chart_id] = _curve_spec(by_series[tuple(row[k] for k in SERIES)], week_start)
        curves_html.append(_curve_block(chart_id, row, history_weeks))
    overview = _overview_cells(history, week)
    if overview.height:
        specs["overview"] = _compile(_overview_chart(overview))

    week_label = f"{epi_year}-W{epi_week:02d}"
    body = [
        _header(title, week_label, week_start, generated_at, data_versions, week, signals),
        _signals_section(signals, week_label, week.height),
        _overview_section(overview, week_label),
        _curves_section(curves_html),
        _quality_section(week, quality, tuple(incomplete)),
        _discrepancy_section(discrepancies, epi_year, epi_week),
    ]
    return _page(f"{title} — {week_label}", "\n".join(body), specs)


def write(summary: pl.DataFrame, path: str | os.PathLike, **kwargs) -> Path:
    """Render (same keyword arguments as `render`) and write the page atomically to `path`."""
    return write_text(render(summary, **kwargs), path)


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a rendered page atomically to `path` (a temporary file beside it, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------- data


def _require(df: pl.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BulletinInputError(f"{name} lacks column(s) {', '.join(missing)}")


def _history(summary: pl.DataFrame, week_start: dt.date | None, weeks: int) -> pl.DataFrame:
    """The `weeks` weeks up to and including the bulletin's week."""
    if week_start is None:
        return summary.clear()
    first = week_start - dt.timedelta(weeks=weeks - 1, days=1)   # both conventions' first week
    return summary.filter(pl.col("week_start").is_between(first, week_start))


def _zone_rank(column: str = "endemic_zone") -> pl.Expr:
    return pl.col(column).replace_strict(ZONES, list(range(1, len(ZONES) + 1)), default=0, return_dtype=pl.Int8)


def _signals(week: pl.DataFrame) -> pl.DataFrame:
    """The week's signalled series, worst first: epidemic zone, then alarms, then incidence and cases."""
    return (week.filter(pl.col("signal").fill_null(False))
            .with_columns(_zone_rank().alias("_zone_rank"))
            .sort(["_zone_rank", "alarm", "incidence_100k", "cases", "country_name", "geo_name"],
                  descending=[True, True, True, True, False, False], nulls_last=True)
            .drop("_zone_rank"))


def _overview_cells(history: pl.DataFrame, week: pl.DataFrame) -> pl.DataFrame:
    """One cell per country x disease seen in the history window: the week's worst zone among the
    series that reported, 'no channel' when none has an endemic channel, 'not reported' when none
    reported; national cases when a national series reported, else the sum of subnational ones."""
    pairs = history.select("country_iso3", "country_name", "disease").unique()
    if pairs.is_empty():
        return pl.DataFrame(schema={"country_iso3": pl.Utf8, "country_name": pl.Utf8, "disease": pl.Utf8,
                                    "state": pl.Utf8, "cases": pl.Int64, "signals": pl.UInt32, "alarm": pl.Boolean,
                                    "series": pl.UInt32, "reported": pl.UInt32, "signalled": pl.Utf8, "label": pl.Utf8})
    reported = pl.col("cases").is_not_null()
    per_pair = (week.with_columns(_zone_rank().alias("_rank"))
                .group_by("country_iso3", "disease")
                .agg(series=pl.len(), reported=reported.sum(),
                     rank=pl.col("_rank").filter(reported).max(),
                     national=pl.col("cases").filter(pl.col("geo_level") == "admin0").sum(),
                     has_national=(reported & (pl.col("geo_level") == "admin0")).any(),
                     subnational=pl.col("cases").filter(pl.col("geo_level") != "admin0").sum(),
                     signals=pl.col("signal").fill_null(False).sum(),
                     alarm=pl.col("alarm").fill_null(False).any(),
                     signalled=pl.col("geo_name").filter(pl.col("signal").fill_null(False)).sort().str.join(", ")))
    cells = pairs.join(per_pair, on=["country_iso3", "disease"], how="left").with_columns(
        pl.col("series", "reported", "signals").fill_null(0), pl.col("alarm").fill_null(False))
    return cells.with_columns(
        state=pl.when(pl.col("reported") == 0).then(pl.lit("not reported"))
        .when(pl.col("rank").fill_null(0) == 0).then(pl.lit("no channel"))
        .otherwise(pl.col("rank").cast(pl.Int64).replace_strict(list(range(1, len(ZONES) + 1)), ZONES, return_dtype=pl.Utf8)),
        cases=pl.when(pl.col("reported") == 0).then(None)
        .when(pl.col("has_national")).then(pl.col("national")).otherwise(pl.col("subnational")).cast(pl.Int64),
    ).with_columns(
        label=pl.when(pl.col("state") == "not reported").then(pl.lit("n/r"))
        .otherwise(pl.col("cases").map_elements(_fmt_int, return_dtype=pl.Utf8))
        + pl.when(pl.col("signals") > 0).then(pl.lit(" ▲") + pl.col("signals").cast(pl.Utf8)).otherwise(pl.lit("")),
    ).select("country_iso3", "country_name", "disease", "state", "cases", "signals", "alarm", "series", "reported",
             "signalled", "label").sort("country_name", "disease")


# ---------------------------------------------------------------------------------------------- charts


def _iso(d: dt.date | None) -> str | None:
    """A local-midnight timestamp: a bare ISO date would be read as UTC and shown a day early in the Americas."""
    return None if d is None else f"{d.isoformat()}T00:00:00"


def _curve_spec(series: pl.DataFrame, week_start: dt.date) -> dict:
    """The epidemic curve of one series: its weeks as inline data in the (cached) template."""
    rows = series.select("week_start", "epi_year", "epi_week", "cases", "threshold", "endemic_lower",
                         "endemic_median", "endemic_upper", "endemic_zone").to_dicts()
    top = max([v for r in rows for v in (r["cases"], r["threshold"], r["endemic_upper"]) if v is not None] or [1.0])
    weeks = []
    for r in rows:
        start = r["week_start"]
        weeks.append({"start": _iso(start), "end": _iso(start + dt.timedelta(days=7)),
                      "mid": (dt.datetime.combine(start, dt.time()) + dt.timedelta(days=3.5)).isoformat(),
                      "week": f"{r['epi_year']}-W{r['epi_week']:02d}", "cases": r["cases"], "threshold": r["threshold"],
                      "lo": r["endemic_lower"], "med": r["endemic_median"], "up": r["endemic_upper"],
                      "zone": r["endemic_zone"] or "—", "reported": r["cases"] is not None, "current": start == week_start})
    if weeks and weeks[-1]["threshold"] is not None:  # the step line's last step ends with its week
        weeks.append({"start": weeks[-1]["end"], "threshold": weeks[-1]["threshold"], "tail": True})
    spec = copy.deepcopy(_curve_template(
        channel=any(r["endemic_lower"] is not None and r["endemic_upper"] is not None for r in rows),
        threshold=any(r["threshold"] is not None for r in rows),
        missing=any(r["cases"] is None for r in rows)))
    spec["data"] = {"values": weeks}
    spec["params"] = [{"name": "top", "value": float(top) * 1.08 or 1.0}]
    return spec


@functools.lru_cache(maxsize=8)
def _curve_template(*, channel: bool, threshold: bool, missing: bool) -> dict:
    """Weekly cases as a line over the endemic channel (bands coloured by zone), the detection
    threshold as a dashed step line, the bulletin's week outlined, not-reported weeks marked at zero.
    Built and validated by Altair once per combination of layers; `top` (the y maximum) is a param."""
    top = alt.param(name="top", value=1.0)
    x = alt.X("start:T", title=None, axis=alt.Axis(format="%d %b %Y", labelAngle=0, tickCount=6))
    y_scale = alt.Scale(domainMin=0, domainMax=alt.ExprRef(expr="top"), nice=False, zero=True)
    zone_colour = alt.Color("band:N", title="Endemic channel", legend=alt.Legend(orient="bottom"),
                            scale=alt.Scale(domain=[ZONE_LABELS[z] for z in ZONES], range=ZONE_COLOURS))
    base = alt.Chart()
    has_channel = "datum.lo != null && datum.med != null && datum.up != null"
    bounds = {"success": ("0", "datum.lo"), "safety": ("datum.lo", "datum.med"), "alert": ("datum.med", "datum.up"),
              "epidemic": ("datum.up", "top")}
    bands = [base.transform_filter(has_channel).transform_calculate(band=json.dumps(ZONE_LABELS[zone]), y0=y0, y1=y1)
             .mark_rect(opacity=0.5).encode(x=x, x2="end:T", y=alt.Y("y0:Q", scale=y_scale, title="cases"), y2="y1:Q",
                                             color=zone_colour)
             for zone, (y0, y1) in bounds.items()]
    tooltip = [alt.Tooltip("week:N", title="epi week"), alt.Tooltip("cases:Q", title="cases", format=","),
               alt.Tooltip("threshold:Q", title="threshold", format=",.1f"), alt.Tooltip("zone:N", title="zone")]
    line = base.transform_filter("!datum.tail").mark_line(
        color=CASES_COLOUR, strokeWidth=2, invalid="break-paths-filter-domains").encode(
        x=alt.X("mid:T", title=None), y=alt.Y("cases:Q", scale=y_scale, title="cases"))
    points = base.transform_filter("datum.reported").mark_point(filled=True, color=CASES_COLOUR, opacity=1).encode(
        x=alt.X("mid:T"), y=alt.Y("cases:Q", scale=y_scale),
        size=alt.condition("datum.current", alt.value(70), alt.value(14)), tooltip=tooltip)
    threshold_line = base.transform_filter("datum.threshold != null").mark_line(
        color=THRESHOLD_COLOUR, strokeDash=[6, 3], strokeWidth=2, interpolate="step-after").encode(
        x=x, y=alt.Y("threshold:Q", scale=y_scale), tooltip=tooltip)
    not_reported = base.transform_filter("!datum.reported && !datum.tail").mark_point(
        shape="triangle-up", color="#252525", filled=True, size=70).encode(
        x=alt.X("mid:T"), y=alt.datum(0), tooltip=[alt.Tooltip("week:N", title="not reported")])
    current = base.transform_filter("datum.current").transform_calculate(y0="0", y1="top").mark_rect(
        fillOpacity=0, stroke="black", strokeWidth=1.5, strokeDash=[3, 2]).encode(
        x=x, x2="end:T", y=alt.Y("y0:Q", scale=y_scale), y2="y1:Q")
    layers = [*(bands if channel else []), line, points, *([threshold_line] if threshold else []),
              *([not_reported] if missing else []), current]
    chart = alt.layer(*layers, data=alt.NamedData(name="series")).add_params(top).properties(width=560, height=220)
    return _compile(chart)


def _overview_chart(cells: pl.DataFrame) -> alt.LayerChart:
    """Countries x diseases, each cell coloured by the week's worst zone (or not reported), labelled
    with the week's cases and ▲n for n signalled series; cells with an alarm get a thick outline."""
    values = cells.to_dicts()
    x = alt.X("disease:N", title=None, axis=alt.Axis(orient="top", labelAngle=0))
    y = alt.Y("country_name:N", title=None, sort="ascending")
    tooltip = [alt.Tooltip("country_name:N", title="country"), alt.Tooltip("disease:N", title="disease"),
               alt.Tooltip("state:N", title="worst zone"), alt.Tooltip("cases:Q", title="cases", format=","),
               alt.Tooltip("signals:Q", title="signalled series"), alt.Tooltip("signalled:N", title="signalled places"),
               alt.Tooltip("reported:Q", title="series reported"), alt.Tooltip("series:Q", title="series expected")]
    base = alt.Chart(alt.Data(values=values)).encode(x=x, y=y)
    cell = base.mark_rect().encode(
        color=alt.Color("state:N", title="Worst zone this week",
                        scale=alt.Scale(domain=CELL_STATES, range=CELL_COLOURS), legend=alt.Legend(orient="right")),
        stroke=alt.condition("datum.alarm", alt.value("black"), alt.value("white")),
        strokeWidth=alt.condition("datum.alarm", alt.value(3), alt.value(1)),
        tooltip=tooltip)
    text = base.mark_text(fontSize=11).encode(
        text="label:N",
        color=alt.condition("datum.state == 'epidemic' || datum.state == 'not reported'", alt.value("white"),
                            alt.value("black")),
        tooltip=tooltip)
    n_diseases = cells["disease"].n_unique()
    return alt.layer(cell, text).properties(width=max(120, 110 * n_diseases), height=alt.Step(24))


def _compile(chart: alt.TopLevelMixin) -> dict:
    """The chart as a Vega-Lite spec with its data inline."""
    return chart.configure_view(stroke=None).configure(font="system-ui, sans-serif").to_dict()


@functools.lru_cache(maxsize=1)
def _vega_runtime() -> str:
    """vega-embed with Vega and Vega-Lite and their dependencies, defining `window.vegaEmbed`
    (about 900 KB; vl-convert's bundle of Vega alone leaves `window.vega` null, so the embed is it)."""
    import vl_convert

    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])  # the Vega-Lite Altair writes
    version = major_minor if major_minor in vl_convert.get_vegalite_versions() else None
    return vl_convert.javascript_bundle(vl_version=version).replace("</script", "<\\/script")


# ---------------------------------------------------------------------------------------------- html


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt_int(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def _fmt_float(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _fmt_share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _fmt_change(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.0f}%"


def _fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _fmt_methods(methods: str | None, alarm: bool | None) -> str:
    if methods:
        return ", ".join(m.strip() for m in methods.split(",") if m.strip())
    return "no alarm" if alarm is False else "—"


def _place(row: Mapping) -> str:
    return "national" if row["geo_level"] == "admin0" else (row["geo_name"] or row["geo_code"])


def _series_name(row: Mapping) -> str:
    return f"{row['disease']} — {row['country_name']}, {_place(row)}"


def _zone_badge(zone: str | None) -> str:
    if zone is None:
        return '<span class="zone zone-none">no channel</span>'
    return f'<span class="zone zone-{_e(zone)}">{_e(zone)}</span>'


def _status(row: Mapping) -> str:
    parts = [p for p in (row["reporting_status"], row["signal_note"]) if p]
    return "; ".join(parts) if parts else "—"


def _header(title: str, week_label: str, week_start: dt.date | None, generated_at: dt.datetime,
            data_versions: Mapping[str, str] | None, week: pl.DataFrame, signals: pl.DataFrame) -> str:
    if week_start is None:
        dates = "no data for this week"
    else:
        end = week_start + dt.timedelta(days=6)
        dates = f"{week_start:%d %b %Y} – {end:%d %b %Y}"
    if generated_at.tzinfo:
        stamp = generated_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    else:
        stamp = f"{generated_at:%Y-%m-%d %H:%M}"
    versions = ""
    if data_versions:
        items = "".join(f"<li><code>{_e(k)}</code>: {_e(v)}</li>" for k, v in data_versions.items())
        versions = f'<details class="versions"><summary>Data versions</summary><ul>{items}</ul></details>'
    reported = week.filter(pl.col("cases").is_not_null())
    facts = [
        ("series this week", _fmt_int(week.height)),
        ("reported", _fmt_int(reported.height)),
        ("not reported", _fmt_int(week.height - reported.height)),
        ("signals", _fmt_int(signals.height)),
        ("countries", _fmt_int(week["country_iso3"].n_unique() if week.height else 0)),
    ]
    facts_html = "".join(f'<div class="fact"><span class="n">{_e(v)}</span><span>{_e(k)}</span></div>' for k, v in facts)
    return (f'<header><h1>{_e(title)}</h1>'
            f'<p class="week">Epidemiological week <strong>{_e(week_label)}</strong> · {_e(dates)}</p>'
            f'<p class="meta">Generated {_e(stamp)}</p>{versions}'
            f'<div class="facts" id="facts">{facts_html}</div></header>')


def _signals_section(signals: pl.DataFrame, week_label: str, week_rows: int) -> str:
    if signals.is_empty():
        why = "No series reported data for this week." if week_rows == 0 else \
            "No signals this week: no detection method alarmed and no series is in its epidemic zone."
        return (f'<section id="signals"><h2>Signals, {_e(week_label)}</h2>'
                f'<p class="no-signals" id="no-signals">{_e(why)}</p></section>')
    head = ("Country", "Place", "Disease", "Cases", "Incidence /100k", "vs previous 4 weeks", "Year to date vs previous years",
            "Endemic zone", "Alarms (method)", "Reporting")
    rows = []
    for i, r in enumerate(signals.iter_rows(named=True)):
        rows.append(
            "<tr>"
            f'<td>{_e(r["country_name"])}</td><td><a href="#curve-block-{i}">{_e(_place(r))}</a></td><td>{_e(r["disease"])}</td>'
            f'<td class="num">{_e(_fmt_int(r["cases"]))}</td><td class="num">{_e(_fmt_float(r["incidence_100k"]))}</td>'
            f'<td class="num">{_e(_fmt_change(r["change_prev4"]))}</td><td class="num">{_e(_fmt_ratio(r["ytd_ratio"]))}</td>'
            f'<td>{_zone_badge(r["endemic_zone"])}</td>'
            f'<td>{_e(_fmt_methods(r["alarm_methods"], r["alarm"]))}</td>'
            f'<td>{_e(_status(r))}</td></tr>')
    thead = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (f'<section id="signals"><h2>Signals, {_e(week_label)} ({signals.height})</h2>'
            '<p class="hint">A series signals when a detection method alarmed or its cases are in the epidemic zone '
            'of its endemic channel. Worst first.</p>'
            f'<table class="signals" id="signals-table"><thead><tr>{thead}</tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _overview_section(cells: pl.DataFrame, week_label: str) -> str:
    if cells.is_empty():
        return ""
    return (f'<section id="overview-section"><h2>Regional overview, {_e(week_label)}</h2>'
            '<p class="hint">Each cell: the worst endemic zone among the country\'s series for the disease this week; '
            'the label is the week\'s cases (national if reported, else the sum of subnational series) and ▲n the number '
            'of signalled series; a thick black outline marks an alarm; grey "n/r": not reported.</p>'
            '<div class="chart" id="overview"></div></section>')


def _curve_block(chart_id: str, row: Mapping, history_weeks: int) -> str:
    i = chart_id.split("-")[1]
    channel = row["endemic_method"] or "none"
    caption = (f"Weekly cases (line), last {history_weeks} weeks; dashed line: detection threshold "
               f"({row['threshold_method'] or 'none'}); bands: endemic channel ({channel}); dotted box: this week; "
               f"▲ at zero: not reported. Source: {row['sources'] or '—'}; basis: {row['basis'] or '—'}.")
    return (f'<figure class="curve" id="curve-block-{i}"><figcaption><h3>{_e(_series_name(row))} '
            f'{_zone_badge(row["endemic_zone"])}</h3><p>{_e(caption)}</p></figcaption>'
            f'<div class="chart" id="{_e(chart_id)}"></div></figure>')


def _curves_section(blocks: list[str]) -> str:
    if not blocks:
        return ""
    return (f'<section id="curves"><h2>Epidemic curves of the signalled series</h2>'
            f'<div class="curves">{"".join(blocks)}</div></section>')


def _quality_section(week: pl.DataFrame, quality: pl.DataFrame | None, incomplete: tuple[str, ...]) -> str:
    parts = ['<section id="quality"><h2>Data quality and completeness</h2>']
    not_reported = week.filter(pl.col("cases").is_null())
    if not_reported.is_empty():
        parts.append('<p>Every expected series reported this week.</p>' if week.height else '<p>No series this week.</p>')
    else:
        items = []
        for (country, disease), g in not_reported.group_by(["country_name", "disease"], maintain_order=True):
            places = sorted(_place(r) for r in g.iter_rows(named=True))
            notes = sorted({n for n in g["signal_note"].to_list() + g["reporting_status"].to_list() if n})
            shown = ", ".join(places[:8]) + (f" and {len(places) - 8} more" if len(places) > 8 else "")
            items.append(f"<li><strong>{_e(country)}</strong> — {_e(disease)}: {_e(shown)}"
                         f"{' (' + _e('; '.join(notes)) + ')' if notes else ''}</li>")
        parts.append(f'<h3>Not reported this week</h3><ul id="not-reported">{"".join(sorted(items))}</ul>')
    by_country = (week.group_by("country_name")
                  .agg(series=pl.len(), reported=pl.col("cases").is_not_null().sum(),
                       completeness=pl.col("completeness").mean(),
                       statuses=pl.col("reporting_status").drop_nulls().unique().sort().str.join(", "))
                  .sort("country_name"))
    if by_country.height:
        rows = "".join(
            f'<tr><td>{_e(r["country_name"])}</td><td class="num">{r["reported"]:,} / {r["series"]:,}</td>'
            f'<td class="num">{_e(_fmt_share(r["completeness"]))}</td>'
            f'<td class="{"warn" if set((r["statuses"] or "").split(", ")) & set(incomplete) else ""}">'
            f'{_e(r["statuses"] or "—")}</td></tr>' for r in by_country.iter_rows(named=True))
        parts.append('<h3>Reporting by country</h3>' + _plain_table(
            ["Country", "Series reported", "Completeness", "Reporting status"], rows, "completeness"))
    if quality is not None and quality.height:
        q = quality.sort(["rows_quarantined", "source_id"], descending=[True, False], nulls_last=True)
        rows = "".join(
            f'<tr><td><code>{_e(r["source_id"])}</code></td><td>{_e(r["country_iso3"] or "—")}</td>'
            f'<td class="{"warn" if r["reporting_status"] in incomplete else ""}">{_e(r["reporting_status"] or "—")}</td>'
            f'<td>{_e(r["last_week_published"] or "—")}</td><td class="num">{_e(_fmt_int(r["rows_quarantined"]))}</td>'
            f'<td>{_e(r["top_check"] or "—")}</td></tr>' for r in q.iter_rows(named=True))
        parts.append('<h3>Sources</h3>' + _plain_table(
            ["Source", "Country", "Reporting status", "Last week published", "Rows quarantined (latest run)",
             "Most frequent failed check"], rows, "sources"))
    parts.append("</section>")
    return "".join(parts)


DISCREPANCY_COLUMNS = ["country_iso3", "geo_level", "disease", "epi_year", "epi_week", "source_a", "source_b",
                       "relative_difference", "exceeds"]


def _discrepancy_section(discrepancies: pl.DataFrame | None, epi_year: int, epi_week: int) -> str:
    """Reporters of one country that disagree (dataset `discrepancies`): national place-weeks compared up to
    the bulletin's week, those beyond tolerance, and the bulletin week's own difference."""
    if discrepancies is None or discrepancies.is_empty():
        return ""
    _require(discrepancies, DISCREPANCY_COLUMNS, "discrepancies")
    upto = discrepancies.filter(pl.col("geo_level") == "admin0",
                                (pl.col("epi_year") * 100 + pl.col("epi_week")) <= epi_year * 100 + epi_week)
    if upto.is_empty():
        return ""
    this = (pl.col("epi_year") == epi_year) & (pl.col("epi_week") == epi_week)
    by = (upto.group_by("country_iso3", "disease", "source_a", "source_b")
          .agg(pl.len().alias("compared"), pl.col("exceeds").sum().alias("beyond"),
               pl.col("relative_difference").filter(this).first().alias("now"))
          .sort("country_iso3", "disease"))
    rows = "".join(
        f'<tr><td>{_e(r["country_iso3"])}</td><td>{_e(r["disease"])}</td><td><code>{_e(r["source_a"])}</code> vs '
        f'<code>{_e(r["source_b"])}</code></td><td class="num">{r["compared"]:,}</td>'
        f'<td class="num {"warn" if r["beyond"] else ""}">{r["beyond"]:,}</td>'
        f'<td class="num">{_e(_fmt_change(r["now"]))}</td></tr>'
        for r in by.iter_rows(named=True))
    return ('<section id="discrepancies"><h2>Reporters that disagree</h2><p>National weekly counts of two reporters of '
            'the same population (dataset <code>discrepancies</code>), up to this week: weeks compared, weeks beyond the '
            'configured tolerance, and this week\'s difference (second reporter relative to the larger count).</p>'
            + _plain_table(["Country", "Disease", "Reporters", "Weeks compared", "Beyond tolerance", "This week"], rows)
            + '</section>')


def _plain_table(headers: list[str], rows: str, table_id: str | None = None) -> str:
    """A `plain` table: literal column headers, then the already rendered `<tr>` rows."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    ident = f' id="{table_id}"' if table_id else ""
    return f'<table class="plain"{ident}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


CSS = """
:root { --ink:#1b1b1b; --muted:#5a5a5a; --line:#d9d9d9; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); margin: 0 auto;
       max-width: 1360px; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 12px 0 4px; }
.week { font-size: 16px; margin: 0; } .meta, .hint, figcaption p { color: var(--muted); margin: 2px 0 8px; }
.facts { display: flex; gap: 12px; margin-top: 10px; flex-wrap: wrap; }
.fact { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; display: flex; flex-direction: column; }
.fact .n { font-size: 20px; font-weight: 600; }
table { border-collapse: collapse; width: 100%; } th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #f3f3f3; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.warn { color: #b35806; font-weight: 600; }
table.plain { width: auto; }
.zone { padding: 1px 6px; border-radius: 4px; font-size: 12px; font-weight: 600; white-space: nowrap; }
.zone-success { background: #66bd63; } .zone-safety { background: #fee08b; } .zone-alert { background: #fdae61; }
.zone-epidemic { background: #d73027; color: white; } .zone-none { background: #eeeeee; color: var(--muted); }
.no-signals { font-size: 16px; padding: 12px; background: #f0f7ee; border-left: 4px solid #66bd63; }
.curves { display: grid; grid-template-columns: repeat(auto-fill, minmax(640px, 1fr)); gap: 16px; }
figure.curve { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
.chart { min-height: 40px; }
details.versions { color: var(--muted); }
"""

RUN_CHARTS = """
(function () {
  var specs = JSON.parse(document.getElementById("vigila-specs").textContent);
  Object.keys(specs).forEach(function (id) {
    var el = document.getElementById(id);
    vegaEmbed(el, specs[id], {renderer: "svg", actions: false})
      .then(function () { el.setAttribute("data-rendered", "true"); })
      .catch(function (err) { el.setAttribute("data-rendered", "error"); console.error("chart " + id + ": " + err); });
  });
})();
"""


def _json_for_script(value: object) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` that could close or confuse it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _page(title: str, body: str, specs: dict[str, dict]) -> str:
    scripts = ""
    if specs:
        scripts = (f"<script>{_vega_runtime()}</script>\n"
                   f'<script type="application/json" id="vigila-specs">{_json_for_script(specs)}</script>\n'
                   f"<script>{RUN_CHARTS}</script>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body data-charts=\"{len(specs)}\">\n{body}\n{scripts}\n</body></html>\n")
