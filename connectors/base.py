"""The one small connector interface: `fetch(location) -> list[Fetched]` (raw bytes on local disk)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class FetchError(RuntimeError):
    """The report could not be fetched; the message names the source location (no secrets)."""


@dataclass(frozen=True)
class Fetched:
    path: Path          # local file with the raw bytes, as received
    original_name: str  # name at the origin (file name, URL path)
    origin: str         # where it came from, safe to log (no credentials)


class Connector(Protocol):
    kind: str

    def fetch(self, location: str) -> list[Fetched]:
        """Every report file available at `location`, oldest first."""
        ...
