"""One OpenSSH ControlMaster per remote: opening, checking and closing it (the socket and the
argv: openssh_target.py; a failed login in our words: openssh_failure.py)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from usrbatch.errors import RemoteUnavailableError
from usrbatch.remotes import DEFAULT_CONTROL_PERSIST_S, RemoteConfig
from usrbatch.transport.openssh_failure import MasterFailed, ssh_failure
from usrbatch.transport.openssh_target import SshTarget

CHECK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class MasterState:
    """What `ssh -O check` says about a remote's master."""

    alive: bool
    control_path: Path
    pid: int | None = None
    age_s: float | None = None  # since the socket was made (the login)
    socket_exists: bool = False


def master_state(target: SshTarget) -> MasterState:
    """ONE local `ssh -O check` (no network traffic)."""
    path = target.control_path
    try:
        st = path.stat()
    except FileNotFoundError:
        return MasterState(alive=False, control_path=path)
    try:
        res = subprocess.run(
            target.control_argv("check"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return MasterState(alive=False, control_path=path, socket_exists=True)
    if res.returncode != 0:
        return MasterState(alive=False, control_path=path, socket_exists=True)
    found = re.search(r"pid=(\d+)", res.stderr + res.stdout)
    return MasterState(
        alive=True,
        control_path=path,
        pid=int(found.group(1)) if found else None,
        age_s=max(0.0, time.time() - st.st_mtime),
        socket_exists=True,
    )


@contextlib.contextmanager
def master_lock(target: SshTarget) -> Iterator[None]:
    """Serialize master start-up among processes (two `usr` commands must not both log in)."""
    fd = os.open(f"{target.control_path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def start_master(target: SshTarget, persist_s: int, *, interactive: bool, remote_name: str) -> None:
    """Log in once and leave the master in the background. `interactive`: OpenSSH may prompt on
    the terminal (2FA, password); else BatchMode=yes and a login that needs a prompt fails."""
    with contextlib.suppress(FileNotFoundError):
        target.control_path.unlink()  # a dead master's socket (our private dir): ssh -M needs the name
    with tempfile.TemporaryFile() as err:
        try:
            res = subprocess.run(
                target.master_argv(persist_s, interactive=interactive),
                stdin=None if interactive else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,  # a file, not a pipe: the backgrounded master keeps it open
                timeout=None if interactive else target.connect_timeout * 3 + 30,
            )
            code = res.returncode
        except subprocess.TimeoutExpired:
            code = -1
        except OSError as exc:
            raise RemoteUnavailableError(
                f"Could not run ssh for {target.label}: {exc.strerror or exc}.",
                hint="Install the OpenSSH client, or set `transport: paramiko` for this remote in remotes.yaml.",
            ) from exc
        err.seek(0)
        text = err.read()[-8000:].decode("utf-8", "replace")
    if code != 0:
        raise ssh_failure(text, target, interactive=interactive, remote_name=remote_name, code=code)
    if not master_state(target).alive:
        raise MasterFailed(
            f"ssh logged in to {target.label} but its control socket {target.control_path} is not live.",
            hint="A ControlPath/ControlMaster line in your ssh config may conflict; see `usr remotes status`.",
        )


def stop_master(target: SshTarget) -> bool:
    """`ssh -O exit`: True when a live master was asked to end."""
    if not master_state(target).alive:
        return False
    res = subprocess.run(
        target.control_argv("exit"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
    )
    return res.returncode == 0


def is_interactive(remote: RemoteConfig) -> bool:
    """May the master prompt? Only with batch_mode false and a terminal on stdin."""
    return not remote.batch_mode and sys.stdin.isatty()


def persist_seconds(remote: RemoteConfig) -> int:
    return remote.control_persist if remote.control_persist is not None else DEFAULT_CONTROL_PERSIST_S
