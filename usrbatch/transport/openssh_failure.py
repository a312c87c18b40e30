"""OpenSSH's refusals in our words: a failed login's stderr becomes one UsrError (host-key texts
as the paramiko transport's), with the fix in its hint."""

from __future__ import annotations

import re
import shlex
import subprocess

from usrbatch.errors import RemoteUnavailableError
from usrbatch.transport.openssh_target import SshTarget


class MasterFailed(RemoteUnavailableError):
    """The master could not connect (TCP, handshake): worth a retry."""

    transient = True


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
    try:
        res = subprocess.run(
            target.host_key_probe_argv(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=target.connect_timeout + 5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"Server host key: (\S+) (SHA256:\S+)", res.stderr)
    return f"{found.group(1)} {found.group(2)}" if found else None
