"""`read_dataset`: the base records left-joined with every overlay namespace on id (the
last-writer-wins merge of overlay_merge), tombstoned rows dropped on request (tombstones).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from usrbatch.dataset import schema as S
from usrbatch.dataset.overlay_merge import overlay_sources, read_overlay
from usrbatch.dataset.ref import DatasetRef, as_dataset
from usrbatch.dataset.tombstones import TOMBSTONE_NAMESPACE, deleted_mask
from usrbatch.errors import SchemaError


def read_dataset(
    dataset: DatasetRef | Path | str,
    columns: list[str] | None = None,
    *,
    include_overlays: bool = True,
    include_deleted: bool = True,
) -> pa.Table:
    """Base records left-joined with every overlay on id (base row order kept).

    `columns` selects base and/or overlay columns (id is always first); an unknown name is a
    SchemaError listing what exists. `include_deleted=False` drops tombstoned rows (the
    `usr__deleted` rule of `deleted_mask`), as `usr head` does.
    """
    ref = as_dataset(dataset).require()
    base = S.read_parquet(ref.records)
    sources_by_ns = overlay_sources(ref)
    if not include_deleted and sources_by_ns.get(TOMBSTONE_NAMESPACE):
        base = base.filter(pc.invert(deleted_mask(sources_by_ns[TOMBSTONE_NAMESPACE], base)))
    out = base
    if include_overlays:
        for namespace, sources in sorted(sources_by_ns.items()):
            overlay = read_overlay(ref, namespace, sources, base)
            position = pc.index_in(base["id"], value_set=overlay["id"].combine_chunks())
            for name in overlay.column_names[1:]:
                if name in out.column_names:
                    continue
                out = out.append_column(name, pc.take(overlay[name], position))
    if columns:
        unknown = [c for c in columns if c not in out.column_names]
        if unknown:
            raise SchemaError(
                f"Unknown column(s) {', '.join(unknown)} in dataset '{ref.dataset_id}'. "
                f"Available: {', '.join(out.column_names)}."
            )
        ordered = ["id"] + [c for c in columns if c != "id"] if "id" in out.column_names else list(columns)
        out = out.select(ordered)
    return out
