"""HTTP connector: an http(s):// URL -> the report's raw bytes (CSV, XLSX, JSON), one local file per fetch.

Thin on purpose: it fetches bytes and checks only what a transfer can get wrong (status, size,
truncation, a malformed JSON document, a repeated page); parsing, mapping and validation are the
core's (`vigila.ingest.readers`, `vigila.ingest.plan`). What it does, per `SourceConfig.http`:

- auth: basic, bearer or an API key (header or query parameter), the secret read from an
  environment variable or a Prefect Secret block (loaded only when configured). Secrets are
  redacted from every message, origin and log line, and are sent only to the location's own
  scheme/host/port (a redirect or next link elsewhere gets no credentials).
- retries: 5xx, 429 and 408 answers, timeouts and dropped or truncated transfers are retried
  `retries` times, waiting `backoff_seconds * 2**(n-1)` or the server's Retry-After (at most
  `max_wait_seconds`). 401, 403, 404 and other 4xx fail at once (`FetchError.retryable` False).
- conditional requests: unpaginated reports are asked with If-None-Match / If-Modified-Since
  from `state` (saved by the pipeline after a publish); a 304 returns `Fetched(not_modified=True)`.
- pagination (format csv or json): next links (Link header or a JSON path) or offset/limit; all
  pages are fetched and ONE file is written: a JSON document with every record at
  `csv.json_records_path`, or the pages' CSV rows under the first page's header. An empty page
  ends the report. A page repeating an earlier one (same records) is never counted twice: a
  next-link repeat is skipped, an offset/limit repeat is asked once more; a second repeat fails.
- size: `limits.max_bytes` over all pages, enforced while streaming; a Content-Length that the
  received bytes do not match is a truncated transfer.
- DHIS2 reporting rates: a `format: dhis2` analytics location with `dhis2.data_set` is followed by
  the data set's ACTUAL_REPORTS / EXPECTED_REPORTS query over the same periods and org units; its
  answer is landed inside the analytics document under `reportingRates` (one raw file).
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from connectors.base import Fetched, FetchError

if TYPE_CHECKING:
    from vigila.config import HttpOptions, SourceConfig

log = logging.getLogger("vigila.connectors.http")

DEFAULT_MAX_BYTES = 4 << 30
CHUNK = 1 << 16
RETRY_STATUS = {408, 429}
REPORT_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".xlsx", ".parquet", ".gz")
SENSITIVE_PARAM = re.compile(r"(?i)(api[_-]?key|apikey|key|token|secret|password|passwd|pwd|signature|sig|auth|credential)")
STATUS_HINTS = {
    401: "the server refused the credentials (check http.auth and the variables it names)",
    403: "the credentials are not allowed to read this report",
    404: "no report at this URL (check `location`)",
    410: "the report was removed from this URL (check `location`)",
}


# --------------------------------------------------------------------------- secrets


def _char_forms(c: str) -> str:
    """A regex for one character of a secret as it may appear in a URL: itself or percent-encoded."""
    forms = [re.escape(c), "".join(f"%{b:02x}" for b in c.encode())]
    if c == " ":
        forms.append(r"\+")
    return "(?:" + "|".join(forms) + ")"


class Secrets:
    """The secret values of one fetch, to redact from any text: as they are and however a URL
    encodes them (each character plain or percent-encoded)."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self._patterns: list[re.Pattern] = []

    def add(self, value: str | None) -> None:
        if value and value not in self.values:
            self.values.add(value)
            self._patterns = [re.compile("".join(_char_forms(c) for c in v), re.IGNORECASE)
                              for v in sorted(self.values, key=len, reverse=True)]

    def redact(self, text: str) -> str:
        for p in self._patterns:
            text = p.sub("***", text)
        return text


_ACTIVE: dict[int, Secrets] = {}
_ACTIVE_LOCK = threading.Lock()


class _RedactingFilter(logging.Filter):
    """httpx logs each request's full URL (with a query-string key): redact active secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        with _ACTIVE_LOCK:
            active = list(_ACTIVE.values())
        if active:
            msg = record.getMessage()
            red = msg
            for s in active:
                red = s.redact(red)
            if red != msg:
                record.msg, record.args = red, ()
        return True


for _name in ("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy"):
    logging.getLogger(_name).addFilter(_RedactingFilter())


def _env(var: str, what: str, source_id: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise FetchError(f"{source_id}: http.auth.{what}: environment variable {var} is not set", retryable=False)
    return value


def _block_secret(block: str, source_id: str) -> str:
    """The value of a Prefect Secret block; Prefect is imported only for sources that use one."""
    try:
        from prefect.blocks.system import Secret

        value = Secret.load(block).get()
    except ValueError as e:  # no block of that name
        raise FetchError(f"{source_id}: http.auth.secret_block: cannot load Prefect Secret block {block!r} "
                         f"({str(e).splitlines()[0][:200]})", retryable=False) from None
    except Exception as e:  # API unreachable and the like: worth a retry
        raise FetchError(f"{source_id}: http.auth.secret_block: cannot load Prefect Secret block {block!r} "
                         f"({type(e).__name__})") from None
    if not isinstance(value, str) or not value:
        raise FetchError(f"{source_id}: http.auth.secret_block: Prefect Secret block {block!r} must hold a "
                         "non-empty string", retryable=False)
    return value


class Auth:
    """Resolved credentials: headers and query parameters to add on the location's origin."""

    def __init__(self, opts: HttpOptions, source_id: str, secrets: Secrets):
        a = opts.auth
        self.headers: dict[str, str] = {}
        self.params: dict[str, str] = {}
        self.param_names = {a.query_param} if a.query_param else set()

        def secret(env_key: str) -> str:
            var = getattr(a, env_key)
            value = _block_secret(a.secret_block, source_id) if a.secret_block else _env(var, env_key, source_id)
            secrets.add(value)
            return value

        if a.type == "basic":
            user = _env(a.username_env, "username_env", source_id)
            token = base64.b64encode(f"{user}:{secret('password_env')}".encode()).decode()
            secrets.add(token)
            self.headers["Authorization"] = f"Basic {token}"
        elif a.type == "bearer":
            self.headers["Authorization"] = f"Bearer {secret('token_env')}"
        elif a.type == "api_key":
            key = secret("token_env")
            if a.query_param:
                self.params[a.query_param] = key
            else:
                self.headers[a.header] = key


# --------------------------------------------------------------------------- URLs


def _origin(url: str) -> tuple[str, str, int | None]:
    u = httpx.URL(url)
    return u.scheme, u.host, u.port


def _strip_params(url: str, names: set[str]) -> str:
    """`url` without the query parameters `names` (a next link echoing the API key)."""
    if not names:
        return url
    parts = urlsplit(url)
    kept = [p for p in parts.query.split("&") if p and unquote(p.split("=", 1)[0]) not in names]
    return urlunsplit(parts._replace(query="&".join(kept)))


def safe_url(url: str, secrets: Secrets, param_names: set[str] = frozenset()) -> str:
    """The URL as it may be logged: no user:password@, sensitive query values as ***, secrets redacted."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = []
    for p in parts.query.split("&") if parts.query else []:
        name, eq, _ = p.partition("=")
        plain = unquote(name)
        query.append(f"{name}=***" if eq and (plain in param_names or SENSITIVE_PARAM.search(plain)) else p)
    return secrets.redact(urlunsplit(parts._replace(netloc=netloc, query="&".join(query))))


def _file_name(url: str, fmt: str, content_type: str) -> str:
    """A local file name ending like the report (readers pick the format by extension when `auto`)."""
    name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]) or "report"
    name = re.sub(r"[^\w.\-]+", "_", name)[:120] or "report"
    if name.lower().endswith(REPORT_SUFFIXES):
        return name
    ct = content_type.lower()
    ext = (fmt if fmt != "auto" else "json" if "json" in ct else "xlsx" if "spreadsheet" in ct
           else "parquet" if "parquet" in ct else "csv")
    return f"{name}.{ext}"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _at(doc: Any, dotted: str | None) -> Any:
    """A dotted path; `name[key=value]` picks the first list item with that key (FHIR: link[relation=next].url)."""
    for part in dotted.split(".") if dotted else []:
        name, _, pick = part.partition("[")
        if not isinstance(doc, dict) or name not in doc:
            return None
        doc = doc[name]
        if pick:
            key, _, want = pick.rstrip("]").partition("=")
            doc = next((x for x in doc if isinstance(x, dict) and str(x.get(key)) == want), None) \
                if isinstance(doc, list) else None
    return doc


def _nest(records: list, dotted: str | None) -> Any:
    doc: Any = records
    for part in reversed(dotted.split(".") if dotted else []):
        doc = {part: doc}
    return doc


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


# --------------------------------------------------------------------------- the connector


class _Retry(Exception):
    """One attempt failed in a way worth another (message already safe)."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


class HttpConnector:
    kind = "http"

    def fetch(self, location: str, source: SourceConfig | None = None, state: dict | None = None) -> list[Fetched]:
        return _Fetch(location, source, state or {}).run()


class _Fetch:
    """One fetch of one location: credentials, client, budget and the pages seen."""

    def __init__(self, location: str, source: SourceConfig | None, state: dict):
        from vigila.config import HttpOptions

        self.location = location
        self.source = source
        self.opts = source.http if source is not None else HttpOptions()
        self.source_id = source.id if source is not None else "http"
        self.format = {"dhis2": "json", "fhir": "json"}.get(source.format, source.format) if source is not None else "auto"
        self.records_path = (self.opts.pagination.records or source.csv.json_records_path) if source is not None else None
        self.max_bytes = source.limits.max_bytes if source is not None else DEFAULT_MAX_BYTES
        self.state = state
        self.secrets = Secrets()
        password = unquote(urlsplit(location).password or "")
        self.secrets.add(password)   # user:password@ in a location: never shown
        self.auth: Auth | None = None
        self.received = 0            # bytes of all pages so far (limits.max_bytes)

    # -- messages -------------------------------------------------------------------------
    def safe(self, url: str) -> str:
        return safe_url(url, self.secrets, self.auth.param_names if self.auth else set())

    def error(self, url: str, message: str, *, retryable: bool = True) -> FetchError:
        return FetchError(self.secrets.redact(f"{self.source_id}: GET {self.safe(url)}: {message}"), retryable=retryable)

    # -- run ------------------------------------------------------------------------------
    def run(self) -> list[Fetched]:
        key = id(self)
        with _ACTIVE_LOCK:
            _ACTIVE[key] = self.secrets
        tmp = Path(tempfile.mkdtemp(prefix="vigila-http-"))
        try:
            self.auth = Auth(self.opts, self.source_id, self.secrets)
            try:
                self.home = _origin(self.location)
            except httpx.InvalidURL as e:
                raise FetchError(f"{self.source_id}: invalid URL {self.safe(self.location)!r} ({e})", retryable=False) from None
            timeout = httpx.Timeout(self.opts.timeout_seconds)
            with httpx.Client(timeout=timeout, follow_redirects=True, headers=self.opts.headers,
                              event_hooks={"request": [self._credentials_stay_home]}) as self.client:
                fetched = self._paged(tmp) if self.opts.pagination.type != "none" else self._single(tmp)
            if fetched.path is None:
                shutil.rmtree(tmp, ignore_errors=True)
            return [fetched]
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.pop(key, None)

    def _credentials_stay_home(self, request: httpx.Request) -> None:
        """A redirect or next link to another scheme/host/port gets no credentials."""
        if (request.url.scheme, request.url.host, request.url.port) != self.home:
            for h in self.auth.headers:
                request.headers.pop(h, None)

    def _url(self, url: str) -> str:
        """The URL to request: the API key parameter added on the location's own origin."""
        if self.auth.params and _origin(url) == self.home:
            u = httpx.URL(url)
            for k, v in self.auth.params.items():
                u = u.copy_set_param(k, v)
            return str(u)
        return url

    # -- one request, retried -------------------------------------------------------------
    def _get(self, url: str, headers: dict[str, str], dest: Path | None) -> tuple[httpx.Response, bytes | None]:
        """GET `url` (retried): the response (headers, status) and its body, streamed to `dest`
        (then None is returned) or kept in memory; 304 returns an empty body."""
        attempts = self.opts.retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(url, headers, dest)
            except _Retry as r:
                last, wait = str(r), r.wait
            except httpx.TimeoutException:
                last, wait = f"timed out (no answer within {self.opts.timeout_seconds:g} s)", None
            except httpx.RemoteProtocolError as e:
                last, wait = f"truncated or broken response ({self.secrets.redact(str(e))})", None
            except httpx.TransportError as e:
                last, wait = f"connection failed ({type(e).__name__}: {self.secrets.redact(str(e))})", None
            if attempt == attempts:
                break
            if wait is None:
                wait = self.opts.backoff_seconds * 2 ** (attempt - 1)
            elif wait > self.opts.max_wait_seconds:
                raise self.error(url, f"{last}; the server asks to retry after {wait:.0f} s, over "
                                      f"http.max_wait_seconds ({self.opts.max_wait_seconds:g} s)")
            wait = min(wait, self.opts.max_wait_seconds)
            log.warning("%s: GET %s: %s; retry %d of %d in %.1f s", self.source_id, self.safe(url), last,
                        attempt, self.opts.retries, wait)
            time.sleep(wait)
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        raise self.error(url, f"{last}{tries}")

    def _attempt(self, url: str, headers: dict[str, str], dest: Path | None) -> tuple[httpx.Response, bytes | None]:
        with self.client.stream("GET", self._url(url), headers={**self.auth.headers, **headers}) as r:
            if r.status_code == 304:
                return r, b""
            if r.status_code in RETRY_STATUS or r.status_code >= 500:
                raise _Retry(f"HTTP {r.status_code} {r.reason_phrase}", _retry_after(r.headers.get("retry-after")))
            if r.status_code >= 400:
                hint = STATUS_HINTS.get(r.status_code, "")
                if r.status_code == 401 and not self.auth.headers and not self.auth.params:
                    hint = "the server needs credentials: configure http.auth"
                raise self.error(url, f"HTTP {r.status_code} {r.reason_phrase}" + (f": {hint}" if hint else ""),
                                 retryable=False)
            if r.status_code != 200:
                raise self.error(url, f"HTTP {r.status_code} {r.reason_phrase}: expected 200 with the report",
                                 retryable=False)
            budget = self.max_bytes - self.received
            declared = r.headers.get("content-length")
            identity = r.headers.get("content-encoding", "identity").lower() in ("", "identity")
            if declared and declared.isdigit() and identity and int(declared) > budget:
                raise self._too_big(url)
            got = 0
            chunks: list[bytes] = []
            out = dest.open("wb") if dest is not None else None   # "wb": a retry starts the file afresh
            try:
                for chunk in r.iter_bytes(CHUNK):
                    got += len(chunk)
                    if got > budget:
                        raise self._too_big(url)
                    if out is not None:
                        out.write(chunk)
                    else:
                        chunks.append(chunk)
            finally:
                if out is not None:
                    out.close()
            if declared and declared.isdigit() and r.num_bytes_downloaded != int(declared):
                raise _Retry(f"truncated body: received {r.num_bytes_downloaded:,} of the {int(declared):,} bytes "
                             "announced by Content-Length")
            self.received += got
            return r, None if dest is not None else b"".join(chunks)

    def _too_big(self, url: str) -> FetchError:
        return self.error(url, f"the report is over the source limit of {_size(self.max_bytes)} (limits.max_bytes)",
                          retryable=False)

    # -- one document ---------------------------------------------------------------------
    def _single(self, tmp: Path) -> Fetched:
        origin = self.safe(self.location)
        previous = self.state.get(origin) if self.opts.conditional else None
        headers = {}
        if previous:
            if previous.get("etag"):
                headers["If-None-Match"] = previous["etag"]
            if previous.get("last_modified"):
                headers["If-Modified-Since"] = previous["last_modified"]
        part = tmp / "download.part"
        r, _ = self._get(self.location, headers, part)
        name = _file_name(str(r.url), self.format, r.headers.get("content-type", ""))
        if r.status_code == 304:
            if not headers:
                raise self.error(self.location, "HTTP 304 Not Modified to an unconditional request", retryable=False)
            return Fetched(None, name, origin, not_modified=True,
                           validators={k: previous[k] for k in ("etag", "last_modified") if previous.get(k)})
        path = tmp / name
        part.rename(path)
        self._check_body(path, r)
        self._dhis2_reporting_rates(path)
        validators = {k: v for k, v in (("etag", r.headers.get("etag")), ("last_modified", r.headers.get("last-modified"))) if v}
        return Fetched(path, name, origin, validators=validators if self.opts.conditional else {}, temporary=True)

    def _check_body(self, path: Path, r: httpx.Response) -> None:
        size = path.stat().st_size
        if size == 0:
            raise self.error(self.location, "empty response (0 bytes)", retryable=False)
        head = path.open("rb").read(512).lstrip()
        ctype = r.headers.get("content-type", "").lower()
        if "html" in ctype and head[:1] == b"<":
            raise self.error(self.location, "the server sent an HTML page, not a report (a login or error page?)",
                             retryable=False)
        if self.format == "json" or (self.format == "auto" and path.suffix.lower() == ".json"):
            try:
                json.loads(path.read_bytes())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise self.error(self.location, f"malformed JSON ({e})", retryable=False) from None

    def _dhis2_reporting_rates(self, path: Path) -> None:
        """`format: dhis2` with `dhis2.data_set`: ask the data set's ACTUAL_REPORTS / EXPECTED_REPORTS over
        the same periods and org units (connectors.dhis2.reporting_rate_url) and land them inside the
        analytics document, under `reportingRates`, so the report and what it says about reporting
        are one raw file (one sha256)."""
        mapping = getattr(self.source, "dhis2", None) if self.source is not None and self.source.format == "dhis2" else None
        if mapping is None or not mapping.data_set:
            return
        from connectors import dhis2

        doc = json.loads(path.read_bytes())
        if not (isinstance(doc, dict) and "headers" in doc and "rows" in doc):
            raise self.error(self.location, "dhis2.data_set needs an /api/analytics location (reporting rates are "
                                            "analytics items): this document is not an analytics response", retryable=False)
        url = dhis2.reporting_rate_url(self.location, mapping.data_set)
        r, body = self._get(url, {}, None)
        if r.status_code != 200:
            raise self.error(url, f"HTTP {r.status_code} to the reporting-rate query", retryable=False)
        rates = self._json_page(url, body, 1)
        if not (isinstance(rates, dict) and "headers" in rates):
            raise self.error(url, "the reporting-rate query did not answer an analytics response", retryable=False)
        doc[dhis2.REPORTING_KEY] = rates
        path.write_bytes(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())
        if path.stat().st_size > self.max_bytes:
            raise self._too_big(self.location)

    # -- pages ----------------------------------------------------------------------------
    def _paged(self, tmp: Path) -> Fetched:
        page = self.opts.pagination
        is_json = self.format == "json"
        url = self.location
        if page.type == "offset_limit":
            url = self._offset_url(0)
        visited: set[str] = set()
        seen: set[str] = set()
        repeats = n_pages = 0
        asked_again = False
        records: list = []
        header: bytes | None = None
        rows: list[bytes] = []
        offset = 0
        name = ""
        while url:
            if n_pages >= page.max_pages:
                raise self.error(url, f"more than {page.max_pages} pages (http.pagination.max_pages): "
                                      "raise it rather than publish part of the report", retryable=False)
            visited.add(url)
            r, body = self._get(url, {}, None)
            n_pages += 1
            name = name or _file_name(str(r.url), self.format, r.headers.get("content-type", ""))
            if is_json:
                doc = self._json_page(url, body, n_pages)
                got = _at(doc, self.records_path)
                if not isinstance(got, list):
                    where = f" at {self.records_path!r} (http.pagination.records / csv.json_records_path)" if self.records_path else ""
                    raise self.error(url, f"page {n_pages}: no list of records{where}", retryable=False)
                n = len(got)
                digest = hashlib.sha256(json.dumps(got, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
            else:
                doc = None
                first, _, rest = body.removeprefix(b"\xef\xbb\xbf").partition(b"\n")
                if header is None:
                    header = first.rstrip(b"\r")
                elif first.rstrip(b"\r") != header and first.strip():
                    raise self.error(url, f"page {n_pages}: its header differs from the first page's", retryable=False)
                got = [line.rstrip(b"\r") for line in rest.split(b"\n") if line.strip(b"\r")]
                n = len(got)
                digest = hashlib.sha256(b"\n".join(got)).hexdigest()
            if n == 0:  # an empty page ends the report
                break
            if digest in seen:
                # never counted twice. With offset/limit the records of this offset did not come:
                # ask once more, then fail rather than publish a report with a hole in it. A next
                # link is the server's choice: skip the repeat and follow it, unless it keeps repeating.
                repeats += 1
                log.warning("%s: GET %s: page %d repeats an earlier page: skipped", self.source_id, self.safe(url), n_pages)
                if page.type == "offset_limit" and not asked_again:
                    asked_again = True
                    continue
                if page.type == "offset_limit" or repeats >= 2:
                    raise self.error(url, f"page {n_pages} repeats an earlier page again: the server's paging is "
                                          "broken; nothing published", retryable=False)
            else:
                repeats = 0
                asked_again = False
                seen.add(digest)
                if is_json:
                    records.extend(got)
                else:
                    rows.extend(got)
            if page.type == "offset_limit":
                if n < page.limit:
                    break
                offset += page.limit
                url = self._offset_url(offset)
            else:
                url = self._next_link(url, r, doc)
                if url in visited:
                    break
        if n_pages == 1 and not (records or rows):
            raise self.error(self.location, "no records: the first page is empty", retryable=False)
        path = tmp / (Path(name).stem + (".json" if is_json else ".csv"))
        if is_json:
            path.write_bytes(json.dumps(_nest(records, self.source.csv.json_records_path), ensure_ascii=False,
                                        separators=(",", ":")).encode())
        else:
            path.write_bytes(b"\n".join([header or b"", *rows]) + b"\n")
        if path.stat().st_size > self.max_bytes:
            raise self._too_big(self.location)
        return Fetched(path, path.name, self.safe(self.location), temporary=True)

    def _json_page(self, url: str, body: bytes, n: int) -> Any:
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise self.error(url, f"page {n}: malformed JSON ({e})", retryable=False) from None

    def _offset_url(self, offset: int) -> str:
        p = self.opts.pagination
        return str(httpx.URL(self.location).copy_set_param(p.offset_param, offset).copy_set_param(p.limit_param, p.limit))

    def _next_link(self, url: str, r: httpx.Response, doc: Any) -> str | None:
        how = self.opts.pagination.next_link
        nxt = r.links.get("next", {}).get("url") if how == "header" else _at(doc, how)
        if not nxt:
            return None
        if not isinstance(nxt, str):
            raise self.error(url, f"the next link at {how!r} is not a URL", retryable=False)
        return _strip_params(str(httpx.URL(url).join(nxt)), self.auth.param_names)
