"""Son of Grid Engine: qsub -terse -hold_jid, `qstat -u $USER -xml` (one call per poll), `qacct -j ID`
(once per finished job, then remembered), qdel."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from usrbatch.jobs.scheduler import (
    COMPLETED,
    ERROR_HELD,
    FAILED,
    HELD,
    PENDING,
    RUNNING,
    TERMINAL_STATES,
    UNKNOWN,
    FailedJob,
    JobInfo,
    SubmitRequest,
    current_user,
    env_assignments,
    run_command,
    submitted_id,
)


def _native_to_state(native: str) -> str:
    if "E" in native:
        return ERROR_HELD  # Eqw: failed (exit 100) and holds its dependents
    if "h" in native:
        return HELD
    if native.startswith(("r", "t", "R", "s", "S", "T")) or "r" in native:
        return RUNNING
    if "d" in native:
        return RUNNING  # being deleted
    if "qw" in native:
        return PENDING
    return UNKNOWN


# An array job's state from its tasks': it runs while any task runs or waits to run, and is
# error-held (Eqw) once only failed tasks are left.
_PRIORITY = {RUNNING: 4, PENDING: 3, ERROR_HELD: 2, HELD: 1, UNKNOWN: 0}


def parse_qstat_xml(text: str) -> dict[str, JobInfo]:
    """Job id -> JobInfo from `qstat -u USER -xml` (both running and pending lists). An array job
    has one entry per running task and one for its pending tasks: the job runs while any task runs or
    waits, else it is error-held if any task is."""
    out: dict[str, JobInfo] = {}
    if not text.strip():
        return out
    root = ET.fromstring(text)
    for job in root.iter("job_list"):
        number = (job.findtext("JB_job_number") or "").strip()
        native = (job.findtext("state") or "").strip()
        if not number:
            continue
        info = JobInfo(job_id=number, state=_native_to_state(native), native_state=native)
        seen = out.get(number)
        if seen is None or _PRIORITY.get(info.state, 0) > _PRIORITY.get(seen.state, 0):
            out[number] = info
    return out


def parse_script_files(text: str) -> dict[str, str]:
    """Job id -> submitted script path from `qstat -j ID[,ID...] -xml`."""
    out: dict[str, str] = {}
    if not text.strip():
        return out
    for job in ET.fromstring(text).iter("element"):
        number = (job.findtext("JB_job_number") or "").strip()
        script = (job.findtext("JB_script_file") or "").strip()
        if number and script:
            out[number] = script
    return out


def parse_qstat_names(text: str) -> dict[str, list[str]]:
    """Job name -> ids from `qstat -u USER -xml`."""
    names: dict[str, list[str]] = {}
    if not text.strip():
        return names
    for job in ET.fromstring(text).iter("job_list"):
        names.setdefault((job.findtext("JB_name") or "").strip(), []).append(
            (job.findtext("JB_job_number") or "").strip()
        )
    return names


def parse_qacct(text: str) -> dict[str, JobInfo]:
    """Job id -> JobInfo from `qacct -j ID` output; with requeues, a task's last record wins. An
    array job (records with a `taskid`) failed if any task failed (its exit code is that task's)."""
    tasks: dict[tuple[str, str], JobInfo] = {}
    record: dict[str, str] = {}

    def flush() -> None:
        number = record.get("jobnumber")
        if not number:
            return
        try:
            code = int(record.get("exit_status", "").split()[0])
        except (ValueError, IndexError):
            code = None
        failed = record.get("failed", "0").split()[0] if record.get("failed") else "0"
        ok = code == 0 and failed == "0"
        # failed 37: "qmaster enforced h_rt, h_cpu, or h_vmem limit" (h_rt: the walltime kill).
        killed_by = "walltime" if failed == "37" and "h_rt" in record.get("failed", "") else ""
        tasks[(number, record.get("taskid", "undefined"))] = JobInfo(
            job_id=number,
            state=COMPLETED if ok else FAILED,
            native_state=f"exit_status={code} failed={record.get('failed', '0')}",
            exit_code=code,
            killed_by=killed_by,
        )

    for line in text.splitlines():
        if line.startswith("====="):
            flush()
            record = {}
            continue
        key, _, value = line.partition(" ")
        if key:
            record[key] = value.strip()
    flush()
    out: dict[str, JobInfo] = {}
    for (number, _task), info in tasks.items():
        seen = out.get(number)
        if seen is None or (seen.state == COMPLETED and info.state == FAILED):
            out[number] = info
    return out


class SgeScheduler:
    """SGE through its command-line clients (qsub/qstat/qacct/qdel on PATH).

    A status poll is one `qstat -u $USER -xml` (this user's jobs only, never `-u '*'`); a job no
    longer in qstat is looked up with `qacct -j ID` (by id only: never a pattern that scans the
    whole cluster's accounting for many jobs), and a finished job's record is kept, so each job
    costs one qacct call in its life."""

    name = "sge"
    # A job script exiting 100 puts the job in Eqw: its -hold_jid dependents stay held (SGE
    # releases them on any other exit code).
    fail_exit = 100
    task_log_token = "$TASK_ID"  # qsub expands it in -o for each task of an array job

    def __init__(self) -> None:
        self._finished: dict[str, JobInfo] = {}

    def submit_command(self, req: SubmitRequest) -> list[str]:
        argv = ["qsub", "-terse", "-S", "/bin/bash", "-N", req.name, "-j", "y", "-o", str(req.log)]
        if req.workdir is not None:
            argv += ["-wd", str(req.workdir)]
        if req.array > 1:
            argv += ["-t", f"1-{req.array}"]
        if req.after:
            argv += ["-hold_jid", ",".join(req.after)]
        if req.env:
            argv += ["-v", ",".join(env_assignments(req.env, "qsub -v"))]
        argv.append(str(req.script))
        return argv

    def submit(self, req: SubmitRequest) -> str:
        return submitted_id(run_command(self.submit_command(req)), ".")

    def _qstat(self) -> str:
        return run_command(["qstat", "-u", current_user(), "-xml"]).stdout

    def status(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        wanted = [str(i) for i in ids]
        if not wanted:
            return {}
        pending = [i for i in wanted if i not in self._finished]
        live = parse_qstat_xml(self._qstat()) if pending else {}
        out = {i: live[i] for i in wanted if i in live}
        for i in wanted:
            if i in out:
                continue
            if i not in self._finished:
                info = self._accounting(i)
                if info is None:
                    out[i] = JobInfo(job_id=i, state=UNKNOWN, native_state="not in qstat/qacct")
                    continue
                self._finished[i] = info
            out[i] = self._finished[i]
        return out

    def _accounting(self, job_id: str) -> JobInfo | None:
        proc = run_command(["qacct", "-j", job_id], check=False)
        info = parse_qacct(proc.stdout).get(job_id) if proc.returncode == 0 else None
        return info if info is not None and info.state in TERMINAL_STATES else None

    def cancel(self, ids: Sequence[str]) -> None:
        if ids:
            run_command(["qdel", *[str(i) for i in ids]], check=False)

    def find_by_name(self, name: str, script: Path) -> list[str]:
        candidates = parse_qstat_names(self._qstat()).get(name, [])
        if not candidates:
            return []
        detail = run_command(["qstat", "-j", ",".join(candidates), "-xml"], check=False).stdout
        wanted = str(Path(script).absolute())
        return sorted((i for i, f in parse_script_files(detail).items() if f == wanted), key=int)

    def failure_hint(self, failed: FailedJob) -> str:
        if failed.error_held:
            return (
                f"{failed.key} (SGE job {failed.job_id}) failed with exit {failed.exit_code} and is in Eqw, "
                f"so its dependents stay held (hqw). Fix the cause, then either `qmod -cj {failed.job_id}` "
                f"to run it again (the chain continues), or `usrbatch cancel {failed.loop_id}` to delete "
                f"the chain (then `{failed.resume}` resubmits from the failed job)."
            )
        return (
            f"{failed.key} (SGE job {failed.job_id}) failed with exit {failed.exit_code}; its dependents "
            f"refuse to run. Fix the cause (see `usrbatch logs {failed.loop_id} {failed.step}`), then "
            f"`usrbatch cancel {failed.loop_id}` and `{failed.resume}`."
        )
