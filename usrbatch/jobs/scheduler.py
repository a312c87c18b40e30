"""The Scheduler protocol: submit a script after other jobs, read many jobs' states in one call, cancel.

Each scheduler (sge.py, slurm.py, local.py) is a small sibling that fills in these methods; the
loop controller and `usrbatch status` never know which one they talk to.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from usrbatch.errors import JobError

SCHEDULERS = ("local", "sge", "slurm")

# Normalized job states. "error-held" is SGE's Eqw: the job failed and holds its dependents.
PENDING = "pending"
HELD = "held"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
ERROR_HELD = "error-held"
UNKNOWN = "unknown"
TERMINAL_STATES = frozenset({COMPLETED, FAILED, CANCELLED})
ALIVE_STATES = frozenset({PENDING, HELD, RUNNING, ERROR_HELD})


@dataclass(frozen=True)
class SubmitRequest:
    """One job to submit: the rendered script and how the scheduler should run it."""

    script: Path
    name: str
    log: Path
    after: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    array: int = 1  # > 1: an array job of tasks 1..array (its log path holds the task token)


@dataclass(frozen=True)
class JobInfo:
    """What the scheduler says about one job id."""

    job_id: str
    state: str  # one of the normalized states above
    native_state: str = ""  # the scheduler's own word (Eqw, hqw, PENDING, CANCELLED, ...)
    exit_code: int | None = None
    reason: str = ""
    killed_by: str = ""  # "walltime" (SGE h_rt enforced, Slurm TIMEOUT) | "node_failure" | ""


class Scheduler(Protocol):
    """A batch scheduler as the loop controller sees it.

    Scheduler knowledge lives in the implementing module, not in its callers: `fail_exit` (the exit
    code a failed job script ends with so its dependents stay held or are cancelled) and
    `failure_hint` (what the user does about a failed job on this scheduler)."""

    name: str
    fail_exit: int
    task_log_token: str

    def submit_command(self, req: SubmitRequest) -> list[str]:
        """The argv that submits `req` (printed by --dry-run; ids in `after` may be placeholders)."""
        ...

    def submit(self, req: SubmitRequest) -> str:
        """Submit; return the job id. Raises JobError with the scheduler's message on refusal."""
        ...

    def status(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        """States of many jobs, asking the scheduler once (not once per id)."""
        ...

    def cancel(self, ids: Sequence[str]) -> None:
        """Cancel these jobs (unknown or finished ids are ignored)."""
        ...

    def find_by_name(self, name: str, script: Path) -> list[str]:
        """Ids of queued or running jobs with exactly this name submitted from this script file
        (to recover a submit whose id was never recorded). The script path tells two loops with
        the same name apart; jobs that already ended are found through the loop's audit log."""
        ...

    def failure_hint(self, failed: FailedJob) -> str:
        """One sentence: what happened to `failed`'s dependents on this scheduler and what to do."""
        ...


@dataclass(frozen=True)
class FailedJob:
    """A job that did not succeed, as `failure_hint` explains it."""

    key: str
    step: str
    job_id: str | None
    exit_code: int | None
    loop_id: str
    resume: str  # the submit-loop --resume command line
    error_held: bool = False  # SGE Eqw: the job itself is held, with its dependents


def current_user() -> str:
    """The submitting user: status queries ask only for this user's jobs."""
    import getpass

    return os.environ.get("USER") or getpass.getuser()


def run_command(argv: list[str], *, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    """Run a scheduler client command; a missing binary or a refusal becomes a JobError."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
        )
    except FileNotFoundError as exc:
        raise JobError(
            f"scheduler command '{argv[0]}' not found on PATH",
            hint="Run on a host with the scheduler client installed, or use `scheduler: local`.",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise JobError(f"scheduler command timed out after {timeout:.0f}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise JobError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {detail}")
    return proc


def env_assignments(env: Mapping[str, str], option: str) -> list[str]:
    """`KEY=value` items for a comma-separated env option (SGE `-v`, Slurm `--export`), which
    cannot carry a comma or newline inside a value: JobError naming the key instead."""
    for key, value in env.items():
        if "," in value or "\n" in value:
            raise JobError(f"{option} cannot pass env {key}={value!r} (comma or newline in the value)")
    return [f"{k}={v}" for k, v in env.items()]


def submitted_id(proc: subprocess.CompletedProcess, separator: str) -> str:
    """The job id at the start of a submit client's output (`123.task` / `123;cluster`)."""
    job_id = proc.stdout.strip().split(separator)[0]
    if not job_id.isdigit():
        raise JobError(f"{proc.args[0]} printed no job id: {proc.stdout.strip()!r} {proc.stderr.strip()}")
    return job_id


def scheduler_class(name: str) -> type:
    """The class implementing scheduler `name` (local|sge|slurm)."""
    if name == "sge":
        from usrbatch.jobs.sge import SgeScheduler

        return SgeScheduler
    if name == "slurm":
        from usrbatch.jobs.slurm import SlurmScheduler

        return SlurmScheduler
    if name == "local":
        from usrbatch.jobs.local import LocalScheduler

        return LocalScheduler
    raise JobError(f"unknown scheduler '{name}' (expected {', '.join(SCHEDULERS)})")


def fail_exit(name: str) -> int:
    """The exit code a failed job script ends with on scheduler `name` (see Scheduler.fail_exit)."""
    return int(scheduler_class(name).fail_exit)


def task_log_token(name: str) -> str:
    """What an array job's log path holds where the task number goes (SGE `$TASK_ID`, Slurm `%a`;
    the local scheduler formats `{shard}` itself)."""
    return str(scheduler_class(name).task_log_token)


def make_scheduler(name: str, *, loop_dir: Path) -> Scheduler:
    """The one factory: scheduler `name` with the loop's context (local keeps its jobs under
    `<loop_dir>/local`; SGE and Slurm need none: they ask only for this user's jobs, by id)."""
    cls = scheduler_class(name)
    if name == "local":
        return cls(loop_dir / "local")
    return cls()
