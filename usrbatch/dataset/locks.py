"""The dataset write lock (`.usr.lock`) and the event lock (`.events.lock`), as context managers.

Both are exclusive `fcntl.flock` locks. They are re-entrant within one thread of one process (a
step holding the dataset lock may call `import_records`, which takes it again), and exclusive
across threads and processes because every acquisition from another thread opens its own file
description.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from usrbatch.dataset.layout import DATASET_LOCK, EVENTS_LOCK
from usrbatch.errors import DatasetError, EventLogError

_POLL_S = 0.05
_held = threading.local()


class LockTimeoutError(DatasetError):
    """A lock was not acquired within the requested timeout."""


def _counts() -> dict[str, int]:
    counts = getattr(_held, "counts", None)
    if counts is None:
        counts = {}
        _held.counts = counts
    return counts


def _flock(fd: int, path: Path, timeout: float | None, what: str) -> None:
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            raise LockTimeoutError(
                f"Timed out after {timeout:g} s waiting for the {what} {path}. Another usr process "
                "holds it; wait for it to finish (or retry with a longer timeout)."
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

    Raises DatasetError if the dataset directory does not exist, LockTimeoutError on timeout.
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
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            _flock(fd, path, timeout, "dataset lock")
            _counts()[key] = 1
            try:
                yield path
            finally:
                _counts().pop(key, None)
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
    """Hold the exclusive event lock `<dataset>/.events.lock` (O_NOFOLLOW, 0600, regular, nlink==1).

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
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
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
            _counts()[key] = 1
            try:
                yield path
            finally:
                _counts().pop(key, None)
        finally:
            os.close(fd)
