"""A dataset reference: (datasets root, dataset id) and the directory they name."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from usrbatch.dataset.event_append import require_complete_log
from usrbatch.dataset.layout import (
    RECORDS,
    SNAPSHOT_NAME,
    SNAPSHOTS_DIR,
    dataset_dir,
    is_runtime,
    locate,
    normalize_dataset_id,
)
from usrbatch.errors import DatasetError

# Core columns a mutation compares as text (ids against ids, sequences against keys).
_TEXT_COLUMNS = ("id", "sequence", "bio_type", "alphabet")


def dataset_entries(directory: Path) -> list[str]:
    """Names in `directory` other than runtime ones (locks, leases, temps), sorted, dirs with `/`."""
    try:
        with os.scandir(directory) as it:
            names = [e.name + ("/" if e.is_dir(follow_symlinks=False) else "") for e in it]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if not is_runtime(n.rstrip("/")))


def newest_snapshot(directory: Path) -> Path | None:
    """The newest `_snapshots/records-<stamp>.parquet` of a dataset dir (names sort by time)."""
    try:
        names = [n for n in os.listdir(Path(directory) / SNAPSHOTS_DIR) if SNAPSHOT_NAME.match(n)]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Path(directory) / SNAPSHOTS_DIR / max(names) if names else None


def restore_hint(directory: Path) -> str | None:
    """How to bring records.parquet back from `_snapshots/`, or None when there is no snapshot."""
    snap = newest_snapshot(directory)
    if snap is None:
        return None
    target = Path(directory) / RECORDS
    return (
        f"Restore the newest snapshot: `cp {shlex.quote(str(snap))} {shlex.quote(str(target))}` "
        "(it holds the rows as they were before the last rewrite; import anything added after it "
        "again), or `usr pull` the dataset from a remote that has it."
    )


@dataclass(frozen=True)
class DatasetRef:
    root: Path
    dataset_id: str

    @property
    def dir(self) -> Path:
        return dataset_dir(self.root, self.dataset_id)

    @property
    def records(self) -> Path:
        return self.dir / RECORDS

    def require(self, *, readable: bool = True) -> DatasetRef:
        """Self, or DatasetError `Dataset not initialized: <path>` when records.parquet is missing.

        The hint points at `_snapshots/` (the newest snapshot and the copy command) when the
        directory still holds one, and at `usr init` only when the directory holds no dataset
        files. With `readable` (the default) the parquet footer is read too, so a truncated or
        corrupt records.parquet is a DatasetError naming the file instead of a pyarrow traceback.
        """
        if not self.records.is_file():
            found = dataset_entries(self.dir)
            if not found:
                hint = f"Create it with `usr --root {self.root} init {self.dataset_id}` (or check --root)."
            else:
                hint = restore_hint(self.dir) or (
                    f"{self.dir} still holds {', '.join(found)} but no snapshot; `usr pull` the dataset "
                    "from a remote that has it (`usr init` refuses a directory with dataset files)."
                )
            raise DatasetError(f"Dataset not initialized: {self.dir}", hint=hint)
        if readable:
            import pyarrow as pa  # here: a reference that reads no parquet (events tail) needs none
            import pyarrow.parquet as pq

            try:
                pq.read_schema(self.records)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DatasetError(
                    f"{self.records} is not a readable parquet file ({exc}).",
                    hint=restore_hint(self.dir) or "`usr pull` the dataset from a remote copy.",
                ) from exc
        return self

    def require_mutable(self) -> DatasetRef:
        """`require()`, plus what a mutation needs: core text columns that are text, and an event
        log that ends with a complete line. Raises DatasetError/EventLogError naming the fix."""
        self.require()
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(self.records)
        for name in _TEXT_COLUMNS:
            kind = schema.field(name).type if name in schema.names else pa.string()
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise DatasetError(
                    f"{self.records}: column '{name}' is {kind}, but USR stores it as "
                    "string; refusing to write into a dataset whose core schema is broken.",
                    hint=restore_hint(self.dir)
                    or f"Rewrite the column as text, then check with `usr validate {self.dataset_id}`.",
                )
        require_complete_log(self.dir)
        return self


def open_dataset(root: Path | str, dataset_id: str) -> DatasetRef:
    """A validated reference (the id is normalized; existence is not checked)."""
    return DatasetRef(Path(root).absolute(), normalize_dataset_id(dataset_id))


def as_dataset(target: DatasetRef | Path | str) -> DatasetRef:
    """Accept a DatasetRef or a dataset directory path (its root and id are inferred)."""
    if isinstance(target, DatasetRef):
        return target
    where = locate(Path(target))
    return DatasetRef(where.root, where.dataset_id)
