"""Open one authenticated paramiko connection to an SshEndpoint.

TCP (direct, through ProxyJump hosts via `direct-tcpip` channels, or a ProxyCommand) → SSH
handshake with large windows → host key verified against known_hosts (never auto-added) →
authentication with ssh-agent keys and key files (then keyboard-interactive and password on a
TTY when batch_mode is off; 2FA after a key's partial success). Failures are UsrErrors with one
actionable message; secrets never appear.
"""

from __future__ import annotations

import contextlib
import getpass
import socket
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import paramiko

from usrbatch.errors import RemoteUnavailableError
from usrbatch.transport.ssh_config import HostKeyCheck, SshEndpoint, resolve_endpoint

# Per-channel receive window: bounds what paramiko may buffer per SFTP session (x4 sessions) and
# still allows 16 MiB / RTT per session on a real link (~330 MB/s at 50 ms). 64 MiB measured no
# faster on loopback (docs/benchmarks.md).
WINDOW_SIZE = 16 * 1024 * 1024
MAX_PACKET = 32768
KEEPALIVE_S = 15


class ConnectFailed(RemoteUnavailableError):
    """TCP or SSH handshake failure: worth a retry (unlike host key or authentication failures)."""

    transient = True


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
        raise ConnectFailed(
            f"TCP connection to {host}:{port} failed: {exc.strerror or exc}.",
            hint="Check the host name and port in remotes.yaml / ~/.ssh/config.",
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
        try:
            return paramiko.ProxyCommand(endpoint.proxy_command)
        except Exception as exc:
            raise RemoteUnavailableError(f"ProxyCommand failed for {endpoint.alias}: {exc}") from exc
    return tcp_connect(endpoint.hostname, endpoint.port, timeout)


def _direct_tcpip(parent: paramiko.Transport, endpoint: SshEndpoint, timeout: float) -> paramiko.Channel:
    try:
        return parent.open_channel(
            "direct-tcpip", (endpoint.hostname, endpoint.port), ("127.0.0.1", 0), timeout=timeout
        )
    except (paramiko.SSHException, OSError) as exc:
        raise RemoteUnavailableError(
            f"ProxyJump could not reach {endpoint.hostname}:{endpoint.port}: {exc}."
        ) from exc


def _interactive_handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
    if title or instructions:
        print("\n".join(x for x in (title, instructions) if x), file=sys.stderr)
    return [getpass.getpass(p) if not echo else input(p) for p, echo in prompts]


def _offered_methods(t: paramiko.Transport, user: str) -> list[str] | None:
    """The methods the server accepts now (an SSH "none" request, as OpenSSH sends first);
    None when it does not say, [] when "none" itself succeeded."""
    try:
        t.auth_none(user)
    except paramiko.BadAuthenticationType as exc:
        return list(exc.allowed_types)
    except (paramiko.AuthenticationException, paramiko.SSHException):
        return None
    return []


def authenticate(t: paramiko.Transport, endpoint: SshEndpoint, batch_mode: bool) -> str:
    """Authenticate `t`; returns the method that worked, else RemoteUnavailableError naming what was tried.

    Order, as OpenSSH: ssh-agent keys, key files, then (batch_mode off and stdin a TTY only)
    keyboard-interactive and password when the server offers them. A key the server accepts with
    more methods still required (2FA: `publickey,keyboard-interactive`) ends the key phase and
    continues with those methods. Typed answers are never logged, echoed or kept.
    """
    tried: list[str] = []
    skipped: list[str] = []
    offered: list[str] | None = None  # the server's method list, once it has told us
    accepted = ""  # a key that passed as the first factor (partial success)

    def attempt(key: paramiko.PKey, label: str) -> bool:
        nonlocal offered, accepted
        tried.append(label)
        try:
            remaining = t.auth_publickey(endpoint.user, key)
        except paramiko.BadAuthenticationType as exc:
            offered = list(exc.allowed_types)
            return False
        except paramiko.AuthenticationException:
            return False
        if t.is_authenticated():
            return True
        offered, accepted = list(remaining), label
        return False

    def keys_done() -> bool:  # authenticated, a first factor passed, or publickey not offered
        return bool(accepted) or (offered is not None and "publickey" not in offered)

    if not endpoint.identities_only:
        with contextlib.suppress(paramiko.SSHException, OSError):
            agent = paramiko.Agent()
            for i, key in enumerate(agent.get_keys()):
                label = f"ssh-agent key {i + 1} ({key.get_name()})"
                if attempt(key, label):
                    return label
                if keys_done():
                    break
    for path in endpoint.identity_files:
        if keys_done() or not path.is_file():
            continue
        try:
            key = paramiko.PKey.from_path(str(path))
        except paramiko.PasswordRequiredException:
            skipped.append(f"{path} (encrypted: load it with ssh-add)")
            continue
        except (paramiko.SSHException, OSError, ValueError) as exc:
            skipped.append(f"{path} (unreadable: {exc.__class__.__name__})")
            continue
        if attempt(key, str(path)):
            return str(path)
    first = f"{accepted} + " if accepted else ""
    tty = sys.stdin.isatty()
    if not batch_mode and tty:
        if offered is None:
            offered = _offered_methods(t, endpoint.user)
            if t.is_authenticated():
                return "none"
        methods = offered if offered is not None else ["keyboard-interactive", "password"]
        if "keyboard-interactive" in methods:
            tried.append("keyboard-interactive")
            remaining: list[str] | None = None
            with contextlib.suppress(paramiko.AuthenticationException, paramiko.SSHException, EOFError):
                remaining = t.auth_interactive(endpoint.user, _interactive_handler)
            if t.is_authenticated():
                return first + "keyboard-interactive"
            if remaining:  # another factor still required
                methods = remaining
        if "password" in methods:
            tried.append("password")
            with contextlib.suppress(paramiko.AuthenticationException, paramiko.SSHException, EOFError):
                # The prompt OpenSSH shows; getpass reads from the terminal without echo.
                t.auth_password(
                    endpoint.user,
                    getpass.getpass(f"{endpoint.user}@{endpoint.hostname}'s password: "),
                    fallback=False,
                )
            if t.is_authenticated():
                return first + "password"
    what = ", ".join(tried) if tried else "no keys (no ssh-agent keys, no readable key files)"
    extra = f"; skipped: {', '.join(skipped)}" if skipped else ""
    if accepted and offered:
        extra += f"; {accepted} was accepted but the server also requires: {', '.join(offered)}"
    hint = (
        "Load your key into ssh-agent (ssh-add), set IdentityFile in ~/.ssh/config or ssh_key_env in "
        "remotes.yaml, and check the public key is in ~/.ssh/authorized_keys on the remote."
    )
    if batch_mode:
        hint += " If the host needs a password or 2FA, set batch_mode: false and run from a terminal."
    elif not tty:
        hint += " Password and 2FA prompts need a terminal: stdin is not a TTY."
    raise RemoteUnavailableError(
        f"SSH authentication failed for {endpoint.target} (tried: {what}{extra}).", hint=hint
    )


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
        t.banner_timeout = timeout
        t.auth_timeout = timeout
        try:
            t.start_client(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectFailed(
                f"SSH handshake with {endpoint.hostname}:{endpoint.port} failed: {exc or exc.__class__.__name__}.",
                hint="Is an SSH server listening on that port?",
            ) from exc
        return t, hostkeys
    except BaseException:
        t.close()
        raise


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
