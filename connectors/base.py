"""The one small connector interface: `fetch(location, source=None, state=None) -> list[Fetched]`
(raw bytes on local disk).

`source` (the `SourceConfig`) and `state` (what the warehouse remembers of earlier fetches of this
source, e.g. HTTP validators) are optional: a connector whose `fetch` takes only `location` works.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from vigila.config import SourceConfig


class FetchError(RuntimeError):
    """The report could not be fetched; the message names the source location (no secrets).

    `retryable` False: trying again cannot help (401, 403, 404, a missing secret, a malformed or
    oversized report), so the flow does not retry it."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Fetched:
    path: Path | None   # local file with the raw bytes, as received (None when not_modified)
    original_name: str  # name at the origin (file name, URL path)
    origin: str         # where it came from, safe to log (no credentials)
    not_modified: bool = False   # the origin said the report is unchanged since `state` (HTTP 304): nothing downloaded
    validators: dict[str, Any] = field(default_factory=dict)  # to remember once published (ETag, Last-Modified)
    temporary: bool = False      # `path` lives in a temporary folder of the connector: `discard()` removes it

    def discard(self) -> None:
        """Remove a temporary download (a no-op for files the connector found in place)."""
        if self.temporary and self.path is not None:
            shutil.rmtree(self.path.parent, ignore_errors=True)


class Connector(Protocol):
    kind: str

    def fetch(self, location: str, source: SourceConfig | None = None, state: dict | None = None) -> list[Fetched]:
        """Every report file available at `location`, oldest first. `state`: this source's fetch
        state for this kind (`{origin: {...validators}}`), as saved after earlier publishes."""
        ...
