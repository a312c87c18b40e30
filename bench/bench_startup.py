"""Start-up of whole `usr` processes: this checkout against an earlier commit, alternating.

    uv run python bench/bench_startup.py [--before-rev d041487] [--runs 15] [--parts 2000] [--ssh]
        [--importtime]

Each case is the `usr` console script as a user types it, run `--runs` times for each side, the
sides alternating run by run (the order flips every run), so both see the same machine load.
"before" is the same interpreter and venv with `usrbatch/` of `--before-rev` (git archive into a
temp dir) first on PYTHONPATH. Reported per side: median and minimum wall time and the median CPU
time (user + sys of the process and its children, from the kernel's rusage), which is the steadier
number on a shared machine. `--importtime` adds, for this checkout, the top-level imports of one
`python -X importtime` run of each case (cumulative ms), which says what the time is spent on.

Cases: the floor (`python -c 'import click'`, the same on both sides), `--version`, `--help`,
`pull --help`, a no-op `pull` of a dataset of `--parts` overlay parts from a `local` remote, and
with `--ssh` the same no-op pull over a private sshd (tests/integration/services.py) with the
default OpenSSH transport and a live master.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import load_services, make_dataset_tree  # noqa: E402


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float


def run_once(argv: list[str], env: dict[str, str]) -> Sample:
    """One whole process: wall time and the CPU time of it and every child it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, cwd="/tmp")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace")[-3000:]
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{out}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(wall, cpu)


def summary(samples: list[Sample]) -> str:
    walls = [s.wall for s in samples]
    cpu = statistics.median(s.cpu for s in samples)
    return f"{statistics.median(walls):.3f} s / {min(walls):.3f} s, {cpu:.3f} s"


def importtime_top(argv: list[str], env: dict[str, str], limit_ms: float = 5.0) -> list[str]:
    """Top-level imports of one run (cumulative ms, largest first)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True, cwd="/tmp"
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _self, cumulative, name = line.split("|", 2)
        if name.startswith("  "):  # nested: counted in its top-level importer
            continue
        ms = int(cumulative) / 1000
        if ms >= limit_ms:
            rows.append((ms, name.strip()))
    return [f"{name} {ms:.0f}" for ms, name in sorted(rows, reverse=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before-rev", default="d041487", help="git revision of the 'before' side")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--parts", type=int, default=2000)
    ap.add_argument("--ssh", action="store_true", help="also a no-op pull over a private sshd (openssh)")
    ap.add_argument("--importtime", action="store_true", help="the -X importtime top of each case")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    sshd = None
    try:
        old = tmp / "before"
        old.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.before_rev, "usrbatch"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        # both sides from bytecode, as an installed package runs (PYTHONDONTWRITEBYTECODE=1 would
        # otherwise compile every usrbatch module in every process)
        for tree in (old / "usrbatch", REPO / "usrbatch"):
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], check=True)

        remote = tmp / "remote"
        make_dataset_tree(remote, parts=args.parts, part_bytes=8 * 1024, primary_bytes=1 << 20)
        local = tmp / "local"
        shutil.copytree(remote, local)  # the same bytes on both sides: every pull is a no-op
        cfg = tmp / "remotes.yaml"
        cfg.write_text(f"remotes:\n  lo:\n    type: local\n    base_dir: '{remote}'\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("USRBATCH_", "USR_"))}
        env["XDG_CACHE_HOME"] = str(tmp / "cache")
        env.pop("PYTHONPATH", None)
        usr = shutil.which("usr", path=str(Path(sys.executable).parent)) or "usr"
        pull = [usr, "--root", str(local), "--remotes-config", str(cfg), "pull", "bench/ds"]
        cases = [
            ("floor: python -c 'import click'", [sys.executable, "-c", "import click"]),
            ("usr --version", [usr, "--version"]),
            ("usr --help", [usr, "--help"]),
            ("usr pull --help", [usr, "pull", "--help"]),
            (f"no-op usr pull, local remote, {args.parts} parts", [*pull, "lo", "-y"]),
        ]
        if args.ssh:
            services = load_services()
            server, sshd = services.start_sshd(tmp / "sshd")
            ssh_remote = tmp / "ssh-remote"
            shutil.copytree(remote, ssh_remote)
            with cfg.open("a") as fh:
                fh.write(
                    f"  hpc:\n    type: ssh\n    host: usrtest\n    user: {server.user}\n"
                    f"    base_dir: '{ssh_remote}'\n    transport: openssh\n"
                )
            env["USRBATCH_SSH_CONFIG"] = str(server.ssh_config)
            cases.append(
                (f"no-op usr pull, ssh (openssh, live master), {args.parts} parts", [*pull, "hpc", "-y"])
            )
        sides = {"before": {**env, "PYTHONPATH": str(old)}, "after": env}
        for _name, argv in cases:  # warm the page cache, the hash caches and the ssh master
            for side_env in sides.values():
                run_once(argv, side_env)

        print(f"{args.runs} runs per side, alternating; wall median / min, CPU median (user+sys)")
        print(f"| command | before ({args.before_rev}) | after |\n|---|---|---|")
        for name, argv in cases:
            got: dict[str, list[Sample]] = {side: [] for side in sides}
            for i in range(args.runs):
                order = list(sides) if i % 2 == 0 else list(reversed(sides))
                for side in order:
                    got[side].append(run_once(argv, sides[side]))
            print(f"| `{name}` | {summary(got['before'])} | {summary(got['after'])} |", flush=True)
        if args.importtime:
            for name, argv in cases[1:]:
                print(f"\nimporttime, after, `{name}` (top-level, cumulative ms):")
                top = importtime_top(["-m", "usrbatch.cli.usr_main", *argv[1:]], env)
                print("  " + ", ".join(top))
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if args.ssh:
            run_once([*pull[:5], "remotes", "close", "hpc"], env)
    finally:
        if sshd is not None:
            load_services().stop_sshd(sshd)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
