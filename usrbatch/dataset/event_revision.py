"""Sync-side views of `.events.log`: a validated content revision and the prefix proofs.

Sync never appends to the log. It only captures a revision (exists, size, sha256, lines, dev,
inode) by streaming the file once through one O_NOFOLLOW descriptor, and proves that one side's
history is a complete-line prefix of the other's (push) or extends it (pull). Memory is bounded by
the 1 MiB record cap: whole files are never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from usrbatch.errors import VerificationError

RECORD_LIMIT = 1_048_576  # bytes of one encoded record, `\n` included
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class EventRevision:
    """The content revision of one event log. `dev`/`inode` are None for remote revisions."""

    exists: bool
    size: int = 0
    sha256: str | None = None
    lines: int = 0
    dev: int | None = None
    inode: int | None = None

    def same_content(self, other: EventRevision) -> bool:
        """(exists, size, sha256) equality: the public `events_content_diff` is its negation."""
        return (self.exists, self.size, self.sha256) == (other.exists, other.size, other.sha256)


ABSENT = EventRevision(exists=False)


def _check_record(raw: bytes, lineno: int) -> None:
    if not raw.strip():
        raise VerificationError(f"Event log contains a blank JSONL record at line {lineno}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError(f"Event log is not valid UTF-8 at line {lineno}") from None
    try:
        value = json.loads(text)
    except ValueError:
        raise VerificationError(f"Event log contains malformed JSON at line {lineno}") from None
    if not isinstance(value, dict):
        raise VerificationError(f"Event log record {lineno} is not a JSON object")


def capture_validated_revision(path: Path) -> EventRevision:
    """Stream-validate the log at `path` (§7.3) and return its revision.

    Absent → `EventRevision(exists=False)`. Raises VerificationError with the public messages for a
    non-regular file, an oversize record, a blank/non-UTF-8/malformed/non-object record, a
    partial last record, or a file that changed (inode or size) while it was read.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return ABSENT
    except OSError:
        # ELOOP for a symlink, or anything else that is not one plain file.
        raise VerificationError(f"Event log must be one regular file: {path}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise VerificationError(f"Event log must be one regular file: {path}")
    with os.fdopen(fd, "rb") as fh:
        digest = hashlib.sha256()
        pending = bytearray()  # the current, unterminated record (bounded by RECORD_LIMIT)
        lineno = 0
        size = 0
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            size += len(block)
            digest.update(block)
            start = 0
            while True:
                nl = block.find(b"\n", start)
                if nl < 0:
                    pending += block[start:]
                    if len(pending) >= RECORD_LIMIT:
                        raise VerificationError(
                            f"Event log record {lineno + 1} exceeds the {RECORD_LIMIT}-byte "
                            f"encoded-record limit: {path}"
                        )
                    break
                lineno += 1
                pending += block[start:nl]
                if len(pending) + 1 > RECORD_LIMIT:
                    raise VerificationError(
                        f"Event log record {lineno} exceeds the {RECORD_LIMIT}-byte "
                        f"encoded-record limit: {path}"
                    )
                _check_record(bytes(pending), lineno)
                pending.clear()
                start = nl + 1
        if pending:
            raise VerificationError("Event log ends with a partial JSONL record")
        after = os.fstat(fh.fileno())
        try:
            named = os.lstat(path)
        except FileNotFoundError:
            named = None
        if after.st_size != size or named is None or (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
            raise VerificationError("Event log changed during validation")
    return EventRevision(
        exists=True,
        size=size,
        sha256=digest.hexdigest(),
        lines=lineno,
        dev=st.st_dev,
        inode=st.st_ino,
    )


def _prefix_digest(path: Path, length: int) -> tuple[str, int | None]:
    """sha256 of the first `length` bytes of `path`, and the byte at `length - 1` (None if short)."""
    digest = hashlib.sha256()
    remaining = length
    last: int | None = None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        while remaining > 0:
            block = fh.read(min(CHUNK, remaining))
            if not block:
                return digest.hexdigest(), None
            digest.update(block)
            remaining -= len(block)
            last = block[-1]
    return digest.hexdigest(), last


def prove_push_prefix(local_path: Path, local_rev: EventRevision, remote_rev: EventRevision) -> None:
    """The remote log must be a complete-line prefix of the (locked) local log (§7.4, push).

    An absent remote is fine. Raises VerificationError `Remote event log is not a prefix of the
    locked local event log` (`: partial line` when it ends mid-record).
    """
    message = "Remote event log is not a prefix of the locked local event log"
    if not remote_rev.exists:
        return
    if not local_rev.exists or remote_rev.sha256 is None or remote_rev.size > local_rev.size:
        raise VerificationError(message)
    if remote_rev.size == local_rev.size:
        if remote_rev.sha256 != local_rev.sha256:
            raise VerificationError(message)
        return
    sha, last = _prefix_digest(Path(local_path), remote_rev.size)
    if sha != remote_rev.sha256:
        raise VerificationError(message)
    if remote_rev.size > 0 and last != ord("\n"):
        raise VerificationError(f"{message}: partial line")


def prove_pull_extends(local_rev: EventRevision, staged_path: Path) -> EventRevision:
    """The staged (remote) log must be valid and extend the local history (§7.4, pull).

    An absent local log is fine. Returns the staged revision. Raises VerificationError (§7.3
    messages for an invalid staged log, else `Remote event log does not extend the local event
    history`), which also covers branched and equal-length divergent histories.
    """
    staged = capture_validated_revision(Path(staged_path))
    if not local_rev.exists:
        return staged
    message = "Remote event log does not extend the local event history"
    if not staged.exists or staged.size < local_rev.size:
        raise VerificationError(message)
    sha, _last = _prefix_digest(Path(staged_path), local_rev.size)
    if sha != local_rev.sha256:
        raise VerificationError(message)
    return staged
