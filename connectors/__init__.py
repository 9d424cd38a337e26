"""Connectors fetch a source's raw report bytes to local files; parsing lives in `vigila.readers`.

Input: a location string (path, glob, folder, later URLs); output: `Fetched` files. The
registry maps a location's kind to its connector module; adding a kind = one module + one entry.
"""

from __future__ import annotations

from connectors.base import Connector, Fetched, FetchError
from connectors.file import FileConnector

REGISTRY: dict[str, type[Connector]] = {"file": FileConnector}


def connector_for(location: str) -> Connector:
    """The connector that understands `location` (a local path, glob or folder for now)."""
    kind = location.split("://", 1)[0] if "://" in location else "file"
    if kind not in REGISTRY:
        raise FetchError(f"no connector for {kind}:// locations (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[kind]()


__all__ = ["REGISTRY", "Connector", "Fetched", "FetchError", "connector_for"]
