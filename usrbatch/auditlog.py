"""structlog, configured once: JSON lines to a file for machines, key-values for humans.

Every line is an event name plus key-values. Context shared by many lines (loop_id, step, job_id,
scheduler, dataset) is bound once with `bind_context`, never repeated at each call.

Only entry points configure (the CLI, a job's step runner): `configure(path, console=stream)`
sends each event, after the same schema/ts/redaction processors, to the JSON-lines file and, for a
person watching, as one readable `ts event key=value ...` line to `console` (no colours). Either
sink may be absent; with neither, events are dropped. `configure_from_env` turns the console on
with $USRBATCH_LOG_CONSOLE=1 (lines on stderr).

Start-up cost: structlog is imported only when a sink is configured (a command run without
--log-json, $USRBATCH_AUDIT_LOG or the console drops its events without loading it), and then
without rich: `import structlog` always imports structlog.dev, which would load rich's traceback
machinery for a ConsoleRenderer these sinks never use (`_import_structlog`). Context bound with
`bind_context` lives in this module's ContextVar, so binding costs no import either.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import os
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TextIO

from usrbatch.redaction import AUDIT_SECRET_MARKERS, redact

SCHEMA_VERSION = 1
_lock = threading.RLock()
_configured_path: Path | None = None
# "unset": never configured (structlog's own defaults apply, as before any configure);
# "drop": configured with no sink (events are dropped, structlog stays unimported); "sinks".
_mode: Literal["unset", "drop", "sinks"] = "unset"
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("usrbatch_audit_context")
# Optional renderers structlog.dev imports when they are installed; the sinks here use none.
_UNUSED_RENDERERS = ("rich", "better_exceptions", "colorama")


def _import_structlog() -> ModuleType:
    """structlog, imported without the optional renderers (rich alone costs ~0.1 s of start-up).

    A None entry in sys.modules makes `import rich` raise ImportError, which structlog.dev treats
    as "not installed"; the entries are removed again at once, so other code can still import rich.
    """
    loaded = sys.modules.get("structlog")
    if loaded is not None:
        return loaded
    with _lock:
        hidden = [name for name in _UNUSED_RENDERERS if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]
        try:
            import structlog
        finally:
            for name in hidden:
                if sys.modules.get(name) is None:
                    sys.modules.pop(name, None)
        return structlog


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


def _merge_context(_logger: Any, _name: str, event_dict: dict) -> dict:
    """The fields bound with bind_context, after the event's own (an event's key wins), as
    structlog.contextvars.merge_contextvars does."""
    for key, value in _context.get({}).items():
        event_dict.setdefault(key, value)
    return event_dict


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

    def __init__(self, path: Path | None, console: TextIO | None) -> None:
        self._json = _import_structlog().processors.JSONRenderer(sort_keys=False)
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


def _processors() -> list[Any]:
    return [
        _merge_context,
        _schema,
        _utc_ts,
        _redact,
        _import_structlog().processors.dict_tracebacks,
        _to_sinks,
    ]


class _Logger:
    """What get_logger returns: resolved at each call, like structlog's own lazy proxy, so a
    logger taken before `configure` writes where the configuration says at the time of the call.
    While configured without a sink, events are dropped here and structlog is never imported."""

    __slots__ = ("_bound",)

    def __init__(self, bound: dict[str, Any] | None = None) -> None:
        self._bound = bound or {}

    def bind(self, **values: Any) -> _Logger:
        return _Logger({**self._bound, **values})

    def _emit(self, method: str, event: str | None, fields: dict[str, Any]) -> Any:
        if _mode == "drop":
            return None
        logger = _import_structlog().get_logger()
        if self._bound:
            logger = logger.bind(**self._bound)
        return getattr(logger, method)(event, **fields)

    def debug(self, event: str | None = None, **fields: Any) -> Any:
        return self._emit("debug", event, fields)

    def info(self, event: str | None = None, **fields: Any) -> Any:
        return self._emit("info", event, fields)

    def warning(self, event: str | None = None, **fields: Any) -> Any:
        return self._emit("warning", event, fields)

    def error(self, event: str | None = None, **fields: Any) -> Any:
        return self._emit("error", event, fields)

    def critical(self, event: str | None = None, **fields: Any) -> Any:
        return self._emit("critical", event, fields)

    def exception(self, event: str | None = None, **fields: Any) -> Any:
        return self._emit("exception", event, fields)

    msg = info


def file_logger(path: Path | str, **context: Any) -> Any:
    """A logger appending to `path` (the same processors: schema, ts, redaction) with `context`
    bound, leaving the process-wide configuration alone: how library code (submit, cancel,
    resubmit) writes into a loop's own audit log without re-pointing the caller's logging."""
    target = Path(path).expanduser().absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    structlog = _import_structlog()
    return structlog.wrap_logger(_Sinks(target, None), processors=_processors()).bind(**context)


def configure(path: Path | str | None, *, console: TextIO | None = None) -> None:
    """Send events to `path` as JSON lines and, with `console`, as readable lines to that stream
    (neither: events are dropped). Safe to call again; entry points only."""
    global _configured_path, _mode
    with _lock:
        target = Path(path).expanduser().absolute() if path else None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
        _configured_path = target
        _mode = "sinks" if target is not None or console is not None else "drop"
        if _mode == "drop" and "structlog" not in sys.modules:
            return  # nothing to write: structlog stays unimported
        _import_structlog().configure(
            processors=_processors(),
            logger_factory=lambda *a: _Sinks(target, console),
            cache_logger_on_first_use=False,
        )


def configured_path() -> Path | None:
    return _configured_path


def bind_context(**values: Any) -> None:
    """Bind fields (loop_id, step, job_id, scheduler, dataset, ...) to every later line (of this
    thread or task: a context variable, as structlog.contextvars)."""
    _context.set({**_context.get({}), **values})


def clear_context() -> None:
    _context.set({})


def get_logger() -> Any:
    """A logger for `log.info("event.name", key=value, ...)` (see _Logger)."""
    return _Logger()


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
