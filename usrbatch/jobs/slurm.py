"""Slurm: sbatch --parsable --dependency=afterok --kill-on-invalid-dep=yes, `squeue --me` (one call per
poll), `sacct -j IDS` (only for jobs that ended and are not yet known), scancel."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from usrbatch.jobs.scheduler import (
    CANCELLED,
    COMPLETED,
    FAILED,
    HELD,
    PENDING,
    RUNNING,
    TERMINAL_STATES,
    UNKNOWN,
    FailedJob,
    JobInfo,
    SubmitRequest,
    env_assignments,
    run_command,
    submitted_id,
)

_STATES = {
    "PENDING": PENDING,
    "CONFIGURING": RUNNING,
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "SUSPENDED": HELD,
    "REQUEUED": PENDING,
    "REQUEUE_HOLD": HELD,
    "RESV_DEL_HOLD": HELD,
    "COMPLETED": COMPLETED,
    "FAILED": FAILED,
    "TIMEOUT": FAILED,
    "NODE_FAIL": FAILED,
    "OUT_OF_MEMORY": FAILED,
    "BOOT_FAIL": FAILED,
    "DEADLINE": FAILED,
    "PREEMPTED": FAILED,
    "CANCELLED": CANCELLED,
}


_KILLED_BY = {"TIMEOUT": "walltime", "NODE_FAIL": "node_failure"}


def _killed_by(native: str) -> str:
    return _KILLED_BY.get(native.split()[0] if native else "", "")


def _state(native: str) -> str:
    return _STATES.get(native.split()[0] if native else "", UNKNOWN)


# An array job's state from its tasks': it runs while any task runs or waits, then it failed if any
# task failed (or was cancelled), else it completed.
_PRIORITY = {RUNNING: 6, PENDING: 5, HELD: 4, FAILED: 3, CANCELLED: 2, COMPLETED: 1, UNKNOWN: 0}


def _base_id(job_id: str) -> str:
    """`123_4` / `123_[2-3]` (array tasks) -> `123`, the id the loop recorded."""
    return job_id.split("_", 1)[0]


def _merge(out: dict[str, JobInfo], info: JobInfo) -> None:
    seen = out.get(info.job_id)
    if seen is None or _PRIORITY.get(info.state, 0) > _PRIORITY.get(seen.state, 0):
        out[info.job_id] = info


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """Job id -> JobInfo from `squeue -h -t all -o '%i|%j|%T|%r'` (array tasks merged into their job)."""
    out: dict[str, JobInfo] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        job_id, _name, native, reason = _base_id(parts[0]), parts[1], parts[2], parts[3]
        state = _state(native)
        if state == PENDING and reason in ("JobHeldUser", "JobHeldAdmin"):
            state = HELD
        _merge(
            out,
            JobInfo(
                job_id=job_id,
                state=state,
                native_state=native,
                reason="" if reason == "None" else reason,
                killed_by=_killed_by(native),
            ),
        )
    return out


def parse_sacct(text: str) -> dict[str, JobInfo]:
    """Job id -> JobInfo from `sacct -P -n -o JobID,JobName,State,ExitCode` (job steps ignored, array
    tasks merged into their job)."""
    out: dict[str, JobInfo] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0] or "." in parts[0]:
            continue
        job_id, _name, native, exit_field = parts[:4]
        code_text = exit_field.split(":")[0]
        code = int(code_text) if code_text.isdigit() else None
        info = JobInfo(_base_id(job_id), _state(native), native, code, killed_by=_killed_by(native))
        _merge(out, info)
    return out


class SlurmScheduler:
    """Slurm through sbatch/squeue/sacct/scancel on PATH."""

    name = "slurm"
    task_log_token = "%a"  # sbatch puts the array task id there
    fail_exit = 1  # afterok dependents of a failed job are cancelled (--kill-on-invalid-dep=yes)

    def __init__(self) -> None:
        self._sacct_flags: list[str] | None = None
        self._finished: dict[str, JobInfo] = {}  # ended jobs with their exit codes: never asked again

    def submit_command(self, req: SubmitRequest) -> list[str]:
        argv = ["sbatch", "--parsable", "-J", req.name, "-o", str(req.log), "--kill-on-invalid-dep=yes"]
        if req.workdir is not None:
            argv += ["--chdir", str(req.workdir)]
        if req.array > 1:
            argv.append(f"--array=1-{req.array}")
        if req.after:
            argv.append("--dependency=afterok:" + ":".join(req.after))
        export = ["ALL", *env_assignments(req.env, "sbatch --export")]
        argv += ["--export=" + ",".join(export), str(req.script)]
        return argv

    def submit(self, req: SubmitRequest) -> str:
        return submitted_id(run_command(self.submit_command(req)), ";")

    def _sacct(self, ids: list[str]) -> dict[str, JobInfo]:
        # Without an accounting database plain sacct fails; `-c` reads the jobcomp file instead.
        tail = ["-P", "-n", "-o", "JobID,JobName,State,ExitCode", "-j", ",".join(ids)]
        flags = [self._sacct_flags] if self._sacct_flags is not None else [[], ["-c"]]
        for extra in flags:
            proc = run_command(["sacct", *extra, *tail], check=False)
            if proc.returncode == 0:
                self._sacct_flags = extra
                return parse_sacct(proc.stdout)
        return {}

    def status(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        """One `squeue --me` for every id (this user's jobs only); `sacct -j` by id, once, for the
        jobs that ended (for their exit codes) or that squeue no longer lists."""
        wanted = [str(i) for i in ids]
        if not wanted:
            return {}
        need = [i for i in wanted if i not in self._finished]
        live: dict[str, JobInfo] = {}
        if need:
            proc = run_command(["squeue", "--me", "-h", "-t", "all", "-o", "%i|%j|%T|%r"])
            live = parse_squeue(proc.stdout)
        ended = [i for i in need if i not in live or live[i].state not in (PENDING, HELD, RUNNING)]
        acct = self._sacct(ended) if ended else {}
        out: dict[str, JobInfo] = {}
        for i in wanted:
            if i in self._finished:
                out[i] = self._finished[i]
                continue
            q, a = live.get(i), acct.get(i)
            if q and a:
                out[i] = JobInfo(
                    i, q.state, q.native_state, a.exit_code, q.reason, q.killed_by or a.killed_by
                )
            else:
                out[i] = q or a or JobInfo(job_id=i, state=UNKNOWN, native_state="not in squeue/sacct")
            if out[i].state in TERMINAL_STATES and a is not None:
                self._finished[i] = out[i]
        return out

    def cancel(self, ids: Sequence[str]) -> None:
        if ids:
            run_command(["scancel", *[str(i) for i in ids]], check=False)

    def find_by_name(self, name: str, script: Path) -> list[str]:
        proc = run_command(["squeue", "--me", "-h", "-t", "all", "-n", name, "-o", "%i|%o"], check=False)
        wanted = str(Path(script).absolute())
        found = set()
        for line in proc.stdout.splitlines():
            job_id, _, command = line.strip().partition("|")
            if job_id and command.strip() == wanted:
                found.add(job_id)
        return sorted(found, key=lambda s: int(s) if s.isdigit() else 0)

    def failure_hint(self, failed: FailedJob) -> str:
        return (
            f"{failed.key} (Slurm job {failed.job_id}) failed with exit {failed.exit_code}; Slurm cancelled "
            f"its afterok dependents. Fix the cause, then `{failed.resume}`."
        )
