"""Two `usr` builds against rsync on bench_b's B1/B2 datasets: whole processes, alternating, medians.

    uv run python bench/bench_ab.py --usr-a /path/to/old/.venv/bin/usr [--usr-b usr] [--runs 3]
                                    [--cases B1,B2] [--b1-mb 64] [--b2-mb 32] [--parts 2000]

A before/after measurement of a change (docs/benchmarks.md §6(b)): build the "before" checkout in
its own directory (`git archive <commit> | tar -x -C DIR; cd DIR; scripts/bootstrap`) and pass its
`usr` as --usr-a. Each run pushes to a fresh remote dir and pulls into a fresh local root with both
builds and `rsync -a -e ssh` (the order rotates every run), over a private sshd on 127.0.0.1, with
`transport: openssh`; each build keeps its own ControlMaster dir (a live master after the first
run, as in a work session). Prints medians, ratio = rsync median / build median, and each build's
peak RSS (GNU time %M).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import bench_b  # noqa: E402
from services import start_sshd, stop_sshd  # noqa: E402


def _run(argv: list[str], env: dict[str, str], rss_file: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(argv)}\n{(proc.stdout + proc.stderr).decode()[-2000:]}")
    return elapsed, int(rss_file.read_text().split()[-1]) // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--usr-a", required=True, help="the `usr` of the build before the change")
    ap.add_argument("--usr-b", default=str(Path(sys.executable).parent / "usr"), help="the build after")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cases", default="B1,B2")
    ap.add_argument("--b1-mb", type=float, default=64)
    ap.add_argument("--b2-mb", type=float, default=32)
    ap.add_argument("--parts", type=int, default=2000)
    args = ap.parse_args()
    tools = {"a": args.usr_a, "b": args.usr_b}
    tmp = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    server, proc = start_sshd(tmp / "sshd")
    try:
        cfg = server.ssh_config
        env = {**os.environ, "USRBATCH_SSH_CONFIG": str(cfg), "XDG_CACHE_HOME": str(tmp / "xdg")}
        env.pop("USRBATCH_AUDIT_LOG", None)
        ssh_e = f"ssh -F {cfg} -o BatchMode=yes"
        sources = {}
        if "B1" in args.cases:
            sources["B1"] = tmp / "b1"
            bench_b.make_dataset(sources["B1"], records_mb=args.b1_mb, parts=0, part_kb=8)
        if "B2" in args.cases:
            sources["B2"] = tmp / "b2"
            bench_b.make_dataset(sources["B2"], records_mb=args.b2_mb, parts=args.parts, part_kb=8)
        counter = iter(range(1, 1_000_000))

        def fresh_base() -> Path:
            base = tmp / "remote" / str(next(counter))
            (base / "bench").mkdir(parents=True)
            return base

        def remotes(base: Path) -> Path:
            path = base.parent / f"{base.name}.yaml"
            path.write_text(
                f"remotes:\n  b:\n    type: ssh\n    host: {server.alias}\n    user: {server.user}\n"
                f"    base_dir: '{base}'\n    transport: openssh\n"
            )
            return path

        times: dict[str, list[float]] = {}
        rss: dict[str, int] = {}
        for case, root in sources.items():
            src = root / bench_b.DS
            served = fresh_base()
            subprocess.run(
                ["rsync", "-a", "-e", ssh_e, f"{src}/", f"{server.alias}:{served / bench_b.DS}/"], check=True
            )
            served_cfg = remotes(served)
            for i in range(args.runs):
                order = ["a", "b", "rsync"]
                for tool in order[i % 3 :] + order[: i % 3]:
                    cm = tmp / f"cm-{tool}"
                    cm.mkdir(mode=0o700, exist_ok=True)
                    tenv = {**env, "USRBATCH_CONTROL_DIR": str(cm)}
                    base = fresh_base()
                    local = tmp / "pulls" / f"{tool}-{i}"
                    (local / "bench").mkdir(parents=True)
                    if tool == "rsync":
                        push = ["rsync", "-a", "-e", ssh_e, f"{src}/", f"{server.alias}:{base / bench_b.DS}/"]
                        pull = [
                            "rsync",
                            "-a",
                            "-e",
                            ssh_e,
                            f"{server.alias}:{served / bench_b.DS}/",
                            f"{local / bench_b.DS}/",
                        ]
                    else:
                        push = [tools[tool], "--root", str(root), "--remotes-config", str(remotes(base))]
                        push += ["push", bench_b.DS, "b", "-y"]
                        pull = [tools[tool], "--root", str(local), "--remotes-config", str(served_cfg)]
                        pull += ["pull", bench_b.DS, "b", "-y"]
                    for op, argv in (("push", push), ("pull", pull)):
                        seconds, peak = _run(argv, tenv, tmp / "rss.txt")
                        times.setdefault(f"{case} {op} {tool}", []).append(seconds)
                        rss[f"{case} {op} {tool}"] = max(rss.get(f"{case} {op} {tool}", 0), peak)
                    shutil.rmtree(local)
        print(f"{args.runs} run(s), medians; load average at the end {os.getloadavg()}")
        for case in sources:
            for op in ("push", "pull"):
                peer = statistics.median(times[f"{case} {op} rsync"])
                line = f"{case} {op}: rsync {peer:.2f} s"
                for tool in ("a", "b"):
                    med = statistics.median(times[f"{case} {op} {tool}"])
                    line += f" | {tool} {med:.2f} s ({peer / med:.2f}x rsync, peak {rss[f'{case} {op} {tool}']} MiB)"
                print(line)
    finally:
        for cm in tmp.glob("cm-*"):
            for sock in cm.glob("*"):
                subprocess.run(["ssh", "-S", str(sock), "-O", "exit", "x"], capture_output=True)
        stop_sshd(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
