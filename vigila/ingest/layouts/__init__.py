"""Layouts: how the rows come out of a file that is not one record per line.

Input: a landed file and its source config (`layout:` block); output: the same `vigila.ingest.readers.RawTable`
every other reader returns (text columns, one row per record, parse-level records in `bad_rows`), plus a
`locate` function that turns the table's row numbers back into the file's own line and column, so the
rest of the pipeline (plan, harmonise, publish) needs no branch for layouts. One module per `layout.kind`.
"""

from __future__ import annotations

from pathlib import Path

from vigila.config import SourceConfig
from vigila.ingest.readers import RawTable


def read_layout(path: Path, source: SourceConfig, workdir: Path | None = None) -> RawTable:
    """The `RawTable` of a file read through its source's `layout` (one reader per kind)."""
    from vigila.ingest.layouts import crosstab

    readers = {"crosstab": crosstab.read}
    return readers[source.layout.kind](path, source, workdir)
