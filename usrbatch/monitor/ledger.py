"""The watcher's memory, one file written atomically: log cursors, alert ids already queued, and
suspicions waiting for a second look. A watcher killed and restarted resumes from it and queues
nothing twice: an alert id is recorded here in the same write that advances the cursor past it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from usrbatch.errors import UsrError
from usrbatch.files import atomic_write_bytes
from usrbatch.monitor.cursor import Cursor

LEDGER_VERSION = 1
KEEP_SENT_S = 90 * 86400  # ids older than this are forgotten (their logs have long moved on)


@dataclass
class Ledger:
    """Mutable while a poll runs; `save` writes it whole."""

    cursors: dict[str, Cursor] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)  # alert id -> when it was queued
    suspects: dict[str, float] = field(default_factory=dict)  # alert id -> first seen (needs a 2nd look)
    last_status_at: float = 0.0  # when the scheduler was last asked (rate limit across runs)
    heartbeat_at: float = 0.0
    polled_at: float = 0.0  # the last poll (the heartbeat metric)
    held: dict[str, dict] = field(default_factory=dict)  # alert id -> alert, waiting for its loop's window
    problem_at: dict[str, float] = field(default_factory=dict)  # loop id -> last problem message queued

    def prune(self, now: float) -> None:
        self.sent = {k: t for k, t in self.sent.items() if now - t < KEEP_SENT_S}


def ledger_path(state_dir: Path) -> Path:
    return Path(state_dir) / "ledger.json"


def load_ledger(state_dir: Path) -> Ledger:
    """The saved ledger, or an empty one on a first run. A corrupt file is an error naming it."""
    path = ledger_path(state_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Ledger()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsrError(
            f"watch ledger {path} is corrupt: {exc}",
            hint=f"Move it aside (mv {path} {path}.bad); the watcher then re-reads the logs from the start "
            "and may repeat old alerts.",
        ) from None
    if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
        raise UsrError(
            f"watch ledger {path}: unknown version {data.get('version') if isinstance(data, dict) else '?'}"
        )
    cursors = {}
    for key, raw in (data.get("cursors") or {}).items():
        cur = Cursor.from_json(raw)
        if cur is not None:
            cursors[key] = cur
    return Ledger(
        cursors=cursors,
        sent={str(k): float(v) for k, v in (data.get("sent") or {}).items()},
        suspects={str(k): float(v) for k, v in (data.get("suspects") or {}).items()},
        last_status_at=float(data.get("last_status_at") or 0.0),
        heartbeat_at=float(data.get("heartbeat_at") or 0.0),
        polled_at=float(data.get("polled_at") or 0.0),
        held={str(k): v for k, v in (data.get("held") or {}).items() if isinstance(v, dict)},
        problem_at={str(k): float(v) for k, v in (data.get("problem_at") or {}).items()},
    )


def save_ledger(state_dir: Path, ledger: Ledger) -> None:
    """Replace the ledger file atomically (temp file, fsync, rename)."""
    data = {
        "version": LEDGER_VERSION,
        "cursors": {k: c.to_json() for k, c in sorted(ledger.cursors.items())},
        "sent": ledger.sent,
        "suspects": ledger.suspects,
        "last_status_at": ledger.last_status_at,
        "heartbeat_at": ledger.heartbeat_at,
        "polled_at": ledger.polled_at,
        "held": ledger.held,
        "problem_at": ledger.problem_at,
    }
    atomic_write_bytes(ledger_path(state_dir), json.dumps(data, indent=1).encode("utf-8"))


@contextlib.contextmanager
def exclusive(state_dir: Path) -> Iterator[None]:
    """Hold the state dir's lock: two watchers sharing one ledger would each send what the other sent."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / "watch.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            raise UsrError(
                f"another usrbatch watch (pid {holder}) is using {state_dir}",
                hint="Stop it first, or give this watcher its own --state-dir.",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        yield
    finally:
        os.close(fd)
