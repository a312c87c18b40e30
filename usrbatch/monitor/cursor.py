"""Follow an append-only JSON-lines log from a saved position, across truncation and rotation.

A cursor is (inode, offset, head): `head` is a digest of the file's first bytes, so a file that was
truncated and refilled past the old offset (copytruncate) is noticed too. Only complete lines are
consumed: a line still being written stays for the next poll.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HEAD_BYTES = 256
ROTATED = "rotated"
TRUNCATED = "truncated"


@dataclass(frozen=True)
class Cursor:
    """Where a log was read up to: the file's inode, the byte offset after the last full line,
    and a digest of its first bytes (up to HEAD_BYTES, or the offset when smaller)."""

    inode: int
    offset: int
    head: str

    def to_json(self) -> dict:
        return {"inode": self.inode, "offset": self.offset, "head": self.head}

    @classmethod
    def from_json(cls, data: object) -> Cursor | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(inode=int(data["inode"]), offset=int(data["offset"]), head=str(data["head"]))
        except (KeyError, TypeError, ValueError):
            return None


def _head_digest(fh, length: int) -> str:  # noqa: ANN001 - a binary file object
    fh.seek(0)
    return hashlib.sha256(fh.read(min(length, HEAD_BYTES))).hexdigest()[:16]


@dataclass(frozen=True)
class LogLine:
    """One parsed line and the cursor just after it (save it once the line is handled)."""

    data: dict
    cursor: Cursor


def start_offset(path: Path, cursor: Cursor | None) -> tuple[int, str | None]:
    """Where to resume reading `path`: (offset, reset) with reset ROTATED, TRUNCATED or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0, None
    if cursor is None:
        return 0, None
    if st.st_ino != cursor.inode:
        return 0, ROTATED
    if st.st_size < cursor.offset:
        return 0, TRUNCATED
    with open(path, "rb") as fh:
        if _head_digest(fh, cursor.offset) != cursor.head:
            return 0, TRUNCATED
    return cursor.offset, None


def read_lines(path: Path, offset: int) -> Iterator[LogLine]:
    """Complete JSON-object lines of `path` from byte `offset` on, streamed; unparseable lines are
    skipped (their cursor still advances), a last line without its newline is left for later."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed in finally; the generator streams
    except FileNotFoundError:
        return
    try:
        inode = os.fstat(fh.fileno()).st_ino
        fh.seek(offset)
        pos = offset
        head: str | None = None
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            pos += len(raw)
            if head is None or pos <= HEAD_BYTES:
                here = fh.tell()
                head = _head_digest(fh, pos)
                fh.seek(here)
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                obj = None
            yield LogLine(obj if isinstance(obj, dict) else {}, Cursor(inode, pos, head))
    finally:
        fh.close()
