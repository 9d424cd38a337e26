"""Versioned, hive-partitioned Parquet datasets with an atomic commit point, on any ``Storage``.

In: polars frames per partition (replace / append / whole rewrite). Out: immutable version folders
``datasets/<name>/versions/<id>/`` with a ``_manifest.json``, and a ``_current.json`` pointer.

Commit protocol (no rename of folders, no symlinks, so it works on S3 too):

1. take the dataset lock, ``vacuum`` leftovers of interrupted writers;
2. write the new version's files (new frames, and carried-over files of untouched partitions:
   hard links locally, server-side copies on S3) under a fresh ``versions/<id>/``;
3. write ``versions/<id>/_manifest.json`` LAST (a version folder without it is a leftover);
4. replace ``_current.json`` atomically: this is the commit point.

A writer killed at any point leaves ``_current.json`` on a complete older version. Readers resolve
the pointer, read the manifest, and read exactly the files it lists.

Locking: ``Storage.lock`` on ``datasets/<name>/.lock`` serialises writers: locally an ``fcntl`` lock;
on S3 a lease object ``locks/datasets/<name>.json`` made with a conditional PUT (a second writer waits,
bounded, then gets ``LockTimeout``). A store ignoring conditional PUTs is not locked (a warning): there
the orchestrator's concurrency limit (the flow's ``publish-<source>``) is the only guard.

Analysts can read the version folder ``current_uri(...)`` directly: DuckDB
``read_parquet('<uri>/**/*.parquet', hive_partitioning=true)``, polars
``pl.scan_parquet('<uri>/**/*.parquet', hive_partitioning=True)`` (a bare folder fails in polars
because of ``_manifest.json``; ``hidden_file_prefix=['_', '.']`` also works), ``pandas.read_parquet(uri)``
and ``pyarrow.dataset.dataset(uri, partitioning='hive')``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import polars as pl
import pyarrow as pa

from vigila.warehouse.storage import Storage, is_temp_key

__all__ = [
    "Manifest",
    "ManifestFile",
    "commit",
    "current_manifest",
    "current_uri",
    "history",
    "list_versions",
    "read_manifest",
    "scan",
    "vacuum",
    "write_catalog",
]

MANIFEST = "_manifest.json"
POINTER = "_current.json"
CATALOG = "catalog.json"
PartitionKey = tuple[Any, ...]


# -- manifest ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ManifestFile:
    path: str  # relative to the version folder, e.g. "country=BR/part-<uuid>.parquet"
    partition: tuple[str, ...]  # values, in ``partition_by`` order
    rows: int
    bytes: int


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    sequence: int
    parent: str | None
    created_at: str
    run_id: str
    schema_version: str
    partition_by: list[str]
    columns: dict[str, str]  # data columns (not the partition columns) -> polars dtype
    arrow_schema: str  # base64 Arrow IPC schema of the data columns (to type an empty version)
    files: list[ManifestFile]
    rows: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """Key of the version folder."""
        return _version_key(self.name, self.version)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        files = [ManifestFile(f["path"], tuple(f["partition"]), f["rows"], f["bytes"]) for f in d["files"]]
        return cls(**{**d, "files": files})

    def schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.arrow_schema)))


def _dataset_key(name: str) -> str:
    if not name or "/" in name or name.startswith((".", "_")):
        raise ValueError(f"invalid dataset name {name!r}")
    return f"datasets/{name}"


def _version_key(name: str, version: str) -> str:
    return f"{_dataset_key(name)}/versions/{version}"


def _sequence(version: str) -> int:
    """``v000042-1a2b3c4d`` -> 42 (-1 for a name that is not a version id)."""
    try:
        return int(version[1:].split("-", 1)[0]) if version.startswith("v") else -1
    except ValueError:
        return -1


# -- readers ----------------------------------------------------------------------------------
def read_manifest(storage: Storage, name: str, version: str) -> Manifest:
    return Manifest.from_dict(storage.read_json(f"{_version_key(name, version)}/{MANIFEST}"))


def current_manifest(storage: Storage, name: str) -> Manifest | None:
    """The committed version's manifest, or None if the dataset was never committed."""
    pointer_key = f"{_dataset_key(name)}/{POINTER}"
    previous = None
    while True:
        try:
            pointer = storage.read_json(pointer_key)
        except FileNotFoundError:
            return None
        try:
            return read_manifest(storage, name, pointer["version"])
        except FileNotFoundError:
            # Vacuumed between our two reads: only possible if the pointer moved on meanwhile.
            if pointer == previous:
                raise
            previous = pointer


def fingerprint(**parts: Any) -> str:
    """sha256 of the inputs and config a derived dataset is built from (a JSON object, keys sorted)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def built_from(storage: Storage, name: str, fingerprint: str) -> Manifest | None:
    """The current manifest of `name` when it records this fingerprint (the same inputs and config: nothing to do)."""
    current = current_manifest(storage, name)
    return current if current is not None and current.extra.get("fingerprint") == fingerprint else None


def current_uri(storage: Storage, name: str) -> str | None:
    """Local path or s3:// URL of the current version folder (hive layout), or None."""
    m = current_manifest(storage, name)
    return storage.uri(m.path) if m else None


def list_versions(storage: Storage, name: str) -> list[str]:
    """Complete versions still stored (have a manifest), oldest first."""
    prefix = f"{_dataset_key(name)}/versions"
    done = [v for v in storage.children(prefix) if storage.exists(f"{prefix}/{v}/{MANIFEST}")]
    return sorted(done, key=lambda v: (_sequence(v), v))


def history(storage: Storage, name: str) -> list[Manifest]:
    """Manifests of the committed versions still stored, oldest first: the current version and its
    ancestors (``parent`` links) back to the first one vacuumed away; [] if never committed."""
    m = current_manifest(storage, name)
    chain = []
    while m is not None:
        chain.append(m)
        try:
            m = read_manifest(storage, name, m.parent) if m.parent else None
        except FileNotFoundError:
            m = None
    return chain[::-1]


def scan(storage: Storage, name: str, version: str | None = None,
         partitions: Iterable[tuple[str, ...]] | None = None) -> pl.LazyFrame:
    """Exactly the files of the current (or given) version — only those of `partitions` (tuples of
    partition values) when given; partition columns added as Utf8."""
    m = read_manifest(storage, name, version) if version else current_manifest(storage, name)
    if m is None:
        raise FileNotFoundError(f"dataset {name!r} has no committed version in {storage.root}")
    wanted = None if partitions is None else {tuple(p) for p in partitions}
    files = m.files if wanted is None else [f for f in m.files if tuple(f.partition) in wanted]
    if not files:
        empty = pl.from_arrow(m.schema().empty_table())
        assert isinstance(empty, pl.DataFrame)
        return empty.lazy().with_columns(pl.lit(None, pl.String).alias(c) for c in m.partition_by)
    opts = storage.storage_options()
    return pl.concat(
        [
            pl.scan_parquet(
                storage.uri(f"{m.path}/{f.path}"), storage_options=opts, hive_partitioning=False
            ).with_columns(
                pl.lit(v, pl.String).alias(c) for c, v in zip(m.partition_by, f.partition, strict=True)
            )
            for f in files
        ],
        how="vertical",
    )


# -- writing ----------------------------------------------------------------------------------
def _partition_dir(partition_by: list[str], values: tuple[str, ...]) -> str:
    """Hive folder ``col=value/...``, URL-escaped (as pyarrow, polars, DuckDB and pandas decode it)."""
    pairs = zip(partition_by, values, strict=True)
    return "/".join(f"{quote(c, safe='')}={quote(v, safe='')}" for c, v in pairs)


def _partition_values(key: PartitionKey | Any, partition_by: list[str]) -> tuple[str, ...]:
    key = key if isinstance(key, tuple) else (key,)
    if len(key) != len(partition_by):
        raise ValueError(f"partition key {key!r} does not match partition_by={partition_by}")
    values = tuple(str(v) for v in key if v is not None and str(v) != "")
    if len(values) != len(key):
        raise ValueError(f"partition key {key!r}: null or empty partition values are not supported")
    return values


def _data_frame(df: pl.DataFrame, partition_by: list[str], values: tuple[str, ...]) -> pl.DataFrame:
    """``df`` without its partition columns, after checking they hold the key's values."""
    for c, v in zip(partition_by, values, strict=True):
        if c in df.columns and df.height and not (df[c].cast(pl.String) == v).all():
            raise ValueError(f"frame for partition {c}={v!r} holds other {c} values")
    return df.drop([c for c in partition_by if c in df.columns])


def _columns(df: pl.DataFrame) -> dict[str, str]:
    return {c: str(t) for c, t in df.schema.items()}


def _split(df: pl.DataFrame, partition_by: list[str]) -> dict[PartitionKey, pl.DataFrame]:
    """A whole-dataset frame -> one frame per partition."""
    if not partition_by:
        return {(): df}
    missing = [c for c in partition_by if c not in df.columns]
    if missing:
        raise ValueError(f"replace_all frame lacks partition columns {missing}")
    keyed = df.with_columns(pl.col(partition_by).cast(pl.String))
    return keyed.partition_by(partition_by, as_dict=True, maintain_order=True)


def _version_schema(
    *candidates: Manifest | pl.DataFrame | list[pl.DataFrame] | None,
) -> tuple[dict[str, str], str]:
    """(columns, base64 Arrow schema) of the first candidate given: a manifest, a frame, or the
    first frame of a non-empty list."""
    for c in candidates:
        if isinstance(c, list):
            c = c[0] if c else None
        if isinstance(c, Manifest):
            return c.columns, c.arrow_schema
        if isinstance(c, pl.DataFrame):
            schema = c.head(0).to_arrow().schema.serialize().to_pybytes()
            return _columns(c), base64.b64encode(schema).decode()
    raise ValueError("the first commit of a dataset needs data (replace, append or replace_all)")


def _created(storage: Storage, name: str, version: str) -> float:
    return datetime.fromisoformat(read_manifest(storage, name, version).created_at).timestamp()


def vacuum(storage: Storage, name: str, keep: int = 5, grace_seconds: float = 600.0) -> list[str]:
    """Delete leftovers of interrupted writers and old versions; return the deleted version ids.

    Kept: the current version, the ``keep - 1`` committed versions before it, and any older one
    that stopped being current less than ``grace_seconds`` ago (its successor's ``created_at``), so
    a reader that resolved it just before a burst of commits can finish. Deleted: other versions,
    version folders without a manifest, complete versions the pointer never reached, temp files.
    Call it under the dataset lock (``commit`` does, before writing: so after a commit up to
    ``keep + 1`` versions exist).
    """
    if keep < 1:
        raise ValueError("keep must be >= 1")
    base = _dataset_key(name)
    current = current_manifest(storage, name)
    committed = [v for v in list_versions(storage, name) if current and _sequence(v) <= current.sequence]
    kept = set(committed[-keep:]) | ({current.version} if current else set())
    cutoff = datetime.now(UTC).timestamp() - grace_seconds
    # committed[i] stopped being current when committed[i + 1] was created; newest first
    for version, successor in reversed(list(zip(committed[:-keep], committed[1:], strict=False))):
        if grace_seconds <= 0 or _created(storage, name, successor) <= cutoff:
            break
        kept.add(version)
    deleted = []
    for version in storage.children(f"{base}/versions"):
        if version in kept:
            continue
        vkey = f"{base}/versions/{version}"
        storage.delete(f"{vkey}/{MANIFEST}")  # first: a half-deleted version is then incomplete
        storage.delete_prefix(vkey)
        deleted.append(version)
    for key in storage.list(base):
        if is_temp_key(key):
            storage.delete(key)
    return deleted


def _plan(
    name: str,
    parent: Manifest | None,
    partition_by: list[str],
    replace: Mapping[PartitionKey, pl.DataFrame],
    append: Mapping[PartitionKey, pl.DataFrame],
    replace_all: pl.DataFrame | None,
) -> tuple[list[ManifestFile], list[tuple[tuple[str, ...], pl.DataFrame]], tuple[dict[str, str], str]]:
    """What a commit writes: (parent files carried over, (partition, frame) to write, schema)."""
    carried = parent.files if parent and replace_all is None else []
    if carried and parent.partition_by != partition_by:  # type: ignore[union-attr]
        raise ValueError(f"{name}: partition_by differs from the current version's; use replace_all")
    if replace_all is not None:
        replace = _split(replace_all, partition_by)
    new_frames = [
        (vals, _data_frame(df, partition_by, vals), mode)
        for mode, frames in (("replace", replace), ("append", append))
        for vals, df in ((_partition_values(k, partition_by), df) for k, df in frames.items())
    ]
    replaced = {vals for vals, _, mode in new_frames if mode == "replace"}
    carried = [f for f in carried if f.partition not in replaced]
    written = [(vals, df) for vals, df, _ in new_frames if df.height]
    schema = _version_schema(  # one schema per version: the first of these that exists
        parent if carried else None,
        [df for _, df in written],
        None if replace_all is None else replace_all.drop(partition_by, strict=False),
        parent,
        [df for _, df, _ in new_frames],
    )
    for vals, df in written:
        if _columns(df) != schema[0]:
            raise ValueError(f"{name} partition {vals}: columns {_columns(df)} != the version's {schema[0]}")
    return carried, written, schema


def _new_part(partition_by: list[str], vals: tuple[str, ...]) -> str:
    """Path (under a version folder) of a new data file of partition `vals`."""
    return f"{_partition_dir(partition_by, vals)}/part-{uuid.uuid4().hex}.parquet".lstrip("/")


class _PartFile:
    """The one new data file of a partition under a version folder, opened at its first rows (zstd Parquet, a
    row group per write) inside `stack`: what the streamed commits append their batches to."""

    def __init__(self, stack: contextlib.ExitStack, storage: Storage, vkey: str, partition_by: list[str],
                 vals: tuple[str, ...]) -> None:
        self.stack, self.storage, self.vkey, self.vals = stack, storage, vkey, vals
        self.path, self.rows, self.writer = _new_part(partition_by, vals), 0, None

    def write(self, name: str, data: pl.DataFrame, columns: dict[str, str]) -> None:
        """Append `data` (partition columns dropped) after checking its columns are the version's."""
        if _columns(data) != columns:
            raise ValueError(f"{name} partition {self.vals}: columns {_columns(data)} != the version's {columns}")
        if not data.height:
            return
        table = data.to_arrow()
        if self.writer is None:
            import pyarrow.parquet as pq

            out = self.stack.enter_context(self.storage.open_output(f"{self.vkey}/{self.path}"))
            self.writer = self.stack.enter_context(pq.ParquetWriter(out, table.schema, compression="zstd"))
        self.writer.write_table(table)
        self.rows += data.height

    def entry(self) -> list[ManifestFile]:
        """Its manifest entry once `stack` has closed it (none when no rows came)."""
        return [ManifestFile(self.path, self.vals, self.rows, self.storage.size(f"{self.vkey}/{self.path}"))] if self.rows else []


def _write_stream(
    storage: Storage, name: str, vkey: str, partition_by: list[str], batches: Iterable[pl.DataFrame],
    parent: Manifest | None,
) -> tuple[list[ManifestFile], tuple[dict[str, str], str]]:
    """``commit``'s streamed ``replace_all``: every batch split by partition and appended (one row group
    per batch and partition) to that partition's one file under ``vkey``; returns (files, schema)."""
    schema: tuple[dict[str, str], str] | None = None
    parts: dict[tuple[str, ...], _PartFile] = {}
    with contextlib.ExitStack() as stack:
        for batch in batches:
            if schema is None:
                schema = _version_schema(batch.drop(partition_by, strict=False))
            for key, df in _split(batch, partition_by).items():
                vals = _partition_values(key, partition_by)
                if vals not in parts:
                    parts[vals] = _PartFile(stack, storage, vkey, partition_by, vals)
                parts[vals].write(name, _data_frame(df, partition_by, vals), schema[0])
                del df
            del batch  # not held while the iterable makes the next one
    return [e for part in parts.values() for e in part.entry()], schema or _version_schema(parent)


LAZY_BATCH_ROWS = 1_000_000   # rows of a LazyFrame partition written at a time (one row group each)


def _write_partition(storage: Storage, name: str, vkey: str, partition_by: list[str], vals: tuple[str, ...],
                     lf: pl.LazyFrame, columns: dict[str, str]) -> list[ManifestFile]:
    """``commit``'s LazyFrame ``replace``: the partition's rows collected in batches into one file under
    ``vkey`` (none if it has no rows); returns its manifest entry."""
    with contextlib.ExitStack() as stack:
        part = _PartFile(stack, storage, vkey, partition_by, vals)
        for batch in lf.collect_batches(chunk_size=LAZY_BATCH_ROWS):
            part.write(name, _data_frame(batch, partition_by, vals), columns)
            del batch
    return part.entry()


def commit(
    storage: Storage,
    name: str,
    *,
    partition_by: list[str],
    schema_version: str,
    run_id: str,
    replace: Mapping[PartitionKey, pl.DataFrame | pl.LazyFrame] | None = None,
    append: Mapping[PartitionKey, pl.DataFrame] | None = None,
    replace_all: pl.DataFrame | Iterable[pl.DataFrame] | None = None,
    extra: dict[str, Any] | None = None,
    keep: int = 5,
    grace_seconds: float = 600.0,
) -> Manifest:
    """Publish a new version of dataset ``name`` and make it current.

    The new version is the current one's files, except: each partition in ``replace`` holds only
    its new frame's rows (an empty frame removes the partition); each partition in ``append`` gets
    one more file; ``replace_all`` rewrites the whole dataset (split by ``partition_by``; it cannot
    be combined with ``replace``/``append``). Keys are tuples of partition values in
    ``partition_by`` order (a bare value is fine for one column); frames may include the partition
    columns (checked, then dropped) or not. All files of a version must share one schema.
    ``replace_all`` may also be an iterable of frames (batches, e.g. a generator reading staged
    files one by one): the same version as their concatenation given whole — one file per partition,
    rows in arrival order — but each batch is split and appended to its partitions' open Parquet
    writers as it comes, so the commit holds one batch at a time, whatever the dataset's size (the
    iterable is consumed under the dataset lock; an error raised by it commits nothing).
    A ``replace`` value may be a LazyFrame: collected in batches into the partition's one file, so a
    partition larger than memory (a file's millions of quarantine records) is never held whole.
    ``keep`` / ``grace_seconds``: passed to ``vacuum``, which runs first.
    """
    if replace_all is not None and (replace or append):
        raise ValueError("replace_all cannot be combined with replace/append")
    partition_by = list(partition_by)
    base = _dataset_key(name)
    if isinstance(replace_all, pl.LazyFrame):
        raise TypeError("replace_all: a DataFrame or an iterable of DataFrames, not a LazyFrame")
    streamed = replace_all is not None and not isinstance(replace_all, pl.DataFrame)
    lazy = {k: v for k, v in (replace or {}).items() if isinstance(v, pl.LazyFrame)}
    eager = {k: (v.clear().collect() if k in lazy else v) for k, v in (replace or {}).items()}   # schema now, rows later
    with storage.lock(f"{base}/.lock"):
        vacuum(storage, name, keep, grace_seconds)
        parent = current_manifest(storage, name)
        if not streamed:
            carried, written, (columns, arrow_schema) = _plan(
                name, parent, partition_by, eager, append or {}, replace_all  # type: ignore[arg-type]
            )
        sequence = (parent.sequence if parent else 0) + 1
        version = f"v{sequence:06d}-{uuid.uuid4().hex[:8]}"
        vkey = _version_key(name, version)
        files = []
        if streamed:
            files, (columns, arrow_schema) = _write_stream(storage, name, vkey, partition_by, replace_all, parent)  # type: ignore[arg-type]
        else:
            for f in carried:
                storage.copy(f"{parent.path}/{f.path}", f"{vkey}/{f.path}")  # type: ignore[union-attr]
                files.append(f)
            for vals, df in written:
                path = _new_part(partition_by, vals)
                size = storage.write_parquet(f"{vkey}/{path}", df)
                files.append(ManifestFile(path, vals, df.height, size))
            for key, lf in lazy.items():
                vals = _partition_values(key, partition_by)
                files += _write_partition(storage, name, vkey, partition_by, vals, lf, columns)
        files.sort(key=lambda f: (f.partition, f.path))

        manifest = Manifest(
            name=name,
            version=version,
            sequence=sequence,
            parent=parent.version if parent else None,
            created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            run_id=run_id,
            schema_version=schema_version,
            partition_by=partition_by,
            columns=columns,
            arrow_schema=arrow_schema,
            files=files,
            rows=sum(f.rows for f in files),
            extra=dict(extra or {}),
        )
        storage.write_json(f"{vkey}/{MANIFEST}", manifest.to_dict())
        storage.write_json(  # the commit point
            f"{base}/{POINTER}", {"version": version, "sequence": sequence, "path": f"versions/{version}"}
        )
        return manifest


def write_catalog(storage: Storage) -> dict[str, Any]:
    """Write ``catalog.json`` at the root (atomically) listing every committed dataset; return it."""
    with storage.lock(".catalog.lock"):
        datasets = []
        for name in storage.children("datasets"):
            m = None if name.startswith((".", "_")) else current_manifest(storage, name)
            if m is None:
                continue
            datasets.append(
                {
                    "name": name,
                    "version": m.version,
                    "sequence": m.sequence,
                    "path": m.path,
                    "schema_version": m.schema_version,
                    "rows": m.rows,
                    "partition_by": m.partition_by,
                    "updated_at": m.created_at,
                }
            )
        catalog = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "datasets": datasets}
        storage.write_json(CATALOG, catalog)
        return catalog
