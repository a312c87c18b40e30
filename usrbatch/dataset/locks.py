"""The dataset write lock (`.usr.lock`) and the event lock (`.events.lock`), as context managers.

Both are exclusive `fcntl.flock` locks. They are re-entrant within one thread of one process (a
step holding the dataset lock may call `import_records`, which takes it again), and exclusive
across threads and processes because every acquisition from another thread opens its own file
description.

Who holds a lock is written into the lock file while it is held (one JSON line: pid, host,
command, since) and cleared on release, so a wait or a timeout can name the holder. The public
USR tool leaves its lock files empty; then the holder is looked up in /proc/locks (same host).
Lock files are created with mode 0666 minus the process umask, like every other dataset file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from usrbatch.dataset.layout import DATASET_LOCK, EVENTS_LOCK
from usrbatch.errors import DatasetError, EventLogError
from usrbatch.redaction import redact
from usrbatch.terminal import printable

_POLL_S = 0.05
_FILE_MODE = 0o666  # the umask decides, as for records.parquet and every other dataset file
_HOLDER_MAX = 4096
_COMMAND_MAX = 200
_held = threading.local()


class LockTimeoutError(DatasetError):
    """A lock was not acquired within the requested timeout."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, as recorded in the lock file or found in /proc/locks."""

    pid: int
    host: str | None = None
    command: str | None = None
    since: str | None = None

    def describe(self) -> str:
        where = f" on host {self.host}" if self.host else ""
        what = f" ({self.command})" if self.command else ""
        when = f" since {self.since}" if self.since else ""
        return f"pid {self.pid}{where}{what}{when}"


def _counts() -> dict[str, int]:
    counts = getattr(_held, "counts", None)
    if counts is None:
        counts = {}
        _held.counts = counts
    return counts


def open_lock_file(path: Path, flags: int) -> int:
    """Open (creating) a lock file O_NOFOLLOW with the umask-derived mode; clear errors, no traceback."""
    try:
        return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW, _FILE_MODE)
    except PermissionError as exc:
        raise DatasetError(
            f"Permission denied opening {path}: this user cannot write the dataset's lock file.",
            hint="Ask the dataset's owner to give your group write access (`chmod -R g+rwX <dataset dir>`), "
            "or work on your own copy.",
        ) from exc


def _holder_record() -> bytes:
    command = shlex.join(str(a) for a in redact(list(sys.argv)))
    if len(command) > _COMMAND_MAX:
        command = command[: _COMMAND_MAX - 1] + "…"
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": since}
    return (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")


def _record_holder(fd: int) -> tuple[int, int] | None:
    """Write the holder record; returns the file's (atime, mtime) in ns to restore on release."""
    with contextlib.suppress(OSError):  # a read-only lock file still locks; the record is a courtesy
        st = os.fstat(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_record(), 0)
        return st.st_atime_ns, st.st_mtime_ns
    return None


def _clear_holder(fd: int, times: tuple[int, int] | None) -> None:
    """Empty the lock file and give back its times: after release it looks untouched."""
    if times is None:
        return
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.utime(fd, ns=times)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _proc_locks_holder(path: Path) -> LockHolder | None:
    """The pid /proc/locks names for an flock on `path` (same host only), with its command line."""
    try:
        st = os.stat(path, follow_symlinks=False)
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
            pid = int(fields[4])
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                command = shlex.join(
                    str(a) for a in redact([a.decode(errors="replace") for a in raw.split(b"\0") if a])
                )
            except OSError:
                command = None
            if command and len(command) > _COMMAND_MAX:
                command = command[: _COMMAND_MAX - 1] + "…"
            return LockHolder(pid, socket.gethostname(), command or None)
    return None


def lock_holder(path: Path) -> LockHolder | None:
    """Who holds the lock at `path`: its recorded holder (if that process still runs on this host,
    or runs elsewhere), else the /proc/locks entry, else None."""
    recorded: LockHolder | None = None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            raw = os.read(fd, _HOLDER_MAX)
        finally:
            os.close(fd)
        data = json.loads(raw.decode("utf-8")) if raw.strip() else None
        if isinstance(data, dict) and isinstance(data.get("pid"), int):
            recorded = LockHolder(
                data["pid"],
                str(data.get("host") or "") or None,
                str(data.get("command") or "") or None,
                str(data.get("since") or "") or None,
            )
    except (OSError, ValueError):
        recorded = None
    if recorded is not None and (recorded.host != socket.gethostname() or _pid_alive(recorded.pid)):
        return recorded
    return _proc_locks_holder(path)


def _holder_text(path: Path) -> tuple[str, str]:
    """(" It is held by ...", hint) for a busy lock."""
    holder = lock_holder(path)
    if holder is None:
        return (
            "",
            f"No holder is recorded in {path}; `fuser -v {shlex.quote(str(path))}` (or `lsof`) on the "
            "machine that runs it names the process. Wait for it to finish, or retry with a longer timeout.",
        )
    return (
        f" It is held by {holder.describe()}.",
        f"Wait for pid {holder.pid} to finish (or stop it, `kill {holder.pid}`"
        + (f" on {holder.host}" if holder.host else "")
        + ", if it hung), then retry.",
    )


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return False


def _flock(fd: int, path: Path, timeout: float | None, what: str) -> None:
    if _try_flock(fd):
        return
    held_by, _hint = _holder_text(path)
    limit = "" if timeout is None else f" (up to {timeout:g} s)"
    print(printable(f"usr: waiting for the {what} {path}{limit}.{held_by}"), file=sys.stderr, flush=True)
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + max(0.0, timeout)
    while not _try_flock(fd):
        if time.monotonic() >= deadline:
            held_by, hint = _holder_text(path)
            raise LockTimeoutError(
                f"Timed out after {timeout:g} s waiting for the {what} {path}.{held_by}", hint=hint
            )
        time.sleep(_POLL_S)


@contextmanager
def _reentrant(key: str) -> Iterator[bool]:
    counts = _counts()
    if counts.get(key, 0) > 0:
        counts[key] += 1
        try:
            yield True
        finally:
            counts[key] -= 1
        return
    yield False


@contextmanager
def dataset_lock(dataset_dir: Path | str, *, timeout: float | None = None) -> Iterator[Path]:
    """Hold the exclusive dataset write lock `<dataset>/.usr.lock` (blocking; optional timeout).

    A wait prints one line to stderr naming the holder (with or without a timeout). Raises DatasetError if the dataset
    directory does not exist or the lock file cannot be opened, LockTimeoutError on timeout
    (naming the holder and what to do).
    """
    directory = Path(dataset_dir)
    if not directory.is_dir():
        raise DatasetError(f"Dataset not initialized: {directory}")
    path = directory / DATASET_LOCK
    key = "ds:" + str(path.absolute())
    with _reentrant(key) as nested:
        if nested:
            yield path
            return
        fd = open_lock_file(path, os.O_RDWR)
        try:
            _flock(fd, path, timeout, "dataset lock")
            times = _record_holder(fd)
            _counts()[key] = 1
            try:
                yield path
            finally:
                _counts().pop(key, None)
                _clear_holder(fd, times)
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def _check_lock_file(fd: int, path: Path) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        raise EventLogError(
            f"Event lock must be one regular file with a single link: {path}. Remove it (no usr "
            "process may be running) and retry."
        )
    return st


@contextmanager
def event_lock(dataset_dir: Path | str, *, timeout: float | None = None) -> Iterator[Path]:
    """Hold the exclusive event lock `<dataset>/.events.lock` (O_NOFOLLOW, regular, nlink==1).

    The lock file's identity is re-checked after locking, so a swapped or hard-linked lock file is
    rejected. Raises EventLogError for an unsafe lock file, LockTimeoutError on timeout.
    """
    directory = Path(dataset_dir)
    path = directory / EVENTS_LOCK
    key = "ev:" + str(path.absolute())
    with _reentrant(key) as nested:
        if nested:
            yield path
            return
        try:
            fd = open_lock_file(path, os.O_RDWR)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise EventLogError(
                    f"Event lock is a symlink: {path}. Remove the symlink and retry."
                ) from exc
            raise
        try:
            before = _check_lock_file(fd, path)
            _flock(fd, path, timeout, "event lock")
            after = _check_lock_file(fd, path)
            try:
                on_disk = os.stat(path, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise EventLogError(f"Event lock was removed while locking: {path}. Retry.") from exc
            if (on_disk.st_dev, on_disk.st_ino) != (after.st_dev, after.st_ino) or (
                before.st_ino != after.st_ino
            ):
                raise EventLogError(f"Event lock was replaced while locking: {path}. Retry.")
            times = _record_holder(fd)
            _counts()[key] = 1
            try:
                yield path
            finally:
                _counts().pop(key, None)
                _clear_holder(fd, times)
        finally:
            os.close(fd)
