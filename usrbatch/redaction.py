"""Secret redaction shared by the dataset event log and the structured audit log.

The event-log markers are the public USR tool's list (usr-contract §7.1), kept exact so both tools
redact the same args; audit logs add a few more.
"""

from __future__ import annotations

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
    """Redact secret-looking keys at any depth, and `--token=x` / `--token x` in CLI-style lists."""
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_secret_key(k, markers) else redact(v, markers)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return _redact_cli_list(list(value), markers)
    return value
