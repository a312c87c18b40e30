"""openssh vs paramiko vs rsync: one big file pushed and pulled, as whole processes.

    uv run python bench/bench_openssh.py [--mib 256] [--runs 5] [--quick]

A private sshd (tests/integration/services.py) on loopback; each case is a fresh process (start-up,
login and the transfer with its sha256 check included), the backends alternating within each run;
medians. The openssh case starts its own ControlMaster (a cold login) and ends it afterwards, as
rsync logs in each time. Absolute times drift on shared machines: read the ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from services import start_sshd, stop_sshd  # noqa: E402

ONE_SHOT = """
import sys
from pathlib import Path
from usrbatch.remotes import RemoteConfig
from usrbatch.transport.base import Transfer
from usrbatch.transport.factory import open_transport
op, host, user, base, cfg, local, size, sha = sys.argv[1:9]
remote = RemoteConfig(name="bench", type="ssh", host=host, user=user, base_dir=base)
t = open_transport(remote, ssh_config_path=Path(cfg))
item = Transfer("big.bin", Path(local), int(size), sha)
if op == "push":
    t.upload([item])
    t.apply([], [], verify={"big.bin": sha})
else:
    t.download([item])
t.close()
"""


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="8 MiB, 1 run (a smoke test)")
    args = ap.parse_args()
    mib, runs = (8, 1) if args.quick else (args.mib, args.runs)
    work = Path(tempfile.mkdtemp(prefix="bench-openssh-"))
    server, proc = start_sshd(work / "sshd")
    cm = Path(tempfile.mkdtemp(prefix="usr-cm-", dir="/tmp"))
    try:
        base = work / "remote"
        base.mkdir()
        src = work / "src.bin"
        with src.open("wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(1 << 20))
        sha = hashlib.sha256(src.read_bytes()).hexdigest()
        size = str(src.stat().st_size)
        env = {**os.environ, "USRBATCH_CONTROL_DIR": str(cm)}
        env.pop("USRBATCH_AUDIT_LOG", None)
        times: dict[str, list[float]] = {}
        ssh_e = "ssh " + " ".join(server.ssh_options())
        for _run in range(runs):
            for backend in ("openssh", "paramiko", "rsync"):
                for op in ("push", "pull"):
                    back = work / "back.bin"
                    back.unlink(missing_ok=True)
                    if op == "push":
                        (base / "big.bin").unlink(missing_ok=True)
                    if backend == "rsync":
                        remote = f"{server.alias}:{base}/big.bin"
                        pair = [str(src), remote] if op == "push" else [remote, str(back)]
                        argv = ["rsync", "-a", "-e", ssh_e, *pair]
                    else:
                        local = src if op == "push" else back
                        argv = [sys.executable, "-c", ONE_SHOT, op, server.alias, server.user, str(base)]
                        argv += [str(server.ssh_config), str(local), size, sha]
                    run_env = {**env, "USRBATCH_SSH_TRANSPORT": backend}
                    times.setdefault(f"{backend} {op}", []).append(_timed(argv, run_env))
                    if backend == "openssh":  # cold login every time, as rsync
                        for sock in cm.glob("cm-*"):
                            subprocess.run(["ssh", "-S", str(sock), "-O", "exit", "x"], capture_output=True)
        print(f"{mib} MiB file, {runs} run(s), medians (whole process, login included):")
        for op in ("push", "pull"):
            rsync = statistics.median(times[f"rsync {op}"])
            for backend in ("openssh", "paramiko", "rsync"):
                t = statistics.median(times[f"{backend} {op}"])
                rate = mib * 1.048576 / t
                print(f"  {op} {backend:<9} {t:6.2f} s  {rate:6.0f} MB/s  {rsync / t:4.2f}x rsync")
    finally:
        stop_sshd(proc)
        subprocess.run(["rm", "-rf", str(work), str(cm)], check=False)


if __name__ == "__main__":
    main()
