"""Rewrites of records.parquet (dataset/record_rewrite.py): a snapshot of the previous file first,
the newest five kept."""

from __future__ import annotations

from usrbatch.dataset.layout import SNAPSHOT_NAME
from usrbatch.dataset.record_rewrite import SNAPSHOT_KEEP_N, snapshot_records
from usrbatch.dataset.records import import_records
from usrbatch.dataset.ref import DatasetRef


def test_snapshots_keep_the_newest_five(dataset: DatasetRef) -> None:
    made = [snapshot_records(dataset.dir) for _ in range(8)]
    names = sorted(p.name for p in (dataset.dir / "_snapshots").iterdir())
    assert len(names) == SNAPSHOT_KEEP_N
    assert names == sorted(p.name for p in made[-SNAPSHOT_KEEP_N:])
    assert all(SNAPSHOT_NAME.match(n) for n in names)


def test_every_rewrite_snapshots_the_previous_file(dataset: DatasetRef) -> None:
    before = dataset.records.read_bytes()
    import_records(dataset, [{"sequence": "TTTTAAAA"}])
    newest = sorted((dataset.dir / "_snapshots").iterdir())[-1]
    assert newest.read_bytes() == before
