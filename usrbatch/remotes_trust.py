"""OpenSSH's file trust rules, applied to the files that decide where we connect and as whom.

- A config file (remotes.yaml, ~/.ssh/config or the ssh_config a remote uses) must be owned by you
  (or root) and not writable by group or others: whoever can write it can point you at their host.
  OpenSSH refuses such a file with "Bad owner or permissions".
- A private key file you own must not be accessible by group or others (OpenSSH: "UNPROTECTED
  PRIVATE KEY FILE!", the key is ignored).

Each problem carries the exact command that fixes it.
"""

from __future__ import annotations

import os
import pwd
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from usrbatch.errors import RemoteConfigError


@dataclass(frozen=True)
class TrustProblem:
    """One file that fails a rule, with the command that fixes it."""

    path: Path
    what: str  # "remotes.yaml", "ssh config", "private key"
    reason: str
    fix: str

    def message(self) -> str:
        return f"{self.what} {self.path}: {self.reason}; fix: {self.fix}"


def _me() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def config_file_problem(path: Path, what: str) -> TrustProblem | None:
    """A config file others could write (or owned by someone else); None when fine or missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    quoted = shlex.quote(str(path))
    if st.st_uid not in (os.getuid(), 0):
        return TrustProblem(
            path,
            what,
            f"Bad owner or permissions: owned by uid {st.st_uid}, not by you",
            f"chown {_me()} {quoted} && chmod go-w {quoted}",
        )
    if st.st_mode & 0o022:
        return TrustProblem(
            path,
            what,
            f"Bad owner or permissions: mode {stat.S_IMODE(st.st_mode):04o} is writable by group/others",
            f"chmod go-w {quoted}",
        )
    return None


def private_key_problem(path: Path) -> TrustProblem | None:
    """A private key of yours that group/others can access; None when fine, missing or not yours."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        return TrustProblem(
            path,
            "private key",
            f"UNPROTECTED PRIVATE KEY FILE: permissions {stat.S_IMODE(st.st_mode):04o} are too open "
            "(group/others can access it), so it is ignored",
            f"chmod 600 {shlex.quote(str(path))}",
        )
    return None


def require_trusted_config(path: Path, what: str) -> None:
    """RemoteConfigError naming the file and the fix when `path` fails the config file rule."""
    problem = config_file_problem(path, what)
    if problem is not None:
        raise RemoteConfigError(
            f"Refusing {what} {path}: {problem.reason} (whoever can write it decides where you connect).",
            hint=f"Fix it with: {problem.fix}",
        )
