"""File-system primitives, in one place: atomic replace, fsync, streamed sha256, make/prune dirs.

Every module that writes a file other code reads back, hashes a file, or creates and later removes
directories uses these, so durability and naming rules live once. The one exception is
usrbatch/agent/remote.py: it is sent to remote hosts and must stay standard-library and
Python-3.6-runnable, so it keeps its own copies (said at its top).

Only the standard library here (pyarrow is imported inside `atomic_write_parquet`): the dataset,
sync, transport, job and monitor layers all sit above this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

# Temp files start with this prefix; dataset/layout.py classifies such names as runtime, so sync
# never inventories or transfers them.
TEMP_PREFIX = ".usrbatch-tmp-"

CHUNK = 1 << 20


def temp_path_for(target: Path) -> Path:
    """A temp name beside `target` that sync classifies as runtime (never inventoried)."""
    return target.with_name(f"{TEMP_PREFIX}{target.name}-{secrets.token_hex(6)}")


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename inside it survives a crash (best effort where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync a regular file's data by path (never follows a symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(target: Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path; on success fsync it and rename it over `target`; on failure remove it.

    With `mode`, the temp file is created owner-only first and given `mode` just before the
    rename, so its contents are never readable more widely than `mode` allows.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(target)
    try:
        if mode is not None:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(target: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace `target` with `data` atomically (see `atomic_target` for `mode`)."""
    with atomic_target(target, mode=mode) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(target: Path, text: str, *, mode: int | None = None) -> None:
    """Replace `target` with UTF-8 `text` atomically (see `atomic_target` for `mode`)."""
    atomic_write_bytes(target, text.encode("utf-8"), mode=mode)


def atomic_write_parquet(target: Path, table: pa.Table, *, compression: str = "zstd") -> None:
    """Replace `target` with `table` (schema metadata included) atomically."""
    import pyarrow.parquet as pq

    with atomic_target(target) as tmp:
        pq.write_table(table, tmp, compression=compression)


def atomic_write_with(target: Path, write: Callable[[Path], None]) -> None:
    """Replace `target` with whatever `write(tmp_path)` produces, atomically."""
    with atomic_target(target) as tmp:
        write(tmp)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy `source` to `target` atomically (streamed, bounded memory)."""
    with atomic_target(target) as tmp, open(source, "rb") as src, open(tmp, "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)


def sha256_file(path: Path, *, follow_symlinks: bool = True) -> str:
    """Hex sha256 of a whole file, streamed (hashlib.file_digest); with follow_symlinks=False a
    symlink raises OSError (ELOOP) instead of hashing its target."""
    flags = os.O_RDONLY | (0 if follow_symlinks else os.O_NOFOLLOW)
    with os.fdopen(os.open(path, flags), "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sha256_prefix(path: Path, length: int, *, follow_symlinks: bool = True) -> Any:
    """The running sha256 object over the first `length` bytes of `path` (fewer if it is shorter),
    ready to be updated with the bytes that follow (resumed transfers)."""
    digest = hashlib.sha256()
    left = length
    flags = os.O_RDONLY | (0 if follow_symlinks else os.O_NOFOLLOW)
    with os.fdopen(os.open(path, flags), "rb") as fh:
        while left > 0:
            block = fh.read(min(CHUNK, left))
            if not block:
                break
            digest.update(block)
            left -= len(block)
    return digest


def make_parents(directory: Path) -> list[Path]:
    """mkdir -p; returns the directories it created, shallowest first, so a failure can undo them
    with `prune_empty(created[-1], created[0].parent)`."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    directory.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def prune_empty(directory: Path, stop: Path) -> None:
    """Remove `directory` and then its parents while they are empty, never `stop` or above it."""
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
