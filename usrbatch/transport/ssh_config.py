"""Where and how to reach an SSH remote: ssh_config resolution and known_hosts verification.

`resolve_endpoint` reads `~/.ssh/config` (or a given file) like OpenSSH: a Host alias gives
HostName, Port, User, IdentityFile, IdentitiesOnly, UserKnownHostsFile, GlobalKnownHostsFile,
ProxyJump, ProxyCommand and ConnectTimeout. `HostKeyCheck` verifies a server key against every
known_hosts file (ssh_known_hosts.py: hashed entries, `[host]:port`, wildcards, `@revoked`) and
REFUSES unknown, changed or revoked keys with a message that says what to do and shows the
fingerprint. An ssh config that others can write is refused (remotes_trust.py), as OpenSSH does.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from usrbatch.errors import RemoteConfigError, RemoteUnavailableError
from usrbatch.remotes import RemoteConfig
from usrbatch.remotes_trust import require_trusted_config
from usrbatch.transport.ssh_known_hosts import CERT_AUTHORITY, REVOKED, KnownHostLine, read_known_hosts

if TYPE_CHECKING:
    import paramiko

SSH_CONFIG_ENV = "USRBATCH_SSH_CONFIG"
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


@dataclass(frozen=True)
class SshEndpoint:
    """Everything needed to open one SSH connection, after ssh_config resolution."""

    alias: str  # the host as written in remotes.yaml
    hostname: str  # what we connect to (ssh_config HostName, else alias)
    port: int
    user: str
    identity_files: tuple[Path, ...]  # explicit key (ssh_key_env) first, then IdentityFile
    identities_only: bool
    known_hosts_files: tuple[Path, ...]
    proxy_jump: str | None = None
    proxy_command: str | None = None
    connect_timeout: float | None = None
    config_path: Path | None = None

    @property
    def target(self) -> str:
        return f"{self.user}@{self.alias}"

    @property
    def host_key_name(self) -> str:
        """The known_hosts name OpenSSH uses: `host` on port 22, else `[host]:port`."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def default_config_path() -> Path | None:
    """~/.ssh/config when it exists (what resolution reads when no other file is named)."""
    path = Path("~/.ssh/config").expanduser()
    return path if path.is_file() else None


def _load_config(path: Path | None, check_permissions: bool = True) -> paramiko.SSHConfig:
    import paramiko  # only here: the openssh transport never parses ssh_config itself

    cfg_path = path if path is not None else Path("~/.ssh/config").expanduser()
    if not cfg_path.exists():
        if path is not None:
            raise RemoteConfigError(f"SSH config not found: {cfg_path}")
        return paramiko.SSHConfig()
    if check_permissions:
        require_trusted_config(cfg_path, "ssh config")
    try:
        return paramiko.SSHConfig.from_path(str(cfg_path))
    except Exception as exc:  # paramiko raises several types for a malformed file
        raise RemoteConfigError(f"Failed to read SSH config {cfg_path}: {exc}") from exc


def _split_files(value: str | list[str] | None) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, list) else shlex.split(value)
    return [v for v in items if v.lower() != "none"]


def resolve_endpoint(
    remote: RemoteConfig,
    *,
    ssh_config_path: Path | None = None,
    known_hosts: Path | list[Path] | None = None,
    user_override: str | None = None,
    check_permissions: bool = True,
) -> SshEndpoint:
    """Apply ssh_config (`ssh_config_path`, else $USRBATCH_SSH_CONFIG, else ~/.ssh/config) to a remote. remotes.yaml `user` wins over ssh_config User (like `ssh -l`);
    a non-default remotes.yaml `port` wins over ssh_config Port. `known_hosts`, when given,
    replaces the user known_hosts files (UserKnownHostsFile); global files are still read.
    The ssh config must pass OpenSSH's owner/permission rule (RemoteConfigError with the chmod fix)
    unless `check_permissions` is False (`usr remotes doctor` reports it as a check instead)."""
    if remote.type != "ssh" or not remote.host:
        raise RemoteConfigError(f"Remote '{remote.name}' is not an ssh remote.")
    if ssh_config_path is None and os.environ.get(SSH_CONFIG_ENV):
        ssh_config_path = Path(os.environ[SSH_CONFIG_ENV]).expanduser()
    cfg = _load_config(ssh_config_path, check_permissions)
    opts = cfg.lookup(remote.host)
    hostname = opts.get("hostname", remote.host)
    port = remote.port if remote.port != 22 else int(opts.get("port", 22))
    user = user_override or remote.user or opts.get("user") or os.environ.get("USER", "")
    keys: list[Path] = []
    explicit = remote.ssh_key_path()
    if explicit is not None:
        keys.append(explicit)
    keys.extend(Path(p).expanduser() for p in opts.get("identityfile", []))
    identities_only = str(opts.get("identitiesonly", "no")).lower() == "yes" or explicit is not None
    if not keys:  # as OpenSSH: no IdentityFile at all means the default ones, IdentitiesOnly or not
        keys.extend(Path(p).expanduser() for p in DEFAULT_IDENTITIES)
    if known_hosts is not None:
        user_files = [str(p) for p in (known_hosts if isinstance(known_hosts, list) else [known_hosts])]
    else:
        user_files = _split_files(opts.get("userknownhostsfile")) or list(DEFAULT_USER_KNOWN_HOSTS)
    global_files = _split_files(opts.get("globalknownhostsfile")) or list(DEFAULT_GLOBAL_KNOWN_HOSTS)
    timeout = opts.get("connecttimeout")
    jump = opts.get("proxyjump")
    return SshEndpoint(
        alias=remote.host,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=tuple(dict.fromkeys(keys)),
        identities_only=identities_only,
        known_hosts_files=tuple(Path(p).expanduser() for p in [*user_files, *global_files]),
        proxy_jump=None if not jump or jump.lower() == "none" else jump,
        proxy_command=opts.get("proxycommand") if "proxycommand" in opts else None,
        connect_timeout=float(timeout) if timeout else None,
        config_path=ssh_config_path,
    )


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style `SHA256:<base64>` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """One stderr line per distinct warning per process (a retried connection does not repeat it)."""
    if message not in _warned:
        _warned.add(message)
        print(message, file=sys.stderr)


class HostKeyCheck:
    """known_hosts verification that never trusts on first use and honours `@revoked` lines."""

    def __init__(self, files: tuple[Path, ...]) -> None:
        self.files = files
        self.lines: list[KnownHostLine] = []
        for path in files:
            if path.is_file():
                try:
                    self.lines.extend(read_known_hosts(path))
                except OSError as exc:
                    raise RemoteConfigError(
                        f"Failed to read known_hosts file {path}: {exc.strerror or exc}"
                    ) from exc

    def _for(self, name: str, marker: str = "") -> list[KnownHostLine]:
        return [line for line in self.lines if line.marker == marker and line.matches(name)]

    def preferred_types(self, endpoint: SshEndpoint) -> list[str]:
        """Key types known for this host, so negotiation picks a key we can verify."""
        return list(dict.fromkeys(line.key_type for line in self._for(endpoint.host_key_name)))

    def verify(self, endpoint: SshEndpoint, key: paramiko.PKey) -> None:
        """Return when `key` is known (and not revoked) for the endpoint; RemoteUnavailableError otherwise."""
        name = endpoint.host_key_name
        fp = fingerprint(key)
        revoked = [line for line in self._for(name, REVOKED) if line.same_key(key)]
        if revoked:
            raise RemoteUnavailableError(
                f"REVOKED HOST KEY for {name}: the server offered {key.get_name()} {fp}, which "
                f"{revoked[0].where} marks @revoked. Refusing to connect.",
                hint="Ask the host's admins for its current key; do not remove the @revoked line.",
            )
        known = self._for(name)
        port_flag = f"-p {endpoint.port} " if endpoint.port != 22 else ""
        first_file = self.files[0] if self.files else Path("~/.ssh/known_hosts")
        if not known:
            cas = self._for(name, CERT_AUTHORITY)
            note = (
                f" ({cas[0].where} has an @cert-authority line for this host, but usrbatch does not verify "
                "host certificates: the host's own key must be in known_hosts.)"
                if cas
                else ""
            )
            raise RemoteUnavailableError(
                f"Host key for {name} is not trusted (not in any known_hosts file); refusing to connect. "
                f"Server key: {key.get_name()} {fp}. Verify the fingerprint with the host's admins, then trust it "
                f"with: ssh-keyscan {port_flag}{endpoint.hostname} >> {first_file} "
                f"(or run `ssh {port_flag}{endpoint.user}@{endpoint.hostname}` once and accept it).{note}",
                hint="Files searched: " + ", ".join(str(p) for p in self.files),
            )
        if any(line.same_key(key) for line in known):
            for line in self._for(name, CERT_AUTHORITY):
                _warn_once(
                    f"WARNING: {line.where}: @cert-authority line skipped for {name} (usrbatch does not verify "
                    "host certificates; the host's own key in known_hosts was used)."
                )
            return
        same_type = [line for line in known if line.key_type == key.get_name()]
        expected = (same_type or known)[0]
        assert expected.key is not None
        raise RemoteUnavailableError(
            f"HOST KEY CHANGED for {name}: the server offered {key.get_name()} {fp} but known_hosts has "
            f"{expected.key.get_name()} {fingerprint(expected.key)} ({expected.where}). Refusing to connect: "
            "this can be a man-in-the-middle attack. If the host was legitimately re-keyed, remove the old "
            f"entry with `ssh-keygen -R '{name}' -f {expected.path}` and trust the new key after verifying it.",
        )
