"""Moved to usrbatch/files.py (the one home of file-system primitives); kept so imports written
before the move keep working. New code imports usrbatch.files."""

from usrbatch.files import (
    atomic_copy,
    atomic_target,
    atomic_write_bytes,
    atomic_write_parquet,
    atomic_write_with,
    fsync_dir,
    temp_path_for,
)

__all__ = [
    "atomic_copy",
    "atomic_target",
    "atomic_write_bytes",
    "atomic_write_parquet",
    "atomic_write_with",
    "fsync_dir",
    "temp_path_for",
]
