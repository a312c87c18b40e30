"""Secret redaction for every text the tool writes: event log args, meta.md notes, audit logs, job scripts.

Two rules, applied together by `redact`:
- by KEY: the event-log markers are the public USR tool's list (usr-contract §7.1), kept exact so both
  tools redact the same args; audit logs add a few more;
- by VALUE (`redact_text`): token-shaped strings anywhere in a text: provider token prefixes (GitHub
  `ghp_`/`github_pat_`, GitLab `glpat-`, Slack `xox?-`, `sk-` API keys, AWS `AKIA`/`ASIA` key ids),
  `Bearer <token>`, `password=`/`token=`/`secret=`-style assignments, `scheme://user:pass@host`
  credentials and PEM private key blocks.

The value patterns are narrow on purpose: a false positive would corrupt a data record. DNA/protein
sequences, sha256 hex digests and dataset ids never match (tests/test_redaction.py): provider-prefixed
tokens must stand alone (word boundaries) and, where the prefix is short, mix upper case, lower case
and digits the way random tokens do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***REDACTED***"
SECRET_MARKERS: tuple[str, ...] = (
    "secret",
    "token",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "webhook",
    "auth",
    "credential",
    "bearer",
    "cookie",
    "session",
)
AUDIT_SECRET_MARKERS: tuple[str, ...] = (*SECRET_MARKERS, "private_key", "passphrase")

# Tokens whose prefix alone says what they are (fixed shapes).
_EXACT_TOKENS = re.compile(
    r"(?<![A-Za-z0-9_])(?:"
    r"gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub classic tokens
    r"|github_pat_[A-Za-z0-9_]{22,}"  # GitHub fine-grained tokens
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"  # AWS access key ids
    r")"
)
# Short prefixes: the rest must look random (upper + lower + digit), so `sk-densegen-demo-01` and
# `xoxb` in prose are left alone.
_MIXED_TOKENS = re.compile(r"(?<![A-Za-z0-9_-])(?:sk-|glpat-|xox[abposr]-|xapp-)[A-Za-z0-9_-]{16,}")
_BEARER = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]+:)([^\s/@]+)(@)")
# `password=x`, `GITHUB_TOKEN=x`, `--api-key=x`, `secret: x`: the name must END with a secret word,
# so `token_count=5` stays.
_ASSIGNMENT = re.compile(
    r"(?i)\b([\w.-]*(?:password|passwd|passphrase|token|secret|api[_-]?key|access[_-]?key|private[_-]?key))"
    r"(\s*[=:]\s*)(['\"]?)([^\s'\"&;,]+)"
)
_PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
)


def _looks_random(token: str) -> bool:
    body = token.split("-", 1)[1] if "-" in token else token
    return (
        any(c.isdigit() for c in body) and any(c.islower() for c in body) and any(c.isupper() for c in body)
    )


def _mixed(match: re.Match[str]) -> str:
    return REDACTED if _looks_random(match.group(0)) else match.group(0)


def _assignment(match: re.Match[str]) -> str:
    name, sep, quote, value = match.groups()
    if value == REDACTED or value.startswith(("$", "***")):  # a shell reference is not a secret
        return match.group(0)
    return f"{name}{sep}{quote}{REDACTED}"


def redact_text(text: str) -> str:
    """`text` with every token-shaped value replaced by REDACTED (names and separators kept)."""
    if not text or len(text) < 8:
        return text
    text = _PEM_PRIVATE_KEY.sub(REDACTED, text)
    text = _EXACT_TOKENS.sub(REDACTED, text)
    text = _MIXED_TOKENS.sub(_mixed, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    return _ASSIGNMENT.sub(_assignment, text)


def has_secret(text: str) -> bool:
    """True when `redact_text` would change `text`."""
    return redact_text(text) != text


def is_secret_key(key: object, markers: tuple[str, ...] = SECRET_MARKERS) -> bool:
    return isinstance(key, str) and any(marker in key.lower() for marker in markers)


def _redact_cli_list(items: list[Any], markers: tuple[str, ...]) -> list[Any]:
    out: list[Any] = []
    redact_next = False
    for item in items:
        if redact_next:
            out.append(REDACTED)
            redact_next = False
            continue
        if isinstance(item, str) and item.startswith("-"):
            flag, eq, _value = item.partition("=")
            if is_secret_key(flag.lstrip("-"), markers):
                if eq:
                    out.append(f"{flag}={REDACTED}")
                else:
                    out.append(item)
                    redact_next = True
                continue
        out.append(redact(item, markers))
    return out


def redact(value: Any, markers: tuple[str, ...] = SECRET_MARKERS) -> Any:
    """Redact secret-looking keys at any depth, `--token=x` / `--token x` in CLI-style lists, and
    token-shaped values inside every string (`redact_text`)."""
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_secret_key(k, markers) else redact(v, markers)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return _redact_cli_list(list(value), markers)
    if isinstance(value, str):
        return redact_text(value)
    return value
