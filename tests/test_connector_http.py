"""The HTTP connector against a real HTTP server on 127.0.0.1, started by each test (no internet).

The payloads are built from the bundled Peru line list (data/demo): a sample of it is served as a
CKAN DataStore API (JSON pages), as a Socrata-like offset/limit CSV API and as one CSV file, and
ingested with `sources/http_open_data_example.yaml`, whose `location` is pointed at the local
server. Every failure must name the source and the URL (without secrets) and publish nothing.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, quote, urlsplit

import polars as pl
import pytest
import yaml

import connectors
from connectors import FetchError
from connectors.http import HttpConnector
from vigila.ingest import pipeline
from vigila.warehouse import read
from vigila.config import ConfigError, deep_merge, load_source, source_from_dict

from conftest import DEMO, SOURCES
from test_pipeline import ISO

EXAMPLE = SOURCES / "http_open_data_example.yaml"
DATASTORE = "/api/3/action/datastore_search"
RID = "8f1c0d2e-dengue-linelist"
SECRET = "s3cr3t T0ken/with+chars&more="   # spaces, / + & =: every URL encoding gets exercised
FAST = {"timeout_seconds": 1, "retries": 2, "backoff_seconds": 0.05, "max_wait_seconds": 3}


# --------------------------------------------------------------------------- a real HTTP server


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    truncate: int | None = None   # send only this many bytes; Content-Length still announces all
    hang: bool = False            # read the request, never answer
    length: bool = True           # send Content-Length (False: the body ends when the connection closes)


@dataclass
class Request:
    path: str
    query: dict
    headers: dict


class Server:
    """ThreadingHTTPServer on 127.0.0.1:<free port>. `route(path, *replies)`: replies served in
    order, the last one repeating; or `route(path, fn)` with fn(query, headers) -> Reply."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Reply] | Callable[[dict, dict], Reply]] = {}
        self.requests: list[Request] = []
        self.release = threading.Event()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                app.requests.append(Request(parts.path, query, headers))
                route = app.routes.get(parts.path)
                if route is None:
                    reply = Reply(404, b"not found")
                elif callable(route):
                    reply = route(query, headers)
                else:
                    reply = route.pop(0) if len(route) > 1 else route[0]
                if reply.hang:
                    app.release.wait(10)
                    return
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.length:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body if reply.truncate is None else reply.body[:reply.truncate])

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, *replies) -> None:
        self.routes[path] = replies[0] if len(replies) == 1 and callable(replies[0]) else list(replies)

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


# --------------------------------------------------------------------------- real payloads


@pytest.fixture(scope="module")
def linelist() -> pl.DataFrame:
    """Every 60th case of Peru's 2019-2022 line list: ~2,850 real rows over all years and places."""
    raw = pl.read_csv(gzip.decompress((DEMO / "peru_dengue_linelist_2019_2022.csv.gz").read_bytes()), infer_schema=False)
    return raw.gather_every(60)


def csv_bytes(df: pl.DataFrame) -> bytes:
    return df.write_csv().encode()


def records(df: pl.DataFrame) -> list[dict]:
    """As a CKAN DataStore returns them: an `_id`, year and week typed as numbers, the rest text."""
    return [{"_id": i + 1, **r, "ano": int(r["ano"]), "semana": int(r["semana"])} for i, r in enumerate(df.to_dicts())]


def expected(df: pl.DataFrame) -> pl.DataFrame:
    return (df.filter(pl.col("departamento") != r"\N")
            .group_by(geo_code=pl.col("departamento").replace_strict(ISO),
                      epi_year=pl.col("ano").cast(pl.Int32), epi_week=pl.col("semana").cast(pl.Int32))
            .agg(pl.len().cast(pl.Int64).alias("cases")).sort("geo_code", "epi_year", "epi_week"))


def published(wh) -> pl.DataFrame:
    return (read.cases_weekly(wh).group_by("geo_code", "epi_year", "epi_week").agg(pl.col("cases").sum())
            .sort("geo_code", "epi_year", "epi_week").collect())


def ckan(recs: list[dict], *, limit: int = 1000, repeat: int | None = None, broken: int | None = None):
    """A CKAN `datastore_search` answering offset/limit with `_links.next` (also after the last
    record: the page after it is empty). `repeat`: the next link of page `repeat` leads to a copy of
    that page (with a next link to the real following page), like a buggy cursor. `broken`: the
    page at that offset is malformed JSON."""

    def page(query: dict, headers: dict) -> Reply:
        offset, lim = int(query.get("offset", 0)), int(query.get("limit", limit))
        again = query.get("again") == "1"
        nxt = f"{DATASTORE}?offset={offset + lim}&limit={lim}&resource_id={RID}"
        if repeat is not None and not again and offset == (repeat - 1) * lim:
            nxt = f"{DATASTORE}?offset={offset}&limit={lim}&resource_id={RID}&again=1"
        result = {"resource_id": RID, "fields": [{"id": "_id", "type": "int"}], "records": recs[offset:offset + lim],
                  "_links": {"start": f"{DATASTORE}?limit={lim}&resource_id={RID}", "next": nxt},
                  "limit": lim, "offset": offset, "total": len(recs)}
        body = json.dumps({"help": "datastore_search", "success": True, "result": result}).encode()
        if broken is not None and offset == broken:
            body = body[: len(body) // 2]
        return Reply(body=body, headers={"Content-Type": "application/json"})

    return page


def example_dict(**over) -> dict:
    return deep_merge(yaml.safe_load(EXAMPLE.read_text()), over)


def example(location: str, **over) -> object:
    """The example source config, run unchanged except `location` (and the overrides given)."""
    return source_from_dict(deep_merge(example_dict(**over), {"location": location}))


def csv_source(location: str, **over):
    """The example pointed at one CSV report instead of the JSON API."""
    base = {"format": "csv", "csv": {"json_records_path": None}, "http": {"pagination": {"type": "none"}, **FAST}}
    return example(location, **deep_merge(base, over))


def nothing_published(wh: Path) -> bool:
    return not (wh / "datasets").exists() and not (wh / "reports").exists() and not (wh / "state").exists()


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


# --------------------------------------------------------------------------- the example, end to end


def test_example_config_is_an_http_source():
    cfg = load_source(EXAMPLE)
    assert cfg.location.startswith("https://") and "datastore_search" in cfg.location
    assert cfg.http.pagination.type == "next_link" and cfg.csv.json_records_path == "result.records"
    assert isinstance(connectors.connector_for(cfg.location), HttpConnector)
    assert isinstance(connectors.connector_for("http://example.org/x.csv"), HttpConnector)


def test_paginated_api_is_ingested_like_the_file(server, warehouse, linelist):
    server.route(DATASTORE, ckan(records(linelist)))
    cfg = example(server.url(f"{DATASTORE}?resource_id={RID}&limit=1000"))
    [report] = pipeline.fetch_and_ingest(cfg, warehouse)
    assert report["status"] == "published" and report["rows_read"] == linelist.height
    assert published(warehouse).equals(expected(linelist))
    # 3 pages of records, then the empty page CKAN links to after the last record
    offsets = [int(r.query.get("offset", 0)) for r in server.hits(DATASTORE)]
    assert offsets == [0, 1000, 2000, 3000]
    # one raw file per fetch, immutable, with the URL as provenance
    sha = report["file"]["sha256"]
    assert report["file"]["key"] == f"raw/{cfg.id}/{sha}.report.json"
    doc = json.loads((warehouse / report["file"]["key"]).read_bytes())
    assert len(doc["result"]["records"]) == linelist.height
    prov = json.loads((warehouse / "raw" / cfg.id / f"{sha}.json").read_text())   # the provenance record
    assert prov["origin"] == cfg.location and prov["original_name"] == "datastore_search.json"

    # the same records again: the same bytes, "unchanged", nothing re-published
    again = pipeline.fetch_and_ingest(cfg, warehouse)
    assert [r["status"] for r in again] == ["unchanged"]
    revisions = read.dataset(warehouse, "cases_revisions").select(pl.len()).collect().item()
    assert revisions == read.cases_weekly(warehouse).select(pl.len()).collect().item()   # one issue of each count


def test_a_page_repeated_by_a_buggy_server_is_not_counted_twice(server, warehouse, linelist, caplog):
    server.route(DATASTORE, ckan(records(linelist), limit=500, repeat=2))
    cfg = example(server.url(f"{DATASTORE}?resource_id={RID}&limit=500"))
    [report] = pipeline.fetch_and_ingest(cfg, warehouse)
    assert sum(r.query.get("again") == "1" for r in server.hits(DATASTORE)) == 1   # the repeat was served
    assert report["rows_read"] == linelist.height
    assert published(warehouse).equals(expected(linelist))
    assert "repeats an earlier page: skipped" in caplog.text


def test_offset_limit_csv_pages_socrata_style(server, warehouse, linelist):
    data = csv_bytes(linelist)
    header, *rows = data.decode().splitlines()

    def socrata(query, headers):
        off, lim = int(query["$offset"]), int(query["$limit"])
        return Reply(body="\n".join([header, *rows[off:off + lim]]).encode() + b"\n", headers={"Content-Type": "text/csv"})

    server.route("/resource/dengue-peru.csv", socrata)
    cfg = csv_source(server.url("/resource/dengue-peru.csv"),
                     http={"pagination": {"type": "offset_limit", "limit": 1000, "limit_param": "$limit", "offset_param": "$offset"}})
    [report] = pipeline.fetch_and_ingest(cfg, warehouse)
    assert [int(r.query["$offset"]) for r in server.hits("/resource/dengue-peru.csv")] == [0, 1000, 2000]  # short page ends
    assert report["rows_read"] == linelist.height and report["file"]["original_name"] == "dengue-peru.csv"
    assert published(warehouse).equals(expected(linelist))


def test_offset_limit_repeat_is_asked_again_and_a_server_ignoring_offset_fails(server, warehouse, linelist):
    data = csv_bytes(linelist.head(250))
    header, *rows = data.decode().splitlines()
    served: list[int] = []

    def flaky_cache(query, headers):   # the page at offset 100 comes back stale once
        off = int(query["offset"])
        stale = off == 100 and served.count(100) == 0
        served.append(off)
        start = 0 if stale else off
        return Reply(body="\n".join([header, *rows[start:start + 100]]).encode())

    server.route("/stale.csv", flaky_cache)
    cfg = csv_source(server.url("/stale.csv"), http={"pagination": {"type": "offset_limit", "limit": 100}})
    [report] = pipeline.fetch_and_ingest(cfg, warehouse)
    assert served == [0, 100, 100, 200] and report["rows_read"] == 250
    assert published(warehouse).equals(expected(linelist.head(250)))

    server.route("/ignores-offset.csv", lambda q, h: Reply(body="\n".join([header, *rows[:100]]).encode()))
    wh2 = warehouse.parent / "wh2"
    cfg = csv_source(server.url("/ignores-offset.csv"), http={"pagination": {"type": "offset_limit", "limit": 100}})
    with pytest.raises(FetchError, match=r"repeats an earlier page again: the server's paging is broken") as e:
        pipeline.fetch_and_ingest(cfg, wh2)
    assert str(e.value).startswith(f"{cfg.id}: GET {server.base}/ignores-offset.csv") and not e.value.retryable
    assert len(server.hits("/ignores-offset.csv")) == 3 and nothing_published(wh2)


# --------------------------------------------------------------------------- conditional requests


def test_conditional_requests_skip_an_unchanged_report(server, warehouse, linelist):
    version = {"etag": '"v1"', "body": csv_bytes(linelist.head(400))}

    def report(query, headers):
        if headers.get("if-none-match") == version["etag"]:
            return Reply(304)
        return Reply(body=version["body"], headers={"ETag": version["etag"], "Last-Modified": "Tue, 02 Jan 2024 08:00:00 GMT",
                                                     "Content-Type": "text/csv"})

    server.route("/bulletin/dengue.csv", report)
    cfg = csv_source(server.url("/bulletin/dengue.csv"))
    [first] = pipeline.fetch_and_ingest(cfg, warehouse)
    assert first["status"] == "published"
    state = json.loads((warehouse / "state" / "http" / f"{cfg.id}.json").read_text())
    entry = state[cfg.location]
    assert entry["etag"] == '"v1"' and entry["sha256"] == first["file"]["sha256"]

    [second] = pipeline.fetch_and_ingest(cfg, warehouse)
    hit = server.hits("/bulletin/dengue.csv")[-1]
    assert hit.headers["if-none-match"] == '"v1"' and hit.headers["if-modified-since"] == "Tue, 02 Jan 2024 08:00:00 GMT"
    assert second["status"] == "unchanged" and "HTTP 304" in second["notes"][0]
    assert second["file"]["sha256"] == first["file"]["sha256"]
    assert len(list((warehouse / "reports" / cfg.id).glob("*.json"))) == 2    # the first run's report + latest.json

    # --force asks unconditionally; a new version of the report is downloaded and published
    pipeline.fetch_and_ingest(cfg, warehouse, force=True)
    assert "if-none-match" not in server.hits("/bulletin/dengue.csv")[-1].headers
    version.update(etag='"v2"', body=csv_bytes(linelist.head(500)))
    [third] = pipeline.fetch_and_ingest(cfg, warehouse)
    assert third["status"] == "published" and third["rows_read"] == 500
    assert published(warehouse).equals(expected(linelist.head(500)))


def test_validators_are_saved_only_after_a_successful_publish(server, warehouse, linelist):
    bad = csv_bytes(linelist.head(50).drop("semana"))   # a report missing a mapped column: fails in the core
    server.route("/r.csv", lambda q, h: Reply(body=bad, headers={"ETag": '"bad"'}))
    cfg = csv_source(server.url("/r.csv"))
    with pytest.raises(Exception, match="semana"):
        pipeline.fetch_and_ingest(cfg, warehouse)
    assert not (warehouse / "state").exists() and not (warehouse / "datasets").exists()
    with pytest.raises(Exception, match="semana"):
        pipeline.fetch_and_ingest(cfg, warehouse)
    assert "if-none-match" not in server.hits("/r.csv")[-1].headers   # no 304 can hide the failed report


# --------------------------------------------------------------------------- auth and secrets


AUTH_CASES = {
    "basic": ({"type": "basic", "username_env": "PORTAL_USER", "password_env": "PORTAL_PASS"},
              lambda q, h: h.get("authorization", "").startswith("Basic ")
              and __import__("base64").b64decode(h["authorization"][6:]).decode() == f"vigila:{SECRET}"),
    "bearer": ({"type": "bearer", "token_env": "PORTAL_TOKEN"}, lambda q, h: h.get("authorization") == f"Bearer {SECRET}"),
    "api_key_header": ({"type": "api_key", "header": "X-API-Key", "token_env": "PORTAL_TOKEN"},
                       lambda q, h: h.get("x-api-key") == SECRET),
    "api_key_query": ({"type": "api_key", "query_param": "api_key", "token_env": "PORTAL_TOKEN"},
                      lambda q, h: q.get("api_key") == SECRET),
}


@pytest.mark.parametrize("case", AUTH_CASES)
def test_auth_from_environment_and_secrets_never_leak(case, server, warehouse, linelist, monkeypatch, caplog):
    auth, ok = AUTH_CASES[case]
    monkeypatch.setenv("PORTAL_USER", "vigila")
    monkeypatch.setenv("PORTAL_PASS", SECRET)
    monkeypatch.setenv("PORTAL_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    page = ckan(records(linelist.head(300)), limit=200)
    server.route(DATASTORE, lambda q, h: page(q, h) if ok(q, h) else Reply(401, b'{"error": "Authorization Error"}'))
    cfg = example(server.url(f"{DATASTORE}?resource_id={RID}&limit=200"), http={"auth": auth})
    [report] = pipeline.fetch_and_ingest(cfg, warehouse)
    assert report["status"] == "published" and report["rows_read"] == 300
    assert len(server.hits(DATASTORE)) == 3   # the credentials went with every page

    # a wrong secret: 401, not retried, the message names source and URL but not the secret
    monkeypatch.setenv("PORTAL_PASS", SECRET + "x")
    monkeypatch.setenv("PORTAL_TOKEN", SECRET + "x")
    n = len(server.requests)
    with pytest.raises(FetchError) as e:
        pipeline.fetch_and_ingest(cfg, warehouse.parent / "wh401")
    msg = str(e.value)
    assert msg.startswith(f"{cfg.id}: GET {server.base}{DATASTORE}?resource_id={RID}") and "HTTP 401" in msg
    assert "http.auth" in msg and not e.value.retryable and len(server.requests) == n + 1
    assert nothing_published(warehouse.parent / "wh401")

    forms = {SECRET, SECRET + "x", quote(SECRET, safe=""), quote(SECRET), SECRET.replace(" ", "+"), SECRET.replace(" ", "%20")}
    text = caplog.text + msg + json.dumps(report)
    assert not [f for f in forms if f in text]
    stored = all_bytes(warehouse)
    assert not [f for f in forms if f.encode() in stored]
    if case == "api_key_query":
        assert "api_key" not in msg                 # messages name the URL as configured, without the key
        assert "api_key=***" in caplog.text         # httpx's own request log line is redacted


def test_missing_secret_variable_fails_before_any_request(server, warehouse, monkeypatch):
    monkeypatch.delenv("PORTAL_TOKEN", raising=False)
    server.route("/r.csv", Reply(body=b"x"))
    cfg = csv_source(server.url("/r.csv"), http={"auth": {"type": "bearer", "token_env": "PORTAL_TOKEN"}})
    with pytest.raises(FetchError, match=r"http.auth.token_env: environment variable PORTAL_TOKEN is not set") as e:
        pipeline.fetch_and_ingest(cfg, warehouse)
    assert e.value.retryable is False and server.requests == [] and nothing_published(warehouse)


def test_credentials_are_not_sent_to_another_origin(server, warehouse, linelist, monkeypatch):
    other = Server()
    try:
        other.route("/mirror.csv", Reply(body=csv_bytes(linelist.head(100))))
        server.route("/r.csv", Reply(302, headers={"Location": other.url("/mirror.csv")}))
        monkeypatch.setenv("PORTAL_TOKEN", SECRET)
        cfg = csv_source(server.url("/r.csv"), http={"auth": {"type": "api_key", "header": "X-Portal-Key", "token_env": "PORTAL_TOKEN"}})
        [report] = pipeline.fetch_and_ingest(cfg, warehouse)
        assert report["rows_read"] == 100
        assert server.hits("/r.csv")[0].headers["x-portal-key"] == SECRET
        assert "x-portal-key" not in other.hits("/mirror.csv")[0].headers
    finally:
        other.close()


def test_auth_config_errors_are_one_line(tmp_path):
    text = EXAMPLE.read_text().replace("    type: none                               # open data",
                                       "    type: bearer                             # open data")
    p = tmp_path / "src.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=r"src.yaml:\d+: .*bearer needs token_env \(or secret_block\)"):
        load_source(p)
    p.write_text(EXAMPLE.read_text().replace("    next_link: result._links.next", "    nex_link: result._links.next"))
    with pytest.raises(ConfigError, match=r"unknown key 'http.pagination.nex_link' \(did you mean 'next_link'\?\)"):
        load_source(p)


# --------------------------------------------------------------------------- failures: retried or clean


@pytest.mark.parametrize("status, words", [
    (401, "HTTP 401 Unauthorized: the server needs credentials: configure http.auth"),
    (403, "HTTP 403 Forbidden: the credentials are not allowed to read this report"),
    (404, "HTTP 404 Not Found: no report at this URL (check `location`)"),
])
def test_client_errors_fail_at_once_with_the_source_and_url(status, words, server, warehouse):
    server.route("/reports/dengue.csv", Reply(status, b"<html>nope</html>"))
    cfg = csv_source(server.url("/reports/dengue.csv?year=2024"))
    with pytest.raises(FetchError) as e:
        pipeline.fetch_and_ingest(cfg, warehouse)
    assert str(e.value) == f"{cfg.id}: GET {server.base}/reports/dengue.csv?year=2024: {words}"
    assert e.value.retryable is False and len(server.requests) == 1 and nothing_published(warehouse)


def test_500_then_success_is_retried(server, warehouse, linelist, caplog):
    server.route("/r.csv", Reply(500, b"oops"), Reply(503, b"busy"), Reply(body=csv_bytes(linelist.head(200))))
    [report] = pipeline.fetch_and_ingest(csv_source(server.url("/r.csv")), warehouse)
    assert report["status"] == "published" and len(server.requests) == 3
    assert "HTTP 500 Internal Server Error; retry 1 of 2" in caplog.text


def test_5xx_for_good_fails_after_the_retries(server, warehouse):
    server.route("/r.csv", Reply(502, b"bad gateway"))
    cfg = csv_source(server.url("/r.csv"))
    with pytest.raises(FetchError, match=r": HTTP 502 Bad Gateway \(after 3 attempts\)$") as e:
        pipeline.fetch_and_ingest(cfg, warehouse)
    assert e.value.retryable and len(server.requests) == 3 and nothing_published(warehouse)


def test_429_honours_retry_after(server, warehouse, linelist):
    server.route("/r.csv", Reply(429, b"slow down", {"Retry-After": "1"}), Reply(body=csv_bytes(linelist.head(200))))
    t0 = time.monotonic()
    [report] = pipeline.fetch_and_ingest(csv_source(server.url("/r.csv"), http={"backoff_seconds": 0}), warehouse)
    assert report["status"] == "published" and time.monotonic() - t0 >= 0.95 and len(server.requests) == 2

    server.route("/later.csv", Reply(429, b"come back tomorrow", {"Retry-After": "86400"}))
    with pytest.raises(FetchError, match=r"HTTP 429 Too Many Requests; the server asks to retry after 86400 s, "
                                         r"over http.max_wait_seconds \(3 s\)"):
        pipeline.fetch_and_ingest(csv_source(server.url("/later.csv")), warehouse)
    assert len(server.hits("/later.csv")) == 1


def test_a_hung_connection_times_out(server, warehouse):
    server.route("/hung.csv", Reply(hang=True))
    cfg = csv_source(server.url("/hung.csv"), http={"timeout_seconds": 0.3, "retries": 1})
    with pytest.raises(FetchError, match=r"hung.csv: timed out \(no answer within 0.3 s\) \(after 2 attempts\)"):
        pipeline.fetch_and_ingest(cfg, warehouse)
    assert len(server.requests) == 2 and nothing_published(warehouse)      # the message says why it failed


def test_a_truncated_body_fails_cleanly(server, warehouse, linelist):
    body = csv_bytes(linelist.head(300))
    server.route("/cut.csv", Reply(body=body, truncate=len(body) // 2))
    cfg = csv_source(server.url("/cut.csv"))
    with pytest.raises(FetchError, match=r"cut.csv: truncated .*received \d+ bytes, expected \d+.*after 3 attempts") as e:
        pipeline.fetch_and_ingest(cfg, warehouse)
    assert e.value.retryable and len(server.requests) == 3 and nothing_published(warehouse)
    # a dropped connection recovers on retry
    server.route("/cut-once.csv", Reply(body=body, truncate=100), Reply(body=body))
    [report] = pipeline.fetch_and_ingest(csv_source(server.url("/cut-once.csv")), warehouse)
    assert report["rows_read"] == 300


def test_malformed_json_fails_cleanly(server, warehouse, linelist):
    server.route("/records.json", Reply(body=b'{"result": {"records": [{"departamento": "LORETO",', headers={"Content-Type": "application/json"}))
    cfg = example(server.url("/records.json"), http={"pagination": {"type": "none"}, **FAST})
    with pytest.raises(FetchError, match=r"GET .*/records.json: malformed JSON \(") as e:
        pipeline.fetch_and_ingest(cfg, warehouse)
    assert not e.value.retryable and nothing_published(warehouse)

    # page 2 of 3 is malformed: pages 1 and 3 are fine, nothing is published
    server.route(DATASTORE, ckan(records(linelist.head(300)), limit=100, broken=100))
    cfg = example(server.url(f"{DATASTORE}?resource_id={RID}&limit=100"))
    with pytest.raises(FetchError, match=rf"{cfg.id}: GET .*offset=100.*: page 2: malformed JSON"):
        pipeline.fetch_and_ingest(cfg, warehouse)
    assert nothing_published(warehouse)


def test_empty_answers(server, warehouse, linelist):
    server.route(DATASTORE, ckan([]))
    cfg = example(server.url(f"{DATASTORE}?resource_id={RID}"))
    with pytest.raises(FetchError, match=r"no records: the first page is empty"):
        pipeline.fetch_and_ingest(cfg, warehouse)
    server.route("/empty.csv", Reply(body=b""))
    with pytest.raises(FetchError, match=r"/empty.csv: empty response \(0 bytes\)"):
        pipeline.fetch_and_ingest(csv_source(server.url("/empty.csv")), warehouse)
    server.route("/login.csv", Reply(body=b"<!DOCTYPE html><html>Sign in</html>", headers={"Content-Type": "text/html"}))
    with pytest.raises(FetchError, match=r"an HTML page, not a report"):
        pipeline.fetch_and_ingest(csv_source(server.url("/login.csv")), warehouse)
    assert nothing_published(warehouse)


def test_size_limit_is_enforced_while_streaming(server, warehouse, linelist):
    body = csv_bytes(linelist)
    server.route("/big.csv", Reply(body=body))                   # announced by Content-Length
    server.route("/big-stream.csv", Reply(body=body, length=False))   # only known while reading
    for path in ("/big.csv", "/big-stream.csv"):
        cfg = csv_source(server.url(path), limits={"max_bytes": 10_000})
        with pytest.raises(FetchError, match=r"over the source limit of 10,000 bytes \(limits.max_bytes\)") as e:
            pipeline.fetch_and_ingest(cfg, warehouse)
        assert not e.value.retryable
    assert len(server.requests) == 2 and nothing_published(warehouse)
    # over all pages together
    server.route(DATASTORE, ckan(records(linelist), limit=500))
    cfg = example(server.url(f"{DATASTORE}?resource_id={RID}&limit=500"), limits={"max_bytes": 200_000})
    with pytest.raises(FetchError, match=r"over the source limit"):
        pipeline.fetch_and_ingest(cfg, warehouse)
    assert nothing_published(warehouse)


# --------------------------------------------------------------------------- through the Prefect flow


def test_flow_with_a_secret_block_conditional_and_no_retry_of_a_404(prefect_harness, server, tmp_path, linelist):
    from prefect.blocks.system import Secret

    from flows.ingest import ingest_source

    Secret(value=SECRET).save("vigila-test-portal-token", overwrite=True)
    body = csv_bytes(linelist.head(300))

    def report(query, headers):
        if headers.get("authorization") != f"Bearer {SECRET}":
            return Reply(401)
        if headers.get("if-none-match") == '"w1"':
            return Reply(304)
        return Reply(body=body, headers={"ETag": '"w1"', "Content-Type": "text/csv"})

    server.route("/weekly/dengue.csv", report)
    cfg = example_dict(format="csv", csv={"json_records_path": None}, location=server.url("/weekly/dengue.csv"),
                       http={"pagination": {"type": "none"}, "auth": {"type": "bearer", "secret_block": "vigila-test-portal-token"}, **FAST})
    src = tmp_path / "portal.yaml"
    src.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    wh = str(tmp_path / "wh")
    [first] = ingest_source(str(src), wh)
    assert first["status"] == "published" and first["rows_read"] == 300
    [second] = ingest_source(str(src), wh)
    assert second["status"] == "unchanged" and "HTTP 304" in second["notes"][0]
    assert server.hits("/weekly/dengue.csv")[-1].headers["if-none-match"] == '"w1"'

    with pytest.raises(FetchError, match="HTTP 404"):
        ingest_source(str(src), wh, location=server.url("/weekly/gone.csv"))
    assert len(server.hits("/weekly/gone.csv")) == 1      # one request: no Prefect retry of a 404
    assert SECRET.encode() not in all_bytes(Path(wh))
