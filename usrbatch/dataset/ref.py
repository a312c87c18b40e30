"""A dataset reference: (datasets root, dataset id) and the directory they name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from usrbatch.dataset.events import locate
from usrbatch.dataset.layout import RECORDS, dataset_dir, normalize_dataset_id
from usrbatch.errors import DatasetError


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

        With `readable` (the default) the parquet footer is read too, so a truncated or corrupt
        records.parquet is a DatasetError naming the file instead of a pyarrow traceback.
        """
        if not self.records.is_file():
            raise DatasetError(
                f"Dataset not initialized: {self.dir}",
                hint=f"Create it with `usr --root {self.root} init {self.dataset_id}` (or check --root).",
            )
        if readable:
            try:
                pq.read_schema(self.records)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DatasetError(
                    f"{self.records} is not a readable parquet file ({exc}).",
                    hint=f"Restore it from {self.dir / '_snapshots'} (newest records-*.parquet) "
                    "or from a remote copy with `usr pull`.",
                ) from exc
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
