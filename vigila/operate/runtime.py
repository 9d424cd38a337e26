"""Where runs go, read without importing Prefect or Dask: is a Prefect API configured, which Dask cluster.

In: the environment (`PREFECT_API_URL`, the active Prefect profile, `VIGILA_DASK_ADDRESS`) and a `--cluster`
option; out: a bool and a scheduler address (or None). Light on purpose: the CLI reads these before any heavy
import, and `vigila.detect.scale` and `vigila.oneoff` read them too.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

CLUSTER_ENV = "VIGILA_DASK_ADDRESS"
"""Environment variable holding the Dask scheduler address (e.g. tcp://10.0.0.5:8786); unset or empty: no cluster."""


def cluster_address(given: str | None = None) -> str | None:
    """The Dask scheduler address to use: `given` (a `--cluster` option or a flow parameter), else
    `VIGILA_DASK_ADDRESS`; None (run in this process, as without Dask) when neither is set or it is empty."""
    address = given if given is not None else os.environ.get(CLUSTER_ENV)
    return (address.strip() or None) if address else None


def prefect_api_configured() -> bool:
    """True when runs have a Prefect API to go to: `PREFECT_API_URL` in the environment or in the active
    Prefect profile (`PREFECT_PROFILES_PATH`, else `$PREFECT_HOME/profiles.toml`). Read without importing
    Prefect (seconds of start-up)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return bool((profiles.get("profiles", {}).get(active) or {}).get("PREFECT_API_URL"))
