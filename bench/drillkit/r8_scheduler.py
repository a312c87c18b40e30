"""R8 scheduler faults on the real SGE and Slurm: a loop `work (shell) -> sync push` of the `ahead`
dataset to a `local` remote, with one fault per run.

job-killed     the sync job is qdel'ed/scancel'ed a random 0-1.5 s after it recorded job.started
controller     `usrbatch submit-loop` is SIGKILLed a random 0-2 s into submitting
transient      qsub/sbatch fail once (a PATH shim that exits 1 on its first call, then runs the
               real client)
Recovery: `usrbatch submit-loop` again (with --resume after a failed job), at most 3 times, each
followed by a wait for the loop. Converged: the loop completes, every job's work ran exactly once
per completed submission (no duplicates: the shell step appends its key to a file), and the local
dataset and the remote copy are identical (`usr diff` up-to-date, `usr validate` OK on both).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import datasets
from .verdict import Ledger, RunResult, judge
from .world import DS, World, load_services

NAME = "R8"
TITLE = "scheduler faults: job killed mid-sync, controller killed mid-submit, transient qsub/sbatch failure"
FAULTS = ("job-killed", "controller", "transient")
SCHEDULERS = ("sge", "slurm")
DEFAULT_RUNS = 12
CLIENT = {"sge": "qsub", "slurm": "sbatch"}
CANCEL = {"sge": "qdel", "slurm": "scancel"}
LOOP_TIMEOUT = 180


def available() -> dict[str, bool]:
    services, _proxy = load_services()
    return {"sge": services.sge_available(), "slurm": services.slurm_available()}


def _spec(w: World, run: Path, local: Path, scheduler: str, index: int) -> Path:
    spec = {
        "name": f"drill-r8-{index}",
        "dataset": DS,
        "root": str(local),
        "remote": "shared",
        "remotes_config": str(w.remotes),
        "scheduler": scheduler,
        "iterations": 1,
        "python": sys.executable,
        "resources": {"time": "00:05:00"},
        "steps": [
            {
                "kind": "shell",
                "name": "work",
                "command": 'echo "$USRBATCH_JOB_KEY" >> "$USRBATCH_LOOP_DIR/ran.txt"',
            },
            {"kind": "sync", "action": "push", "retries": 1, "retry_delay": 1},
        ],
    }
    if scheduler == "sge":
        spec["project"] = "usrbatch"
    path = run / "loop.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _shim(run: Path, scheduler: str) -> dict[str, str]:
    """PATH with a `qsub`/`sbatch` that fails its first call, then runs the real one."""
    real = shutil.which(CLIENT[scheduler])
    shim = run / "shim"
    shim.mkdir()
    script = shim / CLIENT[scheduler]
    script.write_text(
        "#!/bin/bash\n"
        f'if [ ! -e "{shim}/.failed-once" ]; then touch "{shim}/.failed-once"; '
        'echo "error: Unable to contact slurm controller / qmaster (drill)" >&2; exit 1; fi\n'
        f'exec {real} "$@"\n'
    )
    script.chmod(0o755)
    return {"PATH": f"{shim}:{os.environ.get('PATH', '')}"}


def _loop_dir(local: Path, index: int) -> Path:
    return local / ".usrbatch" / "loops" / f"drill-r8-{index}"


def _kill_sync_job(loop_dir: Path, scheduler: str, delay: float) -> str:
    """Cancel the sync job `delay` s after it started; what happened, in words."""
    from usrbatch.jobs.loop import load_state

    deadline = time.monotonic() + LOOP_TIMEOUT
    started = loop_dir / "jobs" / "i001-02-sync-push.started.json"
    while time.monotonic() < deadline and not started.exists():
        time.sleep(0.1)
    if not started.exists():
        return "the sync job never started"
    time.sleep(delay)
    job = load_state(loop_dir).job("i001-02-sync-push")
    subprocess.run([CANCEL[scheduler], str(job.scheduler_id)], capture_output=True, timeout=30)
    return f"cancelled job {job.scheduler_id} {delay:.2f}s after it started"


def _wait(loop_dir: Path) -> str:
    """The loop's state once settled; "not-submitted" at once when a job was never submitted
    (waiting cannot help: only a re-run of submit-loop can)."""
    from usrbatch.jobs.control import wait_loop
    from usrbatch.jobs.loop import load_state

    try:
        if any(job.status != "submitted" for job in load_state(loop_dir).jobs):
            return "not-submitted"
        return wait_loop(loop_dir, timeout=LOOP_TIMEOUT).state
    except Exception as exc:  # noqa: BLE001 - reported as the loop's state
        return f"wait failed: {exc}"


def _one(w: World, index: int, scheduler: str, fault: str, rng: random.Random) -> tuple[str, str, str]:
    local, remote = w.fresh(f"r8-{index}")
    run = local.parent
    datasets.place(w, "ahead", local)
    ledger = Ledger()
    ledger.add(local / DS)
    spec = _spec(w, run, local, scheduler, index)
    loop_dir = _loop_dir(local, index)
    problems: list[str] = []
    case = ""
    if fault == "controller":
        delay = rng.uniform(0, 2.0)
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "usrbatch"), "submit-loop", str(spec)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=w.child_env(),
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        case = f"submit-loop SIGKILLed after {delay:.2f}s (exit {proc.returncode})"
    elif fault == "transient":
        first = w.usrbatch("submit-loop", str(spec), env=_shim(run, scheduler))
        case = f"{CLIENT[scheduler]} fails once: first submit-loop {first.brief()[:120]}"
        if first.crash:
            problems.append("submit-loop crashed on the failing client")
    else:
        first = w.usrbatch("submit-loop", str(spec))
        if not first.ok:
            problems.append(f"submit-loop failed: {first.brief()}")
        case = _kill_sync_job(loop_dir, scheduler, rng.uniform(0, 1.5))
    t0 = time.monotonic()
    state = _wait(loop_dir) if loop_dir.exists() else "not started"
    case += f"; loop {state} after {time.monotonic() - t0:.0f}s"
    for _attempt in range(3):
        if state == "completed":
            break
        args = ["submit-loop", str(spec)] + (["--resume"] if state in ("failed", "cancelled") else [])
        again = w.usrbatch(*args)
        if again.crash:
            problems.append(f"`usrbatch {' '.join(args[:1] + args[2:])}` crashed")
            break
        t0 = time.monotonic()
        state = _wait(loop_dir)
        case += f"; re-submitted{' --resume' if '--resume' in args else ''}: loop {state} after {time.monotonic() - t0:.0f}s"
    if state != "completed":
        problems.append(f"the loop did not complete after 3 re-submits (state {state})")
    ran = (loop_dir / "ran.txt").read_text().split() if (loop_dir / "ran.txt").exists() else []
    if ran.count("i001-01-work") > 1 and fault != "job-killed":
        problems.append(f"the work step ran {ran.count('i001-01-work')} times (a duplicate submit)")
    outcome, detail = judge(w, ledger, local, remote, problems=problems, remote_name="shared")
    return case, outcome, detail


def run(w: World, seed: int, runs: int, only: int | None = None, repro: str = "") -> list[RunResult]:
    have = available()
    out = []
    for index in range(runs):
        if only is not None and index != only:
            continue
        scheduler = SCHEDULERS[index % 2]
        fault = FAULTS[(index // 2) % len(FAULTS)]
        label = f"{scheduler}: {fault}"
        if not have[scheduler]:
            out.append(RunResult(NAME, index, label, "failed", f"{scheduler} is not available here", repro))
            continue
        rng = random.Random(f"{seed}-{NAME}-{index}")
        try:
            case, outcome, detail = _one(w, index, scheduler, fault, rng)
        except Exception as exc:  # noqa: BLE001 - a harness crash is a failed run, reported
            case, outcome, detail = "", "failed", f"harness error: {exc!r}"
        finally:
            _cancel_leftovers(w, index)
        out.append(RunResult(NAME, index, f"{label}: {case}", outcome, detail, f"{repro} --case {index}"))
    return out


def _cancel_leftovers(w: World, index: int) -> None:
    from usrbatch.jobs.control import cancel_loop

    for loop_dir in (w.tmp / "runs").glob(f"*-r8-{index}/local/.usrbatch/loops/*"):
        with contextlib.suppress(Exception):  # best effort: nothing of ours stays queued
            cancel_loop(loop_dir)
