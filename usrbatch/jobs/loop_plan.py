"""The job plan: `plan_jobs` turns a loop spec into a chain of jobs (iteration i's first jobs
after iteration i-1's last), each named `ub.<loop id>.<key>`.
"""

from __future__ import annotations

from usrbatch.jobs.loop_spec import LoopSpec
from usrbatch.jobs.loop_state import JobRecord


def job_key(iteration: int, index: int, step: str) -> str:
    return f"i{iteration:03d}-{index + 1:02d}-{step}"


def job_name(loop_id: str, key: str) -> str:
    """The scheduler job name: `ub.<loop id>.<key>` (letters, digits, _ . - only)."""
    return f"ub.{loop_id}.{key}"


def plan_jobs(spec: LoopSpec, iterations: int) -> list[JobRecord]:
    """Every job of `iterations` iterations. A step waits for the steps named in its `after:`, else
    for the step before it; an iteration's first steps wait for every job of the previous iteration
    that no other job of it waits for (its last steps)."""
    jobs: list[JobRecord] = []
    previous_tails: list[str] = []
    for it in range(1, iterations + 1):
        keys: dict[str, str] = {}
        waited_on: set[str] = set()
        this: list[JobRecord] = []
        for index, step in enumerate(spec.steps):
            key = job_key(it, index, step.name)
            if step.after:
                after = [keys[name] for name in step.after]
            elif index > 0:
                after = [this[-1].key]
            else:
                after = list(previous_tails)
            waited_on.update(k for k in after if k in keys.values())
            keys[step.name] = key
            this.append(
                JobRecord(
                    key=key,
                    step=step.name,
                    kind=step.kind,
                    iteration=it,
                    index=index,
                    name=job_name(spec.loop_id, key),
                    after=after,
                    shards=step.shards,
                )
            )
        previous_tails = [j.key for j in this if j.key not in waited_on]
        jobs += this
    return jobs
