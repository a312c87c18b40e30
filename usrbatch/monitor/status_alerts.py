"""Alerts derived from a loop's joined status (no audit line needed): a job failed or held in Eqw,
killed (gone from the scheduler without its job.finished line: a suspect until a second status
call agrees), pending too long once ready, a loop stalled or completed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from usrbatch.jobs.scheduler import ALIVE_STATES, COMPLETED, ERROR_HELD, FAILED, PENDING
from usrbatch.jobs.status import JobView, LoopStatus
from usrbatch.monitor.alerts import (
    JOB_ERROR_HELD,
    JOB_FAILED,
    JOB_KILLED,
    JOB_PENDING_LONG,
    LOOP_COMPLETED,
    LOOP_STALLED,
    SYNC_FAILED,
    Alert,
    parse_ts,
    utc_iso,
)


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
