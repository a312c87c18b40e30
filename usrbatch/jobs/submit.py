"""submit-loop: render every job of a loop and submit it after its predecessor, idempotently.

The state file is written before each submit ("submitting", no id) and after it ("submitted",
id), under an exclusive lock on the loop dir. A re-run skips submitted jobs; a job left
"submitting" is looked up on the scheduler (same name AND same script file, so a same-named loop
under another root is never adopted) and in the loop's audit log before it is submitted again.
"""

from __future__ import annotations

import contextlib
import fcntl
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from usrbatch import auditlog
from usrbatch.errors import JobError
from usrbatch.jobs import templates
from usrbatch.jobs.loop import (
    ACTOR_TOOLS,
    JobRecord,
    LoopSpec,
    LoopState,
    StepSpec,
    check_local_files,
    load_state,
    now_utc,
    plan_jobs,
    save_state,
    shard_key,
)
from usrbatch.jobs.record import combined_outcome, jobs_dir
from usrbatch.jobs.scheduler import (
    ALIVE_STATES,
    Scheduler,
    SubmitRequest,
    fail_exit,
    make_scheduler,
    task_log_token,
)
from usrbatch.jobs.status import iter_audit
from usrbatch.jobs.topology import check_step_order


def script_path(loop_dir: Path, key: str) -> Path:
    return loop_dir / "scripts" / f"{key}.sh"


def log_path(loop_dir: Path, key: str) -> Path:
    return loop_dir / "logs" / f"{key}.log"


def job_log(spec: LoopSpec, job: JobRecord) -> Path:
    """The log the scheduler writes: one per shard of a sharded job (`<key>.s<task>.log`)."""
    if job.shards <= 1:
        return log_path(spec.loop_dir, job.key)
    return log_path(spec.loop_dir, shard_key(job.key, task_log_token(spec.scheduler)))


def _recover_ids(sched: Scheduler, loop_dir: Path, job: JobRecord) -> list[str]:
    """Ids of this job's lost submit: queued or running under its name AND from this loop's
    script file (a same-named loop elsewhere is not adopted), or already started, as this
    loop's audit log says (jobs that ended are no longer in the queue)."""
    found = set(sched.find_by_name(job.name, script_path(loop_dir, job.key)))
    for line in iter_audit(loop_dir):
        if line.get("event") == "job.started" and line.get("job_key") == job.key and line.get("job_id"):
            found.add(str(line["job_id"]))
    fresh = [i for i in found if i not in job.previous_ids]
    return sorted(fresh, key=lambda i: (len(i), i))


def step_of(spec: LoopSpec, name: str) -> StepSpec:
    for step in spec.steps:
        if step.name == name:
            return step
    raise JobError(
        f"{spec.path.name}: no step named '{name}' (steps: {', '.join(s.name for s in spec.steps)})"
    )


def _record_keys(spec: LoopSpec, key: str) -> list[str]:
    """The record keys of the job `key` (`i<iter>-<nn>-<step>`): one per shard of its step."""
    shards = spec.steps[int(key.split("-")[1]) - 1].shards
    return [key] if shards <= 1 else [shard_key(key, n) for n in range(1, shards + 1)]


def render_context(spec: LoopSpec, job: JobRecord) -> dict:
    """Everything a template may use (see docs/audit-log.md and templates/_common/job.j2)."""
    step = step_of(spec, job.step)
    loop_dir = spec.loop_dir
    args = dict(step.args)
    if step.kind == "sync":
        args["audit_json"] = str(loop_dir / "sync" / f"{job.key}.json")
    return {
        "job": {
            "key": job.key,
            "name": job.name,
            "step": job.step,
            "kind": job.kind,
            "iteration": job.iteration,
            "index": job.index,
            "log": str(job_log(spec, job)),
            "script": str(script_path(loop_dir, job.key)),
            "after_keys": [k for pred in job.after for k in _record_keys(spec, pred)],
            "shards": job.shards,
            "attempt": job.attempt,
        },
        "loop": {
            "id": spec.loop_id,
            "dir": str(loop_dir),
            "dataset": spec.dataset,
            "root": str(spec.root),
            "remote": spec.remote,
            "remotes_config": str(spec.remotes_config) if spec.remotes_config else None,
            "scheduler": spec.scheduler,
            "audit_log": str(loop_dir / "audit.jsonl"),
            "workdir": str(spec.workdir or loop_dir),
        },
        "res": {
            "time": step.resources.time,
            "cpus": step.resources.cpus,
            "mem": step.resources.mem,
            "mem_per_core": step.resources.mem_per_core,
            "project": step.resources.project,
            "account": step.resources.account,
            "partition": step.resources.partition,
            "gpus": step.resources.gpus,
            "gpu_type": step.resources.gpu_type,
            "gpu_capability": step.resources.gpu_capability,
        },
        "setup": list(step.job_env.setup),
        "env": [{"name": k, "value": v} for k, v in step.job_env.env],
        "directives": list(step.job_env.directives_for(spec.scheduler)),
        "mail": step.job_env.mail,
        "login_shell": spec.scheduler in ("sge", "slurm"),
        # After a walltime kill: the step's resubmit args, appended to its command.
        "resume_args": step.resubmit.args if step.resubmit and job.attempt > 1 else "",
        "args": args,
        "python": spec.python,
        "actor_tool": ACTOR_TOOLS[step.kind],
        "fail_exit": fail_exit(spec.scheduler),
    }


def render_job_script(spec: LoopSpec, job: JobRecord) -> templates.JobScript:
    """The job's script and, when its command holds a secret, the 0600 file it sources."""
    return templates.render_script(
        spec.scheduler, job.kind, render_context(spec, job), templates_dir=spec.templates_dir
    )


def render_job(spec: LoopSpec, job: JobRecord) -> str:
    """The job script's text (what `usrbatch render` and --dry-run print: never a secret)."""
    return render_job_script(spec, job).text


@dataclass
class SubmitResult:
    loop_id: str
    loop_dir: Path
    submitted: list[str] = field(default_factory=list)  # job keys submitted by this run
    recovered: list[str] = field(default_factory=list)  # "submitting" jobs found on the scheduler
    skipped: list[str] = field(default_factory=list)  # already submitted before this run
    total: int = 0


@contextlib.contextmanager
def _locked(loop_dir: Path) -> Iterator[None]:
    loop_dir.mkdir(parents=True, exist_ok=True)
    with open(loop_dir / ".submit.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(
                f"another `usrbatch submit-loop` is running for loop {loop_dir.name}",
                hint="Wait for it to finish, then run the command again.",
            ) from None
        yield


def _merge_plan(spec: LoopSpec, state: LoopState | None, iterations: int) -> LoopState:
    planned = plan_jobs(spec, iterations)
    if state is None:
        return LoopState(
            loop_id=spec.loop_id,
            config=str(spec.path),
            scheduler=spec.scheduler,
            dataset=spec.dataset,
            root=str(spec.root),
            created_at=now_utc(),
            jobs=planned,
        )
    if state.scheduler != spec.scheduler:
        raise JobError(
            f"loop {spec.loop_id} was submitted to {state.scheduler}, not {spec.scheduler}",
            hint="Keep the scheduler, or give the loop another name: in the spec.",
        )
    known = {j.key: j for j in state.jobs}
    recorded_iterations = max((j.iteration for j in state.jobs), default=0)
    for job in planned:
        if job.iteration <= recorded_iterations and job.key not in known:
            raise JobError(
                f"{spec.path.name}: steps differ from those loop {spec.loop_id} was submitted with "
                f"(no job {job.key} in {state.jobs[0].key}..{state.jobs[-1].key})",
                hint="Give the changed loop a new name: (or cancel and remove the old loop dir).",
            )
    merged = list(state.jobs)
    merged += [j for j in planned if j.key not in known]
    state.jobs = merged
    return state


def _after_ids(state: LoopState, job: JobRecord, loop_dir: Path, placeholders: bool) -> list[str]:
    """Scheduler ids of predecessors still to wait for (a predecessor that already succeeded is dropped)."""
    ids = []
    for key in job.after:
        pred = state.job(key)
        outcome = combined_outcome(loop_dir, pred.record_keys())
        if outcome is not None and outcome.get("exit_code") == 0 and pred.status == "submitted":
            continue
        if pred.scheduler_id:
            ids.append(pred.scheduler_id)
        elif placeholders:
            ids.append(f"id@{key}")  # stands for the id the scheduler will give job KEY
        else:
            raise JobError(f"predecessor {key} of {job.key} has no scheduler id")
    return ids


def _reset_failed(
    state: LoopState, scheduler: Scheduler, loop_dir: Path, emit: Callable[[str], None]
) -> None:
    """--resume: cancel and forget every job that did not succeed and everything after it."""
    from usrbatch.jobs.status import FAILED_VIEW_STATES, job_views

    views = {v.key: v for v in job_views(state, loop_dir, scheduler)}
    redo: set[str] = set()
    for job in state.jobs:  # jobs are in chain order, so one pass propagates downstream
        view = views[job.key]
        if view.state in FAILED_VIEW_STATES or any(p in redo for p in job.after):
            redo.add(job.key)
    if not redo:
        return
    alive = [views[k].job_id for k in redo if views[k].job_id and views[k].sched_state in ALIVE_STATES]
    if alive:
        scheduler.cancel([i for i in alive if i])
    for job in state.jobs:
        if job.key in redo and job.status != "planned":
            if job.scheduler_id:
                job.previous_ids.append(job.scheduler_id)
            job.status, job.scheduler_id, job.submitted_at = "planned", None, None
            for record_key in job.record_keys():
                for suffix in (".outcome.json", ".started.json"):
                    (jobs_dir(loop_dir) / f"{record_key}{suffix}").unlink(missing_ok=True)
    emit(f"resume: resubmitting {len(redo)} job(s) from {min(redo)}")


def submit_loop(
    spec: LoopSpec,
    *,
    iterations: int | None = None,
    dry_run: bool = False,
    resume: bool = False,
    scheduler: Scheduler | None = None,
    emit: Callable[[str], None] = print,
) -> SubmitResult:
    """Render and submit every job not yet submitted; see the module docstring for the guarantees."""
    loop_dir = spec.loop_dir
    n_iter = iterations or spec.iterations
    check_step_order(spec, n_iter)  # before anything is rendered, written or submitted
    sched = scheduler or make_scheduler(spec.scheduler, loop_dir=loop_dir)
    result = SubmitResult(loop_id=spec.loop_id, loop_dir=loop_dir)
    if dry_run:
        state = _merge_plan(spec, load_state(loop_dir), n_iter)
        result.total = len(state.jobs)
        for job in state.jobs:
            if job.status == "submitted":
                result.skipped.append(job.key)
                continue
            script = render_job(spec, job)
            req = SubmitRequest(
                script=script_path(loop_dir, job.key),
                name=job.name,
                log=job_log(spec, job),
                after=tuple(_after_ids(state, job, loop_dir, placeholders=True)),
                array=job.shards,
                workdir=spec.workdir or loop_dir,
            )
            emit(f"### job {job.key} -> {req.script}")
            emit(script.rstrip("\n"))
            emit(f"### submit: {shlex.join(sched.submit_command(req))}")
            emit("")
            result.submitted.append(job.key)
        return result

    check_local_files(spec)
    if spec.root.is_dir():
        from usrbatch.steps.namespaces import ensure_loop_namespaces  # pyarrow: only when submitting

        # Before the loop's first write: a namespace registered mid-loop would change the registry
        # hash under the overlays already written (the public `validate` then refuses them).
        added = ensure_loop_namespaces(spec.root, [step.kind for step in spec.steps])
        if added:
            emit(f"registered namespace(s) {', '.join(added)} in {spec.root / 'registry.yaml'}")
    with _locked(loop_dir):
        log = auditlog.file_logger(
            loop_dir / "audit.jsonl",
            loop_id=spec.loop_id,
            step=None,
            iteration=None,
            job_id=None,
            scheduler=spec.scheduler,
            dataset=spec.dataset,
        )
        state = _merge_plan(spec, load_state(loop_dir), n_iter)
        save_state(loop_dir, state)
        if resume:
            _reset_failed(state, sched, loop_dir, emit)
            save_state(loop_dir, state)
        result.total = len(state.jobs)
        for job in state.jobs:
            if job.status == "submitted" and job.scheduler_id:
                result.skipped.append(job.key)
                continue
            if job.status == "submitting":
                found = _recover_ids(sched, loop_dir, job)
                if found:
                    job.status, job.scheduler_id = "submitted", found[-1]
                    job.submitted_at = job.submitted_at or now_utc()
                    save_state(loop_dir, state)
                    result.recovered.append(job.key)
                    emit(f"recovered {job.key}: already on {spec.scheduler} as job {found[-1]}")
                    continue
            script = render_job_script(spec, job)
            path = script_path(loop_dir, job.key)
            log_path(loop_dir, job.key).parent.mkdir(parents=True, exist_ok=True)
            (loop_dir / "sync").mkdir(exist_ok=True)
            templates.write_job_script(path, script)  # never world-readable; a secret only in 0600
            req = SubmitRequest(
                script=path,
                name=job.name,
                log=job_log(spec, job),
                after=tuple(_after_ids(state, job, loop_dir, placeholders=False)),
                array=job.shards,
                workdir=spec.workdir or loop_dir,
            )
            job.status = "submitting"
            save_state(loop_dir, state)
            job_id = sched.submit(req)
            job.status, job.scheduler_id, job.submitted_at = "submitted", job_id, now_utc()
            save_state(loop_dir, state)
            log.info(
                "job.submitted",
                step=job.step,
                iteration=job.iteration,
                job_id=job_id,
                job_key=job.key,
                after=list(req.after),
                name=job.name,
            )
            result.submitted.append(job.key)
            emit(
                f"submitted {job.key} as {spec.scheduler} job {job_id}"
                + (f" after {','.join(req.after)}" if req.after else "")
            )
        log.info(
            "loop.submitted",
            iterations=n_iter,
            jobs=len(state.jobs),
            new_jobs=len(result.submitted),
            recovered_jobs=len(result.recovered),
            config=str(spec.path),
        )
        if not result.submitted and not result.recovered:
            emit(f"loop {spec.loop_id}: all {len(state.jobs)} job(s) already submitted; nothing new")
        return result
