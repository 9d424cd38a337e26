"""Structured run events: one `event=<name> key=value ...` log line per stage, and the progress hook.

Input: an event name and its fields (source, epi_week, rows, duration_s...); output: one INFO line
on the current logger (a flow task sets its Prefect run logger with `to_logger`; else the stdlib
logger `vigila.run`) and a call to every listener (the CLI's progress display). Pure: no Prefect.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# A listener gets each record: {"event": name, "phase": "start" | "end", **fields}. Called from
# whichever thread runs the stage (a Prefect task may run in a worker thread): keep it quick.
Listener = Callable[[dict[str, Any]], None]

_listeners: list[Listener] = []
_listeners_lock = threading.Lock()
_logger: contextvars.ContextVar[logging.Logger | logging.LoggerAdapter | None] = contextvars.ContextVar(
    "vigila_log_logger", default=None)
FALLBACK = logging.getLogger("vigila.run")   # outside a flow; silent unless the application configures logging
FALLBACK.addHandler(logging.NullHandler())


def _value(v: Any) -> str:
    """A field value as one token: bare when safe, else JSON-quoted (so `shlex`/grep can split lines);
    a dict is `k:v,k:v`, a list `a,b`."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if v == v else "nan"
    if isinstance(v, dict):
        text = ",".join(f"{k}:{x}" for k, x in v.items())
    elif isinstance(v, list | tuple | set):
        text = ",".join(map(str, v))
    else:
        text = str(v)
    if text and not any(c.isspace() or c in '"=\\' for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def line(event: str, /, **fields: Any) -> str:
    """`event=<event> k=v ...` in the given order; None fields are left out."""
    return " ".join(f"{k}={_value(v)}" for k, v in {"event": event, **fields}.items() if v is not None)


def parse(text: str) -> dict[str, str]:
    """The fields of a `line` (values as text), for operators' scripts and tests."""
    out, i, n = {}, 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            break
        key, i = text[i:eq], eq + 1
        if i < n and text[i] == '"':
            value, end = json.JSONDecoder().raw_decode(text, i)
            out[key], i = value, end
        else:
            end = text.find(" ", i)
            end = n if end < 0 else end
            out[key], i = text[i:end], end
    return out


@contextmanager
def to_logger(logger: logging.Logger | logging.LoggerAdapter) -> Iterator[None]:
    """Send this context's events to LOGGER (a flow task passes `prefect.get_run_logger()`)."""
    token = _logger.set(logger)
    try:
        yield
    finally:
        _logger.reset(token)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call LISTENER with every event of any thread while the context is open."""
    with _listeners_lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _listeners_lock:
            _listeners.remove(listener)


def _tell(record: dict[str, Any]) -> None:
    with _listeners_lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(record)
        except Exception:  # a display must never break a run
            FALLBACK.debug("vigila.operate.log listener failed", exc_info=True)


def event(name: str, /, *, level: int = logging.INFO, **fields: Any) -> str:
    """Log one structured line (and tell the listeners, phase "end"); returns the line."""
    text = line(name, **fields)
    (_logger.get() or FALLBACK).log(level, text)
    _tell({"event": name, "phase": "end", **fields})
    return text


def progress(name: str, /, **fields: Any) -> None:
    """Tell the listeners only (no log line): e.g. rows read so far."""
    _tell({"event": name, "phase": "progress", **fields})


@contextmanager
def stage(name: str, /, **fields: Any) -> Iterator[dict[str, Any]]:
    """Time one stage: listeners hear its start; on exit one line with `status=ok|failed` and
    `duration_s` (plus `error=<type>` on failure). Fields added to the yielded dict are logged too."""
    extra: dict[str, Any] = {}
    _tell({"event": name, "phase": "start", **fields})
    started = time.perf_counter()
    try:
        yield extra
    except BaseException as exc:
        event(name, level=logging.ERROR, **{**fields, **extra, "status": "failed", "error": type(exc).__name__,
                                             "duration_s": round(time.perf_counter() - started, 3)})
        raise
    event(name, **{**fields, **extra, "status": "ok", "duration_s": round(time.perf_counter() - started, 3)})
