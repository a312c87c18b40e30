"""The embedded scheduler: rendered job scripts run as detached processes, in dependency order.

Each submitted job gets a directory `<workdir>/<id>/` and a small supervisor process
(`python -m usrbatch.jobs.local <job dir>`, its own session, so it outlives the submitter). The
supervisor waits until every predecessor has a recorded result; if one failed or was cancelled the
job is marked cancelled and never runs (the same contract as Slurm `afterok`), else it runs
`bash script` with the log as stdout+stderr and records the exit code. All state is files:

  meta.json      name, script, log, after, env, submitted_at (written once, before the supervisor starts)
  supervisor.pid the supervisor's pid
  state          waiting | running (written by the supervisor)
  child.pid      the job's processes, one per array task (each a process-group leader)
  cancel         present when a cancel was asked for
  result.json    {"state": completed|failed|cancelled, "exit_code": int|null, "reason": str} (final)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from usrbatch.errors import JobError
from usrbatch.files import atomic_write_text
from usrbatch.jobs.scheduler import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    UNKNOWN,
    FailedJob,
    JobInfo,
    SubmitRequest,
)

POLL_S = 0.1


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _alive(pid_file: Path, job_dir: Path) -> bool:
    """True while the process in pid_file runs and is this job's supervisor."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return False
    return str(job_dir).encode() in cmdline


class LocalScheduler:
    """Jobs as detached processes under `workdir`; ids are small integers, unique per workdir."""

    name = "local"
    fail_exit = 1  # the supervisor cancels dependents of a failed job (like Slurm afterok)
    task_log_token = "{shard}"  # an array job's tasks are N processes, each with its own log

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)

    def _next_id(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            counter = self.workdir / "last_id"
            last = int(counter.read_text()) if counter.exists() else 0
            atomic_write_text(counter, str(last + 1))
            return str(last + 1)

    def submit_command(self, req: SubmitRequest) -> list[str]:
        # What the supervisor will run; shown by --dry-run (there is no separate submit client).
        argv = ["bash", str(req.script), f">{req.log}", "2>&1"]
        if req.after:
            argv += ["# after local jobs", ",".join(req.after)]
        return argv

    def submit(self, req: SubmitRequest) -> str:
        for pred in req.after:
            if not (self.workdir / pred / "meta.json").exists():
                raise JobError(f"local scheduler: unknown predecessor job id '{pred}' in {self.workdir}")
        job_id = self._next_id()
        job_dir = self.workdir / job_id
        job_dir.mkdir()
        meta = {
            "id": job_id,
            "name": req.name,
            "script": str(req.script),
            "log": str(req.log),
            "after": list(req.after),
            "env": dict(req.env),
            "workdir": str(req.workdir) if req.workdir else None,
            "array": req.array,
            "submitted_at": _dt.datetime.now(_dt.UTC).isoformat(),
        }
        atomic_write_text(job_dir / "meta.json", json.dumps(meta, indent=1))
        with open(job_dir / "supervisor.log", "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "usrbatch.jobs.local", str(job_dir)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        atomic_write_text(job_dir / "supervisor.pid", str(proc.pid))
        return job_id

    def info(self, job_id: str) -> JobInfo:
        job_dir = self.workdir / str(job_id)
        if not (job_dir / "meta.json").exists():
            return JobInfo(job_id=str(job_id), state=UNKNOWN, native_state="no such local job")
        result = _read_json(job_dir / "result.json")
        if result is not None:
            return JobInfo(
                job_id=str(job_id),
                state=result["state"],
                native_state=result["state"],
                exit_code=result.get("exit_code"),
                reason=result.get("reason", ""),
            )
        if not (job_dir / "supervisor.pid").exists():
            return JobInfo(job_id=str(job_id), state=PENDING, native_state="starting")
        if not _alive(job_dir / "supervisor.pid", job_dir):
            # Re-read: the supervisor may have written its result just before exiting.
            if (job_dir / "result.json").exists():
                return self.info(job_id)
            return JobInfo(job_id=str(job_id), state=FAILED, native_state="lost", reason="supervisor is gone")
        native = (job_dir / "state").read_text().strip() if (job_dir / "state").exists() else "waiting"
        return JobInfo(
            job_id=str(job_id), state=RUNNING if native == "running" else PENDING, native_state=native
        )

    def status(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        return {str(i): self.info(str(i)) for i in ids}

    def cancel(self, ids: Sequence[str]) -> None:
        for job_id in ids:
            job_dir = self.workdir / str(job_id)
            if not (job_dir / "meta.json").exists() or (job_dir / "result.json").exists():
                continue
            (job_dir / "cancel").touch()
            if (job_dir / "supervisor.pid").exists() and not _alive(job_dir / "supervisor.pid", job_dir):
                _finish(job_dir, CANCELLED, None, "cancelled")

    def find_by_name(self, name: str, script: Path) -> list[str]:
        found = []
        wanted = str(script)
        if self.workdir.exists():
            for meta_path in self.workdir.glob("*/meta.json"):
                meta = _read_json(meta_path)
                if meta and meta.get("name") == name and meta.get("script") == wanted:
                    found.append(meta["id"])
        return sorted(found, key=int)

    def failure_hint(self, failed: FailedJob) -> str:
        return (
            f"{failed.key} (job {failed.job_id}) failed with exit {failed.exit_code}; its dependents were "
            f"cancelled and never ran. Fix the cause (see `usrbatch logs {failed.loop_id} {failed.step}`), "
            f"then `{failed.resume}`."
        )

    def wait(self, ids: Sequence[str], timeout: float) -> dict[str, JobInfo]:
        """Block until every job has a result (or `timeout` seconds pass); return the last states."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.status(ids)
            if all(s.state in (COMPLETED, FAILED, CANCELLED) for s in states.values()):
                return states
            if time.monotonic() > deadline:
                return states
            time.sleep(POLL_S)


def _finish(job_dir: Path, state: str, exit_code: int | None, reason: str) -> None:
    if (job_dir / "result.json").exists():
        return
    atomic_write_text(
        job_dir / "result.json",
        json.dumps({"state": state, "exit_code": exit_code, "reason": reason}),
    )


def _predecessor_verdict(workdir: Path, after: list[str]) -> tuple[str, str]:
    """("run", "") when all predecessors completed, ("wait", "") or ("cancel", why)."""
    for pred in after:
        info = LocalScheduler(workdir).info(pred)
        if info.state in (FAILED, CANCELLED, UNKNOWN):
            code = f" (exit {info.exit_code})" if info.exit_code is not None else ""
            return "cancel", f"predecessor {pred} {info.state}{code}"
        if info.state != COMPLETED:
            return "wait", ""
    return "run", ""


def supervise(job_dir: Path) -> int:
    """Wait for predecessors, run the script, record the result. Returns the job's exit code."""
    meta = json.loads((job_dir / "meta.json").read_text())
    workdir = job_dir.parent
    atomic_write_text(job_dir / "state", "waiting")
    while True:
        if (job_dir / "cancel").exists():
            _finish(job_dir, CANCELLED, None, "cancelled before start")
            return 1
        verdict, why = _predecessor_verdict(workdir, meta["after"])
        if verdict == "cancel":
            _finish(job_dir, CANCELLED, None, why)
            return 1
        if verdict == "run":
            break
        time.sleep(POLL_S)
    tasks = int(meta.get("array") or 1)
    procs: list[subprocess.Popen] = []
    for task in range(1, tasks + 1):
        env = dict(os.environ)
        env.update(meta["env"])
        env["USRBATCH_LOCAL_JOB_ID"] = meta["id"]
        if tasks > 1:
            env["USRBATCH_LOCAL_TASK_ID"] = str(task)
        log_path = Path(meta["log"].replace("{shard}", str(task)))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            procs.append(
                subprocess.Popen(
                    ["/bin/bash", meta["script"]],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=meta.get("workdir") or str(job_dir),
                    env=env,
                    start_new_session=True,
                )
            )
    atomic_write_text(job_dir / "child.pid", "\n".join(str(p.pid) for p in procs))
    atomic_write_text(job_dir / "state", "running")
    cancelled = False
    while any(p.poll() is None for p in procs):
        if not cancelled and (job_dir / "cancel").exists():
            cancelled = True
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(POLL_S)
    codes = [p.returncode if p.returncode >= 0 else 128 - p.returncode for p in procs]
    code = next((c for c in codes if c != 0), 0)  # an array fails when any task fails
    if cancelled:
        _finish(job_dir, CANCELLED, code, "cancelled while running")
    else:
        failed = [str(i) for i, c in enumerate(codes, 1) if c != 0]
        reason = "" if code == 0 else f"exit {code}" + (f" (tasks {','.join(failed)})" if tasks > 1 else "")
        _finish(job_dir, COMPLETED if code == 0 else FAILED, code, reason)
    return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m usrbatch.jobs.local JOB_DIR (started by LocalScheduler.submit)", file=sys.stderr
        )
        return 2
    return supervise(Path(args[0]).absolute())


if __name__ == "__main__":
    sys.exit(main())
