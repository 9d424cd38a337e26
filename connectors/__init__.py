"""Connectors fetch a source's raw report bytes to local files; parsing lives in `vigila.ingest.readers`.

Input: a location string (path, glob, folder, http(s):// URL); output: `Fetched` files. The
registry maps a location's kind to its connector module; adding a kind = one module + one entry.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from connectors.base import Connector, Fetched, FetchError
from connectors.file import FileConnector
from connectors.http import HttpConnector

if TYPE_CHECKING:
    from vigila.config import SourceConfig

REGISTRY: dict[str, type[Connector]] = {"file": FileConnector, "http": HttpConnector, "https": HttpConnector}


def connector_for(location: str) -> Connector:
    """The connector that understands `location` (a local path, glob or folder, or a URL)."""
    kind = location.split("://", 1)[0].lower() if "://" in location else "file"
    if kind not in REGISTRY:
        raise FetchError(f"no connector for {kind}:// locations (known: {', '.join(sorted(REGISTRY))})", retryable=False)
    return REGISTRY[kind]()


def fetch(location: str, source: SourceConfig | None = None, state: dict | None = None) -> list[Fetched]:
    """Fetch `location` with its connector; `source` and `state` go to connectors whose `fetch` takes them."""
    connector = connector_for(location)
    params = inspect.signature(connector.fetch).parameters
    if "source" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return connector.fetch(location, source=source, state=state)
    return connector.fetch(location)


__all__ = ["REGISTRY", "Connector", "Fetched", "FetchError", "connector_for", "fetch"]
