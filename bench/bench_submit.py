"""B7 (issue 12 point 7): `usrbatch submit-loop` of 10 iterations x 4 steps on SGE and Slurm.

Whole processes, as a user types them: `usrbatch submit-loop SPEC` (start-up included), the median
of --runs fresh loops per scheduler; then `usrbatch status LOOP` once with a PATH shim in front of
the scheduler commands that logs every call (target: exactly one scheduler call per status).
Each loop's first job sleeps, so the other 39 wait on their dependencies and nothing runs a real
step; every job submitted is cancelled at the end (`usrbatch cancel`, then qdel/scancel of anything
left) and the queue is checked empty of this run's jobs.

    uv run python bench/bench_submit.py [--runs 3] [--only sge,slurm] [--sge-project usrbatch]

Prints one markdown row per scheduler for docs/benchmarks.md §6 (B7).
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ITERATIONS, STEPS = 10, 4
TARGET_S = 5.0
SCHED_COMMANDS = ("qsub", "qstat", "qacct", "qdel", "qalter", "qrls", "sbatch", "squeue", "sacct", "scancel")
USRBATCH = [sys.executable, "-m", "usrbatch.cli.usrbatch_main"]


def write_spec(work: Path, scheduler: str, name: str, project: str | None) -> Path:
    steps = [{"kind": "shell", "name": "s1", "command": "sleep 900"}]
    steps += [{"kind": "shell", "name": f"s{i}", "command": "true"} for i in range(2, STEPS + 1)]
    data: dict = {"name": name, "dataset": "bench/b7", "root": str(work / "root"), "scheduler": scheduler}
    data |= {"iterations": ITERATIONS, "resources": {"time": "00:20:00"}, "steps": steps}
    if scheduler == "sge" and project:
        data["project"] = project
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_shims(shim_dir: Path, log: Path) -> None:
    """One script per scheduler command: log `name args` to `log`, then run the real command."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    for cmd in SCHED_COMMANDS:
        real = shutil.which(cmd)
        if real is None:
            continue
        shim = shim_dir / cmd
        shim.write_text(f'#!/bin/sh\necho "{cmd} $*" >> "{log}"\nexec "{real}" "$@"\n')
        shim.chmod(0o755)


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    return time.perf_counter() - t0, proc


def our_ids(scheduler: str, loop_dirs: list[Path]) -> set[str]:
    from usrbatch.jobs.loop import load_state

    ids: set[str] = set()
    for loop_dir in loop_dirs:
        state = load_state(loop_dir)
        if state:
            ids |= {j.scheduler_id for j in state.jobs if j.scheduler_id}
    return ids


def queued_ids(scheduler: str) -> set[str]:
    """This user's jobs the scheduler still holds."""
    user = os.environ.get("USER") or getpass.getuser()  # $USER may be unset (a job, cron, this sandbox)
    if scheduler == "sge":
        out = subprocess.run(["qstat", "-u", user], capture_output=True, text=True).stdout
        return {line.split()[0] for line in out.splitlines()[2:] if line.split()}
    out = subprocess.run(["squeue", "--me", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def cancel_all(scheduler: str, work: Path, loop_dirs: list[Path]) -> int:
    """`usrbatch cancel` every loop, then qdel/scancel any of their ids still queued; returns how
    many of this run's jobs were left in the queue afterwards (0 expected)."""
    for loop_dir in loop_dirs:
        run([*USRBATCH, "cancel", str(loop_dir)])
    mine = our_ids(scheduler, loop_dirs)
    for _ in range(20):
        left = mine & queued_ids(scheduler)
        if not left:
            return 0
        kill = ["qdel", *sorted(left)] if scheduler == "sge" else ["scancel", *sorted(left)]
        subprocess.run(kill, capture_output=True)
        time.sleep(1)
    return len(mine & queued_ids(scheduler))


def bench(scheduler: str, runs: int, project: str | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"b7-{scheduler}-"))
    (work / "root").mkdir()
    loop_dirs: list[Path] = []
    times: list[float] = []
    try:
        for i in range(runs):
            name = f"b7-{scheduler}-{os.getpid()}-{i}"
            spec = write_spec(work, scheduler, name, project)
            loop_dirs.append(work / "root" / ".usrbatch" / "loops" / name)
            seconds, proc = run([*USRBATCH, "submit-loop", str(spec)])
            if proc.returncode != 0:
                raise SystemExit(f"{scheduler}: submit-loop failed ({proc.returncode}): {proc.stderr}")
            submitted = proc.stdout.count("submitted i")
            if submitted != ITERATIONS * STEPS:
                raise SystemExit(f"{scheduler}: {submitted} jobs submitted, expected {ITERATIONS * STEPS}")
            times.append(seconds)
            print(f"{scheduler} run {i + 1}: submit-loop {ITERATIONS}x{STEPS} = {seconds:.2f} s", flush=True)
        log = work / "calls.log"
        make_shims(work / "shims", log)
        env = dict(os.environ, PATH=f"{work / 'shims'}:{os.environ['PATH']}")
        status_s, proc = run([*USRBATCH, "status", str(loop_dirs[-1])], env=env)
        calls = log.read_text().splitlines() if log.exists() else []
        print(f"{scheduler}: status {status_s:.2f} s (exit {proc.returncode}), scheduler calls: {calls}")
    finally:
        left = cancel_all(scheduler, work, loop_dirs)
        print(f"{scheduler}: cancelled; jobs of this run still queued: {left}", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "scheduler": scheduler,
        "median": statistics.median(times),
        "times": times,
        "status_s": status_s,
        "calls": calls,
        "left": left,
    }


def row(r: dict, runs: int) -> str:
    met = "yes" if r["median"] < TARGET_S and len(r["calls"]) == 1 else "**no**"
    runs_text = ", ".join(f"{t:.2f}" for t in r["times"])
    calls = "; ".join(f"`{c}`" for c in r["calls"]) or "none"
    return (
        f"| B7 | `usrbatch submit-loop` {ITERATIONS} iterations × {STEPS} steps on {r['scheduler'].upper()} "
        f"(`bench/bench_submit.py --runs {runs}`) | local | {r['median']:.2f} s median ({runs_text}); "
        f"`status` {r['status_s']:.2f} s, {len(r['calls'])} scheduler call(s): {calls} | — | — | — | "
        f"< {TARGET_S:.0f} s; `status` = 1 scheduler call | {met} | — |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="sge,slurm")
    ap.add_argument("--sge-project", default="usrbatch", help="SGE project (-P) the test cluster requires.")
    args = ap.parse_args()
    results = [bench(s, args.runs, args.sge_project) for s in args.only.split(",") if s]
    print()
    for r in results:
        print(row(r, args.runs))
    if any(r["left"] for r in results):
        raise SystemExit("some submitted jobs are still queued")


if __name__ == "__main__":
    main()
