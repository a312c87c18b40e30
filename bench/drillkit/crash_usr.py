"""`usr` that dies like `kill -9` at a chosen point (os._exit: no finally, no cleanup, no flush).

    python crash_usr.py pull-promotion K -- <usr argv>     die at the K-th rename out of a pull
                                                           staging dir (K=0: the journal itself)
    python crash_usr.py after-download 0 -- <usr argv>     die once the pull payload is staged,
                                                           before verification and promotion
    python crash_usr.py push-apply MS:SSHD_PID -- <argv>   MS milliseconds after the push's remote
                                                           apply is sent, SIGKILL the newest python
                                                           process under that sshd (the remote
                                                           agent doing the apply), then die
Exit code 137 means the planned death happened; anything else means the command finished first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

DIED = 137


def _die() -> None:
    os._exit(DIED)


def _descendants(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root_pid]
    while stack:
        for pid in children.get(stack.pop(), []):
            out.append(pid)
            stack.append(pid)
    return out


def newest_python_under(sshd_pid: int) -> int | None:
    """The most recently started python process below the sshd (found by pid, never by name)."""
    best: tuple[int, int] | None = None
    for pid in _descendants(sshd_pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        except (OSError, ValueError, IndexError):
            continue
        if b"python" in cmd.split(b"\0")[0] and (best is None or start > best[1]):
            best = (pid, start)
    return best[0] if best else None


def arm_pull_promotion(k: int) -> None:
    real = os.replace
    count = [0]

    def dying_replace(src, dst, *a, **kw):
        if ".usr-pull-" in str(src):
            if count[0] == k:
                _die()
            count[0] += 1
        return real(src, dst, *a, **kw)

    os.replace = dying_replace


def arm_after_download() -> None:
    from usrbatch.sync import staging

    def dying_stamp(*_a, **_kw):
        _die()

    staging.stamp_mtimes = dying_stamp


def arm_push_apply(spec: str) -> None:
    from usrbatch.transport.ssh import SshTransport

    ms, sshd_pid = (int(x) for x in spec.split(":"))
    real = SshTransport._agent

    def killer() -> None:
        time.sleep(ms / 1000)
        pid = newest_python_under(sshd_pid)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _die()

    def agent(self, request, what):
        if request.get("op") == "apply":
            threading.Thread(target=killer, daemon=True).start()
        return real(self, request, what)

    SshTransport._agent = agent


def main() -> int:
    mode, arg, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: crash_usr.py MODE ARG -- <usr argv>"
    if mode == "pull-promotion":
        arm_pull_promotion(int(arg))
    elif mode == "after-download":
        arm_after_download()
    elif mode == "push-apply":
        arm_push_apply(arg)
    else:
        raise SystemExit(f"unknown mode {mode}")
    from usrbatch.cli.common import run_cli
    from usrbatch.cli.usr_main import usr

    return run_cli(usr, argv)


if __name__ == "__main__":
    sys.exit(main())
