"""Authenticate an open paramiko transport as OpenSSH would (split from ssh_connect.py, which
opens the connection: TCP, proxies, handshake, host key).

Order: ssh-agent keys, key files (a key file others can read is skipped, with the `chmod 600` fix
in the error), then on a terminal with batch_mode off keyboard-interactive and password; a key the
server accepts with more methods still required (2FA) continues with those. Typed answers are never
logged, echoed or kept.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import sys
from pathlib import Path

import paramiko

from usrbatch.errors import RemoteUnavailableError
from usrbatch.remotes_trust import private_key_problem
from usrbatch.transport.ssh_config import SshEndpoint


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


def _identity_blobs(endpoint: SshEndpoint) -> set[bytes]:
    """Public key blobs of the endpoint's identity files (from `<key>.pub`, never the private key)."""
    blobs: set[bytes] = set()
    for path in endpoint.identity_files:
        pub = Path(f"{path}.pub")
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = pub.read_text(encoding="utf-8").split()
            blobs.add(base64.b64decode(fields[1], validate=True))
    return blobs


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

    # IdentitiesOnly, as OpenSSH: only agent keys that belong to a listed identity (its .pub file).
    allowed = _identity_blobs(endpoint) if endpoint.identities_only else None
    with contextlib.suppress(paramiko.SSHException, OSError):
        agent = paramiko.Agent()
        for i, key in enumerate(agent.get_keys()):
            if allowed is not None and key.asbytes() not in allowed:
                continue
            label = f"ssh-agent key {i + 1} ({key.get_name()})"
            if attempt(key, label):
                return label
            if keys_done():
                break
    for path in endpoint.identity_files:
        if keys_done() or not path.is_file():
            continue
        problem = private_key_problem(path)
        if problem is not None:  # OpenSSH ignores such a key; so do we, and say how to fix it
            skipped.append(f"{path} ({problem.reason}; fix: {problem.fix})")
            continue
        try:
            key = paramiko.PKey.from_path(str(path))
        except (paramiko.PasswordRequiredException, TypeError):
            # paramiko 3+/cryptography raise TypeError for a passphrase-protected OpenSSH-format key
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
