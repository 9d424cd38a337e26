"""dBase files -> text columns: plain `.dbf`, and DATASUS/SINAN `.dbc` (a DBF whose records are PKWare-DCL
imploded, read with the maintained `pyreaddbc` decompressor).

Input: a landed file, the source's limits and `csv.encoding`; output: a `RawTable` over a Parquet file of Utf8
columns (one per DBF field, in file order) written in a temporary folder. Rows are the DBF's records in file
order, deleted ones included (reported as set aside), so a row number is a record number.

Hostile input: the header (kept uncompressed at the head of a `.dbc`) says how many records of what length
follow; a file declaring more than `expansion_limit` or `limits.max_rows` is refused before anything is
expanded, and the decompressor runs in a child process whose file-size limit is the declared size, so a stream
that expands past what its header declares (a decompression bomb) is stopped at that size and refused.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from vigila.ingest.readers import RawTable, ReadError, expansion_limit

#: version bytes of dBase III/IV and FoxPro tables (SINAN writes 0x03)
DBF_VERSIONS = {0x02, 0x03, 0x04, 0x05, 0x30, 0x31, 0x32, 0x43, 0x63, 0x83, 0x8B, 0x8E, 0xCB, 0xF5, 0xFB}
CHUNK_ROWS = 500_000            # records converted to text per Parquet row group (bounded memory)
_SLACK = 4096                   # bytes past the declared size a .dbc may expand to (the 0x1A end-of-file mark)
# the child caps the size of any file it writes (RLIMIT_FSIZE) before expanding: set by itself, no preexec_fn
_BLAST = ("import resource, sys\ncap = int(sys.argv[3])\nresource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))\n"
          "from pyreaddbc import dbc2dbf\ndbc2dbf(sys.argv[1], sys.argv[2])\n")


@dataclass(frozen=True)
class Field:
    name: str
    type: str           # C character, D date (YYYYMMDD), N / F numeric, L logical, ...
    offset: int         # within the record (byte 0 is the deletion flag)
    length: int


@dataclass(frozen=True)
class Header:
    version: int
    n_records: int
    header_len: int
    record_len: int
    fields: tuple[Field, ...]

    @property
    def data_bytes(self) -> int:
        return self.header_len + self.n_records * self.record_len


def parse_header(head: bytes, name: str) -> Header:
    """The DBF header at the start of `head` (a `.dbf` or a `.dbc`); `ReadError` when it is not one."""
    if len(head) < 32 or head[0] not in DBF_VERSIONS:
        raise ReadError(f"{name}: not a dBase (DBF/DBC) file (no DBF header)")
    n_records, header_len, record_len = struct.unpack_from("<IHH", head, 4)
    if header_len < 65 or record_len < 2 or len(head) < header_len - 1:
        raise ReadError(f"{name}: corrupt DBF header (header of {header_len} bytes, records of {record_len} bytes)")
    fields, offset, at = [], 1, 32
    while at + 32 <= header_len and head[at] != 0x0D:
        raw = head[at:at + 32]
        field_name = raw[:11].split(b"\x00")[0].decode("latin-1").strip()
        kind, length = chr(raw[11]), raw[16]
        if not field_name or length == 0:
            raise ReadError(f"{name}: corrupt DBF header (field {len(fields) + 1} has no name or no length)")
        fields.append(Field(field_name, kind, offset, length))
        offset += length
        at += 32
    if not fields:
        raise ReadError(f"{name}: the DBF header declares no fields")
    if offset != record_len:
        raise ReadError(f"{name}: corrupt DBF header (fields add up to {offset} bytes, records are {record_len})")
    names = [f.name for f in fields]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ReadError(f"{name}: duplicate column name {dupes[0]!r} in the DBF header")
    return Header(head[0], n_records, header_len, record_len, tuple(fields))


def sniff(path: Path) -> str | None:
    """'dbc' or 'dbf' when the bytes start with a sound DBF header, else None. After the header a `.dbc` has a
    CRC32 and a DCL stream whose first bytes are its literal mode (0/1) and window (4-6); a `.dbf` has its header
    terminator (0x0D) and records starting with a deletion flag (' ' / '*'), and is as long as it declares."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
    try:
        header = parse_header(head, path.name)
    except ReadError:
        return None
    h, size = header.header_len, path.stat().st_size
    if len(head) >= h + 6 and head[h + 4] in (0, 1) and head[h + 5] in (4, 5, 6):
        return "dbc"
    if head[h - 1:h] == b"\x0d" and (size in (header.data_bytes, header.data_bytes + 1) or head[h:h + 1] in (b" ", b"*")):
        return "dbf"
    return None


def read_dbase(path: Path, source, workdir: Path | None, fmt: str) -> RawTable:
    """A `.dbf` or `.dbc` -> `RawTable` of text columns (see the module docstring)."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
    header = parse_header(head, path.name)
    if header.n_records > source.limits.max_rows:
        raise ReadError(f"{path.name}: declares {header.n_records:,} records, over limits.max_rows "
                        f"({source.limits.max_rows:,}): refused before reading")
    tmpdir = tempfile.TemporaryDirectory(prefix="vigila-dbase-", dir=workdir)
    tmp = Path(tmpdir.name)
    try:
        if fmt == "dbc":
            dbf = _expand(path, tmp / "data.dbf", header, source)
        else:
            dbf = path
            if path.stat().st_size < header.data_bytes:
                raise ReadError(f"{path.name}: truncated DBF file ({path.stat().st_size:,} bytes, its header declares "
                                f"{header.n_records:,} records = {header.data_bytes:,} bytes)")
        encoding = "latin-1" if source.csv.encoding == "auto" else source.csv.encoding   # DATASUS files are Latin-1
        # a line list reads only its mapped columns (a SINAN file has ~120); a count file hashes whole lines: all
        keep = set(source.mapped.values()) | set(source.row_key) if source.shape == "line_list" else None
        parquet, deleted = _to_parquet(dbf, header, tmp / "data.parquet", encoding, keep)
    except BaseException:
        tmpdir.cleanup()
        raise
    bad = None
    if deleted.len():
        bad = pl.DataFrame({"_row": deleted}).with_columns(check=pl.lit("dbf_deleted_record"),
                                                           value=pl.lit("record marked deleted (*)"), severity=pl.lit("set_aside"))
    notes = [f"{fmt.upper()} (dBase {header.version:#04x}): {header.n_records:,} records of {header.record_len} bytes, "
             f"{len(header.fields)} fields, read as {encoding}"]
    frame = pl.scan_parquet(parquet)
    if source.csv.na_values:
        frame = frame.with_columns(pl.when(pl.col(c).is_in(source.csv.na_values)).then(None).otherwise(pl.col(c)).alias(c)
                                   for c in frame.collect_schema().names())
    return RawTable(frame, [f.name for f in header.fields], fmt, encoding, None, bad, notes, tmpdir)


def _expand(path: Path, out: Path, header: Header, source) -> Path:
    """`.dbc` -> `.dbf` by pyreaddbc in a child process that cannot write more than the header declares."""
    declared, limit = header.data_bytes, expansion_limit(path, source)
    if declared > limit:
        raise ReadError(f"{path.name}: declares {header.n_records:,} records ({declared / 2**20:,.0f} MiB), past "
                        f"{limit / 2**20:,.0f} MiB: refused as a decompression bomb (limits.max_decompressed_bytes, "
                        "limits.max_compression_ratio)")
    cap = declared + _SLACK
    try:
        done = subprocess.run([sys.executable, "-c", _BLAST, str(path), str(out), str(cap)], capture_output=True,
                              text=True, errors="replace", timeout=3600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        raise ReadError(f"{path.name}: the .dbc took over an hour to expand: refused") from None
    size = out.stat().st_size if out.exists() else 0
    if size >= cap:
        raise ReadError(f"{path.name}: expands past the {declared / 2**20:,.1f} MiB its header declares: refused as a "
                        "decompression bomb")
    said = " ".join((done.stdout + " " + done.stderr).split())
    if done.returncode != 0 or "Error" in said or "blast printf code" in said or size < declared:
        why = said[:160] or f"exit {done.returncode}"
        raise ReadError(f"{path.name}: corrupt or truncated .dbc file: {size - header.header_len:,} of "
                        f"{declared - header.header_len:,} record bytes expanded ({why})")
    return out


def _columns(block: np.ndarray, header: Header, encoding: str) -> pl.DataFrame:
    """A block of records (uint8 matrix) -> one text column per field: stripped, blank -> null, dates as
    YYYY-MM-DD. Cells go to Arrow without copying; an ASCII column is cast as it is, any other decodes each
    distinct value once (a column repeats a few hundred values)."""
    cells, plain = {}, []
    for f in header.fields:
        raw = np.ascontiguousarray(block[:, f.offset:f.offset + f.length])
        binary = pl.from_arrow(pa.FixedSizeBinaryArray.from_buffers(pa.binary(f.length), len(raw), [None, pa.py_buffer(raw)]))
        binary = binary.cast(pl.Binary).alias(f.name)
        if (raw >= 0x80).any():
            distinct = binary.unique()
            decoded = pl.Series([v.decode(encoding, errors="replace") if v is not None else None for v in distinct.to_list()],
                                dtype=pl.Utf8)
            cells[f.name] = binary.replace_strict(distinct, decoded, return_dtype=pl.Utf8)
        else:
            cells[f.name] = binary
            plain.append(f.name)
    exprs = []
    for f in header.fields:
        text = (pl.col(f.name).cast(pl.Utf8) if f.name in plain else pl.col(f.name)).str.strip_chars(" \x00")
        text = pl.when(text.str.len_bytes() > 0).then(text)
        if f.type == "D":
            text = text.str.replace(r"^(\d{4})(\d{2})(\d{2})$", "$1-$2-$3")
        exprs.append(text.alias(f.name))
    return pl.DataFrame(cells).lazy().select(exprs).collect()


def _to_parquet(dbf: Path, header: Header, out: Path, encoding: str, keep: set[str] | None = None) -> tuple[Path, pl.Series]:
    """The records of `dbf` -> Parquet text columns (those in `keep`, or all), CHUNK_ROWS at a time; returns the
    deleted records' rows."""
    header = Header(header.version, header.n_records, header.header_len, header.record_len,
                    tuple(f for f in header.fields if keep is None or f.name in keep))
    n, width = header.n_records, header.record_len
    records = np.memmap(dbf, dtype=np.uint8, mode="r", offset=header.header_len, shape=(n, width)) if n else \
        np.zeros((0, width), dtype=np.uint8)
    schema = {f.name: pl.Utf8 for f in header.fields}
    deleted: list[np.ndarray] = []
    writer = None
    try:
        for start in range(0, max(n, 1), CHUNK_ROWS):
            block = np.asarray(records[start:start + CHUNK_ROWS])
            deleted.append(np.flatnonzero(block[:, 0] == ord("*")) + start + 1)
            table = _columns(block, header, encoding).cast(schema).to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
        del records
    return out, pl.Series("_row", np.concatenate(deleted) if deleted else [], dtype=pl.Int64)
