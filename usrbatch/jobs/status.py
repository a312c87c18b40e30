"""`usrbatch status`: the scheduler's view of a loop's jobs (one call for all ids) joined with its audit log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from usrbatch.errors import JobError
from usrbatch.jobs.loop import LoopState, load_state
from usrbatch.jobs.record import combined_outcome, read_outcome
from usrbatch.jobs.scheduler import (
    CANCELLED,
    COMPLETED,
    ERROR_HELD,
    FAILED,
    UNKNOWN,
    FailedJob,
    JobInfo,
    Scheduler,
    make_scheduler,
)

NOT_SUBMITTED = "not-submitted"
FAILED_VIEW_STATES = frozenset({FAILED, CANCELLED, ERROR_HELD, UNKNOWN})

# `usrbatch status` exit codes (documented in its --help and docs/bu-scc/jobs/README.md): scripts
# poll a loop and branch on them. 2 stays "usage error" (no such loop, bad arguments).
EXIT_COMPLETED = 0
EXIT_FAILED = 1  # a job failed, or the chain was cancelled / refused to run after a failure
EXIT_RUNNING = 3  # still running, pending, held, or not submitted yet
EXIT_UNKNOWN = 4  # the scheduler could not be asked (qstat/squeue/sacct unreachable)
STATUS_EXIT_CODES = {
    COMPLETED: EXIT_COMPLETED,
    FAILED: EXIT_FAILED,
    CANCELLED: EXIT_FAILED,
    "running": EXIT_RUNNING,
    NOT_SUBMITTED: EXIT_RUNNING,
}


class SchedulerUnreachable(JobError):
    """The scheduler did not answer a status query: the loop's state is unknown (exit 4)."""

    exit_code = EXIT_UNKNOWN


def status_exit_code(status: LoopStatus) -> int:
    """The exit code `usrbatch status` ends with for this loop state (see STATUS_EXIT_CODES)."""
    return STATUS_EXIT_CODES.get(status.state, EXIT_UNKNOWN)


@dataclass(frozen=True)
class JobView:
    """One job as `usrbatch status` shows it."""

    key: str
    step: str
    kind: str
    iteration: int
    job_id: str | None
    state: str  # completed | failed | cancelled | running | pending | held | error-held | unknown | not-submitted
    sched_state: str  # the scheduler's normalized state ("" when not asked)
    native_state: str  # the scheduler's own word (Eqw, hqw, PENDING, CANCELLED, ...)
    exit_code: int | None
    duration_s: float | None
    bytes: int | None  # bytes moved by sync steps (sum of their sync.done bytes)
    started_at: str | None
    finished_at: str | None
    reason: str
    # A sharded job (`shards: N`): per shard {"shard", "state", "exit_code"} from its own record.
    shards: tuple[dict, ...] = ()
    killed_by: str = ""  # the scheduler killed it: "walltime" | "node_failure" (see resubmit:)
    attempt: int = 1  # 2, 3, ... once resubmitted after such a kill


@dataclass(frozen=True)
class LoopStatus:
    loop_id: str
    loop_dir: str
    scheduler: str
    dataset: str
    state: str  # completed | failed | cancelled | running | not-submitted
    jobs: list[JobView]
    hints: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def iter_audit(loop_dir: Path) -> Iterator[dict]:
    """Every JSON line of `<loop dir>/audit.jsonl` (unparseable lines are skipped)."""
    path = Path(loop_dir) / "audit.jsonl"
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                yield obj


def _audit_index(loop_dir: Path) -> tuple[dict[str, dict], dict[str, int], set[str]]:
    """Per job key: last started/finished/refused line; per job id: bytes sent; ids `usrbatch cancel` cancelled."""
    by_key: dict[str, dict] = {}
    sent: dict[str, int] = {}
    cancelled: set[str] = set()
    for ev in iter_audit(loop_dir):
        name = ev.get("event")
        key = ev.get("job_key")
        if name == "loop.cancelled":
            cancelled.update(str(i) for i in ev.get("job_ids") or [])
        if key and name in ("job.started", "job.finished", "job.refused"):
            slot = by_key.setdefault(key, {})
            if name == "job.started":  # a rerun starts a fresh record
                slot.clear()
            slot[name] = ev
        elif name == "sync.done" and isinstance(ev.get("bytes"), int):
            # One summary line per usr pull/push; a retried step adds its attempts up.
            jid = str(ev.get("job_id"))
            sent[jid] = sent.get(jid, 0) + ev["bytes"]
    return by_key, sent, cancelled


def _shard_view(shard: int, outcome: dict | None, started: bool) -> dict:
    if outcome is None:
        return {"shard": shard, "state": "running" if started else "pending", "exit_code": None}
    if outcome.get("outcome") == "refused":
        return {"shard": shard, "state": CANCELLED, "exit_code": None}
    code = outcome.get("exit_code")
    return {"shard": shard, "state": COMPLETED if code == 0 else FAILED, "exit_code": code}


def job_views(state: LoopState, loop_dir: Path, scheduler: Scheduler) -> list[JobView]:
    ids = [j.scheduler_id for j in state.jobs if j.scheduler_id]
    try:
        infos: dict[str, JobInfo] = scheduler.status(ids) if ids else {}
    except JobError as exc:
        raise SchedulerUnreachable(
            f"loop {state.loop_id}: state unknown, the {state.scheduler} scheduler did not answer: {exc.message}",
            hint=exc.hint or "Run `usrbatch status` on a host where the scheduler commands work.",
        ) from exc
    by_key, sent, cancelled = _audit_index(loop_dir)
    views = []
    for job in state.jobs:
        info = infos.get(job.scheduler_id or "")
        record_keys = job.record_keys()
        outcome = combined_outcome(loop_dir, record_keys)
        audits = [by_key.get(k, {}) for k in record_keys]
        starts = [a["job.started"]["ts"] for a in audits if "job.started" in a]
        ends = [(a.get("job.finished") or a.get("job.refused") or {}).get("ts") for a in audits]
        started = min(starts) if starts else None
        finished_ev = {"ts": max(ends)} if ends and all(ends) else {}
        shards: tuple[dict, ...] = ()
        if job.shards > 1:
            shards = tuple(
                _shard_view(n, read_outcome(loop_dir, k), k in by_key) for n, k in enumerate(record_keys, 1)
            )
        exit_code = outcome.get("exit_code") if outcome else (info.exit_code if info else None)
        reason = info.reason if info else ""
        if not job.scheduler_id:
            state_name = NOT_SUBMITTED
        elif outcome is None and info is not None and info.state == CANCELLED:
            state_name, exit_code = CANCELLED, None  # never ran (sacct reports 0:0 for these)
        elif outcome is not None and outcome.get("outcome") == "refused":
            state_name = CANCELLED
            reason = "predecessor did not succeed; refused to run"
        elif outcome is not None and info is not None and info.state == CANCELLED:
            state_name = CANCELLED  # killed while running: the scheduler's word wins
        elif outcome is not None:
            state_name = COMPLETED if outcome.get("exit_code") == 0 else FAILED
            if state_name == FAILED and not reason:
                reason = f"exit {outcome.get('exit_code')}"
        else:
            state_name = info.state if info else UNKNOWN
            if state_name == UNKNOWN and job.scheduler_id in cancelled:
                state_name, reason = CANCELLED, "cancelled by usrbatch cancel"
        views.append(
            JobView(
                key=job.key,
                step=job.step,
                kind=job.kind,
                iteration=job.iteration,
                job_id=job.scheduler_id,
                state=state_name,
                sched_state=info.state if info else "",
                native_state=info.native_state if info else "",
                exit_code=exit_code,
                duration_s=(outcome or {}).get("duration_s"),
                bytes=sent.get(job.scheduler_id or "") if job.kind == "sync" else None,
                started_at=started,
                finished_at=finished_ev.get("ts"),
                reason=reason,
                shards=shards,
                killed_by=info.killed_by if info and state_name == FAILED else "",
                attempt=job.attempt,
            )
        )
    return views


def _overall(views: list[JobView]) -> str:
    states = {v.state for v in views}
    if not views or states == {NOT_SUBMITTED}:
        return NOT_SUBMITTED
    if states & {FAILED, ERROR_HELD}:
        return FAILED
    if states == {COMPLETED}:
        return COMPLETED
    if states <= {COMPLETED, CANCELLED, UNKNOWN}:
        return CANCELLED
    return "running"


def _hints(state: LoopState, views: list[JobView], scheduler: Scheduler) -> list[str]:
    hints = []
    loop = state.loop_id
    resume = f"usrbatch submit-loop {state.config} --resume"
    for v in views:
        if v.state == FAILED or (v.sched_state == ERROR_HELD and v.state != CANCELLED):
            failed = FailedJob(
                key=v.key,
                step=v.step,
                job_id=v.job_id,
                exit_code=v.exit_code,
                loop_id=loop,
                resume=resume,
                error_held=v.sched_state == ERROR_HELD,
            )
            hints.append(scheduler.failure_hint(failed))
    if any(v.sched_state == ERROR_HELD and v.state == CANCELLED for v in views):
        hints.append(
            f"Some jobs refused to run after a failed predecessor and sit in Eqw: `usrbatch cancel {loop}` "
            "deletes them."
        )
    return hints


def loop_status(loop_dir: Path, scheduler: Scheduler | None = None) -> LoopStatus:
    """The joined status of the loop in `loop_dir` (raises JobError if it was never submitted)."""
    state = load_state(loop_dir)
    if state is None:
        raise JobError(f"no loop state in {loop_dir} (was `usrbatch submit-loop` run?)")
    sched = scheduler or scheduler_for(state, loop_dir)
    views = job_views(state, loop_dir, sched)
    return LoopStatus(
        loop_id=state.loop_id,
        loop_dir=str(loop_dir),
        scheduler=state.scheduler,
        dataset=state.dataset,
        state=_overall(views),
        jobs=views,
        hints=_hints(state, views, sched),
    )


def scheduler_for(state: LoopState, loop_dir: Path) -> Scheduler:
    """The scheduler a loop was submitted to, from the one factory."""
    return make_scheduler(state.scheduler, loop_dir=loop_dir)


def format_status(status: LoopStatus) -> str:
    """A plain table for humans."""

    def fmt(value: object) -> str:
        return "-" if value is None or value == "" else str(value)

    rows = [("JOB", "ID", "STATE", "SCHED", "EXIT", "DURATION_S", "BYTES", "REASON")]
    for v in status.jobs:
        rows.append(
            (
                v.key,
                fmt(v.job_id),
                v.state,
                fmt(v.native_state),
                fmt(v.exit_code),
                fmt(v.duration_s),
                fmt(v.bytes),
                fmt(v.reason),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        f"loop {status.loop_id}  scheduler={status.scheduler}  dataset={status.dataset}  state={status.state}",
        f"dir  {status.loop_dir}",
    ]
    lines.append(
        "  ".join(c.ljust(w) for c, w in zip(rows[0][:-1], widths, strict=True)) + "  " + rows[0][-1]
    )
    for r, v in zip(rows[1:], status.jobs, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
        if v.shards:
            done = sum(1 for sh in v.shards if sh["state"] == COMPLETED)
            each = " ".join(f"s{sh['shard']}={sh['state']}" for sh in v.shards)
            lines.append(f"  shards of {v.key}: {done}/{len(v.shards)} completed ({each})")
    for hint in status.hints:
        lines.append(f"Hint: {hint}")
    return "\n".join(lines)
