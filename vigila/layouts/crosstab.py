"""Cross-tab layout: row labels down, one column per week (and Totals) across -> one row per cell.

Input: a CSV (any encoding the readers resolve) or XLSX cross-tab and the source's `layout:` block. Output: a
`RawTable` with one row per (label row x period column): the label columns (under their header texts), the
named groups of the row, column and title patterns, `header` (the column's header text) and `value` (the cell,
zero markers read as "0"). Cells of levels other than `publish`, of `total` / `other` columns, under a row no
pattern matches, or holding a missing marker are `bad_rows` (set aside or quarantined), so every cell is
accounted; `locate` maps each row back to the file's line (XLSX: sheet row) and the cell's column header.
"""

from __future__ import annotations

import csv
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

import polars as pl

from vigila.config import Layout, SourceConfig
from vigila.readers import (ROW, SNIFF_BYTES, RawTable, ReadError, _check_text, _check_zip, _decompressed,
                            _resolve_encoding, _sniff_delimiter, detect_format)

HEADER, VALUE = "header", "value"       # the output columns of each cell's column header and its text
JOIN = " | "                            # header rows of one column joined with this
HEADER_SEARCH_LINES = 200               # the header is looked for in the first lines only
_M = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"


@dataclass
class Grid:
    """A file's cells as text: (line or sheet row, cells) for every non-empty line, in order."""

    rows: list[tuple[int, list[str]]]
    merged: bool = False                 # merged ranges already filled (XLSX)
    encoding: str | None = None
    delimiter: str | None = None
    notes: list[str] = field(default_factory=list)


def read(path: Path, source: SourceConfig, workdir: Path | None = None) -> RawTable:
    fmt = detect_format(path, source.format)
    if fmt == "xlsx":
        grid = _xlsx_grid(path, source)
    elif fmt == "csv":
        grid = _csv_grid(path, source, workdir)
    else:
        raise ReadError(f"{path.name}: a crosstab layout reads CSV or XLSX files, not {fmt}")
    return _cells(grid, source, path.name, fmt)


# --------------------------------------------------------------------------- files -> grids


def _csv_grid(path: Path, source: SourceConfig, workdir: Path | None) -> Grid:
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vigila-read-", dir=workdir) as name:
        tmp = Path(name)
        if path.open("rb").read(2) == b"\x1f\x8b":
            path = _decompressed(path, tmp, source)
        _check_text(path)
        text_path, encoding = _resolve_encoding(path, source.csv.encoding, tmp, notes)
        with text_path.open("r", encoding="utf-8-sig", newline="") as f:
            delimiter = _sniff_delimiter(f.read(SNIFF_BYTES), source.csv.delimiter)
        rows: list[tuple[int, list[str]]] = []
        with text_path.open("r", encoding="utf-8-sig", newline="") as f:
            reader, start = csv.reader(f, delimiter=delimiter), 1
            try:
                for cells in reader:
                    rows.append((start, cells))
                    start = reader.line_num + 1
            except csv.Error as e:
                raise ReadError(f"{path.name}: line {start}: {e}") from None
    return Grid(rows, False, encoding, delimiter, notes)


def _col_index(ref: str) -> int:
    """'C7' -> 2 (0-based column)."""
    n = 0
    for ch in ref:
        if not ch.isalpha():
            break
        n = n * 26 + ord(ch.upper()) - 64
    return n - 1


def _ref(ref: str) -> tuple[int, int]:
    """'C7' -> (7, 2): sheet row (1-based), column (0-based)."""
    return int(re.sub(r"^[A-Za-z]+", "", ref)), _col_index(ref)


def _sheet_path(z: zipfile.ZipFile, sheet: str | None) -> str:
    book = ET.fromstring(z.read("xl/workbook.xml"))
    sheets = [(s.get("name"), s.get(f"{_R}id")) for s in book.iter(f"{_M}sheet")]
    chosen = next((rid for name, rid in sheets if name == sheet), None) if sheet else (sheets[0][1] if sheets else None)
    if chosen is None:
        raise ReadError(f"no sheet {sheet!r} (csv.sheet); the workbook has: {', '.join(n for n, _ in sheets)}")
    rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
    target = next(r.get("Target") for r in rels if r.get("Id") == chosen)
    return target.lstrip("/") if target.startswith("/") else f"xl/{target}"


def _number_text(text: str) -> str:
    """A stored number as the cell shows it: 12.0 -> '12' (counts are written as floats by some tools)."""
    return text[: text.index(".")] if re.fullmatch(r"-?\d+\.0+", text) else text


def _xlsx_grid(path: Path, source: SourceConfig) -> Grid:
    """The first (or `csv.sheet`) sheet's cells by their own row numbers, merged ranges filled with their first
    cell's text. Read from the sheet XML: the row numbers a ministry team sees and the merged ranges are not
    exposed by the XLSX reader of `vigila.readers`."""
    _check_zip(path, source)
    try:
        with zipfile.ZipFile(path) as z:
            shared = []
            if "xl/sharedStrings.xml" in z.namelist():
                strings = ET.fromstring(z.read("xl/sharedStrings.xml"))
                shared = ["".join(t.text or "" for t in si.iter(f"{_M}t")) for si in strings.iter(f"{_M}si")]
            sheet = ET.fromstring(z.read(_sheet_path(z, source.csv.sheet)))
    except (KeyError, StopIteration, ET.ParseError, zipfile.BadZipFile) as e:
        raise ReadError(f"{path.name}: cannot read as XLSX ({type(e).__name__}: {str(e)[:160]})") from None
    cells: dict[int, dict[int, str]] = {}
    for row in sheet.iter(f"{_M}row"):
        for c in row.iter(f"{_M}c"):
            r, j = _ref(c.get("r"))
            kind, v = c.get("t"), c.find(f"{_M}v")
            if kind == "s" and v is not None:
                text = shared[int(v.text)]
            elif kind == "inlineStr":
                text = "".join(t.text or "" for t in c.iter(f"{_M}t"))
            else:
                text = "" if v is None or v.text is None else v.text if kind in ("str", "e", "b") else _number_text(v.text)
            if text != "":
                cells.setdefault(r, {})[j] = text
    for m in sheet.iter(f"{_M}mergeCell"):
        (r1, c1), (r2, c2) = (_ref(p) for p in m.get("ref").split(":"))
        first = cells.get(r1, {}).get(c1, "")
        for r in range(r1, r2 + 1):
            for j in range(c1, c2 + 1):
                if first:
                    cells.setdefault(r, {})[j] = first
    width = max((max(row) + 1 for row in cells.values()), default=0)     # a sheet's rows are as wide as its widest
    rows = [(r, [row.get(j, "") for j in range(width)]) for r, row in sorted(cells.items())]
    return Grid(rows, merged=True)


# --------------------------------------------------------------------------- grid -> cells


def _blank(cells: list[str]) -> bool:
    return all(not c.strip() for c in cells)


def _headers(rows: list[tuple[int, list[str]]], at: int, layout: Layout, merged: bool) -> list[str]:
    """Each column's header text: its header rows' texts joined with JOIN (a repeated text once). In a CSV, a
    blank cell of an upper header row over the period columns takes the text on its left (a merged cell)."""
    block = [list(cells) for _, cells in rows[at: at + layout.header_rows]]
    width = max(len(c) for c in block)
    block = [[c.strip() for c in cells] + [""] * (width - len(cells)) for cells in block]
    if not merged:
        for cells in block[:-1]:
            for j in range(layout.label_columns + 1, width):
                cells[j] = cells[j] or cells[j - 1]
    out = []
    for j in range(width):
        parts: list[str] = []
        for cells in block:
            if cells[j] and (not parts or parts[-1] != cells[j]):
                parts.append(cells[j])
        out.append(JOIN.join(parts))
    return out


def _find_header(rows: list[tuple[int, list[str]]], layout: Layout, merged: bool, name: str) -> int:
    if layout.header_line is not None:
        at = next((i for i, (line, _) in enumerate(rows) if line == layout.header_line), None)
        if at is None:
            raise ReadError(f"{name}: line {layout.header_line} (layout.header_line) is empty or past the end")
        return at
    weeks = [re.compile(c.pattern) for c in layout.columns if c.kind == "week"]
    for at in range(min(len(rows), HEADER_SEARCH_LINES)):
        if any(p.search(h) for h in _headers(rows, at, layout, merged)[layout.label_columns:] for p in weeks):
            return at
    raise ReadError(f"{name}: no header found: no column header in the first {HEADER_SEARCH_LINES} lines matches a week "
                    "pattern of layout.columns (set layout.header_line or fix the pattern)")


def _title_values(rows: list[tuple[int, list[str]]], layout: Layout, name: str) -> dict[str, str]:
    lines = [" ".join(c for i, c in enumerate(texts) if c and (i == 0 or c != texts[i - 1]))   # a merged title once
             for texts in ([c.strip() for c in cells] for _, cells in rows)]
    out: dict[str, str] = {}
    for pattern in layout.title_fields:
        m = next((m for text in lines if (m := re.search(pattern, text))), None)
        if m is None:
            raise ReadError(f"{name}: layout.title_fields {pattern!r} matches no line above the header")
        out.update({k: v.strip() for k, v in m.groupdict().items() if v is not None})
    return out


def _int(text: str | None, thousands: str | None) -> int | None:
    if text is None:
        return None
    t = text.replace(thousands, "") if thousands else text
    return int(t) if re.fullmatch(r"-?\d+", t) else None


def _cells(grid: Grid, source: SourceConfig, name: str, fmt: str) -> RawTable:
    layout = source.layout
    rows = [(line, cells) for line, cells in grid.rows if not _blank(cells)]
    at = _find_header(rows, layout, grid.merged, name)
    titles = _title_values(rows[:at], layout, name)
    headers = _headers(rows, at, layout, grid.merged)
    header_line = rows[at][0]
    body = rows[at + layout.header_rows:]
    end = next((i for i, (_, cells) in enumerate(body) if cells and cells[0].strip().startswith(tuple(layout.footer))), len(body))
    footer_line = body[end][0] if end < len(body) else None
    body = body[:end]

    nl = layout.label_columns
    labels = [h or f"label_{j + 1}" for j, h in enumerate(headers[:nl])]
    patterns = [(c.kind, re.compile(c.pattern)) for c in layout.columns]
    periods: list[tuple[int, str, str, dict[str, str]]] = []      # column index, header, kind, groups
    for j, text in enumerate(headers[nl:], start=nl):
        hit = next(((kind, m) for kind, p in patterns if (m := p.search(text))), None)
        if hit is None:
            if not text and all(j >= len(c) or not c[j].strip() for _, c in body):
                continue                     # an empty trailing column (a delimiter at the end of each line)
            raise ReadError(f"{name}: column {j + 1} {text!r} (line {header_line}) matches no layout.columns pattern; "
                            "add a pattern (kind week, total or other)")
        periods.append((j, text, hit[0], {k: v for k, v in hit[1].groupdict().items() if v is not None}))
    seen = [h for _, h, _, _ in periods]
    dupes = sorted({h for h in seen if seen.count(h) > 1})
    if dupes:
        raise ReadError(f"{name}: the column header {dupes[0]!r} appears twice (line {header_line}): cells would be ambiguous")

    levels = [(r.level, re.compile(r.pattern)) for r in layout.rows]
    row_groups = list(dict.fromkeys(g for _, p in levels for g in p.groupindex))
    col_groups = list(dict.fromkeys(g for _, p in patterns for g in p.groupindex))
    names = [*labels, *row_groups, *col_groups, *titles, HEADER, VALUE]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ReadError(f"{name}: the output column {clash[0]!r} comes from two places (label header, pattern group "
                        f"names, title_fields, {HEADER}, {VALUE}): rename a group")

    out: dict[str, list] = {n: [] for n in names}
    lines: list[int] = []
    bad: list[tuple[int, str, str, str, str]] = []         # row, check, value, severity, field
    zero, missing = set(layout.zero_markers), set(layout.missing_markers)
    carried: list[dict[str, str]] = [{} for _ in levels]
    checks = _TotalsCheck(layout, source.csv.thousands)
    for line, cells in body:
        label = cells[0].strip() if cells else ""
        level = next((k for k, (_, p) in enumerate(levels) if (m := p.search(label))), None)
        if level is not None:
            carried[level] = {k: v.strip() for k, v in m.groupdict().items() if v is not None}
            for deeper in range(level + 1, len(levels)):
                carried[deeper] = {}
        groups = {k: v for d in carried for k, v in d.items()}
        level_name = levels[level][0] if level is not None else None
        row_values: list[tuple[str, str | None]] = []
        for j, header, kind, cgroups in periods:
            raw = cells[j] if j < len(cells) else None
            text = None if raw is None else raw.strip()
            value = "0" if text in zero else None if text in missing else text
            n = len(lines) + 1
            lines.append(line)
            for col, v in zip(labels, cells[:nl] + [""] * (nl - len(cells[:nl]))):
                out[col].append(v.strip())
            for g in row_groups:
                out[g].append(groups.get(g))
            for g in col_groups:
                out[g].append(cgroups.get(g))
            for t, v in titles.items():
                out[t].append(v)
            out[HEADER].append(header)
            out[VALUE].append(value)
            row_values.append((kind, value))
            if level is None:
                bad.append((n, "crosstab_unknown_row", label, "error", labels[0]))
            elif level_name != layout.publish:
                bad.append((n, "crosstab_level", f"{level_name}: {label}", "set_aside", labels[0]))
            elif kind == "total":
                bad.append((n, "crosstab_total", f"{header}: {raw}", "set_aside", VALUE))
            elif kind == "other":
                bad.append((n, "crosstab_not_weekly", f"{header}: {raw}", "set_aside", VALUE))
            elif raw is None:
                bad.append((n, "field_count", f"{len(cells)} cells, header has {len(headers)}", "error", VALUE))
            elif text in missing:
                bad.append((n, "not_reported", raw, "error", VALUE))
        checks.add(line, label, level_name, row_values)

    frame = pl.DataFrame({n: pl.Series(n, v, dtype=pl.Utf8) for n, v in out.items()})
    bad_rows = pl.DataFrame(bad, schema={ROW: pl.Int64, "check": pl.Utf8, "value": pl.Utf8, "severity": pl.Utf8,
                                         "field": pl.Utf8}, orient="row")
    located = pl.DataFrame({"row": pl.int_range(1, len(lines) + 1, eager=True, dtype=pl.Int64),
                            "__line": pl.Series(lines, dtype=pl.Int64), "__header": out[HEADER]})
    label_fields = [*labels, *row_groups]

    def locate(records: pl.DataFrame) -> pl.DataFrame:
        """Records numbered by cell -> the cell's line in the file and its column header (label columns and
        row groups: the first label column); the cell number is kept as `__cell`."""
        joined = records.join(located, on="row", how="left")
        return joined.with_columns(
            pl.when(pl.col("column").is_in(label_fields)).then(pl.lit(labels[0]))
            .otherwise(pl.coalesce("__header", "column")).alias("column"),
            pl.col("row").alias("__cell"), pl.coalesce("__line", "row").alias("row")).drop("__line", "__header")

    last = body[-1][0] if body else header_line
    notes = [*grid.notes,
             f"cross-tab: header at line {header_line}, {len(body):,} label rows x {len(periods)} columns = {len(lines):,} "
             f"cells read as rows (lines {header_line + layout.header_rows}-{last})"
             + (f"; footnotes from line {footer_line}" if footer_line else ""),
             *checks.notes()]
    return RawTable(frame.lazy(), names, fmt, grid.encoding, grid.delimiter, bad_rows, notes, locate=locate)


class _TotalsCheck:
    """The file's own totals against its cells: each row's weeks against its Total column, and the Total row
    (`total_level`) against the published rows, column by column. Reported as notes; nothing is held on them."""

    def __init__(self, layout: Layout, thousands: str | None):
        self.layout, self.thousands = layout, thousands
        self.rows_checked, self.row_mismatch = 0, []
        self.published: list[int] | None = None
        self.total_rows: list[tuple[int, list[int | None]]] = []

    def add(self, line: int, label: str, level: str | None, values: list[tuple[str, str | None]]) -> None:
        weeks = [_int(v, self.thousands) for k, v in values if k == "week"]
        totals = [_int(v, self.thousands) for k, v in values if k == "total"]
        if len(totals) == 1 and totals[0] is not None and None not in weeks:
            self.rows_checked += 1
            if sum(weeks) != totals[0]:
                self.row_mismatch.append(f"line {line} {label!r}: weeks {sum(weeks):,}, Total {totals[0]:,}")
        every = [_int(v, self.thousands) for _, v in values]
        if level == self.layout.publish:
            self.published = [(a or 0) + (b or 0) for a, b in zip(self.published or [0] * len(every), every)]
        if level is not None and level == self.layout.total_level:
            self.total_rows.append((line, every))

    def notes(self) -> list[str]:
        out = []
        if self.rows_checked:
            out.append(f"Total column: {self.rows_checked - len(self.row_mismatch):,} of {self.rows_checked:,} rows' weeks add up "
                       "to their Total" + (f"; not: {'; '.join(self.row_mismatch[:3])}" if self.row_mismatch else ""))
        for line, values in self.total_rows:
            off = [i for i, (t, p) in enumerate(zip(values, self.published or [0] * len(values))) if t is not None and t != p]
            out.append(f"Total row (line {line}): " + (f"equals the sum of the {self.layout.publish} rows in every column" if not off
                       else f"differs from the sum of the {self.layout.publish} rows in {len(off)} columns"))
        return out
