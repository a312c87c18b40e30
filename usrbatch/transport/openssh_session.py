"""One login per work session: open, inspect and end a remote's ControlMaster
(`usr remotes warm-auth | status | close`)."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from usrbatch.errors import RemoteConfigError
from usrbatch.remotes import RemoteConfig
from usrbatch.transport.factory import ssh_backend
from usrbatch.transport.openssh_master import (
    master_lock,
    master_state,
    persist_seconds,
    start_master,
    stop_master,
)
from usrbatch.transport.openssh_target import SshTarget, ssh_target


@dataclass(frozen=True)
class SessionStatus:
    """A remote's master as `usr remotes status` reports it."""

    remote: str
    ssh_target: str
    transport: str
    batch_mode: bool
    control_path: str | None
    socket_exists: bool
    socket_live: bool
    pid: int | None
    age_s: float | None  # since the login
    control_persist_s: int | None  # the master ends this long after its last session
    recommendation: str
    bootstrap_state: str | None = None  # warm-auth only: started | existing

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _target(remote: RemoteConfig, ssh_config_path: Path | None) -> SshTarget:
    if remote.type != "ssh":
        raise RemoteConfigError(f"Remote '{remote.name}' is type {remote.type}: it has no SSH login.")
    if ssh_backend(remote) != "openssh":
        raise RemoteConfigError(
            f"Remote '{remote.name}' uses transport: paramiko, which logs in per command and keeps no master.",
            hint=f"Set `transport: openssh` for remote '{remote.name}' in remotes.yaml (needs the ssh client).",
        )
    return ssh_target(remote, ssh_config_path=ssh_config_path)


def session_status(
    remote: RemoteConfig, *, ssh_config_path: Path | None = None, bootstrap_state: str | None = None
) -> SessionStatus:
    """Is the remote's master alive, since when, for how long after its last session."""
    if remote.type == "ssh" and ssh_backend(remote) != "openssh":
        return SessionStatus(
            remote=remote.name,
            ssh_target=remote.target,
            transport="paramiko",
            batch_mode=remote.batch_mode,
            control_path=None,
            socket_exists=False,
            socket_live=False,
            pid=None,
            age_s=None,
            control_persist_s=None,
            recommendation="paramiko logs in per command; set `transport: openssh` for one login per session",
        )
    target = _target(remote, ssh_config_path)
    state = master_state(target)
    if state.alive:
        advice = "ready for sync"
    elif remote.batch_mode:
        advice = "commands log in with keys as needed (batch_mode); `usr remotes warm-auth` opens a shared login now"
    else:
        advice = f"run `usr remotes warm-auth {remote.name}` in a terminal to log in once for this session"
    return SessionStatus(
        remote=remote.name,
        ssh_target=target.label,
        transport="openssh",
        batch_mode=remote.batch_mode,
        control_path=str(target.control_path),
        socket_exists=state.socket_exists,
        socket_live=state.alive,
        pid=state.pid,
        age_s=None if state.age_s is None else round(state.age_s, 1),
        control_persist_s=persist_seconds(remote),
        recommendation=advice,
        bootstrap_state=bootstrap_state,
    )


def warm_auth(remote: RemoteConfig, *, ssh_config_path: Path | None = None) -> SessionStatus:
    """Open the remote's master now (prompting once when stdin is a terminal), or report the live
    one (`bootstrap_state` existing). Without a terminal only a login that needs no prompt works."""
    target = _target(remote, ssh_config_path)
    with master_lock(target):
        if master_state(target).alive:
            state = "existing"
        else:
            start_master(
                target, persist_seconds(remote), interactive=sys.stdin.isatty(), remote_name=remote.name
            )
            state = "started"
    return session_status(remote, ssh_config_path=ssh_config_path, bootstrap_state=state)


def close_session(remote: RemoteConfig, *, ssh_config_path: Path | None = None) -> bool:
    """End the remote's master (`ssh -O exit`); False when none was alive."""
    return stop_master(_target(remote, ssh_config_path))
