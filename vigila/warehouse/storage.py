"""One small storage interface over a local directory or an ``s3://bucket/prefix`` warehouse root.

In: a root path or URL and '/'-separated keys relative to it. Out: bytes, JSON, Parquet files and
absolute URIs (+ polars ``storage_options``) that polars, DuckDB, pandas and pyarrow can read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import hmac
import io
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

import polars as pl
import pyarrow.fs as pafs

TMP_MARKER = ".tmp-"
"""Temporary files are named ``.<final name>.tmp-<uuid>``; a name containing this is a leftover."""


def is_temp_key(key: str) -> bool:
    """True for a key written by an interrupted local atomic write."""
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") and TMP_MARKER in name


S3_SETTINGS = {
    "endpoint": "AWS_ENDPOINT_URL",
    "access_key": "AWS_ACCESS_KEY_ID",
    "secret_key": "AWS_SECRET_ACCESS_KEY",
    "region": "AWS_REGION",
}
"""S3 settings Storage understands, and the environment variable each is read from by default."""


log = logging.getLogger(__name__)


class LockTimeout(TimeoutError):
    """The warehouse lock stayed held by another writer for longer than we could wait."""


def lock_object_key(key: str) -> str:
    """The S3 lease object of a lock key: ``datasets/cases_weekly/.lock`` -> ``locks/datasets/cases_weekly.json``."""
    parts = [p for p in key.strip("/").split("/") if p]
    last = parts.pop().removesuffix(".lock").lstrip(".") if parts else ""
    return "/".join(["locks", *parts, *([last] if last else [])]) + ".json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Storage:
    """A warehouse root. Writes are atomic: a reader sees the old object or the new one, never a
    part of one. Locally that is temp file + fsync + ``os.replace``; on S3 one PUT of the whole object.
    """

    LOCK_TTL_SECONDS = 300.0    # an S3 lease not renewed for this long is a dead writer's, and may be taken over
    LOCK_WAIT_SECONDS = 1800.0  # how long ``lock`` waits for another writer before raising LockTimeout

    def __init__(self, root: str, fs: pafs.FileSystem, base: str, s3: dict[str, str] | None = None):
        self.root = root  # as given, normalised: absolute path or s3://bucket/prefix
        self.fs = fs
        self._base = base.rstrip("/")  # root as a path of ``fs``
        self._s3 = s3  # None for a local root
        self._conditional_put: bool | None = None  # S3: does the server honour If-None-Match? (probed once)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path | Storage, *, s3: Mapping[str, str] | None = None) -> Storage:
        """``root``: a local folder (created if missing) or ``s3://bucket/prefix``, or an open
        ``Storage`` (returned as it is). ``s3``: settings (keys of ``S3_SETTINGS``) that replace the
        ``AWS_*`` environment variables."""
        if isinstance(root, Storage):
            return root
        root = str(root)
        if root.startswith("s3://"):
            if s3 is None:
                s3 = {k: os.environ[v] for k, v in S3_SETTINGS.items() if os.environ.get(v)}
            if unknown := set(s3) - set(S3_SETTINGS):
                raise ValueError(f"unknown S3 settings {sorted(unknown)}; known: {sorted(S3_SETTINGS)}")
            settings = {k: v for k, v in s3.items() if v}
            kwargs: dict[str, Any] = {
                k: settings[k] for k in ("access_key", "secret_key", "region") if k in settings
            }
            if "endpoint" in settings:
                url = urlsplit(settings["endpoint"])
                kwargs["endpoint_override"] = url.netloc or url.path
                kwargs["scheme"] = url.scheme or "https"
            fs = pafs.S3FileSystem(**kwargs)
            return cls(root.rstrip("/"), fs, root[len("s3://") :], settings)
        path = Path(root).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return cls(str(path), pafs.LocalFileSystem(), str(path))

    @property
    def is_local(self) -> bool:
        return self._s3 is None

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    # -- addressing -------------------------------------------------------------------------
    def path(self, key: str = "") -> str:
        """``key`` as a path of ``self.fs`` (for pyarrow / pandas ``filesystem=`` arguments)."""
        key = key.strip("/")
        return f"{self._base}/{key}" if key else self._base

    def uri(self, key: str = "") -> str:
        """Absolute local path or s3:// URL of ``key``, for polars / DuckDB / pandas / pyarrow."""
        return ("s3://" if self._s3 is not None else "") + self.path(key)

    def storage_options(self) -> dict[str, str] | None:
        """polars ``storage_options=`` for this root (None locally: no options needed)."""
        if self._s3 is None:
            return None
        opts = {S3_SETTINGS[k].lower(): v for k, v in self._s3.items()}
        if opts.get("aws_endpoint_url", "").startswith("http://"):
            opts["aws_allow_http"] = "true"
        return opts

    # -- reading ----------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        """Whole object; FileNotFoundError when it does not exist."""
        with self.fs.open_input_stream(self.path(key)) as f:
            return f.read()

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def exists(self, key: str) -> bool:
        return self.fs.get_file_info(self.path(key)).type != pafs.FileType.NotFound

    def list(self, prefix: str = "") -> list[str]:
        """Every file under ``prefix`` (recursive), as sorted keys relative to the root."""
        sel = pafs.FileSelector(self.path(prefix), recursive=True, allow_not_found=True)
        cut = len(self._base) + 1
        return sorted(
            info.path[cut:] for info in self.fs.get_file_info(sel) if info.type == pafs.FileType.File
        )

    def children(self, prefix: str = "") -> list[str]:
        """Names of the immediate children (files and folders) of ``prefix``, sorted."""
        sel = pafs.FileSelector(self.path(prefix), recursive=False, allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(sel))

    # -- writing ----------------------------------------------------------------------------
    def _atomic_write(self, key: str, write: Callable[[IO[bytes]], object]) -> int:
        """Run ``write(file)`` and publish the result at ``key`` in one step; return its size."""
        if self._s3 is not None:
            buf = io.BytesIO()
            write(buf)
            data = buf.getvalue()
            with self.fs.open_output_stream(self.path(key)) as out:  # a single PUT
                out.write(data)
            return len(data)
        with self.open_output(key) as f:   # a temp file beside it, fsynced, then renamed
            write(f)
            return f.tell()

    def write_bytes(self, key: str, data: bytes) -> int:
        return self._atomic_write(key, lambda f: f.write(data))

    def write_json(self, key: str, obj: Any) -> int:
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode() + b"\n"
        return self.write_bytes(key, data)

    def write_parquet(self, key: str, df: pl.DataFrame) -> int:
        """Write ``df`` as one zstd Parquet file at ``key``; return its size in bytes."""
        return self._atomic_write(key, lambda f: df.write_parquet(f, compression="zstd"))

    @contextlib.contextmanager
    def open_output(self, key: str) -> Iterator[IO[bytes]]:
        """A binary file to stream a large object into, published at ``key`` when the block exits without
        an error (its size is then ``size(key)``). Local: a temp file beside it, fsynced, then ``os.replace``;
        on an error it is removed. S3: a multipart upload (the object appears when it completes), so
        nothing is held in memory beyond one part; on an error the upload may still complete: write
        only under a folder that is not committed yet (a version folder before its manifest)."""
        if self._s3 is not None:
            with self.fs.open_output_stream(self.path(key)) as out:
                yield out  # type: ignore[misc]
            return
        final = Path(self.path(key))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}{TMP_MARKER}{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)

    def size(self, key: str) -> int:
        """Size in bytes of the object at ``key``."""
        info = self.fs.get_file_info(self.path(key))
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(self.uri(key))
        return int(info.size)

    def put_file(self, key: str, local: str | Path) -> int:
        """Upload a local file to ``key`` in chunks (atomic like every write); return its size."""
        if self._s3 is not None:  # a multipart upload only becomes visible when it completes
            with open(local, "rb") as src, self.fs.open_output_stream(self.path(key)) as out:
                shutil.copyfileobj(src, out, 1 << 22)
            return Path(local).stat().st_size
        final = Path(self.path(key))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}{TMP_MARKER}{uuid.uuid4().hex}")
        try:
            shutil.copyfile(local, tmp)  # copy_file_range/sendfile: 10x faster than a read/write loop
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return final.stat().st_size

    def copy(self, src: str, dst: str) -> None:
        """Copy a file (local: a hard link when possible; s3: a server-side copy)."""
        if self._s3 is not None:
            self.fs.copy_file(self.path(src), self.path(dst))
            return
        source, target = Path(self.path(src)), Path(self.path(dst))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}{TMP_MARKER}{uuid.uuid4().hex}")
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            with open(source, "rb") as f:
                self._atomic_write(dst, lambda out: shutil.copyfileobj(f, out))
            return
        os.replace(tmp, target)
        _fsync_dir(target.parent)

    def delete(self, key: str) -> None:
        """Delete one file; a missing file is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(key))

    def delete_prefix(self, prefix: str) -> None:
        """Delete everything under ``prefix`` (a folder); missing is not an error."""
        if not prefix.strip("/"):
            raise ValueError("refusing to delete the whole warehouse root")
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(self.path(prefix))

    @contextlib.contextmanager
    def lock(self, key: str, *, wait_seconds: float | None = None, ttl_seconds: float | None = None) -> Iterator[None]:
        """Exclusive lock held for the ``with`` block.

        Local: ``fcntl.flock`` on the file ``key`` (released by the kernel if the process dies).
        S3: a lease object ``locks/...json`` (see `lock_object_key`) created with a conditional PUT
        (``If-None-Match: *``: only one writer can create it), renewed while held, deleted on exit;
        a lease not renewed for ``ttl_seconds`` (a dead writer's) is taken over. A second writer
        polls, and after ``wait_seconds`` raises `LockTimeout` naming the holder. If the server does
        not honour conditional PUTs (probed once), S3 writers are NOT locked: a warning is logged and
        the orchestrator's concurrency limit is the only guard.
        """
        if self._s3 is not None:
            with self._s3_lease(key, self.LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds,
                                self.LOCK_TTL_SECONDS if ttl_seconds is None else ttl_seconds):
                yield
            return
        path = Path(self.path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # -- S3 lease lock ----------------------------------------------------------------------
    def _s3_request(self, method: str, key: str, data: bytes = b"", headers: Mapping[str, str] | None = None) -> int:
        """One signed (AWS SigV4, path-style) request on ``key``; returns the HTTP status. pyarrow's
        S3 filesystem cannot send ``If-None-Match``, hence this small signer."""
        import httpx

        assert self._s3 is not None
        endpoint = self._s3.get("endpoint") or f"https://s3.{self._s3.get('region') or 'us-east-1'}.amazonaws.com"
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        region = self._s3.get("region") or "us-east-1"
        path = "/" + quote(self.path(key), safe="/-_.~")
        now = dt.datetime.now(dt.UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        signed = {"host": url.netloc, "x-amz-content-sha256": hashlib.sha256(data).hexdigest(), "x-amz-date": amz_date,
                  **{k.lower(): v for k, v in (headers or {}).items()}}
        names = ";".join(sorted(signed))
        canonical = "\n".join([method, path, "", *(f"{k}:{signed[k].strip()}" for k in sorted(signed)), "",
                               names, signed["x-amz-content-sha256"]])
        scope = f"{day}/{region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + self._s3.get("secret_key", "")).encode()
        for part in (day, region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        auth = (f"AWS4-HMAC-SHA256 Credential={self._s3.get('access_key', '')}/{scope}, "
                f"SignedHeaders={names}, Signature={signature}")
        res = httpx.request(method, f"{url.scheme}://{url.netloc}{path}", content=data,
                            headers={**signed, "authorization": auth}, timeout=30)
        if res.status_code >= 400 and res.status_code not in (404, 409, 412):
            raise OSError(f"S3 {method} {self.uri(key)}: HTTP {res.status_code} {res.text[:200]}")
        return res.status_code

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if no object is there (S3: conditional PUT; local: ``O_EXCL``).
        True if this call created it."""
        if self._s3 is None:
            final = Path(self.path(key))
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        return self._s3_request("PUT", key, data, {"if-none-match": "*"}) == 200

    def supports_conditional_put(self) -> bool:
        """Whether the store refuses a second create of one key (always locally; S3: probed once)."""
        if self._s3 is None:
            return True
        if self._conditional_put is None:
            probe = f"locks/.probe-{uuid.uuid4().hex}"
            try:
                self._conditional_put = self.put_if_absent(probe, b"1") and not self.put_if_absent(probe, b"2")
            finally:
                self.delete(probe)
        return self._conditional_put

    def _read_lease(self, lease_key: str, tries: int = 5) -> dict | None:
        """Another writer's lease, None once it is gone. The read races with that writer's release and
        renewals: pyarrow sizes an object (HEAD) before it GETs it, and an object deleted or rewritten
        in between fails the GET with an OSError ("INTERNAL_FAILURE ... Failed to flush response
        stream"); such a read is tried again, a little later, and only a persistent error is raised."""
        for attempt in range(tries):
            try:
                return self.read_json(lease_key)
            except (FileNotFoundError, ValueError):
                return None  # released (a lease is written whole: unreadable JSON is a vanishing object)
            except OSError:
                if attempt == tries - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return None

    @contextlib.contextmanager
    def _s3_lease(self, key: str, wait_seconds: float, ttl_seconds: float) -> Iterator[None]:
        if not self.supports_conditional_put():
            log.warning("%s does not honour conditional PUTs (If-None-Match): writers are not locked; "
                        "serialise them with the orchestrator (Prefect concurrency limit)", self.root)
            yield
            return
        lease_key, owner = lock_object_key(key), uuid.uuid4().hex
        holder = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "lock": key}

        def lease() -> bytes:
            now = time.time()
            return json.dumps({**holder, "renewed_at": now, "expires_at": now + ttl_seconds}).encode()

        deadline, pause = time.monotonic() + wait_seconds, 0.05
        while not self.put_if_absent(lease_key, lease()):
            current = self._read_lease(lease_key)
            if current is None:
                continue  # released meanwhile: try again at once
            if current.get("expires_at", 0) < time.time():  # a dead writer's lease: take it over
                log.warning("taking over the expired lock %s of %s", self.uri(lease_key), current)
                if (self._read_lease(lease_key) or {}).get("owner") == current.get("owner"):
                    self.delete(lease_key)
                continue
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"{self.uri(lease_key)}: another writer holds this lock (host {current.get('host')}, pid "
                    f"{current.get('pid')}, owner {current.get('owner')}); waited {wait_seconds:g} s. Nothing was "
                    f"written; run again once it is done (a dead writer's lock expires after {ttl_seconds:g} s)")
            time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
            pause = min(pause * 2, 2.0)

        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(ttl_seconds / 3):
                with contextlib.suppress(Exception):
                    if self.read_json(lease_key).get("owner") == owner:
                        self.write_bytes(lease_key, lease())

        renewer = threading.Thread(target=renew, name=f"vigila-lease-{lease_key}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            with contextlib.suppress(FileNotFoundError, ValueError):
                if self.read_json(lease_key).get("owner") == owner:
                    self.delete(lease_key)
