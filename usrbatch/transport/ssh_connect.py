"""Open one authenticated paramiko connection to an SshEndpoint.

TCP (direct, through ProxyJump hosts via `direct-tcpip` channels, or a ProxyCommand) → SSH
handshake with large windows → host key verified against known_hosts (never auto-added) →
authentication (ssh_auth.py: agent keys and key files, then keyboard-interactive and password
on a TTY when batch_mode is off; 2FA after a key's partial success). Failures are UsrErrors with
one actionable message; secrets never appear. As OpenSSH: IdentitiesOnly limits agent keys to the
listed identities, and the server's version string must arrive within the connect timeout.
paramiko's own log records go to the audit log, never to the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import shlex
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import paramiko

from usrbatch.errors import RemoteUnavailableError
from usrbatch.transport.paramiko_lazy import MAX_PACKET, WINDOW_SIZE
from usrbatch.transport.ssh_auth import authenticate
from usrbatch.transport.ssh_config import HostKeyCheck, SshEndpoint, resolve_endpoint

KEEPALIVE_S = 15


class ConnectFailed(RemoteUnavailableError):
    """TCP or SSH handshake failure: worth a retry (unlike host key or authentication failures)."""

    transient = True


class NotSshError(RemoteUnavailableError):
    """The port accepted TCP but sent no SSH version string in time: not retried."""


# paramiko logs its transport thread's exceptions as ERROR records, one per traceback line; with no
# handler configured, Python's last-resort handler prints them on the terminal. They go to the audit
# log instead, one line per failure (the error itself reaches the user as one UsrError message).
_TRACEBACK_LINE = re.compile(
    r"^(\s|Traceback \(most recent call last\)|During handling of|The above exception|[\w.]+(: |$))"
)


class _ParamikoToAudit(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if not message.strip() or _TRACEBACK_LINE.match(message):
                return
            from usrbatch.auditlog import get_logger

            get_logger().warning(
                "ssh.paramiko", logger=record.name, level=record.levelname, message=message[:300]
            )
        except Exception:  # a log handler must never raise into paramiko's thread
            pass


def quiet_paramiko_logging() -> None:
    """Route paramiko's logger to the audit log (WARNING and up); never to the terminal. Idempotent."""
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, _ParamikoToAudit) for h in logger.handlers):
        logger.addHandler(_ParamikoToAudit())
    logger.setLevel(logging.WARNING)
    logger.propagate = False


quiet_paramiko_logging()


@dataclass
class Connection:
    """A live SSH connection plus the jump connections it rides on (closed together)."""

    transport: paramiko.Transport
    endpoint: SshEndpoint
    jumps: list[paramiko.Transport] = field(default_factory=list)
    auth_method: str = ""  # which agent key / key file / method succeeded (never key material)

    def active(self) -> bool:
        return self.transport.is_active()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.close()
        for jump in reversed(self.jumps):
            with contextlib.suppress(Exception):
                jump.close()


def tcp_connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP socket to host:port; RemoteUnavailableError with the cause when unreachable."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        raise ConnectFailed(
            f"TCP connection to {host}:{port} timed out after {timeout:g} seconds.",
            hint="Check the host name and port, VPN/firewall, or a ProxyJump in ~/.ssh/config.",
        ) from exc
    except OSError as exc:
        hint = "Check the host name and port in remotes.yaml / ~/.ssh/config."
        if isinstance(exc, socket.gaierror):
            hint += f" If '{host}' is a Host alias, add its block to ~/.ssh/config (`usr remotes wizard` prints one)."
        raise ConnectFailed(
            f"TCP connection to {host}:{port} failed: {exc.strerror or exc}.", hint=hint
        ) from exc
    sock.settimeout(None)
    set_nodelay(sock)
    return sock


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY: without it each new channel's small packets wait ~40 ms for a delayed ACK."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# Preferred first when this paramiko implements them (AEAD: no separate MAC pass, ~25 % faster
# SFTP streams here); the rest of paramiko's list stays, so servers without GCM still negotiate.
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def prefer_fast_ciphers(opts: paramiko.transport.SecurityOptions) -> None:
    supported = getattr(paramiko.Transport, "_cipher_info", {})
    current = list(opts.ciphers)
    first = [c for c in FAST_CIPHERS if c in current and c in supported]
    if first:
        opts.ciphers = first + [c for c in current if c not in first]


def _jump_endpoints(endpoint: SshEndpoint) -> list[SshEndpoint]:
    """ProxyJump `[user@]host[:port],...` → endpoints resolved through the same ssh_config."""
    from usrbatch.remotes import RemoteConfig

    hops = []
    for spec in (endpoint.proxy_jump or "").split(","):
        spec = spec.strip()
        if not spec:
            continue
        if spec.startswith("ssh://"):
            spec = spec[len("ssh://") :]
        user, _, hostport = spec.rpartition("@")
        host, port = hostport, 22
        if hostport.count(":") == 1:
            host, port_text = hostport.split(":")
            port = int(port_text)
        hop_remote = RemoteConfig(
            name=f"jump:{host}", type="ssh", base_dir="/", host=host, user=user or None, port=port
        )
        hop = resolve_endpoint(hop_remote, ssh_config_path=endpoint.config_path, user_override=user or None)
        if not user and hop.user == "":
            hop = replace(hop, user=endpoint.user)
        hops.append(hop)
    return hops


def _open_socket(endpoint: SshEndpoint, timeout: float, jumps: list[paramiko.Transport], **kw):
    if endpoint.proxy_jump:
        chain = _jump_endpoints(endpoint)
        parent: paramiko.Transport | None = None
        for hop in chain:
            hop_sock = (
                _direct_tcpip(parent, hop, timeout)
                if parent
                else tcp_connect(hop.hostname, hop.port, timeout)
            )
            parent = _handshake(hop_sock, hop, timeout, **kw)
            jumps.append(parent)
        assert parent is not None
        return _direct_tcpip(parent, endpoint, timeout)
    if endpoint.proxy_command:
        return ProxyCommandSocket(endpoint.proxy_command, endpoint.alias)
    return tcp_connect(endpoint.hostname, endpoint.port, timeout)


class ProxyCommandSocket(paramiko.ProxyCommand):
    """paramiko's ProxyCommand, with the command's stderr kept (in a temp file, so a chatty command
    never blocks on a full pipe) and its exit status, so a failure can say what the command said."""

    def __init__(self, command_line: str, alias: str) -> None:
        self.cmd = shlex.split(command_line)
        self.command_line = command_line
        self.alias = alias
        self.timeout = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - open for the command's life; close() closes it
        try:
            self.process = subprocess.Popen(
                self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0
            )
        except OSError as exc:
            self._stderr.close()
            raise ConnectFailed(
                f"ProxyCommand for {alias} could not start: {exc.strerror or exc}: {command_line}",
                hint="Fix ProxyCommand in your ssh config (the command must exist on this machine).",
            ) from exc

    def recv(self, size: int) -> bytes:
        # paramiko's version spins on a dead command's EOF until its timeout; b"" here is EOF.
        if self.timeout is not None:
            ready, _w, _x = select.select([self.process.stdout], [], [], self.timeout)
            if not ready:
                raise TimeoutError()
        try:
            return os.read(self.process.stdout.fileno(), size)  # type: ignore[union-attr]
        except OSError as exc:
            raise paramiko.ProxyCommandFailure(self.command_line, exc.strerror) from exc

    def close(self) -> None:
        # A command that closed its stdout is usually exiting: let it, so failure() sees its own
        # exit status. The stderr file stays open for failure() (anonymous; freed with this object).
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]  # EOF: nc / ssh -W exit now
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=0.5)
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2)

    def failure(self) -> str | None:
        """'exit N: <its stderr>' once the command has ended (waits up to 2 s), else None."""
        try:
            rc = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None
        try:
            self._stderr.seek(0)
            text = self._stderr.read()[-4000:].decode("utf-8", "replace")
        except (OSError, ValueError):
            text = ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        said = " | ".join(lines[-3:]) if lines else "(no stderr)"
        return f"exit {rc}: {said}"


def _direct_tcpip(parent: paramiko.Transport, endpoint: SshEndpoint, timeout: float) -> paramiko.Channel:
    try:
        return parent.open_channel(
            "direct-tcpip", (endpoint.hostname, endpoint.port), ("127.0.0.1", 0), timeout=timeout
        )
    except (paramiko.SSHException, OSError) as exc:
        raise RemoteUnavailableError(
            f"ProxyJump could not reach {endpoint.hostname}:{endpoint.port}: {exc}."
        ) from exc


def start_transport(
    sock, endpoint: SshEndpoint, timeout: float, *, window_size: int = WINDOW_SIZE
) -> tuple[paramiko.Transport, HostKeyCheck]:
    """SSH handshake on `sock`, preferring host key types known_hosts holds for this host.
    The server key is NOT verified yet: call `HostKeyCheck.verify` next."""
    hostkeys = HostKeyCheck(endpoint.known_hosts_files)
    t = paramiko.Transport(sock, default_window_size=window_size, default_max_packet_size=MAX_PACKET)
    try:
        opts = t.get_security_options()
        prefer_fast_ciphers(opts)
        known = hostkeys.preferred_types(endpoint)
        if known:
            first = [k for k in known if k in opts.key_types]
            if "ssh-rsa" in known:
                first = [k for k in ("rsa-sha2-512", "rsa-sha2-256") if k in opts.key_types] + first
            opts.key_types = first + [k for k in opts.key_types if k not in first]
        # The server's version string must arrive within the connect timeout (as OpenSSH's
        # ConnectTimeout): a port that speaks something else fails in seconds, not minutes.
        t.banner_timeout = timeout
        t.auth_timeout = timeout
        try:
            t.start_client(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise handshake_error(sock, endpoint, timeout, exc) from exc
        if t.host_key is None:  # start_client returns at its timeout with the handshake unfinished
            raise handshake_error(sock, endpoint, timeout, None, version=t.remote_version or "")
        return t, hostkeys
    except BaseException:
        t.close()
        raise


def handshake_error(
    sock, endpoint: SshEndpoint, timeout: float, exc: BaseException | None, *, version: str = ""
) -> RemoteUnavailableError:
    """One clear error for a failed SSH handshake (ProxyCommand output, non-SSH port, ...)."""
    where = f"{endpoint.hostname}:{endpoint.port}"
    if isinstance(sock, ProxyCommandSocket):
        said = sock.failure()
        if said is not None:
            return ConnectFailed(
                f"ProxyCommand for {endpoint.alias} failed ({said}): {sock.command_line}",
                hint="Run that command by hand to see why; fix ProxyCommand in your ssh config.",
            )
        where = f"{endpoint.alias} (through ProxyCommand {sock.command_line})"
    cause = exc.__context__ if exc is not None else None
    silent = exc is None and not version or isinstance(cause, TimeoutError | socket.timeout)
    if silent:
        return NotSshError(
            f"{where} sent no SSH version string within {timeout:g} s: it does not speak SSH "
            "(or is not answering).",
            hint="Check the host and port (an HTTP or other service?); ConnectTimeout in ~/.ssh/config sets the wait.",
        )
    if exc is None:
        return ConnectFailed(f"SSH handshake with {where} did not finish within {timeout:g} s.")
    text = str(exc) or exc.__class__.__name__
    if "protocol banner" in text or "Indecipherable protocol version" in text:
        return ConnectFailed(
            f"{where} closed the connection without an SSH version string: it does not speak SSH "
            "(or the server dropped us, e.g. MaxStartups).",
            hint="Check the host and port in remotes.yaml / ~/.ssh/config.",
        )
    return ConnectFailed(
        f"SSH handshake with {where} failed: {text}.", hint="Is an SSH server listening on that port?"
    )


def _handshake(
    sock, endpoint: SshEndpoint, timeout: float, *, batch_mode: bool = True, window_size: int = WINDOW_SIZE
) -> paramiko.Transport:
    t, hostkeys = start_transport(sock, endpoint, timeout, window_size=window_size)
    try:
        hostkeys.verify(endpoint, t.get_remote_server_key())
        t.usrbatch_auth_method = authenticate(t, endpoint, batch_mode)  # type: ignore[attr-defined]
        t.set_keepalive(KEEPALIVE_S)
        return t
    except BaseException:
        t.close()
        raise


def open_connection(
    endpoint: SshEndpoint,
    *,
    connect_timeout: float = 10.0,
    batch_mode: bool = True,
    window_size: int = WINDOW_SIZE,
) -> Connection:
    """One authenticated connection (through ProxyJump hops when configured)."""
    timeout = endpoint.connect_timeout or connect_timeout
    jumps: list[paramiko.Transport] = []
    try:
        sock = _open_socket(endpoint, timeout, jumps, batch_mode=batch_mode, window_size=window_size)
        t = _handshake(sock, endpoint, timeout, batch_mode=batch_mode, window_size=window_size)
    except BaseException:
        for j in jumps:
            with contextlib.suppress(Exception):
                j.close()
        raise
    return Connection(
        transport=t, endpoint=endpoint, jumps=jumps, auth_method=getattr(t, "usrbatch_auth_method", "")
    )


def key_files_summary(endpoint: SshEndpoint) -> list[Path]:
    """Key files that exist for this endpoint (for doctor messages; never their content)."""
    return [p for p in endpoint.identity_files if p.is_file()]
