"""Alerts: what the watcher tells people, derived from audit lines and from the joined status.

Every alert has a stable id built from the loop, the job id and what happened, so the same fact
seen twice (an audit line and the scheduler's Eqw, or two polls) is one alert. `group` turns the
alerts of one poll into messages: one per loop and kind of news, so 30 failing jobs of a loop make
one summary, not 30 messages.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from usrbatch.jobs.scheduler import ALIVE_STATES, COMPLETED, ERROR_HELD, FAILED, PENDING
from usrbatch.jobs.status import JobView, LoopStatus

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


def _fmt_bytes(n: object) -> str:
    if not isinstance(n, int):
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def alerts_from_audit(line: Mapping[str, Any], kinds: Mapping[str, str]) -> list[Alert]:
    """Alerts for one audit line (docs/audit-log.md); `kinds` maps job keys to step kinds."""
    name = line.get("event")
    loop = str(line.get("loop_id") or "?")
    key = str(line.get("job_key") or "")
    job_id = str(line.get("job_id") or key or "?")
    ts = str(line.get("ts") or "")
    base = {
        "step": line.get("step"),
        "iteration": line.get("iteration"),
        "job_id": line.get("job_id"),
        "job_key": key,
    }

    def make(suffix: str, event: str, title: str, text: str, **extra: Any) -> list[Alert]:
        return [
            Alert(f"{loop}/{job_id}/{suffix}", event, loop, f"{loop}: {title}", text, ts, {**base, **extra})
        ]

    if name == "job.finished" and line.get("outcome") == "failed":
        event = SYNC_FAILED if kinds.get(key) == "sync" else JOB_FAILED
        code = line.get("exit_code")
        what = "sync" if event == SYNC_FAILED else "job"
        return make(
            "failed",
            event,
            f"{what} {key} failed (exit {code})",
            f"{what} {key} (job {job_id}) of loop {loop} exited with {code} on {line.get('host', 'its node')}."
            f" See `usrbatch logs {loop} {line.get('step') or key}`.",
            exit_code=code,
            duration_s=line.get("duration_s"),
        )
    if name == "job.refused":
        preds = ", ".join(f"{p.get('key')} ({p.get('outcome')})" for p in line.get("predecessors") or [])
        return make(
            "refused",
            JOB_REFUSED,
            f"job {key} refused to run",
            f"job {key} (job {job_id}) of loop {loop} did not run: predecessor(s) did not succeed: {preds}.",
            predecessors=line.get("predecessors") or [],
        )
    if name == "sync.done":
        files, size, action = line.get("files"), line.get("bytes"), line.get("action")
        return make(
            f"sync/{ts}",
            SYNC_TRANSFERRED,
            f"sync {action} moved {files} file(s), {_fmt_bytes(size)}",
            f"{action} of {line.get('dataset')} by job {job_id} ({line.get('step')}): {files} file(s), {size} bytes, "
            f"{line.get('deleted', 0)} deleted, state {line.get('transfer_state')}, {line.get('duration_s')} s.",
            **{
                k: line.get(k)
                for k in ("action", "files", "bytes", "deleted", "duration_s", "transfer_state", "dataset")
            },
        )
    return []


@dataclass(frozen=True)
class Thresholds:
    pending_after_s: float = 3600.0
    stall_after_s: float = 6 * 3600.0


@dataclass(frozen=True)
class StatusFacts:
    """What the status join alone cannot say: the loop's planned predecessors, submit times, the ids
    `usrbatch cancel` cancelled, and when its audit log last grew."""

    after: Mapping[str, tuple[str, ...]]  # job key -> predecessor keys
    submitted_at: Mapping[str, str | None]
    cancelled_ids: frozenset[str]
    last_progress: float | None


def _pending_since(
    v: JobView, preds: tuple[str, ...], views: Mapping[str, JobView], facts: StatusFacts
) -> float | None:
    """When a ready job became ready: the later of its submit and its predecessors' finish."""
    times = [parse_ts(facts.submitted_at.get(v.key))] + [
        parse_ts(views[p].finished_at) for p in preds if p in views
    ]
    return max((t for t in times if t is not None), default=None)


def _job_alert(
    loop: str, v: JobView, views: Mapping[str, JobView], facts: StatusFacts, now: float, th: Thresholds
) -> tuple[Alert | None, bool]:
    """(alert, is_suspect) for one job of the joined status."""
    base = {
        "step": v.step,
        "iteration": v.iteration,
        "job_id": v.job_id,
        "job_key": v.key,
        "native_state": v.native_state,
    }

    def make(suffix: str, event: str, title: str, text: str, **extra: Any) -> Alert:
        return Alert(
            f"{loop}/{v.job_id}/{suffix}",
            event,
            loop,
            f"{loop}: job {v.key} {title}",
            text,
            utc_iso(now),
            {**base, **extra},
        )

    preds = facts.after.get(v.key, ())
    preds_done = all(views[p].state == COMPLETED for p in preds if p in views)
    failed_event = SYNC_FAILED if v.kind == "sync" else JOB_FAILED
    if v.sched_state == ERROR_HELD and v.state == FAILED:
        return make(
            "failed",
            failed_event,
            f"failed (exit {v.exit_code}) and is in Eqw",
            f"job {v.key} (SGE job {v.job_id}) failed with exit {v.exit_code}; it sits in Eqw and holds its "
            f"dependents. `usrbatch status {loop}` shows the fix.",
            exit_code=v.exit_code,
        ), False
    if v.sched_state == ERROR_HELD:
        if v.finished_at is not None:
            return None, False  # refused: its job.refused line tells it
        return make(
            "failed",
            JOB_ERROR_HELD,
            "is held in Eqw",
            f"SGE put job {v.key} (job {v.job_id}) in Eqw before it recorded an outcome "
            f"(`qstat -j {v.job_id}` says why); its dependents are held.",
        ), False
    if v.state == FAILED and v.finished_at is not None:
        return make(
            "failed",
            failed_event,
            f"failed (exit {v.exit_code})",
            f"job {v.key} (job {v.job_id}) of loop {loop} exited with {v.exit_code}.",
            exit_code=v.exit_code,
        ), False
    gone = v.sched_state not in ALIVE_STATES and v.finished_at is None
    if gone and v.job_id not in facts.cancelled_ids and (v.started_at is not None or preds_done):
        how = "while running" if v.started_at else "before it started"
        return make(
            "killed",
            JOB_KILLED,
            f"ended without job.finished ({how})",
            f"job {v.key} (job {v.job_id}) left the scheduler {how} without recording an outcome: killed by "
            f"the scheduler (time limit, memory, node failure) or by hand. Scheduler says "
            f"{v.native_state or v.sched_state or 'nothing'}. Check `usrbatch logs {loop} {v.step}`, then "
            f"`usrbatch submit-loop <spec> --resume`.",
            started_at=v.started_at,
        ), True
    since = _pending_since(v, preds, views, facts) if v.sched_state == PENDING and preds_done else None
    if since is not None and now - since > th.pending_after_s:
        return make(
            "pending-long",
            JOB_PENDING_LONG,
            f"pending for {int(now - since)} s",
            f"job {v.key} (job {v.job_id}) is ready to run but has waited in the queue since {utc_iso(since)} "
            f"({v.native_state or 'pending'}{': ' + v.reason if v.reason else ''}).",
            pending_since=utc_iso(since),
            reason=v.reason,
        ), False
    return None, False


def alerts_from_status(
    status: LoopStatus, facts: StatusFacts, now: float, th: Thresholds
) -> tuple[list[Alert], list[Alert]]:
    """(alerts, suspects) for one loop's joined status. Suspects (a job gone from the scheduler
    without its job.finished line) become alerts only when a second status call agrees."""
    loop = status.loop_id
    views = {v.key: v for v in status.jobs}
    ts = utc_iso(now)
    alerts: list[Alert] = []
    suspects: list[Alert] = []
    for v in status.jobs:
        if not v.job_id:
            continue
        alert, suspect = _job_alert(loop, v, views, facts, now, th)
        if alert is not None:
            (suspects if suspect else alerts).append(alert)
    if status.state == COMPLETED and status.jobs:
        last = status.jobs[-1]
        total = sum(v.duration_s or 0 for v in status.jobs)
        alerts.append(
            Alert(
                id=f"{loop}/completed/{last.job_id}",
                event=LOOP_COMPLETED,
                loop_id=loop,
                title=f"{loop}: loop completed ({len(status.jobs)} jobs)",
                text=f"loop {loop} on {status.dataset}: every job succeeded ({len(status.jobs)} jobs, "
                f"{total:.0f} s of job time).",
                ts=ts,
                fields={"jobs": len(status.jobs), "dataset": status.dataset},
            )
        )
    elif status.state == "running" and facts.last_progress is not None:
        idle = now - facts.last_progress
        if idle > th.stall_after_s:
            alerts.append(
                Alert(
                    id=f"{loop}/stalled/{int(facts.last_progress)}",
                    event=LOOP_STALLED,
                    loop_id=loop,
                    title=f"{loop}: no progress for {int(idle)} s",
                    text=f"loop {loop} is still running but its audit log has not grown since "
                    f"{utc_iso(facts.last_progress)}. `usrbatch status {loop}` shows where it waits.",
                    ts=ts,
                    fields={"last_progress": utc_iso(facts.last_progress), "idle_s": int(idle)},
                )
            )
    return alerts, suspects


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


def dataset_events_alert(dataset: str, lines: list[Mapping[str, Any]], now: float) -> Alert:
    actions: dict[str, int] = {}
    for line in lines:
        action = str(line.get("action") or "?")
        actions[action] = actions.get(action, 0) + 1
    summary = ", ".join(f"{a} x{n}" for a, n in sorted(actions.items()))
    last = lines[-1]
    return Alert(
        id=f"dataset/{dataset}/{last.get('timestamp_utc') or last.get('ts') or now}/{len(lines)}",
        event=DATASET_EVENTS,
        loop_id="",
        title=f"{dataset}: {len(lines)} new event(s)",
        text=f"dataset {dataset}: {summary}",
        ts=utc_iso(now),
        fields={"dataset": dataset, "actions": actions},
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
