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
import shlex
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
            keep = size - len(pending)
            raise VerificationError(
                "Event log ends with a partial JSONL record",
                hint=f"{path} has {len(pending)} byte(s) after its last complete line (a write was cut "
                f"off). Look at them with `tail -c {len(pending)} {shlex.quote(str(path))}`, cut them off "
                f"with `truncate -s {keep} {shlex.quote(str(path))}`, then retry.",
            )
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


class EventHistoryError(VerificationError):
    """A sync refused because one event history does not extend the other.

    The message is the public tool's (§7.4); the hint says which side is ahead by how many
    events and what to run. `advice(dataset, remote)` renders that hint with real names (the CLI
    knows them; the engine does not).
    """

    def __init__(
        self,
        message: str,
        *,
        action: str,
        kind: str,
        local_only: int | None = None,
        remote_only: int | None = None,
        local_events: int = 0,
        remote_events: int = 0,
    ) -> None:
        super().__init__(message)
        self.action = action  # "push" or "pull"
        self.kind = kind  # "remote-ahead", "local-ahead", "diverged", "partial"
        self.local_only = local_only
        self.remote_only = remote_only
        self.local_events = local_events
        self.remote_events = remote_events
        self.hint = self.advice()

    def advice(self, dataset: str = "<dataset>", remote: str = "<remote>") -> str:
        never = (
            "The tool never merges histories: keep one side. To keep the remote's, move the local "
            f"dataset directory aside and `usr pull {dataset} {remote}` again; to keep the local one, "
            f"move the remote copy aside on the remote host and `usr push {dataset} {remote}`."
        )
        if self.kind == "partial":
            return (
                f"The remote event log ends mid-record (an interrupted write there). Cut the fragment "
                f"off on the remote host (`truncate -s <bytes up to its last newline> .events.log`), "
                f"then `usr push {dataset} {remote}` again."
            )
        if self.kind == "local-ahead":
            return (
                f"Local has {self.local_only} event(s) the remote lacks: push first "
                f"(`usr push {dataset} {remote}`), or leave the remote behind."
            )
        if self.kind == "remote-ahead":
            return (
                f"The remote has {self.remote_events} event(s), local {self.local_events}: the remote "
                f"holds events this copy lacks. Pull first (`usr pull {dataset} {remote}`), then push. "
                "If that pull refuses too, the histories diverged. " + never
            )
        if self.local_only is not None and self.remote_only is not None:
            counts = (
                f"Local has {self.local_only} event(s) the remote lacks and the remote has "
                f"{self.remote_only} the local lacks"
            )
        else:
            counts = (
                f"Local has {self.local_events} event(s), the remote {self.remote_events}, and they differ"
            )
        return f"{counts}: the histories diverged. " + never


def _push_refusal(kind: str, local_rev: EventRevision, remote_rev: EventRevision) -> EventHistoryError:
    message = "Remote event log is not a prefix of the locked local event log"
    return EventHistoryError(
        f"{message}: partial line" if kind == "partial" else message,
        action="push",
        kind=kind,
        local_events=local_rev.lines,
        remote_events=remote_rev.lines,
    )


def prove_push_prefix(local_path: Path, local_rev: EventRevision, remote_rev: EventRevision) -> None:
    """The remote log must be a complete-line prefix of the (locked) local log (§7.4, push).

    An absent remote is fine. Raises EventHistoryError `Remote event log is not a prefix of the
    locked local event log` (`: partial line` when it ends mid-record), its hint saying which side
    is ahead and what to run.
    """
    if not remote_rev.exists:
        return
    if not local_rev.exists or remote_rev.sha256 is None or remote_rev.size > local_rev.size:
        raise _push_refusal("remote-ahead", local_rev, remote_rev)
    if remote_rev.size == local_rev.size:
        if remote_rev.sha256 != local_rev.sha256:
            raise _push_refusal("diverged", local_rev, remote_rev)
        return
    sha, last = _prefix_digest(Path(local_path), remote_rev.size)
    if sha != remote_rev.sha256:
        raise _push_refusal("diverged", local_rev, remote_rev)
    if remote_rev.size > 0 and last != ord("\n"):
        raise _push_refusal("partial", local_rev, remote_rev)


def _common_lines(a: Path, b: Path) -> int:
    """How many leading lines two logs share (streamed; lines are bounded by the record cap)."""
    same = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            la, lb = fa.readline(RECORD_LIMIT + 1), fb.readline(RECORD_LIMIT + 1)
            if not la or la != lb or not la.endswith(b"\n"):
                return same
            same += 1


def prove_pull_extends(
    local_rev: EventRevision, staged_path: Path, *, local_path: Path | None = None
) -> EventRevision:
    """The staged (remote) log must be valid and extend the local history (§7.4, pull).

    An absent local log is fine. Returns the staged revision. Raises VerificationError (§7.3
    messages for an invalid staged log), else EventHistoryError `Remote event log does not extend
    the local event history` (also for branched and equal-length divergent histories); given
    `local_path` (the locked local log), its hint counts the events each side lacks.
    """
    staged = capture_validated_revision(Path(staged_path))
    if not local_rev.exists:
        return staged
    if staged.exists and staged.size >= local_rev.size:
        sha, _last = _prefix_digest(Path(staged_path), local_rev.size)
        if sha == local_rev.sha256:
            return staged
    common: int | None = None
    if local_path is not None and staged.exists:
        try:
            common = _common_lines(Path(local_path), Path(staged_path))
        except OSError:
            common = None
    if not staged.exists:
        common = 0
    local_only = None if common is None else local_rev.lines - common
    remote_only = None if common is None else staged.lines - common
    raise EventHistoryError(
        "Remote event log does not extend the local event history",
        action="pull",
        kind="local-ahead" if remote_only == 0 else "diverged",
        local_only=local_only,
        remote_only=remote_only,
        local_events=local_rev.lines,
        remote_events=staged.lines,
    )
