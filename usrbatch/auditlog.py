"""structlog, configured once: JSON lines to a file for machines, key-values for humans.

Every line is an event name plus key-values. Context shared by many lines (loop_id, step, job_id,
scheduler, dataset) is bound once with `bind_context`, never repeated at each call.

Only entry points configure (the CLI, a job's step runner): `configure(path, console=stream)`
sends each event, after the same schema/ts/redaction processors, to the JSON-lines file and, for a
person watching, as one readable `ts event key=value ...` line to `console` (no colours). Either
sink may be absent; with neither, events are dropped. `configure_from_env` turns the console on
with $USRBATCH_LOG_CONSOLE=1 (lines on stderr).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import structlog

from usrbatch.redaction import AUDIT_SECRET_MARKERS, redact

SCHEMA_VERSION = 1
_lock = threading.Lock()
_configured_path: Path | None = None


def _utc_ts(_logger: Any, _name: str, event_dict: dict) -> dict:
    event_dict.setdefault(
        "ts", _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )
    return event_dict


def _schema(_logger: Any, _name: str, event_dict: dict) -> dict:
    event_dict.setdefault("schema", SCHEMA_VERSION)
    return event_dict


def _redact(_logger: Any, _name: str, event_dict: dict) -> dict:
    return redact(event_dict, AUDIT_SECRET_MARKERS)


class _JsonLinesFile:
    """A structlog logger that appends one line per event with O_APPEND (safe across processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def msg(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        # Group-readable as the umask allows, never world-readable (redacted, but it names paths and hosts).
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o660)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    info = debug = warning = error = critical = exception = msg


def render_console(event_dict: dict[str, Any]) -> str:
    """One readable line for a person: `<ts> <event> key=value ...` (schema and ts's date kept
    out of the way; values that are not plain words are quoted)."""
    fields = {k: v for k, v in event_dict.items() if k not in ("event", "ts", "schema")}
    ts = str(event_dict.get("ts", ""))
    clock = ts[11:19] if len(ts) >= 19 else ts
    parts = [clock, str(event_dict.get("event", "-"))]
    for key, value in fields.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else repr(value)
        if not text or any(c.isspace() or c in "\"'=" for c in text):
            text = repr(text) if isinstance(value, str) else text
        parts.append(f"{key}={text}")
    return " ".join(p for p in parts if p)


class _Sinks:
    """The structlog logger: the JSON line to the file, the readable line to the console."""

    _json = structlog.processors.JSONRenderer(sort_keys=False)

    def __init__(self, path: Path | None, console: TextIO | None) -> None:
        self.file = _JsonLinesFile(path) if path is not None else None
        self.console = console

    def msg(self, event_dict: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.msg(self._json(None, "", dict(event_dict)))
        if self.console is not None:
            self.console.write(render_console(event_dict) + "\n")
            self.console.flush()

    info = debug = warning = error = critical = exception = msg


def _to_sinks(_logger: Any, _name: str, event_dict: dict) -> tuple[tuple[dict], dict]:
    return (event_dict,), {}


_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    _schema,
    _utc_ts,
    _redact,
    structlog.processors.dict_tracebacks,
    _to_sinks,
]


def file_logger(path: Path | str, **context: Any) -> Any:
    """A logger appending to `path` (the same processors: schema, ts, redaction) with `context`
    bound, leaving the process-wide configuration alone: how library code (submit, cancel,
    resubmit) writes into a loop's own audit log without re-pointing the caller's logging."""
    target = Path(path).expanduser().absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    return structlog.wrap_logger(_Sinks(target, None), processors=_PROCESSORS).bind(**context)


def configure(path: Path | str | None, *, console: TextIO | None = None) -> None:
    """Send events to `path` as JSON lines and, with `console`, as readable lines to that stream
    (neither: events are dropped). Safe to call again; entry points only."""
    global _configured_path
    with _lock:
        target = Path(path).expanduser().absolute() if path else None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
        structlog.configure(
            processors=_PROCESSORS,
            logger_factory=lambda *a: _Sinks(target, console),
            cache_logger_on_first_use=False,
        )
        _configured_path = target


def configured_path() -> Path | None:
    return _configured_path


def bind_context(**values: Any) -> None:
    """Bind fields (loop_id, step, job_id, scheduler, dataset, ...) to every later line."""
    structlog.contextvars.bind_contextvars(**values)


def clear_context() -> None:
    structlog.contextvars.clear_contextvars()


def get_logger() -> Any:
    return structlog.get_logger()


def configure_from_env(explicit: Path | str | None = None) -> None:
    """--log-json wins, else $USRBATCH_AUDIT_LOG, else no file; $USRBATCH_LOG_CONSOLE=1 adds
    readable lines on stderr.

    Inside a usrbatch job ($USRBATCH_LOOP_ID set) the job context is bound too, so `usr` lines in a
    loop's audit log carry loop_id/step/iteration/job_id/scheduler/dataset.
    """
    console = sys.stderr if os.environ.get("USRBATCH_LOG_CONSOLE") == "1" else None
    configure(explicit or os.environ.get("USRBATCH_AUDIT_LOG") or None, console=console)
    if os.environ.get("USRBATCH_LOOP_ID"):
        bind_job_context_from_env()


# Job context: the job plane exports these to every job; `usr` and the step runners bind them so
# every line they write carries the same fields (docs/audit-log.md).
JOB_CONTEXT_ENV = {
    "loop_id": "USRBATCH_LOOP_ID",
    "step": "USRBATCH_STEP",
    "iteration": "USRBATCH_ITERATION",
    "job_id": "USRBATCH_JOB_ID",
    "scheduler": "USRBATCH_SCHEDULER",
    "dataset": "USRBATCH_DATASET",
}


def job_context_from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The job context fields from $USRBATCH_* (None when unset; iteration as an int when numeric)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field, var in JOB_CONTEXT_ENV.items():
        raw = env.get(var) or None
        if field == "iteration" and raw is not None and raw.isdigit():
            values[field] = int(raw)
        else:
            values[field] = raw
    return values


def bind_job_context_from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Bind loop_id/step/iteration/job_id/scheduler/dataset from $USRBATCH_* to every later line.

    Every field is bound (None when its variable is unset), so every line has every key.
    Returns what was bound.
    """
    values = job_context_from_env(environ)
    bind_context(**values)
    return values
