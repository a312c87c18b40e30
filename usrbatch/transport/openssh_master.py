"""One OpenSSH ControlMaster per remote: where its socket lives, the `ssh` argv for every use,
and opening, checking and closing the master.

The socket sits in a private runtime dir ($USRBATCH_CONTROL_DIR, else $XDG_RUNTIME_DIR/usrbatch,
else ~/.cache/usrbatch/cm; mode 0700, ours, else refused) under a short hashed name, since socket
paths are limited to ~104 bytes. Every connection of a remote rides on the master: execs, SFTP
sessions and lease holders are `ssh -S <socket> -o ControlMaster=no -o BatchMode=yes`, so only
the master ever authenticates, and only it may prompt (on a terminal, batch_mode false). OpenSSH
reads the user's whole ssh_config (Match, Include, ProxyJump, GSSAPI); `-F` is passed only when
the remote names a config. Host keys: StrictHostKeyChecking=yes and UpdateHostKeys=no, never
added silently; OpenSSH's refusals become our error texts (`ssh_failure`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from usrbatch.errors import RemoteConfigError, RemoteUnavailableError
from usrbatch.remotes import DEFAULT_CONTROL_PERSIST_S, RemoteConfig
from usrbatch.remotes_trust import require_trusted_config
from usrbatch.transport.ssh_config import SSH_CONFIG_ENV

CONTROL_DIR_ENV = "USRBATCH_CONTROL_DIR"
MAX_SOCKET_PATH = 100  # sun_path is 104 (BSD) / 108 (Linux) bytes; OpenSSH appends a temp suffix
CHECK_TIMEOUT_S = 10.0


class MasterFailed(RemoteUnavailableError):
    """The master could not connect (TCP, handshake): worth a retry."""

    transient = True


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


def _meaningful(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("@") and "Warning: Permanently added" not in line
    ]


def ssh_failure(
    text: str, target: SshTarget, *, interactive: bool, remote_name: str, code: int
) -> RemoteUnavailableError:
    """OpenSSH's stderr after a failed login → one UsrError in our words (host-key texts as the
    paramiko transport's)."""
    lines = _meaningful(text)
    last = lines[-1] if lines else f"ssh exited {code} with no message"
    name_m = re.search(r"(?:known for|Host key for) (\S+)", text)
    name = name_m.group(1) if name_m else target.host
    if "REVOKED HOST KEY" in text or "marked as revoked" in text:
        return RemoteUnavailableError(
            f"REVOKED HOST KEY for {name}: known_hosts marks the server's key @revoked. Refusing to connect.",
            hint="Ask the host's admins for its current key; do not remove the @revoked line.",
        )
    if (
        "REMOTE HOST IDENTIFICATION HAS CHANGED" in text
        or "has changed and you have requested strict" in text
    ):
        fp = re.search(r"(SHA256:[A-Za-z0-9+/=]+)", text)
        offending = re.search(r"Offending \S+ key in (\S+?):(\d+)", text)
        where = f" ({offending.group(1)}:{offending.group(2)})" if offending else ""
        return RemoteUnavailableError(
            f"HOST KEY CHANGED for {name}: the server offered {fp.group(1) if fp else 'a different key'} "
            f"but known_hosts has another key{where}. Refusing to connect: this can be a man-in-the-middle "
            f"attack. If the host was legitimately re-keyed, remove the old entry with `ssh-keygen -R '{name}'"
            + (f" -f {offending.group(1)}" if offending else "")
            + "` and trust the new key after verifying it.",
        )
    if "Host key verification failed" in text:
        port_flag = f"-p {target.port} " if target.port != 22 else ""
        first = target.known_hosts[0] if target.known_hosts else "~/.ssh/known_hosts"
        offered = server_key(target)
        seen = f" Server key: {offered}." if offered else ""
        return RemoteUnavailableError(
            f"Host key for {name} is not trusted (not in any known_hosts file); refusing to connect.{seen} "
            "Verify the fingerprint with the host's admins, then trust it with: "
            f"ssh-keyscan {port_flag}{target.host} >> {first} (or run `ssh {port_flag}{target.label}` once "
            "and accept it).",
            hint="Files searched: "
            + (
                ", ".join(str(p) for p in target.known_hosts)
                or "those your ssh config names (UserKnownHostsFile)"
            ),
        )
    if "Permission denied" in text or "Too many authentication failures" in text:
        unprotected = re.search(r"Permissions (0\d+) for '([^']+)' are too open", text)
        if unprotected:  # OpenSSH ignored a key others can read: say so, with the fix
            key = unprotected.group(2)
            return RemoteUnavailableError(
                f"SSH authentication failed for {target.label}: private key {key} was ignored: "
                f"UNPROTECTED PRIVATE KEY FILE (permissions {unprotected.group(1)} are too open).",
                hint=f"Fix it with: chmod 600 {shlex.quote(key)}",
            )
        if interactive:
            hint = "Check the key (ssh-add, IdentityFile) and the answers to the prompts."
        else:
            hint = (
                "Load your key into ssh-agent (ssh-add) or set IdentityFile / ssh_key_env. If the host "
                f"needs a password or 2FA (Duo), set batch_mode: false and run `usr remotes warm-auth "
                f"{remote_name}` once from a terminal: later commands and jobs reuse that login."
            )
        return RemoteUnavailableError(
            f"SSH authentication failed for {target.label} (OpenSSH: {last}).", hint=hint
        )
    if "Bad owner or permissions" in text or "Bad configuration option" in text or "line " in last:
        return RemoteUnavailableError(f"ssh refused its configuration for {target.label}: {last}")
    if code == -1:
        return MasterFailed(
            f"ssh login to {target.label} did not finish within {target.connect_timeout * 3 + 30:g} s."
        )
    return MasterFailed(f"SSH connection to {target.label} failed: {last}")


def server_key(target: SshTarget) -> str | None:
    """`<type> SHA256:<fp>` the server offers, read from `ssh -v` (which stops at the unknown key
    before authenticating); None when it does not say. Only on the failure path."""
    argv = [*target._base(), "-o", "ControlMaster=no", "-o", "BatchMode=yes", "-v", "--", target.host, "true"]
    try:
        res = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=target.connect_timeout + 5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"Server host key: (\S+) (SHA256:\S+)", res.stderr)
    return f"{found.group(1)} {found.group(2)}" if found else None


def is_interactive(remote: RemoteConfig) -> bool:
    """May the master prompt? Only with batch_mode false and a terminal on stdin."""
    return not remote.batch_mode and sys.stdin.isatty()


def persist_seconds(remote: RemoteConfig) -> int:
    return remote.control_persist if remote.control_persist is not None else DEFAULT_CONTROL_PERSIST_S
