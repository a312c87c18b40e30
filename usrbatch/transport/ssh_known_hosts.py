"""known_hosts files read the way OpenSSH reads them (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT").

Each line: `[@revoked|@cert-authority] patterns keytype base64key [comment]`. Patterns are
comma-separated host names, `*`/`?` wildcards, `!negations`, `[host]:port` and hashed `|1|salt|hash`
names. `@revoked` keys are refused for the hosts they match, even when another line trusts them.
`@cert-authority` lines are not used: host certificates are not negotiated (the server presents its
plain key), and a matching line only adds a note to the "not trusted" error. Lines that cannot be
parsed (unknown key types, bad base64, too few fields) are skipped, as OpenSSH does; nothing here
raises on file content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import paramiko

REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


@dataclass(frozen=True)
class KnownHostLine:
    """One usable known_hosts line."""

    path: Path
    lineno: int
    marker: str  # "", REVOKED or CERT_AUTHORITY
    patterns: str
    key_type: str
    key: paramiko.PKey | None  # None for @cert-authority lines (never parsed into a host key)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"

    def matches(self, name: str) -> bool:
        return host_matches(self.patterns, name)

    def same_key(self, key: paramiko.PKey) -> bool:
        return self.key is not None and self.key.asbytes() == key.asbytes()


def _glob(pattern: str, name: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, flags=re.IGNORECASE) is not None


def _hashed_match(entry: str, name: str) -> bool:
    parts = entry.split("|")  # "", "1", salt, hash
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt = base64.b64decode(parts[2], validate=True)
        want = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        return False
    got = hmac.new(salt, name.encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(got, want)


def host_matches(patterns: str, name: str) -> bool:
    """OpenSSH match_hostname: any positive pattern matches and no `!pattern` does."""
    if patterns.startswith("|"):
        return _hashed_match(patterns, name)
    matched = False
    for pattern in patterns.split(","):
        pattern = pattern.strip()
        if not pattern:
            continue
        negate = pattern.startswith("!")
        if _glob(pattern[1:] if negate else pattern, name):
            if negate:
                return False
            matched = True
    return matched


def parse_line(text: str, path: Path, lineno: int) -> KnownHostLine | None:
    """One line, or None for blank/comment/unusable lines."""
    fields = text.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = ""
    if fields[0].startswith("@"):
        marker = fields.pop(0)
        if marker not in (REVOKED, CERT_AUTHORITY):
            return None  # OpenSSH: an unknown marker invalidates the line
    if len(fields) < 3:
        return None
    patterns, key_type, blob = fields[:3]
    if marker == CERT_AUTHORITY:
        return KnownHostLine(path, lineno, marker, patterns, key_type, None)
    import paramiko  # parsing a key is the first use of paramiko on this path

    try:
        key = paramiko.PKey.from_type_string(key_type, base64.b64decode(blob, validate=True))
    except Exception:  # paramiko raises several types (UnknownKeyType, SSHException, ValueError, ...)
        return None
    return KnownHostLine(path, lineno, marker, patterns, key_type, key)


def read_known_hosts(path: Path) -> list[KnownHostLine]:
    """Every usable line of `path` (an unreadable file: OSError)."""
    lines: list[KnownHostLine] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, text in enumerate(fh, start=1):
            entry = parse_line(text.strip(), path, lineno)
            if entry is not None:
                lines.append(entry)
    return lines
