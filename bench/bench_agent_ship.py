"""What one agent exec costs as the agent is shipped: bytes on stdin and wall time, over the real sshd.

    uv run python bench/bench_agent_ship.py [--rounds 15] [--files 20] [--quick]

One private sshd (tests/integration/services.py) on loopback; one transport per backend (paramiko,
and openssh over a live ControlMaster), connected once; each exec is `inventory` of a small dataset
(--files files, hash cache warm), the agent's most frequent request. Modes, alternating within
each round, medians over the rounds:

  source     before: the whole agent source (62 KB) on stdin, compiled by the remote on every exec
             (the bootstrap of usrbatch <= d041487, reproduced here);
  cold       the zlib-compressed loader + source, the remote's compiled-code cache emptied first
             (compile, verify, store: a first exec on a new host or after an upgrade);
  warm+src   loader + compressed source, cached code used (a process's first exec);
  warm+hash  loader + the source's sha256 only, cached code used (every later exec);
  hash+site  warm+hash with python3 started without -S (what -S saves: the site-packages scan).
All modes but `source` and `hash+site` start python3 with -S, as the transports now do.

Beside the two transports, a `pipe` column runs the same stdin through the same interpreter as a
local child process (no sshd): the agent's own cost without the session set-up around it (wall,
and the child's user + sys CPU time, steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_services  # noqa: E402

from usrbatch.agent import client  # noqa: E402
from usrbatch.remotes import RemoteConfig  # noqa: E402
from usrbatch.transport import ssh_shell  # noqa: E402
from usrbatch.transport.openssh import OpenSshTransport  # noqa: E402
from usrbatch.transport.ssh import SshTransport  # noqa: E402

OLD_BOOTSTRAP = (
    "import sys;b=sys.stdin.buffer;n=int(b.readline());s=b.read(n);"
    'g={"__name__":"__main__"};exec(compile(s,"usrbatch_agent","exec"),g)'
)
MODES = ("source", "cold", "warm+src", "warm+hash", "hash+site")
WITH_SITE = ("source", "hash+site")  # python3 started without -S (site-packages scanned)


def old_encode(request: dict, *, with_source: bool = True) -> bytes:
    src = (Path(client.__file__).parent / "remote.py").read_bytes()
    line = json.dumps(request, separators=(",", ":")).encode("utf-8") + b"\n"
    return str(len(src)).encode("ascii") + b"\n" + src + line


def remote_code_cache() -> Path:
    """The loader's cache dir as an sshd session sees it (no XDG vars: ~/.cache)."""
    return Path.home() / ".cache" / "usrbatch" / "agent-code"


def one_exec(t: SshTransport, mode: str, sent: list[int]) -> float:
    new_encode = client.encode

    def counting(request: dict, *, with_source: bool = True) -> bytes:
        data = (old_encode if mode == "source" else new_encode)(request, with_source=with_source)
        sent.append(len(data))
        return data

    if mode == "cold":
        shutil.rmtree(remote_code_cache(), ignore_errors=True)
    python_or = ssh_shell._python_or
    if mode in WITH_SITE:
        ssh_shell._python_or = lambda *a: python_or(*a).replace(" -S -c ", " -c ")  # type: ignore[assignment]
    ssh_shell.BOOTSTRAP = OLD_BOOTSTRAP if mode == "source" else client.BOOTSTRAP
    client.encode = counting  # type: ignore[assignment]
    t._ship = "hash" if mode in ("warm+hash", "hash+site") else "always"
    try:
        start = time.perf_counter()
        inv = t.inventory("ds")
        took = time.perf_counter() - start
    finally:
        client.encode = new_encode  # type: ignore[assignment]
        ssh_shell.BOOTSTRAP = client.BOOTSTRAP
        ssh_shell._python_or = python_or  # type: ignore[assignment]
    assert inv.exists and inv.hashed_bytes == 0, "the dataset must be inventoried from a warm cache"
    return took


def one_pipe(python: str, request: dict, mode: str, cpu: list[float]) -> float:
    """The same exec as a local child process: `python -c BOOTSTRAP` with the mode's stdin
    (wall time returned, the child's user + sys CPU time appended to `cpu`)."""
    if mode == "cold":
        shutil.rmtree(remote_code_cache(), ignore_errors=True)
    flags = [] if mode in WITH_SITE else ["-S"]
    if mode == "source":
        argv, data = [python, "-c", OLD_BOOTSTRAP], old_encode(request)
    else:
        with_source = mode not in ("warm+hash", "hash+site")
        argv, data = [python, *flags, "-c", client.BOOTSTRAP], client.encode(request, with_source=with_source)
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}  # the cache an sshd session uses
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(argv, input=data, capture_output=True, check=True, env=env)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    assert b'"ok":true' in out.stdout, out.stdout[-300:]
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="2 rounds (a smoke test)")
    args = ap.parse_args()
    rounds = 2 if args.quick else args.rounds
    services = load_services()
    work = Path(tempfile.mkdtemp(prefix="bench-agent-ship-"))
    os.environ["USRBATCH_CONTROL_DIR"] = str(work / "cm")
    server, proc = services.start_sshd(work / "sshd")
    try:
        base = work / "remote"
        (base / "ds").mkdir(parents=True)
        for i in range(args.files):
            (base / "ds" / f"f{i:03d}.bin").write_bytes(os.urandom(4096))
        remote = RemoteConfig(name="b", type="ssh", host=server.alias, user=server.user, base_dir=str(base))
        transports = {
            "paramiko": SshTransport(remote, ssh_config_path=server.ssh_config),
            "openssh": OpenSshTransport(remote, ssh_config_path=server.ssh_config),
        }
        for t in transports.values():
            t.inventory("ds")  # connect (and the master), warm the hash cache and the code cache
            t.inventory("ds")
        times: dict[tuple[str, str], list[float]] = {}
        sizes: dict[str, list[int]] = {m: [] for m in MODES}
        python = transports["paramiko"]._python  # the interpreter the agent reported over ssh
        request = client.inventory_request(str(base), "ds", hashes=True, parquet_stats=False)
        for _ in range(rounds):
            for name, t in transports.items():
                for mode in MODES:
                    times.setdefault((name, mode), []).append(one_exec(t, mode, sizes[mode]))
            for mode in MODES:
                cpu = times.setdefault(("pipe cpu", mode), [])
                times.setdefault(("pipe", mode), []).append(one_pipe(python, request, mode, cpu))
        for t in transports.values():
            t.close()
        print(f"agent inventory exec of {args.files} files, {rounds} rounds, medians (ms per exec):")
        columns = [*transports, "pipe", "pipe cpu"]
        print(f"  python: {python}")
        print(f"  {'mode':<10} {'stdin bytes':>11} " + " ".join(f"{n:>9}" for n in columns))
        for mode in MODES:
            cells = " ".join(f"{statistics.median(times[(n, mode)]) * 1000:9.1f}" for n in columns)
            print(f"  {mode:<10} {statistics.median(sizes[mode]):>11.0f} {cells}")
    finally:
        for sock in (work / "cm").glob("cm-*"):  # end the ControlMaster this run started
            subprocess.run(["ssh", "-S", str(sock), "-O", "exit", "x"], capture_output=True, check=False)
        services.stop_sshd(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
