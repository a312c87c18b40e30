from __future__ import annotations

import multiprocessing as mp
import threading
import time
from pathlib import Path

import pytest

from usrbatch.dataset.locks import LockTimeoutError, dataset_lock, event_lock
from usrbatch.errors import DatasetError


def _hold(directory: str, ready, release) -> None:
    with dataset_lock(Path(directory)):
        ready.set()
        release.wait(30)


def test_dataset_lock_excludes_another_process_and_times_out(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        start = time.monotonic()
        pattern = r"Timed out after 0\.3 s waiting for the dataset lock"
        with pytest.raises(LockTimeoutError, match=pattern), dataset_lock(tmp_path, timeout=0.3):
            pass
        assert time.monotonic() - start >= 0.3
    finally:
        release.set()
        proc.join(30)
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


def test_event_lock_file_mode(tmp_path: Path) -> None:
    with event_lock(tmp_path):
        pass
    assert (tmp_path / ".events.lock").stat().st_mode & 0o777 == 0o600


def test_dataset_lock_needs_the_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Dataset not initialized"), dataset_lock(tmp_path / "missing"):
        pass
    assert not (tmp_path / "missing").exists()
