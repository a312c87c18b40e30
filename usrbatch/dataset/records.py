"""Base records: init, append-only import, snapshots, and the registry freeze stamp.

Every rewrite of records.parquet snapshots the previous file first (`_snapshots/`, newest 5 kept)
and replaces the file atomically. Every mutation holds the dataset lock. Input is validated
completely before the first byte is written, so a rejected import leaves the dataset untouched.
"""

from __future__ import annotations

import time
from collections import Counter
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
from usrbatch.dataset.layout import META, REGISTRY_DIR, SNAPSHOT_NAME, SNAPSHOTS_DIR
from usrbatch.dataset.locks import dataset_lock
from usrbatch.dataset.pending import refuse_if_pending
from usrbatch.dataset.ref import DatasetRef, as_dataset, dataset_entries, open_dataset, restore_hint
from usrbatch.dataset.registry import Registry, ensure_registry, load_registry
from usrbatch.errors import DatasetError, SchemaError
from usrbatch.files import atomic_copy, atomic_write_bytes, atomic_write_with
from usrbatch.redaction import redact_text

SNAPSHOT_KEEP_N = 5
_SAMPLE = 5


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


# ---------------------------------------------------------------------------------------------
# Snapshots and rewrites


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


def _write_records(
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


def _freeze_copy(dataset_dir: Path, registry: Registry) -> Path:
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
    frozen = _freeze_copy(ref.dir, registry)
    current = pq.read_schema(ref.records)
    meta = S.read_metadata(current)
    if meta.get(S.META_REGISTRY_HASH) == registry.hash:
        return False
    new_meta = dict(current.metadata or {})
    new_meta[S.META_REGISTRY_HASH.encode()] = registry.hash.encode()
    snap = _write_records(ref.dir, current.with_metadata(new_meta), ref.records, None)
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


# ---------------------------------------------------------------------------------------------
# meta.md


def _meta_text(ref: DatasetRef, created_at: str, source: str, notes: str) -> str:
    return (
        f"name: {ref.dataset_id}\n"
        f"created_at: {created_at}\n"
        f"source: {source}\n"
        f"notes: {redact_text(notes)}\n"
        "schema: USR v1\n\n"
        "### Updates\n"
    )


def append_meta_note(dataset_dir: Path, note: str, command: str | None = None) -> None:
    """Append `- <ts>: <note>` (and an optional ```bash block) to meta.md, atomically."""
    path = Path(dataset_dir) / META
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    text += f"- {S.iso_utc(S.utc_now())}: {redact_text(note)}\n"
    if command:
        text += f"```bash\n{redact_text(command)}\n```\n"
    atomic_write_bytes(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# init


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
        _write_records(ref.dir, schema, None, None, snapshot=False)
        snapshot_records(ref.dir)
        _freeze_copy(ref.dir, registry)
        atomic_write_bytes(ref.dir / META, _meta_text(ref, created_at, source, notes).encode("utf-8"))
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


# ---------------------------------------------------------------------------------------------
# import


def _rows_text(indices: Iterable[int]) -> str:
    items = list(indices)
    shown = ", ".join(str(i + 1) for i in items[:_SAMPLE])
    return shown + (f", … ({len(items)} in total)" if len(items) > _SAMPLE else "")


def _indices(mask: pa.Array | pa.ChunkedArray) -> list[int]:
    return pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()


def _string_column(table: pa.Table, name: str, origin: str) -> pa.ChunkedArray:
    column = table[name]
    if pa.types.is_large_string(column.type) or pa.types.is_null(column.type):
        column = column.cast(pa.string())
    if not pa.types.is_string(column.type):
        raise SchemaError(
            f"Column '{name}' in {origin} must be text, got {column.type}. Write it as text (quoted "
            "in JSON, a string column in parquet)"
            + (", or drop the id column and let usr compute ids." if name == "id" else ".")
        )
    return column


def _filled(table: pa.Table, name: str, default: str, origin: str) -> pa.ChunkedArray | pa.Array:
    if name not in table.column_names:
        return pa.array([default] * table.num_rows, pa.string())
    column = pc.utf8_trim_whitespace(_string_column(table, name, origin))
    return pc.if_else(pc.or_kleene(pc.is_null(column), pc.equal(column, "")), default, column)


IMPORT_COLUMNS = ("sequence", "bio_type", "alphabet", "source", "id", "length", "created_at", "name")


def base_columns_only(table: pa.Table, origin: str) -> tuple[pa.Table, tuple[str, ...]]:
    """(the columns import reads, the names of the others), as the public `import` drops them.

    A column that only differs from a core column by case, spaces or dashes (`Sequence`,
    `bio type`) is refused instead: dropping it would silently lose what it means."""
    repeated = [n for n, count in Counter(table.column_names).items() if count > 1]
    if repeated:  # which of two same-named columns is meant cannot be guessed
        shown = ", ".join(repr(n) for n in repeated)
        raise SchemaError(
            f"{origin} has more than one column named {shown}. Give every column a unique, "
            "non-empty name in the header."
        )
    core = {c.replace("_", ""): c for c in S.CORE_COLUMNS}
    for name in table.column_names:
        key = name.strip().lower().replace(" ", "").replace("-", "").replace("_", "")
        if name not in IMPORT_COLUMNS and key in core:
            raise SchemaError(
                f"{origin} has a column '{name}' that looks like the core column '{core[key]}'. "
                f"Rename it to '{core[key]}' (or remove it)."
            )
    dropped = tuple(c for c in table.column_names if c not in IMPORT_COLUMNS)
    return (table.drop_columns(list(dropped)) if dropped else table), dropped


def prepare_records(
    table: pa.Table,
    *,
    origin: str,
    bio_type: str = "dna",
    alphabet: str = "dna_4",
    source: str | None = None,
) -> pa.Table:
    """Validate input rows and build core-schema rows (ids, lengths, created_at). Pure; writes nothing.

    Raises SchemaError naming `origin`, the offending rows and the fix for: a missing or non-text
    `sequence`, empty sequences, unknown bio_type/alphabet, symbols outside the alphabet, an `id`
    that is not sha1(bio_type|sequence), duplicate ids and unexpected columns.
    """
    extra = [c for c in table.column_names if c not in IMPORT_COLUMNS]
    if extra:
        raise SchemaError(
            f"{origin} has column(s) {', '.join(extra)} that are not base record columns "
            "(sequence, bio_type, alphabet, source, id). Remove them, and attach extra data as an "
            "overlay with `usr attach`."
        )
    if "sequence" not in table.column_names:
        raise SchemaError(f"{origin} has no 'sequence' column. Add a header named 'sequence'.")
    for name, value in (("bio_type", bio_type), ("alphabet", alphabet)):
        known = S.ALPHABETS_BY_BIO_TYPE if name == "bio_type" else S.ALPHABETS
        if value not in known:
            raise SchemaError(f"Unknown {name} '{value}'. Use one of: {', '.join(known)}.")
    sequences = pc.utf8_trim_whitespace(_string_column(table, "sequence", origin))
    empty = pc.or_kleene(pc.is_null(sequences), pc.equal(sequences, ""))
    if pc.any(empty).as_py():
        rows = _indices(empty)
        raise SchemaError(
            f"{origin}: {len(rows)} row(s) have an empty sequence (rows: {_rows_text(rows)}). "
            "Fill in the sequence or drop those rows."
        )
    bio_types = _filled(table, "bio_type", bio_type, origin)
    alphabets = _filled(table, "alphabet", alphabet, origin)
    pairs = pa.table({"b": bio_types, "a": alphabets}).group_by(["b", "a"]).aggregate([]).to_pylist()
    for pair in pairs:
        if pair["b"] not in S.ALPHABETS_BY_BIO_TYPE:
            raise SchemaError(
                f"{origin}: unknown bio_type '{pair['b']}'. Use one of: {', '.join(S.ALPHABETS_BY_BIO_TYPE)}."
            )
        if pair["a"] not in S.ALPHABETS_BY_BIO_TYPE[pair["b"]]:
            raise SchemaError(
                f"{origin}: alphabet '{pair['a']}' does not fit bio_type '{pair['b']}'. "
                f"Use one of: {', '.join(S.ALPHABETS_BY_BIO_TYPE[pair['b']])}."
            )
    for name in sorted({p["a"] for p in pairs}):
        bad = pc.and_(pc.equal(alphabets, name), S.invalid_alphabet_mask(sequences, name))
        if pc.any(bad).as_py():
            rows = _indices(bad)
            example = sequences[rows[0]].as_py()
            raise SchemaError(
                f"{origin}: {len(rows)} sequence(s) contain symbols outside alphabet {name} "
                f"({S.ALPHABETS[name]}, any case) (rows: {_rows_text(rows)}; e.g. '{example[:40]}'). "
                "Fix the sequences or declare the right --alphabet."
            )
    ids = S.compute_ids(bio_types, sequences)
    if "id" in table.column_names:
        given = pc.utf8_trim_whitespace(_string_column(table, "id", origin))
        wrong = pc.and_(pc.invert(pc.is_null(given)), pc.not_equal(given, ids))
        if pc.any(wrong).as_py():
            rows = _indices(wrong)
            raise SchemaError(
                f"{origin}: {len(rows)} id(s) are not sha1('<bio_type>|<sequence>') (rows: {_rows_text(rows)}). "
                "Drop the id column and let usr compute ids."
            )
    counts = pa.table({"id": ids}).group_by("id").aggregate([("id", "count")])
    repeated = counts.filter(pc.greater(counts["id_count"], 1))
    if repeated.num_rows:
        sample = repeated["id"][0].as_py()
        rows = _indices(pc.equal(ids, sample))
        raise SchemaError(
            f"{origin}: duplicate sequences: {repeated.num_rows} id(s) repeated. Sample: {sample} "
            f"(rows {_rows_text(rows)}). Remove the duplicate rows."
        )
    if source is None:
        sources = _filled(table, "source", "", origin) if "source" in table.column_names else None
    else:
        sources = None
    if sources is None:
        sources = pa.array([source or ""] * table.num_rows, pa.string())
    now = pa.scalar(S.utc_now(), pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "id": ids,
            "bio_type": bio_types,
            "sequence": sequences,
            "alphabet": alphabets,
            "length": pc.cast(pc.utf8_length(sequences), pa.int32()),
            "source": sources,
            "created_at": pa.array([now.value] * table.num_rows, pa.timestamp("us", tz="UTC")),
        },
        schema=S.CORE_SCHEMA,
    )


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
            rows = _indices(present)
            raise SchemaError(
                f"{origin}: {n_present} row(s) are already in dataset '{ref.dataset_id}' "
                f"(rows: {_rows_text(rows)}; id {prepared['id'][rows[0]].as_py()}). Remove them from the "
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
            _freeze_copy(ref.dir, registry)
            _write_records(ref.dir, old_schema.with_metadata(meta), ref.records, new)
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
