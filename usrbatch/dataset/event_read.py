"""Reading `.events.log`: stream every line, tail the last n (reading backwards), follow new
lines, render one as JSON or raw, count the events, and check the log line by line (§7.3
wording). The sync side's revision and prefix proofs: event_revision.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from usrbatch.dataset.event_record import MAX_RECORD_BYTES
from usrbatch.dataset.layout import EVENTS
from usrbatch.errors import EventLogError


def _events_path(dataset_dir: Path | str) -> Path:
    path = Path(dataset_dir) / EVENTS
    if not path.is_file():
        raise EventLogError(f"Events log not found: {path}")
    return path


def iter_lines(dataset_dir: Path | str) -> Iterator[bytes]:
    """Every non-empty line, streamed (bounded memory for `usr events tail -n 0` on a large log)."""
    with open(_events_path(dataset_dir), "rb") as fh:
        for line in fh:
            if line.strip():
                yield line.rstrip(b"\r\n")


def tail_lines(dataset_dir: Path | str, n: int = 0) -> list[bytes]:
    """The last `n` non-empty lines (0 = all), reading backwards so large logs are not fully read."""
    path = _events_path(dataset_dir)
    if n < 0:
        raise EventLogError("--n must be >= 0 (0 = all lines).")
    with open(path, "rb") as fh:
        if n == 0:
            return [line.rstrip(b"\r\n") for line in fh if line.strip()]
        fh.seek(0, os.SEEK_END)
        position = fh.tell()
        blocks: list[bytes] = []
        newlines = 0
        block = 64 * 1024
        while position > 0 and newlines <= n:  # n+1 newlines before the end bound the last n lines
            step = min(block, position)
            position -= step
            fh.seek(position)
            blocks.append(fh.read(step))
            newlines += blocks[-1].count(b"\n")
            if newlines > n:  # blank lines do not count: confirm on the joined tail (once per hit)
                found = sum(1 for line in b"".join(reversed(blocks)).split(b"\n") if line.strip())
                newlines = n + 1 if found > n else found
    buffer = b"".join(reversed(blocks))
    lines = [line.rstrip(b"\r") for line in buffer.split(b"\n") if line.strip()]
    return lines[-n:]


def render_line(line: bytes, fmt: str) -> str:
    """json: compact re-serialization (key order kept, ASCII); raw: the stripped line."""
    if fmt == "raw":
        return line.decode("utf-8", errors="replace").strip()
    if fmt != "json":
        raise EventLogError("format must be one of: json, raw.")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventLogError(f"Invalid JSONL event line: {line[:200]!r}") from exc
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def follow_lines(dataset_dir: Path | str, *, poll_s: float = 0.2) -> Iterator[bytes]:
    """Yield complete lines appended after now (seek to EOF, poll every 0.2 s). Runs until interrupted."""
    path = _events_path(dataset_dir)
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        pending = b""
        while True:
            chunk = fh.read()
            if not chunk:
                time.sleep(poll_s)
                continue
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                if line.strip():
                    yield line.rstrip(b"\r")


def check_event_log(path: Path) -> list[str]:
    """Problems of an event log (§7.3 wording), streamed; [] when valid or absent."""
    problems: list[str] = []
    if not path.exists() and not path.is_symlink():
        return problems
    if path.is_symlink() or not path.is_file():
        return [f"Event log must be one regular file: {path}"]
    with open(path, "rb") as fh:
        number = 0
        for raw in fh:
            number += 1
            if len(raw) > MAX_RECORD_BYTES:
                problems.append(
                    f"Event log record {number} exceeds the {MAX_RECORD_BYTES}-byte encoded-record limit: {path}"
                )
                continue
            if not raw.endswith(b"\n"):
                problems.append("Event log ends with a partial JSONL record")
                break
            body = raw[:-1]
            if not body.strip():
                problems.append(f"Event log contains a blank JSONL record at line {number}")
                continue
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"Event log is not valid UTF-8 at line {number}")
                continue
            try:
                obj = json.loads(text)
            except ValueError:
                problems.append(f"Event log contains malformed JSON at line {number}")
                continue
            if not isinstance(obj, dict):
                problems.append(f"Event log record {number} is not a JSON object")
    return problems


def count_events(dataset_dir: Path | str) -> int:
    path = Path(dataset_dir) / EVENTS
    if not path.is_file():
        return 0
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())
