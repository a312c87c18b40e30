"""Base records: `init_dataset` and the append-only `import_records`.

Every mutation holds the dataset lock. Input is validated completely before the first byte is
written (record_rows.py), so a rejected import leaves the dataset untouched; records.parquet is
rewritten with a snapshot first (record_rewrite.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from usrbatch.dataset import schema as S
from usrbatch.dataset.event_append import append_event
from usrbatch.dataset.inputs import read_table
from usrbatch.dataset.layout import META
from usrbatch.dataset.locks import dataset_lock
from usrbatch.dataset.meta import meta_text
from usrbatch.dataset.pending import refuse_if_pending
from usrbatch.dataset.record_rewrite import freeze_copy, snapshot_records, write_records
from usrbatch.dataset.record_rows import base_columns_only, prepare_records, row_indices, rows_text
from usrbatch.dataset.ref import DatasetRef, as_dataset, dataset_entries, open_dataset, restore_hint
from usrbatch.dataset.registry import ensure_registry, load_registry
from usrbatch.errors import DatasetError, SchemaError
from usrbatch.files import atomic_write_bytes


@dataclass(frozen=True)
class InitResult:
    dataset: DatasetRef
    registry_path: Path
    registry_created: bool
    registry_hash: str


@dataclass(frozen=True)
class ImportResult:
    dataset: DatasetRef
    rows_incoming: int
    rows_written: int
    rows_skipped: int
    dropped_columns: tuple[str, ...] = ()  # input columns that are not base columns (not imported)


def _refuse_occupied(ref: DatasetRef) -> None:
    """DatasetError naming what is there when the dataset dir holds anything but runtime files:
    `init` over an old history would rewrite meta.md and append a second `init` to its log."""
    found = dataset_entries(ref.dir)
    if not found:
        return
    listed = ", ".join(found[:8]) + (f", … ({len(found)} in total)" if len(found) > 8 else "")
    if ref.records.exists():
        raise DatasetError(
            f"Dataset already exists: {ref.dir} (it holds {listed}).",
            hint=f"Import into it with `usr import {ref.dataset_id}`, or choose another id.",
        )
    raise DatasetError(
        f"Refusing to init '{ref.dataset_id}': {ref.dir} already holds dataset files ({listed}) "
        "but no records.parquet; a new dataset there would mix into the old history.",
        hint=restore_hint(ref.dir)
        or "Choose another id, or move those files out of the directory if they are not needed.",
    )


def init_dataset(root: Path | str, dataset_id: str, *, source: str = "", notes: str = "") -> InitResult:
    """Create a dataset: empty records.parquet (core schema), a snapshot, the frozen registry,
    meta.md and `.events.log` with an `init` event.

    The public tool refuses `init` without registry.yaml. A new user's first command is `init`, so
    here a missing registry is created holding only the reserved `usr_state` namespace (the result
    says so, and the CLI prints it). Raises DatasetError when the dataset already exists or the
    directory holds anything but runtime files (locks, leases, temps), naming what it found.
    """
    ref = open_dataset(root, dataset_id)
    refuse_if_pending(ref.dir, "init")
    _refuse_occupied(ref)
    registry, created = ensure_registry(ref.root)
    ref.dir.mkdir(parents=True, exist_ok=True)
    with dataset_lock(ref.dir):
        refuse_if_pending(ref.dir, "init")
        _refuse_occupied(ref)
        created_at = S.iso_utc(S.utc_now())
        schema = S.CORE_SCHEMA.with_metadata(S.base_metadata(created_at, registry.hash))
        write_records(ref.dir, schema, None, None, snapshot=False)
        snapshot_records(ref.dir)
        freeze_copy(ref.dir, registry)
        atomic_write_bytes(ref.dir / META, meta_text(ref, created_at, source, notes).encode("utf-8"))
        append_event(
            ref.dir,
            "init",
            args={"source": source, "notes": notes},
            metrics={"rows": 0},
            root=ref.root,
            dataset_name=ref.dataset_id,
            registry_hash=registry.hash,
        )
    return InitResult(ref, registry.path, created, registry.hash)


def _as_table(data: pa.Table | Iterable[Mapping[str, Any]]) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    return pa.Table.from_pylist(list(data))


def import_records(
    dataset: DatasetRef | Path | str,
    data: pa.Table | Iterable[Mapping[str, Any]] | Path | str,
    *,
    fmt: str | None = None,
    bio_type: str = "dna",
    alphabet: str = "dna_4",
    source: str | None = None,
    skip_existing: bool = False,
    lock_timeout: float | None = None,
) -> ImportResult:
    """Append base records (a file path, an Arrow table or dict rows) to records.parquet.

    Ids already in the dataset are an error, or skipped with `skip_existing=True` (DenseGen's
    mode). Everything is validated before the first write; the old file is snapshotted; an
    `import_rows` event records {rows_written, rows_skipped}. Raises SchemaError/DatasetError.
    """
    ref = as_dataset(dataset).require()
    if isinstance(data, Path | str):
        path = Path(data)
        origin = str(path)
        table = read_table(path, fmt, string_columns=("sequence", "id", "bio_type", "alphabet", "source"))
        args: dict[str, Any] = {"path": str(path.absolute()), "format": fmt or path.suffix.lstrip(".")}
    else:
        origin = "input rows"
        table = _as_table(data)
        args = {"path": None, "format": "arrow"}
    table, dropped = base_columns_only(table, origin)
    prepared = prepare_records(table, origin=origin, bio_type=bio_type, alphabet=alphabet, source=source)
    registry = load_registry(ref.root, required=True)
    assert registry is not None
    with dataset_lock(ref.dir, timeout=lock_timeout):
        refuse_if_pending(ref.dir, "import")
        ref.require_mutable()
        existing = S.read_parquet(ref.records, columns=["id"])["id"]
        present = pc.is_in(prepared["id"], value_set=existing.combine_chunks())
        n_present = pc.sum(present).as_py() or 0
        if n_present and not skip_existing:
            rows = row_indices(present)
            raise SchemaError(
                f"{origin}: {n_present} row(s) are already in dataset '{ref.dataset_id}' "
                f"(rows: {rows_text(rows)}; id {prepared['id'][rows[0]].as_py()}). Remove them from the "
                "input (ids are sha1 of bio_type|sequence)."
            )
        fresh = prepared.filter(pc.invert(present)) if n_present else prepared
        if fresh.num_rows:
            old_schema = pq.read_schema(ref.records)
            meta = dict(old_schema.metadata or {})
            meta.update({k: v for k, v in S.base_metadata("", registry.hash).items() if v})
            meta.setdefault(S.META_DATASET_CREATED_AT.encode(), S.iso_utc(S.utc_now()).encode())
            new = fresh
            for field in old_schema:  # a materialized base may carry extra columns: fill with nulls
                if field.name not in new.column_names:
                    new = new.append_column(field.name, pa.nulls(new.num_rows, field.type))
            new = new.select(old_schema.names)
            freeze_copy(ref.dir, registry)
            write_records(ref.dir, old_schema.with_metadata(meta), ref.records, new)
        append_event(
            ref.dir,
            "import_rows",
            args={**args, "bio_type": bio_type, "alphabet": alphabet, "source": source},
            metrics={"rows_written": fresh.num_rows, "rows_skipped": int(n_present)},
            root=ref.root,
            dataset_name=ref.dataset_id,
            registry_hash=registry.hash,
        )
    return ImportResult(ref, table.num_rows, fresh.num_rows, int(n_present), dropped)
