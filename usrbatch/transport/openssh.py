"""The `openssh` transport: the system `ssh` client does SSH, in its own process.

Everything but the connection is SshTransport's (ssh.py): the agent requests, inventory/apply/
stat, the download/upload streams (ssh_stream.py) with resume and verify, retries. What changes
is underneath:
- one ControlMaster per remote (openssh_master.py) carries every session; it is opened on first
  use (or by `usr remotes warm-auth`) and outlives the command by `control_persist`, so a work
  session logs in once; a live master is reused silently and sessions never prompt;
- an exec is `ssh -S <socket> ... HOST '<quoted command>'` with the agent on its stdin;
- a file stream is such an exec with the bytes on its pipes (openssh_channel.ProcessChannel,
  1 MiB pipes): OpenSSH does the crypto in another process, no Python packet loop on the bytes;
  SFTP (paramiko's SFTPClient over `ssh -s HOST sftp`) only for a remote without python3;
- the lease is a long-running `ssh` process running the agent's `lease` op (ssh_lease.py's
  handshake and release, over openssh_channel.ProcessChannel).
"""

from __future__ import annotations

import contextlib
import subprocess
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from usrbatch.errors import TransferError
from usrbatch.remotes import RemoteConfig
from usrbatch.transport.openssh_channel import PipeSocket, ProcessChannel
from usrbatch.transport.openssh_failure import ssh_failure
from usrbatch.transport.openssh_master import (
    is_interactive,
    master_lock,
    master_state,
    persist_seconds,
    start_master,
)
from usrbatch.transport.openssh_target import ssh_target
from usrbatch.transport.paramiko_lazy import WINDOW_SIZE
from usrbatch.transport.ssh import DEFAULT_WORKERS, SshTransport

if TYPE_CHECKING:
    import paramiko

SSH_ERROR = 255  # ssh's own failure (connection, authentication); remote commands never use it here


class SshExitError(EOFError):
    """`ssh` itself failed (exit 255): the connection or the master is gone; retried."""


class OpenSshTransport(SshTransport):
    """Transport over the system `ssh` client and one ControlMaster (see module doc)."""

    def __init__(
        self,
        remote: RemoteConfig,
        *,
        ssh_config_path: Path | None = None,
        known_hosts: Path | list[Path] | None = None,
        connect_timeout: float = 10.0,
        retries: int | None = None,
        backoff: float | None = None,
        workers: int = DEFAULT_WORKERS,
        window_size: int = WINDOW_SIZE,  # accepted for the same signature; OpenSSH sizes its windows
        force_sh: bool = False,
    ) -> None:
        self.ssh = ssh_target(
            remote, ssh_config_path=ssh_config_path, known_hosts=known_hosts, connect_timeout=connect_timeout
        )
        self._init_state(
            remote,
            connect_timeout=connect_timeout,
            retries=retries,
            backoff=backoff,
            workers=workers,
            window_size=window_size,
            force_sh=force_sh,
        )
        self._master_generation: int | None = None  # the generation whose master is known live
        self._channels: weakref.WeakSet[ProcessChannel] = weakref.WeakSet()  # lease holders

    @property
    def label(self) -> str:
        return f"{self.ssh.label}:{self.remote.base_dir}"

    @property
    def target(self) -> str:
        return self.ssh.label

    # ------------------------------------------------------------------ the master

    def connect(self) -> Path:  # type: ignore[override]
        """The live master's socket: reused when `ssh -O check` says it is alive, else opened
        (one login; prompting only on a terminal with batch_mode false)."""
        with self._lock:
            if self._closed:
                raise TransferError(f"Transport to {self.target} is closed.")
            if self._master_generation == self._generation:
                return self.ssh.control_path
            self._retry(self._ensure_master, what="connect", path=self.target)
            self._master_generation = self._generation
            self.stats.connects += 1
            return self.ssh.control_path

    def _ensure_master(self) -> None:
        with master_lock(self.ssh):
            if master_state(self.ssh).alive:
                return
            start_master(
                self.ssh,
                persist_seconds(self.remote),
                interactive=self._interactive(),
                remote_name=self.remote.name,
            )
            self.stats.logins += 1

    def _interactive(self) -> bool:
        return is_interactive(self.remote)

    def _drop_connection(self) -> None:
        """Forget this transport's sessions (the master is shared and persists: never ended here)."""
        with self._lock:
            pool, self._sftp_pool = self._sftp_pool, []
            for _gen, client in pool:
                with contextlib.suppress(Exception):  # a dead session closes as it can
                    client.close()
            if self._master_generation is not None:
                self._master_generation = None
                self._generation += 1

    def _connection_alive(self) -> bool:
        return self._master_generation == self._generation

    def _drop_if_dead(self) -> None:
        if not master_state(self.ssh).alive:
            self._drop_connection()

    def adopt(self, connection: object) -> None:  # pragma: no cover - doctor is paramiko's
        raise TransferError("The openssh transport cannot adopt a paramiko connection.")

    # ------------------------------------------------------------------ sessions

    def _remote_argv(self, command: str) -> list[str]:
        """The `ssh` argv of one remote command on the master (one place: tests record it)."""
        return self.ssh.client_argv(command)

    def _exec(
        self, command: str, stdin: bytes = b"", *, timeout: float | None = None
    ) -> tuple[int, bytes, bytes]:
        """One remote command through the master: (exit code, stdout, last 64 KiB of stderr)."""
        self.connect()
        with self._lock:
            self.stats.execs += 1
        proc = subprocess.Popen(
            self._remote_argv(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise TransferError(f"Remote command on {self.target} exceeded {timeout:g} seconds.") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err = err[-65536:]
        if proc.returncode == SSH_ERROR and not out.strip():
            self._raise_ssh_error(err)
        return proc.returncode, out, err

    def _raise_ssh_error(self, err: bytes) -> None:
        text = err.decode("utf-8", "replace")
        failure = ssh_failure(text, self.ssh, interactive=False, remote_name=self.remote.name, code=SSH_ERROR)
        if getattr(failure, "transient", False):
            raise SshExitError(str(failure))
        raise failure

    def _open_channel(self) -> ProcessChannel:  # type: ignore[override]
        """An unstarted session for the lease: `exec_command` runs `ssh ... HOST command`."""
        self.connect()
        with self._lock:
            self.stats.execs += 1
        chan = ProcessChannel(self._remote_argv)
        with self._lock:
            self._channels.add(chan)
        return chan

    def close(self) -> None:
        """End this transport's sessions, lease holders included (their remote locks are released
        on EOF, as when a paramiko connection closes); the shared master stays for later commands."""
        with self._lock:
            channels = list(self._channels)
        for chan in channels:
            chan.close()
        super().close()

    def _open_sftp_client(self) -> paramiko.SFTPClient:
        """paramiko's SFTP client over the pipes of `ssh -s HOST sftp` on the master."""
        import paramiko  # loaded only when SFTP is opened, not at start-up (paramiko_lazy.py)

        from usrbatch.transport.ssh_connect import quiet_paramiko_logging

        quiet_paramiko_logging()  # its warnings go to the audit log, as on the paramiko backend
        self.connect()
        proc = subprocess.Popen(
            self.ssh.client_argv("sftp", subsystem=True),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
        sock = PipeSocket(proc)
        try:
            return paramiko.SFTPClient(sock)
        except BaseException:
            sock.close()
            raise
