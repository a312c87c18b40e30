"""One place that turns a RemoteConfig into a Transport (the engine never knows which kind)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from usrbatch.errors import RemoteConfigError
from usrbatch.remotes import TRANSPORTS, RemoteConfig
from usrbatch.transport.base import Transport

TRANSPORT_ENV = "USRBATCH_SSH_TRANSPORT"  # the default backend when remotes.yaml names none


def ssh_backend(remote: RemoteConfig) -> str:
    """`openssh` or `paramiko` for an ssh remote: remotes.yaml `transport:`, else
    $USRBATCH_SSH_TRANSPORT, else openssh where an `ssh` client is on PATH, else paramiko."""
    if remote.transport:
        return remote.transport
    chosen = os.environ.get(TRANSPORT_ENV, "").strip()
    if chosen:
        if chosen not in TRANSPORTS:
            raise RemoteConfigError(
                f"{TRANSPORT_ENV} must be one of {', '.join(TRANSPORTS)}, got {chosen!r}."
            )
        return chosen
    return "openssh" if shutil.which("ssh") else "paramiko"


def open_transport(remote: RemoteConfig, **ssh_options: Any) -> Transport:
    """A Transport for `remote`: LocalTransport(base_dir) for `local`; for `ssh` an
    OpenSshTransport or SshTransport (paramiko) as `ssh_backend` chooses.

    `ssh_options` (ssh_config_path, known_hosts, connect_timeout, retries, backoff, workers) are
    passed to the ssh transport and ignored for local remotes. Nothing connects until first use.
    """
    if remote.type == "local":
        from usrbatch.transport.local import LocalTransport

        return LocalTransport(Path(remote.base_dir).expanduser())
    if remote.type == "ssh":
        if ssh_backend(remote) == "openssh":
            from usrbatch.transport.openssh import OpenSshTransport

            return OpenSshTransport(remote, **ssh_options)
        from usrbatch.transport.ssh import SshTransport

        return SshTransport(remote, **ssh_options)
    raise RemoteConfigError(f"Remote '{remote.name}' has unsupported type '{remote.type}'.")
