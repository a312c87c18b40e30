"""Overlay files under `_derived/` and the one last-writer-wins merge every read uses.

Where each overlay file lives (`derived_dir`, `compact_path`, `parts_dir`), which files a
namespace has (`overlay_sources`, oldest first by `usr:overlay_created_at` then filename), how a
file is keyed (`source_key`: `id`, or a sequence key mapped through the base records), and the
merge (`_merge_sources`): per (id, column) the newest writer wins. `read_overlay` loads whole
files; `read_overlay_rows` scans each file batch-wise for chosen rows only (what `usr head` and
the tombstone rule use). This is the lowest overlay module: writes, tombstones and
`read_dataset` build on it, and it imports none of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from usrbatch.dataset import schema as S
from usrbatch.dataset.layout import DERIVED_DIR
from usrbatch.dataset.ref import DatasetRef
from usrbatch.dataset.scan import int64_array, iter_parquet_batches
from usrbatch.errors import DatasetError, SchemaError


def derived_dir(ref: DatasetRef) -> Path:
    return ref.dir / DERIVED_DIR


def compact_path(ref: DatasetRef, namespace: str) -> Path:
    return derived_dir(ref) / f"{namespace}.parquet"


def parts_dir(ref: DatasetRef, namespace: str) -> Path:
    return derived_dir(ref) / namespace


def overlay_unreadable(path: Path, exc: Exception) -> DatasetError:
    return DatasetError(f"Overlay {path} is not a readable parquet file ({exc}). Remove or restore it.")


def read_overlay_schema(path: Path) -> pa.Schema:
    """The overlay file's schema; DatasetError (not a pyarrow traceback) when it is corrupt."""
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise overlay_unreadable(path, exc) from exc


def read_overlay_table(path: Path) -> pa.Table:
    """The overlay file's rows; DatasetError when it is corrupt."""
    try:
        return S.read_parquet(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise overlay_unreadable(path, exc) from exc


@dataclass(frozen=True)
class OverlaySource:
    namespace: str
    path: Path
    created_at: str
    is_part: bool
    schema: pa.Schema | None = field(default=None, compare=False, repr=False)


def overlay_sources(ref: DatasetRef) -> dict[str, list[OverlaySource]]:
    """Overlay files per namespace, oldest first (created_at, then filename); footers only."""
    base = derived_dir(ref)
    found: dict[str, list[OverlaySource]] = {}
    if not base.is_dir():
        return found

    def source(namespace: str, path: Path, is_part: bool) -> OverlaySource:
        schema = read_overlay_schema(path)
        created = S.read_metadata(schema).get(S.META_OVERLAY_CREATED_AT) or S.iso_utc(
            S.dt.datetime.fromtimestamp(path.stat().st_mtime, S.dt.UTC)
        )
        return OverlaySource(namespace, path, created, is_part, schema)

    for entry in sorted(base.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".parquet":
            found.setdefault(entry.stem, []).append(source(entry.stem, entry, False))
        elif entry.is_dir():
            for part in sorted(entry.glob("part-*.parquet")):
                found.setdefault(entry.name, []).append(source(entry.name, part, True))
    for sources in found.values():
        sources.sort(key=lambda s: (s.created_at, s.path.name))
    return found


def source_key(schema: pa.Schema) -> tuple[str, str]:
    """(join key, key column) of an overlay file: `id`, or a sequence key mapped through the base.

    DatasetError when the file has neither its declared key column nor a `sequence` column.
    """
    key = S.read_metadata(schema).get(S.META_OVERLAY_KEY) or ("id" if "id" in schema.names else "sequence")
    if key == "id" and "id" in schema.names:
        return key, "id"
    if key in schema.names or "sequence" in schema.names:
        return key, key if key in schema.names else "sequence"
    raise DatasetError(f"Overlay has no key column '{key}'. Remove or rewrite it.")


def source_columns(schema: pa.Schema) -> list[str]:
    """The value columns an overlay file contributes (everything but its key column and id)."""
    _key, column = source_key(schema)
    return [n for n in schema.names if n not in (column, "id")]


def _sequence_keys(values: pa.Array | pa.ChunkedArray, key: str) -> pa.Array | pa.ChunkedArray:
    """Sequence keys as joined: whitespace-trimmed, upper-cased for `sequence_ci`."""
    keys = pc.utf8_trim_whitespace(values.cast(pa.string()))
    return pc.utf8_upper(keys) if key == "sequence_ci" else keys


def _source_by_id(table: pa.Table, base: pa.Table) -> pa.Table:
    key, column = source_key(table.schema)
    if column == "id":
        return table
    keys = _sequence_keys(table[column], key)
    base_seq = _sequence_keys(base["sequence"], key)
    ids = pc.take(base["id"], pc.index_in(keys, value_set=base_seq.combine_chunks()))
    rest = table.drop_columns([column])
    return rest.add_column(0, "id", ids).filter(pc.is_valid(ids))


def _merge_sources(namespace: str, tables: list[pa.Table]) -> pa.Table:
    """(id, columns...) of keyed tables given oldest first: per (id, column) the last row of the
    newest table holding that column wins (a null there too). The one merge rule of every read."""
    all_ids = pc.unique(
        pa.chunked_array([c for t in tables for c in t["id"].cast(pa.string()).chunks], type=pa.string())
    )
    names: list[str] = []
    for t in tables:
        names.extend(n for n in t.column_names if n != "id" and n not in names)
    arrays = [all_ids]
    for name in names:
        having = [t for t in tables if name in t.column_names]
        target_type = having[-1].schema.field(name).type
        try:
            values = pa.chunked_array(
                [c for t in having for c in t[name].cast(target_type).chunks], type=target_type
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(
                f"Overlay type mismatch under namespace '{namespace}': column '{name}' has different types "
                "across parts. Rewrite the offending part."
            ) from exc
        ids = pa.chunked_array(
            [c for t in having for c in t["id"].cast(pa.string()).chunks], type=pa.string()
        )
        # index_in finds an id's first occurrence; in the reversed stack that is its last write
        newest_first = int64_array(range(len(ids) - 1, -1, -1))
        last_write = pc.index_in(all_ids, value_set=pc.take(ids, newest_first))
        arrays.append(pc.take(pc.take(values, newest_first), last_write))
    return pa.table(arrays, names=["id", *names])


def read_overlay(ref: DatasetRef, namespace: str, sources: list[OverlaySource], base: pa.Table) -> pa.Table:
    """One namespace's overlay as (id, columns...), merged per cell: the newest writer wins."""
    return _merge_sources(namespace, [_source_by_id(read_overlay_table(s.path), base) for s in sources])


def _scan_source(source: OverlaySource, base: pa.Table, columns: Iterable[str] | None) -> pa.Table:
    """The rows of one overlay file whose key is in `base` (id[, sequence]), keyed by id.

    The file is read batch-wise with only its key and the wanted columns; rows for other ids are
    dropped per batch, so memory is O(len(base) + one batch).
    """
    schema = source.schema if source.schema is not None else read_overlay_schema(source.path)
    key, column = source_key(schema)
    wanted = None if columns is None else set(columns)
    names = [column] + [n for n in source_columns(schema) if wanted is None or n in wanted]
    projected = pa.schema([schema.field(n) for n in names], metadata=schema.metadata)
    if column == "id":
        value_set = base["id"].cast(pa.string()).combine_chunks()
    else:
        value_set = _sequence_keys(base["sequence"], key).combine_chunks()
    kept: list[pa.RecordBatch] = []
    try:
        for batch in iter_parquet_batches(source.path, names):
            keys = batch.column(column)
            keys = keys.cast(pa.string()) if column == "id" else _sequence_keys(keys, key)
            mask = pc.is_in(keys, value_set=value_set)
            if pc.any(mask).as_py():
                kept.append(batch.filter(mask))
    except (pa.ArrowInvalid, OSError) as exc:
        raise overlay_unreadable(source.path, exc) from exc
    table = pa.Table.from_batches(
        [pa.RecordBatch.from_arrays(b.columns, schema=projected) for b in kept], schema=projected
    )
    return _source_by_id(table, base)


def read_overlay_rows(
    namespace: str, sources: list[OverlaySource], base: pa.Table, columns: Iterable[str] | None = None
) -> pa.Table:
    """`read_overlay` restricted to the rows of `base` (id, plus sequence when an overlay is keyed
    by sequence) and to `columns`: every file is scanned batch-wise, never loaded whole."""
    wanted = None if columns is None else list(columns)
    return _merge_sources(namespace, [_scan_source(s, base, wanted) for s in sources])
