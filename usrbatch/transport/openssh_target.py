"""Where a remote's OpenSSH ControlMaster socket lives and the `ssh` argv for every use of it.

The socket sits in a private runtime dir ($USRBATCH_CONTROL_DIR, else $XDG_RUNTIME_DIR/usrbatch,
else ~/.cache/usrbatch/cm; mode 0700, ours, else refused) under a short hashed name, since socket
paths are limited to ~104 bytes. Every connection of a remote rides on the master: execs, SFTP
sessions and lease holders are `ssh -S <socket> -o ControlMaster=no -o BatchMode=yes`, so only
the master ever authenticates, and only it may prompt (on a terminal, batch_mode false). OpenSSH
reads the user's whole ssh_config (Match, Include, ProxyJump, GSSAPI); `-F` is passed only when
the remote names a config. Host keys: StrictHostKeyChecking=yes and UpdateHostKeys=no, never
added silently. Opening and closing the master: openssh_master.py; its refusals in our words:
openssh_failure.py.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from usrbatch.errors import RemoteConfigError
from usrbatch.remotes import RemoteConfig
from usrbatch.remotes_trust import require_trusted_config
from usrbatch.transport.ssh_config import SSH_CONFIG_ENV

CONTROL_DIR_ENV = "USRBATCH_CONTROL_DIR"
MAX_SOCKET_PATH = 100  # sun_path is 104 (BSD) / 108 (Linux) bytes; OpenSSH appends a temp suffix
SOCKET_NAME_LEN = 23  # "cm-" + 20 hex digits


def control_dir() -> Path:
    """The private directory for control sockets, created 0700; RemoteConfigError when it is
    not ours or others can enter it (a socket there would let them use our logins). A default
    location too long for a socket path falls back to /tmp/usrbatch-<uid>."""
    explicit = os.environ.get(CONTROL_DIR_ENV, "").strip()
    if explicit:
        path = Path(explicit).expanduser()
    elif os.environ.get("XDG_RUNTIME_DIR") and Path(os.environ["XDG_RUNTIME_DIR"]).is_dir():
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "usrbatch"
    else:
        path = Path("~/.cache/usrbatch/cm").expanduser()
    if not explicit and len(str(path)) + 1 + SOCKET_NAME_LEN > MAX_SOCKET_PATH:
        path = Path(tempfile.gettempdir()) / f"usrbatch-{os.getuid()}"
    old = os.umask(0o077)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    finally:
        os.umask(old)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RemoteConfigError(
            f"Control socket directory {path} must be owned by you with mode 0700 "
            f"(it is mode {st.st_mode & 0o777:o}, owner uid {st.st_uid}).",
            hint=f"chmod 700 {path}, or point {CONTROL_DIR_ENV} at a private directory.",
        )
    return path


@dataclass(frozen=True)
class SshTarget:
    """One remote as the `ssh` client reaches it (OpenSSH resolves the rest from ssh_config)."""

    name: str  # the remote's name in remotes.yaml
    host: str
    user: str
    port: int  # 22 = whatever ssh_config says
    config: Path | None
    identity: Path | None
    known_hosts: tuple[Path, ...]
    connect_timeout: float
    control_path: Path

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}"

    def _base(self) -> list[str]:
        argv = ["ssh"]
        if self.config is not None:
            argv += ["-F", str(self.config)]
        argv += ["-S", str(self.control_path), "-l", self.user]
        if self.port != 22:
            argv += ["-p", str(self.port)]
        if self.identity is not None:
            argv += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            files = " ".join(f'"{p}"' if " " in str(p) else str(p) for p in self.known_hosts)
            argv += ["-o", f"UserKnownHostsFile={files}"]
        argv += [
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            f"ConnectTimeout={max(1, round(self.connect_timeout))}",
            "-x",
            "-a",
        ]
        return argv

    def client_argv(self, *remote: str, subsystem: bool = False) -> list[str]:
        """A session on the master that never prompts: a remote command (ONE argument, already
        quoted for the remote shell) or, with `subsystem`, e.g. `sftp`."""
        # ProxyCommand=false: when the master is gone, ssh would quietly log in on its own (a
        # second login, or a failed one on a 2FA host); this makes it fail instead (exit 255),
        # so the transport re-opens the master. A live master never runs the command.
        argv = [
            *self._base(),
            "-o",
            "ControlMaster=no",
            "-o",
            "BatchMode=yes",
            "-o",
            "ProxyCommand=false",
            "-T",
        ]
        if subsystem:
            argv.append("-s")
        return [*argv, "--", self.host, *remote]

    def master_argv(self, persist_s: int, *, interactive: bool) -> list[str]:
        """Open the master in the background (`-f` after authentication), living `persist_s`
        seconds after its last session ends."""
        return [
            *self._base(),
            "-M",
            "-N",
            "-f",
            "-o",
            "ControlMaster=yes",
            "-o",
            f"ControlPersist={persist_s}",
            "-o",
            f"BatchMode={'no' if interactive else 'yes'}",
            "--",
            self.host,
        ]

    def control_argv(self, op: str) -> list[str]:
        """`ssh -O check|exit` on this remote's socket."""
        return [*self._base(), "-o", "BatchMode=yes", "-O", op, "--", self.host]

    def host_key_probe_argv(self) -> list[str]:
        """`ssh -v ... true` beside the master (never prompts): its stderr names the key the
        server offers before authentication stops at an unknown one."""
        argv = [*self._base(), "-o", "ControlMaster=no", "-o", "BatchMode=yes", "-v"]
        return [*argv, "--", self.host, "true"]


def ssh_target(
    remote: RemoteConfig,
    *,
    ssh_config_path: Path | None = None,
    known_hosts: Path | list[Path] | None = None,
    connect_timeout: float = 10.0,
) -> SshTarget:
    """The SshTarget of an ssh remote; its socket name hashes what identifies the login."""
    if remote.type != "ssh" or not remote.host or not remote.user:
        raise RemoteConfigError(f"Remote '{remote.name}' is not an ssh remote.")
    for key, value in (("host", remote.host), ("user", remote.user)):
        if value.startswith("-") or any(c.isspace() for c in value):
            raise RemoteConfigError(
                f"Remote '{remote.name}' key '{key}' is not a valid ssh {key}: {value!r}."
            )
    if ssh_config_path is None and os.environ.get(SSH_CONFIG_ENV):
        ssh_config_path = Path(os.environ[SSH_CONFIG_ENV]).expanduser()
    if ssh_config_path is not None and not ssh_config_path.is_file():
        raise RemoteConfigError(f"SSH config not found: {ssh_config_path}")
    # OpenSSH checks ~/.ssh/config's permissions but not a config given with -F: check both
    # here, so this backend refuses what the paramiko one refuses (remotes_trust.py).
    require_trusted_config(ssh_config_path or Path("~/.ssh/config").expanduser(), "ssh config")
    kh: tuple[Path, ...] = ()
    if known_hosts is not None:
        kh = tuple(known_hosts) if isinstance(known_hosts, list) else (known_hosts,)
    identity = remote.ssh_key_path()
    ident = "\0".join(
        [remote.user, remote.host, str(remote.port), str(ssh_config_path or ""), str(identity or "")]
    )
    digest = hashlib.sha256(ident.encode()).hexdigest()[:20]
    path = control_dir() / f"cm-{digest}"
    if len(str(path)) > MAX_SOCKET_PATH:
        raise RemoteConfigError(
            f"Control socket path {path} is longer than {MAX_SOCKET_PATH} bytes (a Unix socket limit).",
            hint=f"Set {CONTROL_DIR_ENV} to a short private directory, e.g. /tmp/$USER-usr.",
        )
    return SshTarget(
        name=remote.name,
        host=remote.host,
        user=remote.user,
        port=remote.port,
        config=ssh_config_path,
        identity=identity,
        known_hosts=kh,
        connect_timeout=connect_timeout,
        control_path=path,
    )
