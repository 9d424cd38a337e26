"""What a run shows in the Prefect UI, as plain data: report dict -> table rows and markdown.

In: a data-quality report of `vigila.ingest.pipeline` (or a detection summary of `vigila.detect.alerts`) and,
for the quarantine location, the warehouse `Storage`. Out: lists of dicts (Prefect table
artifacts) and markdown strings. No Prefect here: `flows/` turns these into artifacts.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

from vigila.warehouse import publish
from vigila.operate import textsafe
from vigila.warehouse.storage import Storage

__all__ = ["artifact_key", "detect_table", "quarantine_location", "report_markdown", "report_table"]

TABLE_COLUMNS = ["severity", "stage", "check", "column", "rows", "first_row", "example"]


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys hold only lowercase letters, digits and dashes: ``ingest-per-minsa-...``."""
    key = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    if not key:
        raise ValueError(f"no artifact key can be made of {parts!r}")
    return key


def quarantine_location(storage: Storage, source_id: str, version: str | None = None) -> str | None:
    """Path or s3:// URL of this source's partition in the quarantine dataset version ``version``
    (default: the current one); None when the source has no quarantine records there."""
    manifest = (publish.read_manifest(storage, "quarantine", version) if version
                else publish.current_manifest(storage, "quarantine"))
    if manifest is None or not any(f.partition == (source_id,) for f in manifest.files):
        return None
    return storage.uri(f"{manifest.path}/source_id={quote(source_id, safe='')}")


ACCOUNTED = [("read", "read"), ("published", "published"), ("quarantined", "quarantined (not published)"),
             ("set_aside", "set aside (out of scope)")]


def _totals(report: dict) -> list[tuple[str, Any]]:
    """Rows, cases and deaths read = published + quarantined + set aside, then the harmonised rows."""
    held = report.get("status") == "rejected"   # passed the checks, but the run published nothing
    counted = [(f"{what} {'passed the checks (not published)' if held and key == 'published' else label}",
                report[what].get(key)) for what in ("rows", "cases", "deaths")
               if isinstance(report.get(what), dict) for key, label in ACCOUNTED]
    return [*counted, ("harmonised weekly rows", report.get("harmonised_rows")),
            ("new revisions published", report.get("revisions_added"))]


def report_table(report: dict) -> list[dict[str, Any]]:
    """One row per check (severity, stage, check, column, rows, first row, example), then one row
    per total (severity ``total``). Missing figures (an unchanged file) are left out."""
    rows = [{c: ("<missing>" if c == "example" and chk.get(c) is None else textsafe.cell(chk.get(c))) for c in TABLE_COLUMNS}
            for chk in report.get("by_check") or []]
    for label, value in _totals(report):
        if value is not None:
            rows.append({"severity": "total", "stage": None, "check": label, "column": None, "rows": value,
                         "first_row": None, "example": None})
    return rows


def _cell(value: Any) -> str:
    """A markdown table cell: pipes and newlines escaped, and <, >, & as entities (the Prefect UI would
    otherwise render a value like `<missing>` as an HTML tag, i.e. an empty cell)."""
    text = "" if value is None else html.escape(str(textsafe.cell(value)), quote=False)
    return text.replace("|", "\\|").replace("\n", " ")


def report_markdown(report: dict, quarantine: str | None = None) -> str:
    """The data-quality summary of one ingest: source, file, status, counts, where the quarantine
    records lie (``quarantine``: see `quarantine_location`), and the checks that failed."""
    file = report.get("file") or {}
    lines = [
        f"# {report.get('source_id', '?')} — data-quality report",
        "",
        "| | |",
        "|---|---|",
        f"| status | {_cell(report.get('status'))} |",
        f"| run | `{_cell(report.get('run_id'))}` |",
        f"| file | {_cell(file.get('original_name'))} |",
        f"| file sha256 | `{_cell(file.get('sha256'))}` |",
    ]
    if report.get("error"):
        lines.append(f"| why | {_cell(report['error'])} |")
    if report.get("issue_date"):
        lines.append(f"| issue date | {_cell(report['issue_date'])} |")
    for label, value in _totals(report):
        if value is not None:
            lines.append(f"| {label} | {value:,} |" if isinstance(value, int) else f"| {label} | {_cell(value)} |")
    if quarantine or report.get("status") != "rejected":
        lines.append(f"| quarantine | {f'`{quarantine}`' if quarantine else 'none (no row failed a check)'} |")
    for name, version in sorted((report.get("versions") or {}).items()):
        lines.append(f"| {name} version | `{version}` |")
    checks = report.get("by_check") or []
    if checks:
        lines += ["", "## By check", "", "| severity | check | column | rows | first row | example value |",
                  "|---|---|---|---:|---:|---|"]
        lines += [f"| {_cell(c.get('severity'))} | {_cell(c.get('check'))} | {_cell(c.get('column'))} | "
                  f"{_cell(c.get('rows'))} | {_cell(c.get('first_row'))} | "
                  f"{_cell('<missing>' if c.get('example') is None else c.get('example'))} |" for c in checks]
    notes = report.get("notes") or []
    if notes:
        lines += ["", "## Notes", "", *(f"- {_cell(n)}" for n in notes)]
    return "\n".join(lines) + "\n"


def detect_table(summary: dict) -> list[dict[str, Any]]:
    """One row per detection method: alarms over the evaluated weeks and in each series' latest week."""
    alarms = summary.get("alarms") or {}
    latest = summary.get("latest_week_alarms") or {}
    return [{"method": m, "alarms": int(alarms.get(m) or 0), "latest_week_alarms": int(latest.get(m) or 0),
             "series": summary.get("series"), "version": summary.get("version")}
            for m in sorted(set(alarms) | set(latest))]
