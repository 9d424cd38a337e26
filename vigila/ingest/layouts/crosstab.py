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
from vigila.ingest.readers import (ROW, SNIFF_BYTES, RawTable, ReadError, _check_text, _check_zip, _decompressed,
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
        text_path, encoding, _ = _resolve_encoding(path, source.csv.encoding, tmp, notes)
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


def _sheet_path(z: zipfile.ZipFile, sheet: str | None, name: str) -> str:
    book = ET.fromstring(z.read("xl/workbook.xml"))
    sheets = [(s.get("name"), s.get(f"{_R}id")) for s in book.iter(f"{_M}sheet")]
    chosen = next((rid for name, rid in sheets if name == sheet), None) if sheet else (sheets[0][1] if sheets else None)
    if chosen is None:
        raise ReadError(f"{name}: no sheet {sheet!r} (csv.sheet); the workbook has: {', '.join(n for n, _ in sheets)}")
    rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
    target = next(r.get("Target") for r in rels if r.get("Id") == chosen)
    return target.lstrip("/") if target.startswith("/") else f"xl/{target}"


def _number_text(text: str) -> str:
    """A stored number as the cell shows it: 12.0 -> '12' (counts are written as floats by some tools)."""
    return text[: text.index(".")] if re.fullmatch(r"-?\d+\.0+", text) else text


def _xlsx_grid(path: Path, source: SourceConfig) -> Grid:
    """The first (or `csv.sheet`) sheet's cells by their own row numbers, merged ranges filled with their first
    cell's text. Read from the sheet XML: the row numbers a ministry team sees and the merged ranges are not
    exposed by the XLSX reader of `vigila.ingest.readers`."""
    _check_zip(path, source)
    try:
        with zipfile.ZipFile(path) as z:
            shared = []
            if "xl/sharedStrings.xml" in z.namelist():
                strings = ET.fromstring(z.read("xl/sharedStrings.xml"))
                shared = ["".join(t.text or "" for t in si.iter(f"{_M}t")) for si in strings.iter(f"{_M}si")]
            sheet = ET.fromstring(z.read(_sheet_path(z, source.csv.sheet, path.name)))
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

    # one record per label row (Python: a few thousand), then one row per cell (polars: rows x periods)
    raw: list[str | None] = []                             # every cell's text, row after row
    per_row: dict[str, list] = {"__line": [], "__label": [], "__level": [], "__ncells": [],
                                **{c: [] for c in labels}, **{g: [] for g in row_groups}}
    carried: list[dict[str, str]] = [{} for _ in levels]
    columns_at = [j for j, *_ in periods]
    for line, cells in body:
        label = cells[0].strip() if cells else ""
        level = next((k for k, (_, p) in enumerate(levels) if (m := p.search(label))), None)
        if level is not None:
            carried[level] = {k: v.strip() for k, v in m.groupdict().items() if v is not None}
            for deeper in range(level + 1, len(levels)):
                carried[deeper] = {}
        groups = {k: v for d in carried for k, v in d.items()}
        per_row["__line"].append(line)
        per_row["__label"].append(label)
        per_row["__level"].append(levels[level][0] if level is not None else None)
        per_row["__ncells"].append(len(cells))
        raw.extend([cells[j] if j < len(cells) else None for j in columns_at])
        for k, col in enumerate(labels):
            per_row[col].append(cells[k].strip() if k < len(cells) else "")
        for g in row_groups:
            per_row[g].append(groups.get(g))
    if len(raw) > source.limits.max_rows:
        raise ReadError(f"{name}: {len(raw):,} cells, more than {source.limits.max_rows:,} (limits.max_rows): refused while reading")
    schema = {"__line": pl.Int64, "__label": pl.Utf8, "__level": pl.Utf8, "__ncells": pl.Int64,
              **{c: pl.Utf8 for c in [*labels, *row_groups]}}
    by_row = pl.DataFrame(per_row, schema=schema).with_row_index("__r")
    by_period = pl.DataFrame({"__p": list(range(len(periods))), HEADER: [h for _, h, _, _ in periods],
                              "__kind": [k for _, _, k, _ in periods],
                              **{g: [cg.get(g) for *_, cg in periods] for g in col_groups}},
                             schema={"__p": pl.Int64, HEADER: pl.Utf8, "__kind": pl.Utf8, **{g: pl.Utf8 for g in col_groups}})
    index = pl.int_range(0, len(raw), dtype=pl.Int64, eager=True)
    cells = (pl.DataFrame({"__raw": pl.Series(raw, dtype=pl.Utf8), "__r": (index // len(periods)).cast(pl.UInt32),
                           "__p": index % len(periods), ROW: index + 1})
             .join(by_row, on="__r", how="left", maintain_order="left")
             .join(by_period, on="__p", how="left", maintain_order="left"))
    text = pl.col("__raw").str.strip_chars()
    cells = cells.with_columns(
        pl.when(text.is_in(layout.zero_markers)).then(pl.lit("0")).when(text.is_in(layout.missing_markers))
        .then(pl.lit(None, pl.Utf8)).otherwise(text).alias(VALUE),
        *(pl.lit(v, pl.Utf8).alias(t) for t, v in titles.items()))
    frame = cells.select(names)

    level, kind = pl.col("__level"), pl.col("__kind")
    check = (pl.when(level.is_null()).then(pl.lit("crosstab_unknown_row"))
             .when(level != layout.publish).then(pl.lit("crosstab_level"))
             .when(kind == "total").then(pl.lit("crosstab_total"))
             .when(kind == "other").then(pl.lit("crosstab_not_weekly"))
             .when(pl.col("__raw").is_null()).then(pl.lit("field_count"))
             .when(text.is_in(layout.missing_markers)).then(pl.lit("not_reported")))
    value = (pl.when(level.is_null()).then(pl.col("__label"))
             .when(level != layout.publish).then(pl.format("{}: {}", level, pl.col("__label")))
             .when(kind != "week").then(pl.format("{}: {}", pl.col(HEADER), pl.col("__raw")))
             .when(pl.col("__raw").is_null()).then(pl.format("{} cells, header has {}", pl.col("__ncells"), pl.lit(len(headers))))
             .otherwise(pl.col("__raw")))
    bad_rows = (cells.with_columns(check.alias("check")).filter(pl.col("check").is_not_null())
                .select(ROW, "check", value.alias("value"),
                        pl.when(pl.col("check").is_in(["crosstab_level", "crosstab_total", "crosstab_not_weekly"]))
                        .then(pl.lit("set_aside")).otherwise(pl.lit("error")).alias("severity"),
                        pl.when(pl.col("check").is_in(["crosstab_unknown_row", "crosstab_level"]))
                        .then(pl.lit(labels[0])).otherwise(pl.lit(VALUE)).alias("field")))
    located = cells.select(pl.col(ROW).alias("row"), pl.col("__line"), pl.col(HEADER).alias("__header"))
    label_fields = [*labels, *row_groups]

    def locate(records: pl.DataFrame) -> pl.DataFrame:
        """Records numbered by cell -> the cell's line in the file and its column header (label columns and
        row groups: the first label column); the cell number is kept as `__cell`."""
        joined = records.join(located, on="row", how="left")
        return joined.with_columns(
            pl.when(pl.col("column").is_in(label_fields)).then(pl.lit(labels[0]))
            .otherwise(pl.coalesce("__header", "column")).alias("column"),
            pl.col("row").alias("__cell"), pl.coalesce("__line", "row").alias("row")).drop("__line", "__header")

    first = body[0][0] if body else header_line
    last = body[-1][0] if body else header_line
    notes = [*grid.notes,
             f"cross-tab: header at line {header_line}, {len(body):,} label rows x {len(periods)} columns = {cells.height:,} "
             f"cells read as rows (lines {first}-{last})" + (f"; footnotes from line {footer_line}" if footer_line else ""),
             *_totals_notes(cells, layout, source.csv.thousands)]
    return RawTable(frame.lazy(), names, fmt, grid.encoding, grid.delimiter, bad_rows, notes, locate=locate)


def _totals_notes(cells: pl.DataFrame, layout: Layout, thousands: str | None) -> list[str]:
    """The file's own totals against its cells, as report notes (nothing is held on them): each row's weeks against
    its Total column, and the Total row (`total_level`) against the published rows, column by column."""
    n = pl.col(VALUE)
    if thousands:
        n = n.str.replace_all(thousands, "", literal=True)
    cells = cells.with_columns(n.cast(pl.Int64, strict=False).alias("__n"))
    out = []
    weeks = (cells.filter(pl.col("__kind") == "week").group_by("__r")
             .agg(pl.col("__n").sum().alias("__w"), pl.col("__n").is_null().any().alias("__gap")))
    totals = (cells.filter(pl.col("__kind") == "total").group_by("__r")
              .agg(pl.col("__n").first().alias("__t"), pl.len().alias("__k"), pl.col("__line", "__label").first()))
    rows = (totals.join(weeks, on="__r").filter((pl.col("__k") == 1) & pl.col("__t").is_not_null() & ~pl.col("__gap"))
            .sort("__r"))
    if rows.height:
        off = rows.filter(pl.col("__w") != pl.col("__t"))
        shown = "; ".join(f"line {r['__line']} {r['__label']!r}: weeks {r['__w']:,}, Total {r['__t']:,}"
                          for r in off.head(3).iter_rows(named=True))
        out.append(f"Total column: {rows.height - off.height:,} of {rows.height:,} rows' weeks add up to their Total"
                   + (f"; not: {shown}" if shown else ""))
    if layout.total_level:
        published = (cells.filter(pl.col("__level") == layout.publish).group_by("__p")
                     .agg(pl.col("__n").fill_null(0).sum().alias("__s")))
        for (line,), row in cells.filter(pl.col("__level") == layout.total_level).group_by("__line", maintain_order=True):
            cmp = row.join(published, on="__p", how="left").filter(pl.col("__n").is_not_null())
            off = cmp.filter(pl.col("__n") != pl.col("__s").fill_null(0)).height
            out.append(f"Total row (line {line}): " + (f"equals the sum of the {layout.publish} rows in every column" if not off
                       else f"differs from the sum of the {layout.publish} rows in {off} columns"))
    return out
