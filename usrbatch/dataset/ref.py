"""A dataset reference: (datasets root, dataset id) and the directory they name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

    def require(self) -> DatasetRef:
        """Self, or DatasetError `Dataset not initialized: <path>` when records.parquet is missing."""
        if not self.records.is_file():
            raise DatasetError(
                f"Dataset not initialized: {self.dir}",
                hint=f"Create it with `usr --root {self.root} init {self.dataset_id}` (or check --root).",
            )
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
