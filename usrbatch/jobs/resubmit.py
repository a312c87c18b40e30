"""Walltime recovery: a job the scheduler killed (its time limit, a node failure) is submitted again.

A step declares `resubmit: {on: [walltime, node_failure], max: N, args: "--resume"}`. The kill is
read from the scheduler's record: SGE's accounting (`failed 37 : qmaster enforced h_rt ...`), Slurm's
`TIMEOUT` / `NODE_FAIL`. The job is submitted again under the same job key and scheduler name (the
chain identity; its old id moves to `previous_ids`), with `attempt` + 1 and the step's `args`
appended to its command. Its dependents, which the scheduler released into a refusal (SGE) or
cancelled (Slurm), are cancelled if still queued and submitted again after the new id, so the
chain continues. Each resubmit logs `job.resubmitted` (docs/audit-log.md).

Nothing runs on a login node for this: whoever polls the loop (`usrbatch wait`, `submit-loop
--resume`) calls `resubmit_killed` first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from usrbatch import auditlog
from usrbatch.jobs.loop import JobRecord, LoopSpec, LoopState, load_spec, load_state, save_state
from usrbatch.jobs.record import jobs_dir
from usrbatch.jobs.scheduler import ALIVE_STATES, FAILED, Scheduler
from usrbatch.jobs.status import JobView


def spec_for(state: LoopState, loop_dir: Path) -> LoopSpec:
    """The loop's spec as it was submitted (its config file, scheduler and loops dir)."""
    return load_spec(state.config, scheduler=state.scheduler, loops_dir=Path(loop_dir).parent)


def _downstream(state: LoopState, key: str) -> list[JobRecord]:
    """Every job that waits, directly or not, for job `key` (jobs are in dependency order)."""
    hit = {key}
    out = []
    for job in state.jobs:
        if job.key != key and any(p in hit for p in job.after):
            hit.add(job.key)
            out.append(job)
    return out


def _forget_run(loop_dir: Path, job: JobRecord) -> None:
    for record_key in job.record_keys():
        for suffix in (".outcome.json", ".started.json"):
            (jobs_dir(loop_dir) / f"{record_key}{suffix}").unlink(missing_ok=True)


def resubmit_killed(
    loop_dir: Path,
    scheduler: Scheduler,
    views: Sequence[JobView],
    *,
    emit: Callable[[str], None] = lambda _m: None,
) -> list[str]:
    """Resubmit every job of `views` (a status poll's, so no extra scheduler call) killed for a
    cause its step's `resubmit:` names, within `max`; returns the job keys submitted again."""
    from usrbatch.jobs.submit import submit_loop

    state = load_state(loop_dir)
    killed = {v.key: v for v in views if v.killed_by and v.state == FAILED}
    if state is None or not killed:
        return []
    spec = spec_for(state, loop_dir)
    policies = {s.name: s.resubmit for s in spec.steps if s.resubmit is not None}
    chosen: list[tuple[JobRecord, str]] = []
    for job in state.jobs:
        policy, view = policies.get(job.step), killed.get(job.key)
        if policy is None or view is None or view.job_id != job.scheduler_id:
            continue
        if view.killed_by in policy.on and job.attempt <= policy.max:
            chosen.append((job, view.killed_by))
    if not chosen:
        return []
    by_key = {v.key: v for v in views}
    log = auditlog.file_logger(
        loop_dir / "audit.jsonl",
        loop_id=state.loop_id,
        step=None,
        iteration=None,
        job_id=None,
        scheduler=state.scheduler,
        dataset=state.dataset,
    )
    redo: dict[str, JobRecord] = {}
    for job, cause in chosen:
        log.info(
            "job.resubmitted",
            step=job.step,
            iteration=job.iteration,
            job_key=job.key,
            attempt=job.attempt + 1,
            cause=cause,
            previous_job_id=job.scheduler_id,
        )
        emit(
            f"{job.key}: killed by {cause} (job {job.scheduler_id}); resubmitting, attempt {job.attempt + 1}"
        )
        job.attempt += 1
        redo[job.key] = job
        for dep in _downstream(state, job.key):
            redo.setdefault(dep.key, dep)
    alive = [
        by_key[k].job_id
        for k in redo
        if k in by_key and by_key[k].job_id and by_key[k].sched_state in ALIVE_STATES
    ]
    if alive:
        scheduler.cancel([i for i in alive if i])
    for job in redo.values():
        if job.scheduler_id:
            job.previous_ids.append(job.scheduler_id)
        job.status, job.scheduler_id, job.submitted_at = "planned", None, None
        _forget_run(loop_dir, job)
    save_state(loop_dir, state)
    iterations = max(j.iteration for j in state.jobs)
    submit_loop(spec, iterations=iterations, scheduler=scheduler, emit=emit)
    return list(redo)
