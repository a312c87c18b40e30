from __future__ import annotations

import multiprocessing as mp
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import ANY

import pytest

from usrbatch.dataset.locks import LockHolder, LockTimeoutError, dataset_lock, event_lock, lock_holder
from usrbatch.errors import DatasetError


def _hold(directory: str, ready, release) -> None:
    with dataset_lock(Path(directory)):
        ready.set()
        release.wait(30)


def test_dataset_lock_excludes_another_process_and_times_out(tmp_path: Path) -> None:
    with _held(tmp_path):
        start = time.monotonic()
        pattern = r"Timed out after 0\.3 s waiting for the dataset lock"
        with pytest.raises(LockTimeoutError, match=pattern), dataset_lock(tmp_path, timeout=0.3):
            pass
        assert time.monotonic() - start >= 0.3
    with dataset_lock(tmp_path, timeout=5):  # free again once the holder exits
        assert (tmp_path / ".usr.lock").is_file()


def test_locks_are_reentrant_in_one_thread_and_exclusive_across_threads(tmp_path: Path) -> None:
    got: list[str] = []
    with dataset_lock(tmp_path), dataset_lock(tmp_path), event_lock(tmp_path), event_lock(tmp_path):
        worker = threading.Thread(target=lambda: _try_lock(tmp_path, got))
        worker.start()
        worker.join()
    assert got == ["timeout"]
    worker = threading.Thread(target=lambda: _try_lock(tmp_path, got))
    worker.start()
    worker.join()
    assert got == ["timeout", "acquired"]


def _try_lock(directory: Path, got: list[str]) -> None:
    try:
        with dataset_lock(directory, timeout=0.2):
            got.append("acquired")
    except LockTimeoutError:
        got.append("timeout")


def test_lock_files_follow_the_umask_like_records(tmp_path: Path) -> None:
    previous = os.umask(0o002)
    try:
        with dataset_lock(tmp_path), event_lock(tmp_path):
            pass
        (tmp_path / "records.parquet").write_bytes(b"")  # how every other dataset file is created
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {".usr.lock": 0o664, ".events.lock": 0o664, "records.parquet": 0o664}


def _hold_raw_flock(directory: str, ready, release) -> None:
    """A holder that records nothing (as the public tool's locks are empty files)."""
    import fcntl

    fd = os.open(os.path.join(directory, ".events.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    release.wait(30)
    os.close(fd)


@contextmanager
def _held(directory: Path, target=_hold) -> Iterator[tuple[mp.Process, object]]:
    """Another process holding a lock of `directory` until the block ends (or `release.set()`)."""
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=target, args=(str(directory), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        yield proc, release
    finally:
        release.set()
        proc.join(30)


def test_timeout_names_the_recorded_holder_and_the_fix(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with _held(tmp_path) as (proc, _release):
        holder = lock_holder(tmp_path / ".usr.lock")
        assert holder is not None and holder.pid == proc.pid
        assert holder.host == socket.gethostname() and holder.since and holder.since.endswith("Z")
        with pytest.raises(LockTimeoutError) as info, dataset_lock(tmp_path, timeout=0.1):
            pass
        assert f"It is held by pid {proc.pid} on host {socket.gethostname()}" in info.value.message
        waiting = capfd.readouterr().err
        assert (
            f"usr: waiting for the dataset lock {tmp_path / '.usr.lock'} (up to 0.1 s). It is held" in waiting
        )
        assert " since 20" in info.value.message
        assert f"kill {proc.pid}" in (info.value.hint or "")
    assert (tmp_path / ".usr.lock").read_bytes() == b""  # the record goes with the lock
    before = (tmp_path / ".usr.lock").stat().st_mtime_ns
    with dataset_lock(tmp_path):
        assert lock_holder(tmp_path / ".usr.lock") == LockHolder(os.getpid(), socket.gethostname(), ANY, ANY)
    assert (tmp_path / ".usr.lock").stat().st_mtime_ns == before  # and the file looks untouched
    assert lock_holder(tmp_path / ".usr.lock") is None


def test_an_unrecorded_holder_is_found_in_proc_locks(tmp_path: Path) -> None:
    with _held(tmp_path, _hold_raw_flock) as (proc, _release):
        with pytest.raises(LockTimeoutError) as info, event_lock(tmp_path, timeout=0.1):
            pass
        assert f"held by pid {proc.pid}" in info.value.message
        assert "python" in info.value.message  # its command line, from /proc


def test_a_blocking_wait_says_who_holds_the_lock(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with _held(tmp_path) as (proc, release):
        threading.Timer(0.5, release.set).start()
        with dataset_lock(tmp_path):  # blocks until the holder lets go
            pass
    err = capfd.readouterr().err
    assert f"usr: waiting for the dataset lock {tmp_path / '.usr.lock'}. It is held by pid {proc.pid}" in err


def test_dataset_lock_needs_the_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Dataset not initialized"), dataset_lock(tmp_path / "missing"):
        pass
    assert not (tmp_path / "missing").exists()
