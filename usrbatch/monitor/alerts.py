"""Alerts: what the watcher tells people. The event names, the `Alert` and `Message` values, and
`group`, which turns the alerts of one poll into messages: one per loop and kind of news, so 30
failing jobs of a loop make one summary, not 30 messages.

Every alert has a stable id built from the loop, the job id and what happened, so the same fact
seen twice (an audit line and the scheduler's Eqw, or two polls) is one alert (`combine`). Where
alerts come from: audit_alerts.py (log lines), status_alerts.py (the joined status).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# Alert event names (docs/monitoring.md). Filters in the watch config use these.
JOB_FAILED = "job.failed"
JOB_REFUSED = "job.refused"
JOB_ERROR_HELD = "job.error_held"
JOB_PENDING_LONG = "job.pending_long"
JOB_KILLED = "job.killed"
SYNC_TRANSFERRED = "sync.transferred"
SYNC_FAILED = "sync.failed"
LOOP_COMPLETED = "loop.completed"
LOOP_STALLED = "loop.stalled"
DATASET_EVENTS = "dataset.events"
WATCH_HEARTBEAT = "watch.heartbeat"
WATCH_TEST = "watch.test"
EVENTS = (
    JOB_FAILED,
    JOB_REFUSED,
    JOB_ERROR_HELD,
    JOB_PENDING_LONG,
    JOB_KILLED,
    SYNC_TRANSFERRED,
    SYNC_FAILED,
    LOOP_COMPLETED,
    LOOP_STALLED,
    DATASET_EVENTS,
    WATCH_HEARTBEAT,
    WATCH_TEST,
)
PROBLEMS = frozenset({JOB_FAILED, JOB_REFUSED, JOB_ERROR_HELD, JOB_PENDING_LONG, JOB_KILLED, SYNC_FAILED})
SEVERITY = {
    JOB_FAILED: "error",
    JOB_REFUSED: "error",
    JOB_ERROR_HELD: "error",
    JOB_KILLED: "error",
    SYNC_FAILED: "error",
    JOB_PENDING_LONG: "warning",
    LOOP_STALLED: "warning",
}


@dataclass(frozen=True)
class Alert:
    """One thing worth telling: `id` is stable across polls and restarts."""

    id: str
    event: str
    loop_id: str
    title: str
    text: str
    ts: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.event, "info")

    def to_json(self) -> dict:
        data = asdict(self)
        data["fields"] = dict(self.fields)
        data["severity"] = self.severity
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            id=str(data["id"]),
            event=str(data["event"]),
            loop_id=str(data.get("loop_id") or ""),
            title=str(data.get("title") or ""),
            text=str(data.get("text") or ""),
            ts=str(data.get("ts") or ""),
            fields=dict(data.get("fields") or {}),
        )


@dataclass(frozen=True)
class Message:
    """What one target receives: one alert, or a summary of several of one loop."""

    id: str
    event: str
    severity: str
    loop_id: str
    title: str
    text: str
    alerts: tuple[dict, ...]

    def to_json(self) -> dict:
        data = asdict(self)
        data["alerts"] = list(self.alerts)
        return data

    @classmethod
    def from_json(cls, data: dict) -> Message:
        return cls(
            id=str(data["id"]),
            event=str(data["event"]),
            severity=str(data["severity"]),
            loop_id=str(data["loop_id"]),
            title=str(data["title"]),
            text=str(data["text"]),
            alerts=tuple(data.get("alerts") or ()),
        )

    @property
    def alert_ids(self) -> list[str]:
        return [str(a.get("id")) for a in self.alerts]


def utc_iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_ts(value: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 UTC string (the audit log's `ts`), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def combine(from_audit: Alert, from_status: Alert) -> Alert:
    """One alert for a fact seen in the audit log and by the scheduler in the same poll: the audit
    line's words (host, log hint) plus what only the scheduler knows (Eqw, TIMEOUT, OUT_OF_MEMORY)."""
    native = str(from_status.fields.get("native_state") or "")
    text = from_audit.text + (f" The scheduler says {native}." if native else "")
    title = from_status.title if "Eqw" in from_status.title else from_audit.title
    fields = {
        **from_audit.fields,
        **{k: v for k, v in from_status.fields.items() if v is not None and v != ""},
    }
    return Alert(from_audit.id, from_audit.event, from_audit.loop_id, title, text, from_audit.ts, fields)


def heartbeat_alert(now: float, period_s: float, loops: Iterable[str]) -> Alert:
    names = sorted(loops)
    return Alert(
        id=f"heartbeat/{int(now // period_s)}",
        event=WATCH_HEARTBEAT,
        loop_id="",
        title="usrbatch watch is alive",
        text=f"watching {len(names)} loop(s): {', '.join(names) or '(none yet)'}",
        ts=utc_iso(now),
        fields={"loops": names},
    )


def group(alerts: list[Alert], message_id: str) -> Message:
    """One message for alerts of one loop (a summary when there are several)."""
    if len(alerts) == 1:
        a = alerts[0]
        return Message(message_id, a.event, a.severity, a.loop_id, a.title, a.text, (a.to_json(),))
    events = sorted({a.event for a in alerts})
    severity = (
        "error"
        if any(a.severity == "error" for a in alerts)
        else ("warning" if any(a.severity == "warning" for a in alerts) else "info")
    )
    loop = alerts[0].loop_id
    counts = ", ".join(f"{sum(1 for a in alerts if a.event == e)} {e}" for e in events)
    lines = [f"- {a.title}" for a in alerts[:20]]
    if len(alerts) > 20:
        lines.append(f"- ... and {len(alerts) - 20} more")
    return Message(
        message_id,
        events[0] if len(events) == 1 else "summary",
        severity,
        loop,
        f"{loop}: {len(alerts)} alerts ({counts})",
        "\n".join(lines),
        tuple(a.to_json() for a in alerts),
    )
