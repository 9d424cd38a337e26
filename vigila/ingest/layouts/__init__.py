"""Layouts: how the rows come out of a file. Each layout turns a landed file into the same
`vigila.ingest.readers.RawTable` (text columns, one row per record, parse-level records in `bad_rows`, and for
layouts that move cells a `locate` function turning the table's row numbers back into the file's own line and
column), so the rest of the pipeline (plan, harmonise, publish) needs no branch for layouts.

In: a landed file and its source config (`layout:` block; none: one record per line); out: a `RawTable`.
`LAYOUTS` is the table, layout kind -> "module:function" (imported when used): "records" is the plain file of one
record per line in any format (`readers.read_records`), "crosstab" a cross-tab's cells. Adding a layout = one
module here and one entry in `LAYOUTS` (and its `kind` in the config's `Layout`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from vigila.config import SourceConfig
from vigila.ingest.readers import RawTable

Layout = Callable[[Path, SourceConfig, "Path | None"], RawTable]   # (path, source, workdir) -> the file's rows

LAYOUTS: dict[str, str] = {
    "records": "vigila.ingest.readers:read_records",   # one record per line (CSV, XLSX, JSON, Parquet, DBF, API documents)
    "crosstab": "vigila.ingest.layouts.crosstab:read",  # row labels down, one column per week across
}


def kind_of(source: SourceConfig) -> str:
    return "records" if source.layout is None else source.layout.kind


def layout_for(source: SourceConfig) -> Layout:
    module, function = LAYOUTS[kind_of(source)].split(":")
    return getattr(importlib.import_module(module), function)


def read_layout(path: Path, source: SourceConfig, workdir: Path | None = None) -> RawTable:
    """The `RawTable` of a file read through its source's layout."""
    return layout_for(source)(path, source, workdir)
