"""File connector: a path, a glob, or a drop folder -> the report files found there, oldest first."""

from __future__ import annotations

import glob
from pathlib import Path

from connectors.base import Fetched, FetchError

SKIP = (".", "~$")  # hidden files and Office lock files in drop folders


class FileConnector:
    kind = "file"

    def fetch(self, location: str) -> list[Fetched]:
        loc = Path(location.removeprefix("file://")).expanduser()
        if loc.is_dir():
            paths = [p for p in loc.iterdir() if p.is_file() and not p.name.startswith(SKIP)]
        elif any(ch in location for ch in "*?["):
            paths = [Path(p) for p in glob.glob(str(loc), recursive=True) if Path(p).is_file()]
        elif loc.is_file():
            paths = [loc]
        else:
            raise FetchError(f"{location}: no such file or folder")
        if not paths:
            raise FetchError(f"{location}: no report files found")
        paths.sort(key=lambda p: (p.stat().st_mtime, p.name))
        return [Fetched(p, p.name, str(p.resolve())) for p in paths]
