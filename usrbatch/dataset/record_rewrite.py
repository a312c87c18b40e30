"""Rewriting records.parquet: every rewrite snapshots the previous file first (`_snapshots/`,
newest 5 kept) and replaces the file atomically; `freeze_registry` stamps the registry hash into it
(auto-freeze) with a `registry_freeze` event, as the public tool does. Callers hold the dataset lock.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from usrbatch.dataset import schema as S
from usrbatch.dataset.event_append import append_event
from usrbatch.dataset.layout import REGISTRY_DIR, SNAPSHOT_NAME, SNAPSHOTS_DIR
from usrbatch.dataset.ref import DatasetRef
from usrbatch.dataset.registry import Registry
from usrbatch.files import atomic_copy, atomic_write_bytes, atomic_write_with

SNAPSHOT_KEEP_N = 5


def snapshot_records(dataset_dir: Path, *, keep: int | None = SNAPSHOT_KEEP_N) -> Path:
    """Copy records.parquet to `_snapshots/records-<%Y%m%dT%H%M%S%f UTC>.parquet`; keep the newest
    `keep` (None: prune nothing, as sync does: its snapshot names must stay those both sides hold)."""
    directory = Path(dataset_dir)
    snap_dir = directory / SNAPSHOTS_DIR
    snap_dir.mkdir(exist_ok=True)
    while True:
        stamp = S.utc_now().strftime("%Y%m%dT%H%M%S%f")
        target = snap_dir / f"records-{stamp}.parquet"
        if not target.exists():
            break
        time.sleep(0.000_01)
    atomic_copy(directory / "records.parquet", target)
    if keep is not None:
        names = sorted(p.name for p in snap_dir.iterdir() if SNAPSHOT_NAME.match(p.name))
        for stale in names[:-keep]:
            (snap_dir / stale).unlink(missing_ok=True)
    return target


def write_records(
    dataset_dir: Path, schema: pa.Schema, old: Path | None, extra: pa.Table | None, *, snapshot: bool = True
) -> Path | None:
    """Stream the old rows (if any) plus `extra` into a new records.parquet with `schema`'s metadata."""
    directory = Path(dataset_dir)
    target = directory / "records.parquet"
    snap = snapshot_records(directory) if snapshot and target.is_file() else None

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            if old is not None:
                for batch in pq.ParquetFile(old).iter_batches(batch_size=65_536):
                    writer.write_table(pa.Table.from_batches([batch]).cast(schema))
            if extra is not None and extra.num_rows:
                writer.write_table(extra.cast(schema))
            if (old is None) and (extra is None or not extra.num_rows):
                writer.write_table(
                    pa.Table.from_batches([], schema=schema)
                )  # empty_table() imports pandas (~1-4 s)

    atomic_write_with(target, write)
    return snap


def freeze_copy(dataset_dir: Path, registry: Registry) -> Path:
    """Write `_registry/registry.<hash>.yaml` (canonical bytes) when missing."""
    path = Path(dataset_dir) / REGISTRY_DIR / f"registry.{registry.hash}.yaml"
    if not path.is_file():
        atomic_write_bytes(path, registry.canonical_bytes())
    return path


def freeze_registry(ref: DatasetRef, registry: Registry) -> bool:
    """Stamp the current registry hash into records.parquet (auto-freeze); True when it changed.

    Called under the dataset lock right before a mutation writes: a stale stamp rewrites the
    primary (with a snapshot) and records a `registry_freeze` event, as the public tool does.
    """
    frozen = freeze_copy(ref.dir, registry)
    current = pq.read_schema(ref.records)
    meta = S.read_metadata(current)
    if meta.get(S.META_REGISTRY_HASH) == registry.hash:
        return False
    new_meta = dict(current.metadata or {})
    new_meta[S.META_REGISTRY_HASH.encode()] = registry.hash.encode()
    snap = write_records(ref.dir, current.with_metadata(new_meta), ref.records, None)
    append_event(
        ref.dir,
        "registry_freeze",
        args={"registry_hash": registry.hash, "snapshot": snap.name if snap else None, "auto": True},
        metrics={"updated": True},
        artifacts={"registry_snapshot": frozen.relative_to(ref.dir).as_posix()},
        root=ref.root,
        dataset_name=ref.dataset_id,
        registry_hash=registry.hash,
    )
    return True
