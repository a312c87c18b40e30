"""Find a loop by id or dir, wait for it, cancel it: what `usrbatch status/logs/cancel/wait` call."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from usrbatch import auditlog
from usrbatch.errors import JobError
from usrbatch.jobs.loop import LoopState, load_state, state_path
from usrbatch.jobs.resubmit import resubmit_killed
from usrbatch.jobs.scheduler import ALIVE_STATES, PENDING, RUNNING
from usrbatch.jobs.status import LoopStatus, loop_status, scheduler_for
from usrbatch.jobs.submit import log_path

SETTLED = ("completed", "cancelled")


def resolve_loop(loop: str, *, root: Path | None = None, loops_dir: Path | None = None) -> Path:
    """LOOP is a loop dir, or a loop id under --loops-dir, else under <root>/.usrbatch/loops."""
    candidate = Path(loop).expanduser()
    if state_path(candidate).is_file():
        return candidate.absolute()
    bases = []
    if loops_dir is not None:
        bases.append(Path(loops_dir))
    root = root or Path(os.environ.get("USR_ROOT") or os.getcwd())
    bases.append(Path(root) / ".usrbatch" / "loops")
    for base in bases:
        if state_path(base / loop).is_file():
            return (base / loop).absolute()
    raise JobError(
        f"loop '{loop}' not found (looked for {', '.join(str(b / loop) for b in bases)})",
        hint="Pass the loop dir, or --root/--loops-dir where the loop was submitted.",
    )


def load(loop_dir: Path) -> LoopState:
    state = load_state(loop_dir)
    if state is None:
        raise JobError(f"no loop state in {loop_dir}")
    return state


def is_settled(status: LoopStatus) -> bool:
    """True when nothing more will happen without a person: done, or failed with nothing moving."""
    if status.state in SETTLED:
        # The audit log says every job ended; wait until the scheduler agrees (a job's last
        # line is written just before its process exits), so a report never shows "running".
        return not any(v.sched_state in (RUNNING, PENDING) for v in status.jobs)
    if status.state == "failed":
        return not any(
            RUNNING in (v.state, v.sched_state) or PENDING in (v.state, v.sched_state) for v in status.jobs
        )
    return False


def wait_loop(
    loop_dir: Path, *, timeout: float, poll: float = 0.5, emit: Callable[[str], None] = lambda _m: None
) -> LoopStatus:
    """Poll (one scheduler call per poll) until the loop settles or `timeout` passes; resubmit jobs
    killed by their time limit where the step's `resubmit:` asks for it."""
    state = load(loop_dir)
    sched = scheduler_for(state, loop_dir)
    deadline = time.monotonic() + timeout
    while True:
        status = loop_status(loop_dir, sched)
        # A job its time limit (or a node failure) killed is submitted again when its step says so.
        if status.state == "failed" and resubmit_killed(loop_dir, sched, status.jobs, emit=emit):
            continue
        if is_settled(status) or time.monotonic() >= deadline:
            return status
        time.sleep(poll)


def cancel_loop(loop_dir: Path) -> list[str]:
    """Cancel every job of the loop the scheduler still holds; returns the ids asked to cancel."""
    state = load(loop_dir)
    sched = scheduler_for(state, loop_dir)
    ids = [j.scheduler_id for j in state.jobs if j.scheduler_id]
    infos = sched.status(ids) if ids else {}
    alive = [i for i in ids if i in infos and infos[i].state in ALIVE_STATES]
    sched.cancel(alive)
    log = auditlog.file_logger(
        loop_dir / "audit.jsonl",
        loop_id=state.loop_id,
        step=None,
        iteration=None,
        job_id=None,
        scheduler=state.scheduler,
        dataset=state.dataset,
    )
    log.info("loop.cancelled", job_ids=alive)
    return alive


def loop_logs(loop_dir: Path, step: str | None = None) -> list[tuple[str, Path]]:
    """(job key, log path) of the loop's jobs, optionally only one step (by step name or job key)."""
    state = load(loop_dir)
    jobs = [j for j in state.jobs if step is None or step in (j.step, j.key, j.kind)]
    if step is not None and not jobs:
        names = sorted({j.step for j in state.jobs})
        raise JobError(f"loop {state.loop_id} has no step or job '{step}' (steps: {', '.join(names)})")
    # A sharded job has one log per shard (`<key>.s<n>.log`).
    return [(k, log_path(loop_dir, k)) for j in jobs for k in j.record_keys()]
