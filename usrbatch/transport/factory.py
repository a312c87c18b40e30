"""One place that turns a RemoteConfig into a Transport (the engine never knows which kind)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usrbatch.errors import RemoteConfigError
from usrbatch.remotes import RemoteConfig
from usrbatch.transport.base import Transport


def open_transport(remote: RemoteConfig, **ssh_options: Any) -> Transport:
    """A Transport for `remote`: LocalTransport(base_dir) for `local`, SshTransport for `ssh`.

    `ssh_options` (ssh_config_path, known_hosts, connect_timeout, retries, backoff, workers) are
    passed to SshTransport and ignored for local remotes. Nothing connects until first use.
    """
    if remote.type == "local":
        from usrbatch.transport.local import LocalTransport

        return LocalTransport(Path(remote.base_dir).expanduser())
    if remote.type == "ssh":
        from usrbatch.transport.ssh import SshTransport

        return SshTransport(remote, **ssh_options)
    raise RemoteConfigError(f"Remote '{remote.name}' has unsupported type '{remote.type}'.")
