"""Atomic file writes: a temp file beside the target, fsync, os.replace, fsync of the directory."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from usrbatch.dataset.layout import TEMP_PREFIX


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


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(target: Path) -> Iterator[Path]:
    """Yield a temp path; on success fsync it and rename it over `target`; on failure remove it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(target)
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Replace `target` with `data` atomically."""
    with atomic_target(target) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_parquet(target: Path, table: pa.Table, *, compression: str = "zstd") -> None:
    """Replace `target` with `table` (schema metadata included) atomically."""
    with atomic_target(target) as tmp:
        pq.write_table(table, tmp, compression=compression)


def atomic_write_with(target: Path, write: Callable[[Path], None]) -> None:
    """Replace `target` with whatever `write(tmp_path)` produces, atomically."""
    with atomic_target(target) as tmp:
        write(tmp)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy `source` to `target` atomically (streamed, bounded memory)."""
    with atomic_target(target) as tmp, open(source, "rb") as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
