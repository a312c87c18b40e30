"""Undelivered messages on disk: one JSON file per (message, target), retried with backoff.

Every message goes through the spool, so a delivery that fails (receiver down, network cut,
watcher killed) is retried by the next poll or the next watcher run. Files are named by message
id and target, so queuing the same message twice keeps one file. Nothing secret is stored: the
target is named, its URL and credentials are read from the config at send time.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from usrbatch.files import atomic_write_bytes
from usrbatch.monitor.alerts import Message

RETRY_BASE_S = 5.0


@dataclass(frozen=True)
class SpoolEntry:
    path: Path
    target: str
    message: Message
    attempts: int
    next_try: float
    last_error: str


@dataclass(frozen=True)
class DrainResult:
    delivered: int
    failed: int
    waiting: int  # not due yet (backoff)
    errors: tuple[str, ...]


def spool_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "spool"


def _entry_path(directory: Path, target: str, message_id: str) -> Path:
    return directory / f"{message_id}.{target}.json"


def _write(
    path: Path, target: str, message: Message, attempts: int, next_try: float, last_error: str
) -> None:
    data = {
        "target": target,
        "message": message.to_json(),
        "attempts": attempts,
        "next_try": next_try,
        "last_error": last_error,
    }
    atomic_write_bytes(path, json.dumps(data, indent=1).encode("utf-8"))


def enqueue(directory: Path, target: str, message: Message, now: float) -> Path:
    """Queue `message` for `target` (idempotent: an existing entry is kept as it is)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = _entry_path(directory, target, message.id)
    if not path.exists():
        _write(path, target, message, 0, now, "")
    return path


def entries(directory: Path) -> Iterator[SpoolEntry]:
    """Queued entries, oldest first; unreadable files are skipped (left for a person to inspect)."""
    if not directory.is_dir():
        return
    paths = sorted(
        (p for p in directory.iterdir() if p.suffix == ".json" and not p.name.startswith(".")),
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            yield SpoolEntry(
                path=path,
                target=str(data["target"]),
                message=Message.from_json(data["message"]),
                attempts=int(data.get("attempts") or 0),
                next_try=float(data.get("next_try") or 0.0),
                last_error=str(data.get("last_error") or ""),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue


def queued_alert_ids(directory: Path) -> set[str]:
    """Alert ids inside queued messages (a restarted watcher must not queue them again)."""
    return {aid for entry in entries(directory) for aid in entry.message.alert_ids}


def backoff(attempts: int, retry_max_s: float) -> float:
    """Seconds before retry number `attempts` + 1: 5, 10, 20, ... capped at retry_max_s."""
    return min(RETRY_BASE_S * (2 ** max(attempts - 1, 0)), retry_max_s)


def drain(
    directory: Path,
    send: Callable[[str, Message], None],
    now: float,
    *,
    retry_max_s: float,
    force: bool = False,
) -> DrainResult:
    """Try every due entry once: delivered ones are removed, failed ones rescheduled with backoff.

    `send(target, message)` raises on failure (its text must hold no secret); a target that is no
    longer configured raises too, and its entries stay for when it comes back.
    """
    delivered = failed = waiting = 0
    errors: list[str] = []
    for entry in entries(directory):
        if entry.next_try > now and not force:
            waiting += 1
            continue
        try:
            send(entry.target, entry.message)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the entry for a retry
            attempts = entry.attempts + 1
            error = str(exc)
            _write(
                entry.path, entry.target, entry.message, attempts, now + backoff(attempts, retry_max_s), error
            )
            errors.append(f"{entry.target}: {error}" if not error.startswith(entry.target) else error)
            failed += 1
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
        delivered += 1
    return DrainResult(delivered, failed, waiting, tuple(errors))
