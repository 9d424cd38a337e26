"""Prefect flows (thin wrappers over `vigila`). Importing this package turns Prefect's anonymous usage
telemetry off unless the operator set it: an offline ministry server would otherwise log a failed
upload (a red ERROR) on every run. `PREFECT_SERVER_ANALYTICS_ENABLED=true` / `DO_NOT_TRACK=0` turn it on."""

import os

OFFLINE_DEFAULTS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
for _name, _value in OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
