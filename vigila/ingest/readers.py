"""Parse a landed raw file (CSV, XLSX, JSON, Parquet, DBF / DATASUS DBC) into a lazy frame of text columns.

Input: a local file path and the source's parse options; output: `RawTable` — a LazyFrame of
Utf8 columns (rows numbered 1.. by `vigila.ingest.cast.select_fields`), and parse-level problems found
on the way (rows with a wrong field count). File-level problems raise `ReadError` with one clear line.
"""

from __future__ import annotations

import codecs
import gzip
import json
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from vigila.config import SourceConfig
from vigila.warehouse.contract import ROW

SNIFF_BYTES = 1 << 16
_CHUNK = 1 << 24


class ReadError(ValueError):
    """The file cannot be read at all (empty, binary, wrong encoding, missing column...)."""


class RaggedRows(ReadError):
    """A strict parse (`RawTable.recount` set) met a row with more fields than the header: read it again
    with `recount()`, which finds and reports every row whose field count is wrong."""


@dataclass
class RawTable:
    frame: pl.LazyFrame                     # Utf8 columns, in file order
    columns: list[str]                      # header as in the file
    format: str
    encoding: str | None = None
    delimiter: str | None = None
    bad_rows: pl.DataFrame | None = None    # _row, check, value for rows that failed to parse
    notes: list[str] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory | None = None
    locate: Callable[[pl.DataFrame], pl.DataFrame] | None = None   # layouts: quarantine records numbered by table
                                            # row -> the file's own line and column (vigila.ingest.layouts)
    recount: Callable[[], RawTable] | None = None   # CSV whose byte counts showed no ragged row: `frame` parses
                                            # strictly; on `RaggedRows`, this table counting fields row by row

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def detect_format(path: Path, declared: str) -> str:
    head = path.open("rb").read(8)
    if head.startswith(b"PK\x03\x04"):
        magic = "xlsx"
    elif head.startswith(b"PAR1"):
        magic = "parquet"
    else:
        magic = None
    if magic is None and (declared in ("dbc", "dbf") or declared == "auto"):
        from vigila.ingest.formats import dbase   # a sound DBF header: a plain .dbf, or a .dbc (records compressed)

        magic = dbase.sniff(path)
    if declared != "auto":
        if magic and magic != declared:
            raise ReadError(f"{path.name}: declared {declared} but the bytes are a {magic} file")
        if declared in ("xlsx", "parquet", "dbc", "dbf") and magic is None:
            raise ReadError(f"{path.name}: declared {declared} but the bytes are not a {declared} file")
        return declared
    if magic:
        return magic
    suffixes = [s.lower() for s in path.suffixes]
    if ".json" in suffixes:
        return "json"
    if suffixes[-1:] in ([".dbc"], [".dbf"]):   # a damaged header: the dBase reader says what is wrong
        return suffixes[-1][1:]
    return "csv"


def read_raw(path: str | Path, source: SourceConfig, workdir: Path | None = None) -> RawTable:
    """Open `path` as text columns; `ReadError` for a file that cannot be read at all."""
    path = Path(path)
    if not path.is_file():
        raise ReadError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise ReadError(f"{path.name}: the file is empty (0 bytes)")
    if size > source.limits.max_bytes:
        raise ReadError(f"{path.name}: {size / 2**30:.1f} GiB is over the source limit of "
                        f"{source.limits.max_bytes / 2**30:.1f} GiB (limits.max_bytes)")
    from vigila.ingest.layouts import read_layout   # the source's layout makes the rows (records, a cross-tab...)

    return read_layout(path, source, workdir)


def read_records(path: Path, source: SourceConfig, workdir: Path | None = None) -> RawTable:
    """The "records" layout: a file of one record per line (row), in whatever format it comes."""
    fmt = detect_format(path, source.format)
    table = {"csv": _read_csv, "xlsx": _read_xlsx, "json": _read_json, "parquet": _read_parquet,
             "dhis2": _read_api, "fhir": _read_api, "dbc": _read_dbase, "dbf": _read_dbase}[fmt](path, source, workdir)
    if not table.columns:
        raise ReadError(f"{path.name}: no header / no columns found")
    return table


# --------------------------------------------------------------------------- CSV


def expansion_limit(path: Path, source: SourceConfig) -> int:
    """Bytes a compressed file may expand to: limits.max_decompressed_bytes, and at most
    limits.max_compression_ratio times its size (with 64 MiB of room for tiny files)."""
    limits = source.limits
    return min(limits.max_decompressed_bytes, max(int(path.stat().st_size * limits.max_compression_ratio), 64 * 2**20))


def _decompressed(path: Path, tmp: Path, source: SourceConfig) -> Path:
    """gzip -> a temporary file, streamed and stopped as soon as it passes `expansion_limit` (a bomb never
    reaches the disk or memory whole); a truncated or corrupt stream is a `ReadError` naming the file."""
    out, limit, written = tmp / (path.stem or "data"), expansion_limit(path, source), 0
    try:
        with gzip.open(path, "rb") as src, out.open("wb") as dst:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise ReadError(f"{path.name}: expands past {limit / 2**20:,.0f} MiB ({path.stat().st_size / 2**20:,.1f} MiB "
                                    "compressed): refused as a decompression bomb (limits.max_decompressed_bytes, "
                                    "limits.max_compression_ratio)")
                dst.write(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise ReadError(f"{path.name}: corrupt or truncated gzip file ({type(e).__name__}: {str(e)[:120]})") from None
    return out


def _check_text(path: Path) -> None:
    head = path.open("rb").read(SNIFF_BYTES)
    nul = head.find(b"\x00")
    if nul >= 0:
        raise ReadError(f"{path.name}: binary content (NUL byte at offset {nul}), not a CSV text file")


@dataclass(frozen=True)
class TextCounts:
    """One pass over a text file's bytes: its first invalid UTF-8 byte and, for a delimiter, how many lines,
    delimiters and double quotes it holds (counted on the bytes: valid for UTF-8 and single-byte encodings)."""
    first_invalid_utf8: int | None
    delimiter: str | None = None
    lines: int = 0
    delimiters: int = 0
    quotes: bool = False

    def fields_all(self, n_columns: int) -> bool:
        """No quote and exactly `n_columns - 1` delimiters per line on average: then a row with too few fields
        implies one with too many, which a parse without `truncate_ragged_lines` refuses (`RaggedRows`)."""
        return not self.quotes and self.delimiter is not None and self.delimiters == (n_columns - 1) * self.lines


def _scan_text(path: Path, delimiter: str | None = None) -> TextCounts:
    """`TextCounts` of `path`. The UTF-8 check and the quote search run here; the newline and delimiter counts
    (numpy, which releases the GIL) on a helper thread, chunk by chunk, so the two overlap."""
    import numpy as np

    counted = delimiter is not None and len(delimiter.encode()) == 1
    dec = codecs.getincrementaldecoder("utf-8")()
    offset, invalid, lines, delims, quotes, last = 0, None, 0, 0, False, b"\n"

    def count(chunk: bytes) -> tuple[int, int]:
        a = np.frombuffer(chunk, np.uint8)
        return int(np.count_nonzero(a == 10)), int(np.count_nonzero(a == ord(delimiter)))

    with path.open("rb") as f, ThreadPoolExecutor(1, thread_name_prefix="vigila-scan") as pool:
        while chunk := f.read(_CHUNK):
            pending = pool.submit(count, chunk) if counted else None
            if invalid is None and not (chunk.isascii() and not dec.getstate()[0]):   # fast path: pure ASCII
                try:
                    dec.decode(chunk)
                except UnicodeDecodeError as e:
                    invalid = offset + e.start
            quotes = quotes or b'"' in chunk
            offset, last = offset + len(chunk), chunk[-1:]
            if pending is not None:
                n, d = pending.result()
                lines, delims = lines + n, delims + d
    if invalid is None:
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError:
            invalid = offset
    if not counted:
        return TextCounts(invalid, quotes=quotes)
    return TextCounts(invalid, delimiter, lines + (last != b"\n"), delims, quotes)


def _transcode(path: Path, encoding: str, tmp: Path) -> Path:
    out = tmp / "utf8.csv"
    with path.open("r", encoding=encoding, newline="") as src, out.open("w", encoding="utf-8", newline="") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)
    return out


def _resolve_encoding(path: Path, declared: str, tmp: Path, notes: list[str], delimiter: str | None = None
                      ) -> tuple[Path, str, TextCounts | None]:
    """The file as UTF-8 text (itself, or transcoded into `tmp`) and its encoding; with a `delimiter` (or
    "auto": sniffed from the first line), the UTF-8 check also counts lines and delimiters (`TextCounts`,
    None when the file was transcoded from a declared encoding: counted after)."""
    head = path.open("rb").read(4)
    if declared == "auto" or codecs.lookup(declared).name in ("utf-8", "utf-8-sig"):
        if delimiter is not None:
            delimiter = _sniff_delimiter(_first_line(path), delimiter)
        counts = _scan_text(path, delimiter)
        bad = counts.first_invalid_utf8
        if bad is None:
            return path, "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8", counts
        if declared != "auto":
            line = path.open("rb").read(bad).count(b"\n") + 1
            raise ReadError(f"{path.name}: not valid UTF-8 (byte {bad}, line {line}); "
                            "set csv.encoding (e.g. latin-1) in the source config")
        notes.append(f"not valid UTF-8 (first bad byte at {bad}): read as cp1252/latin-1")
        try:         # single-byte encodings: the newlines, delimiters and quotes counted are the same bytes
            return _transcode(path, "cp1252", tmp), "cp1252", counts
        except UnicodeDecodeError:
            return _transcode(path, "latin-1", tmp), "latin-1", counts
    try:
        return _transcode(path, declared, tmp), declared, None
    except UnicodeDecodeError as e:
        raise ReadError(f"{path.name}: cannot be decoded as {declared} ({e.reason} at byte {e.start})") from None


def _first_line(path: Path) -> str:
    """The first line (at most SNIFF_BYTES), for sniffing the delimiter: ASCII delimiters read the same in any
    of the encodings read here."""
    with path.open("rb") as f:
        return f.readline(SNIFF_BYTES).decode("utf-8", errors="replace").lstrip("\ufeff")


def _sniff_delimiter(header: str, declared: str) -> str:
    if declared != "auto":
        return declared
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _field_counts(path: Path, delimiter: str, n_columns: int, quotes: bool = True) -> pl.DataFrame:
    """Rows whose field count differs from the header's (polars would pad or fail on them).

    One pass over the lines counting delimiters; only lines with a quote get the slower count
    that ignores quoted delimiters (`quotes` False: the file has none, no line is looked at for one).
    Rows are numbered like polars numbers data rows: a blank line after the header is a row (of nulls, reported
    by the checks of the fields it lacks), not a wrong field count; blank lines before the header are skipped."""
    header = _leading_blank_lines(path)     # polars skips blank lines before the header: its line is row 0
    lines = (
        pl.scan_csv(path, has_header=False, separator="\x1f", quote_char=None, infer_schema=False,
                    new_columns=["line"], empty_string_is_null=False, truncate_ragged_lines=True)
        .with_row_index(ROW, offset=0)
        .filter(pl.col(ROW) > header)
        .with_columns(pl.col(ROW) - header, n=pl.col("line").str.count_matches(delimiter, literal=True) + 1)
    )
    if not quotes:
        lines = (lines.filter(pl.col("n") != n_columns, ~pl.col("line").is_in(["", "\r"]))
                 .with_columns(odd_quotes=pl.lit(False)))
    else:
        lines = (lines.with_columns(quoted=pl.col("line").str.contains('"', literal=True))
                 .filter((pl.col("n") != n_columns) | pl.col("quoted"), ~pl.col("line").is_in(["", "\r"]))
                 .with_columns(n=pl.when(pl.col("quoted")).then(
                     pl.col("line").str.replace_all(r'"[^"]*"', "").str.count_matches(delimiter, literal=True) + 1).otherwise("n"),
                     odd_quotes=pl.col("line").str.count_matches('"', literal=True) % 2 == 1)
                 .filter((pl.col("n") != n_columns) | pl.col("odd_quotes")))
    return lines.select(pl.col(ROW).cast(pl.Int64), "n", "odd_quotes", pl.col("line").str.slice(0, 200).alias("value")).collect()


def _leading_blank_lines(path: Path) -> int:
    """Empty lines ("\\n" or "\\r\\n") before the first line with text."""
    n = 0
    with path.open("rb") as f:
        while f.readline(SNIFF_BYTES) in (b"\n", b"\r\n"):     # bounded: a file of one huge line is not read whole
            n += 1
    return n


def _read_csv(path: Path, source: SourceConfig, workdir: Path | None) -> RawTable:
    opts = source.csv
    tmpdir = tempfile.TemporaryDirectory(prefix="vigila-read-", dir=workdir)
    tmp = Path(tmpdir.name)
    notes: list[str] = []
    if path.open("rb").read(2) == b"\x1f\x8b":
        path = _decompressed(path, tmp, source)
    _check_text(path)
    text_path, encoding, counts = _resolve_encoding(path, opts.encoding, tmp, notes, opts.delimiter)
    with text_path.open("r", encoding="utf-8-sig", newline="") as f:
        header = f.readline().rstrip("\r\n")
    delimiter = _sniff_delimiter(header, opts.delimiter)
    try:
        columns = pl.read_csv(text_path, separator=delimiter, n_rows=0, infer_schema=False).columns
    except pl.exceptions.NoDataError:
        raise ReadError(f"{path.name}: no header line") from None
    dupes = [c for c in columns if "_duplicated_" in c]
    if dupes:
        raise ReadError(f"{path.name}: duplicate column name {dupes[0].split('_duplicated_')[0][:80]!r} in the header")
    if counts is None or counts.delimiter != delimiter:   # transcoded from a declared encoding: count the UTF-8
        counts = _scan_text(text_path, delimiter)
    # a line list's mapped columns are read dictionary-encoded (Categorical: a few hundred distinct values over
    # millions of rows), so the plan hashes integers; vigila.plan decodes the values it reports
    encode = {c: pl.Categorical(pl.Categories.random()) for c in source.mapped.values()
              if c in columns} if source.shape == "line_list" else None

    def table(strict: bool, bad_rows: pl.DataFrame | None, recount: Callable[[], RawTable] | None) -> RawTable:
        frame = pl.scan_csv(text_path, separator=delimiter, infer_schema=False, null_values=opts.na_values or None,
                            truncate_ragged_lines=not strict, encoding="utf8", schema_overrides=encode)
        return RawTable(frame, columns, "csv", encoding, delimiter, bad_rows, notes, tmpdir, recount=recount)

    def counted() -> RawTable:
        """Every row's field count (one more pass): the rows whose count differs from the header's."""
        bad = _field_counts(text_path, delimiter, len(columns), quotes=counts.quotes)
        if bad["odd_quotes"].any():  # a quoted field spans lines: line numbers are not row numbers
            notes.append("quoted fields span several lines: field counts not checked per row")
            bad = bad.clear()
        bad_rows = None
        if bad.height:
            bad_rows = bad.select(ROW, pl.lit("field_count").alias("check"),
                                  (pl.format("{} fields, header has {}: ", "n", pl.lit(len(columns))) + pl.col("value")).alias("value"))
        return table(False, bad_rows, None)

    # no row can be short without another being long, and a strict parse refuses a long one (`RaggedRows`: the
    # caller asks `recount`) -- when it parses every column: polars checks the field count only then. A count
    # file does (its whole-line hash, vigila.ingest.cast.LINE); a line list reads only its mapped columns.
    if counts.fields_all(len(columns)) and source.shape != "line_list":
        return table(True, None, counted)
    return counted()


# --------------------------------------------------------------------------- other formats


def _as_text(df: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    lf = df.lazy()
    schema = lf.collect_schema()
    casts = []
    for name, dtype in schema.items():
        if dtype == pl.Utf8:
            casts.append(pl.col(name))
        elif dtype.is_temporal():
            casts.append(pl.col(name).dt.to_string("%Y-%m-%d") if dtype == pl.Date else pl.col(name).cast(pl.Utf8))
        elif dtype.is_nested() or dtype == pl.Struct:
            casts.append(pl.col(name).map_elements(json.dumps, return_dtype=pl.Utf8))
        else:
            casts.append(pl.col(name).cast(pl.Utf8))
    return lf.select(casts)


def _null_strings(lf: pl.LazyFrame, na_values: list[str]) -> pl.LazyFrame:
    if not na_values:
        return lf
    cols = [c for c in lf.collect_schema().names() if c != ROW]
    return lf.with_columns(pl.when(pl.col(c).str.strip_chars().is_in(na_values)).then(None).otherwise(pl.col(c)).alias(c)
                           for c in cols)


def _check_zip(path: Path, source: SourceConfig) -> None:
    """An XLSX is a zip of XML: refuse it before reading when its parts would expand past `expansion_limit`
    (the sizes are in the zip's directory: nothing is inflated to know them)."""
    try:
        with zipfile.ZipFile(path) as z:
            expanded = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError) as e:
        raise ReadError(f"{path.name}: corrupt XLSX (zip) file ({str(e)[:120]})") from None
    limit = expansion_limit(path, source)
    if expanded > limit:
        raise ReadError(f"{path.name}: its sheets expand to {expanded / 2**20:,.0f} MiB, past {limit / 2**20:,.0f} MiB: refused as "
                        "a decompression bomb (limits.max_decompressed_bytes, limits.max_compression_ratio)")


def _read_xlsx(path: Path, source: SourceConfig, workdir: Path | None) -> RawTable:
    _check_zip(path, source)
    try:
        kwargs = {"sheet_name": source.csv.sheet} if source.csv.sheet else {"sheet_id": 1}
        df = pl.read_excel(path, infer_schema_length=0, **kwargs)
    except Exception as e:  # fastexcel raises its own exception types
        raise ReadError(f"{path.name}: cannot read as XLSX ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    lf = _null_strings(_as_text(df), source.csv.na_values)
    return RawTable(lf, df.columns, "xlsx")


def _records_at(doc, dotted: str | None, name: str):
    for part in (dotted.split(".") if dotted else []):
        if not isinstance(doc, dict) or part not in doc:
            raise ReadError(f"{name}: JSON has no key {part!r} on the path {dotted!r} (csv.json_records_path)")
        doc = doc[part]
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise ReadError(f"{name}: expected a JSON list of records (objects)" + (f" at {dotted!r}" if dotted else ""))
    return doc


def _read_json(path: Path, source: SourceConfig, workdir: Path | None) -> RawTable:
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReadError(f"{path.name}: malformed JSON ({e})") from None
    records = _records_at(doc, source.csv.json_records_path, path.name)
    columns = list(dict.fromkeys(k for r in records for k in r))
    text = [{k: (None if r.get(k) is None else r[k] if isinstance(r[k], str) else json.dumps(r[k])) for k in columns}
            for r in records]
    df = pl.DataFrame(text, schema={c: pl.Utf8 for c in columns}, orient="row") if text else pl.DataFrame(schema={c: pl.Utf8 for c in columns})
    return RawTable(_null_strings(_as_text(df), source.csv.na_values), columns, "json")


def _read_api(path: Path, source: SourceConfig, workdir: Path | None) -> RawTable:
    """A DHIS2 (dataValueSets / analytics) or FHIR (Bundle / MeasureReport) document -> contract rows.

    Frame row i is the i-th data value (DHIS2) or the i-th row the MeasureReports give (FHIR); each
    problem the parser found is a bad row with its check, so it reaches the quarantine. A problem
    that does not void a row of its own (a warning, or a FHIR report-level problem) gets a row of
    its own after the data, its value naming where it was."""
    fmt = source.format
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReadError(f"{path.name}: malformed JSON ({e})") from None
    mapping = getattr(source, fmt)
    if mapping is None:
        raise ReadError(f"format: {fmt} needs a `{fmt}:` mapping in the source config")
    if fmt == "dhis2":
        from connectors import dhis2

        is_analytics = isinstance(doc, dict) and "headers" in doc and "rows" in doc
        rows, problems = (dhis2.parse_analytics if is_analytics else dhis2.parse_data_value_sets)(doc, mapping)
        other = sorted(set(rows["week_system"].drop_nulls().to_list()) - {source.epiweek}) if "week_system" in rows.columns else []
        if other:   # every week would be renumbered in the other system: shifted dates, never published
            raise ReadError(f"{path.name}: the DHIS2 periods are {'/'.join(other)} weeks but the source says epiweek: "
                            f"{source.epiweek}; set epiweek (iso for Weekly, mmwr for WeeklySunday) or dhis2.period_types")
        n = int(max(rows["row"].max() or 0, problems["row"].max() or 0))      # rows = dataValues positions
        own = problems["row"].is_in(rows["row"].implode()) | (problems["severity"] == "warning")
    else:
        from connectors import fhir

        if isinstance(doc, dict) and "resourceType" not in doc and "entry" in doc:   # pages landed as one file
            doc = {"resourceType": "Bundle", "type": "collection", "entry": doc["entry"]}
        resources, page_problems = fhir.read_bundle_pages([doc])
        rows, problems = fhir.parse_measure_reports(resources, mapping)
        problems = pl.concat([page_problems, problems], how="diagonal_relaxed")
        if problems.height:                      # their `row` is a resource position: say which resource
            problems = problems.with_columns(pl.concat_str([
                pl.col("value").cast(pl.Utf8).fill_null(""), pl.lit(" (resource "),
                pl.col("resource_id").cast(pl.Utf8).fill_null(pl.col("row").cast(pl.Utf8)), pl.lit(")")]).alias("value"))
        rows = rows.drop("row").with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))
        n = rows.height
        own = pl.repeat(True, problems.height, eager=True)
    extra = problems.filter(own).with_columns(pl.int_range(n + 1, n + 1 + pl.len()).cast(pl.Int64).alias("row"))
    bad = (pl.concat([problems.filter(~own), extra])
           .select(pl.col("row").alias(ROW), "check", pl.col("value").cast(pl.Utf8), "severity"))
    frame = (pl.DataFrame({"row": pl.int_range(1, n + extra.height + 1, eager=True).cast(pl.Utf8)})
             .join(rows.select(pl.all().cast(pl.Utf8)), on="row", how="left", maintain_order="left").drop("row"))
    return RawTable(frame.lazy(), frame.columns, fmt, bad_rows=bad)


def _read_dbase(path: Path, source: SourceConfig, workdir: Path | None) -> RawTable:
    from vigila.ingest.formats import dbase

    return dbase.read_dbase(path, source, workdir, detect_format(path, source.format))


def _read_parquet(path: Path, source: SourceConfig, workdir: Path | None) -> RawTable:
    try:
        lf = pl.scan_parquet(path)
        columns = lf.collect_schema().names()
    except Exception as e:
        raise ReadError(f"{path.name}: cannot read as Parquet ({str(e).splitlines()[0][:200]})") from None
    return RawTable(_as_text(lf), columns, "parquet")
