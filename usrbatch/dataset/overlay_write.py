"""Overlay writes under `_derived/`: `attach` (the compact file, or a part when a part dir
exists) and `write_overlay_part`, one validated pipeline (`_write_overlay`).

Over ~400 lines on purpose: the public tool's validation steps and the write are one ordered
pipeline, kept in one module so the order can be read top to bottom.

Validation runs in the public tool's order with its messages (usr-contract §12) and checks
everything before the first write; keys are normalized as the public tool keys them and
`usr:overlay_key` names the key column. A part dir's `digest_ledger.json` is kept current after
every part written. Reads are in overlay_merge / overlay_read.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from usrbatch.dataset import schema as S
from usrbatch.dataset.digest_ledger import update_digest_ledger
from usrbatch.dataset.event_append import append_event
from usrbatch.dataset.inputs import detect_format, read_table
from usrbatch.dataset.locks import dataset_lock
from usrbatch.dataset.meta import append_meta_note
from usrbatch.dataset.overlay_merge import (
    compact_path,
    parts_dir,
    read_overlay_schema,
    read_overlay_table,
)
from usrbatch.dataset.pending import refuse_if_pending
from usrbatch.dataset.record_rewrite import freeze_registry
from usrbatch.dataset.record_rows import first_repeat, row_indices, rows_text
from usrbatch.dataset.ref import DatasetRef, as_dataset
from usrbatch.dataset.registry import (
    NamespaceSpec,
    Registry,
    check_namespace_name,
    load_registry,
)
from usrbatch.dataset.registry_types import parse_type, render_type
from usrbatch.errors import SchemaError
from usrbatch.files import atomic_write_parquet, fsync_dir

JOIN_KEYS = ("id", "sequence", "sequence_norm", "sequence_ci")


@dataclass(frozen=True)
class OverlayWriteResult:
    dataset: DatasetRef
    namespace: str
    path: Path
    columns: tuple[str, ...]
    rows_incoming: int
    rows_matched: int
    rows_written: int
    rows_missing: int
    as_part: bool


@dataclass
class _Incoming:
    """Validated input: the key values and the namespaced columns (raw and JSON-parsed)."""

    keys: pa.ChunkedArray | pa.Array
    columns: dict[str, pa.ChunkedArray | pa.Array] = field(default_factory=dict)
    parsed: dict[str, list[Any]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Validation steps (in the public order)


def _looks_json(value: str) -> bool:
    text = value.lstrip()
    return text.startswith("[") or text.startswith("{")


def _parse_json_cells(name: str, column: pa.ChunkedArray | pa.Array) -> list[Any] | None:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return None
    values = column.to_pylist()
    candidates = [v for v in values if v is not None and v.strip()]
    if not candidates or not all(_looks_json(v) for v in candidates):
        return None
    out: list[Any] = []
    for row, value in enumerate(values, start=1):
        if value is None or not value.strip():
            out.append(None)
            continue
        try:
            out.append(json.loads(value))
        except ValueError as exc:
            raise SchemaError(
                f"Column '{name}' row {row}: invalid JSON-like value. Provide valid JSON or pass --no-parse-json."
            ) from exc
    return out


def _incoming(
    table: pa.Table,
    namespace: str,
    *,
    key: str,
    key_col: str | None,
    columns: list[str] | None,
    origin: str,
    parse_json: bool,
    duplicate_message: str,
) -> _Incoming:
    source_key = key_col or key
    if source_key not in table.column_names:
        raise SchemaError(
            f"Missing key column '{source_key}' in incoming data.",
            hint=f"{origin} has columns: {', '.join(table.column_names)}. Pass --key-col to name the key column.",
        )
    if columns:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise SchemaError(
                f"Column(s) {', '.join(repr(c) for c in missing)} named in --columns are not in the input "
                f"file {origin} (it has: {', '.join(table.column_names)}). Fix --columns or the file."
            )
        selected = [c for c in columns if c != source_key]
    else:
        selected = [c for c in table.column_names if c != source_key]
    parsed: dict[str, list[Any]] = {}
    if parse_json:
        for name in selected:
            values = _parse_json_cells(name, table[name])
            if values is not None:
                parsed[name] = values
    prefix = f"{namespace}__"
    out = _Incoming(keys=table[source_key])
    for name in selected:
        if "__" in name and not name.startswith(prefix):
            raise SchemaError(f"Column '{name}' does not belong to namespace '{namespace}'.")
        target = name if name.startswith(prefix) else prefix + name
        if target in out.columns:
            raise SchemaError(f"Column '{name}' appears twice in {origin} after prefixing to '{target}'.")
        out.columns[target] = table[name]
        if name in parsed:
            out.parsed[target] = parsed[name]
    if not out.columns:
        raise SchemaError(f"{origin} has no overlay columns besides the key '{source_key}'.")
    keys = out.keys
    if not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
        keys = pc.cast(keys, pa.string())
    keys = pc.utf8_trim_whitespace(keys.cast(pa.string()))
    if key == "sequence_ci":
        keys = pc.utf8_upper(keys)
    blank = pc.or_kleene(pc.is_null(keys), pc.equal(keys, ""))
    if pc.any(blank).as_py():
        rows = row_indices(blank)
        raise SchemaError(f"{len(rows)} row(s) have missing key values (rows: {rows_text(rows, sep=',')}).")
    repeat = first_repeat(keys)
    if repeat is not None:
        n_repeated, sample, rows = repeat
        raise SchemaError(
            duplicate_message.format(n=n_repeated, key=sample, rows=rows_text(rows, sep=","), origin=origin)
        )
    out.keys = keys
    return out


def _compatible(source: pa.DataType, target: pa.DataType) -> bool:
    """Casts that never lose meaning: null→any, int→int/float, float→float, large_*→plain, nested alike."""
    if source == target or pa.types.is_null(source):
        return True
    if (pa.types.is_string(source) or pa.types.is_large_string(source)) and pa.types.is_string(target):
        return True
    if pa.types.is_integer(source) and (pa.types.is_integer(target) or pa.types.is_floating(target)):
        return True
    if pa.types.is_floating(source) and pa.types.is_floating(target):
        return True
    is_list = (
        pa.types.is_list(source) or pa.types.is_large_list(source) or pa.types.is_fixed_size_list(source)
    )
    if is_list and (pa.types.is_list(target) or pa.types.is_fixed_size_list(target)):
        return _compatible(source.value_type, target.value_type)
    if pa.types.is_struct(source) and pa.types.is_struct(target):
        names = {f.name: f.type for f in source}
        return all(f.name in names and _compatible(names[f.name], f.type) for f in target) and len(
            names
        ) == len(target)
    if pa.types.is_timestamp(source) and pa.types.is_timestamp(target):
        return source.tz == target.tz
    return False


def _typed(
    name: str, spec: NamespaceSpec, column: pa.ChunkedArray | pa.Array, parsed: list[Any] | None
) -> pa.Array | pa.ChunkedArray:
    registered = spec.column(name)
    assert registered is not None
    expected = parse_type(registered.type)
    nested = (
        pa.types.is_list(expected) or pa.types.is_fixed_size_list(expected) or pa.types.is_struct(expected)
    )
    got = render_type(column.type) if not pa.types.is_null(column.type) else "null"
    if parsed is not None and nested:
        try:
            return pa.array(parsed, type=expected)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            raise SchemaError(
                f"Overlay column '{name}' type mismatch: expected {render_type(expected)}, got {got} "
                f"(JSON cells do not convert: {exc})."
            ) from exc
    if _compatible(column.type, expected):
        try:
            return pc.cast(column, expected, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(
                f"Overlay column '{name}' type mismatch: expected {render_type(expected)}, got {got} ({exc})."
            ) from exc
    raise SchemaError(f"Overlay column '{name}' type mismatch: expected {render_type(expected)}, got {got}.")


def _map_keys(ref: DatasetRef, key: str, keys: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """(ids or nulls, matched mask) of incoming keys against the base table."""
    base_cols = ["id"] if key == "id" else ["id", "sequence", "bio_type", "alphabet"]
    base = S.read_parquet(ref.records, columns=base_cols)
    if key == "id":
        ids = pa.chunked_array(keys) if isinstance(keys, pa.Array) else keys
        # hash the (small) incoming key set and scan the base once, not the other way round
        wanted = pc.unique(ids.combine_chunks())
        present = base["id"].filter(pc.is_in(base["id"], value_set=wanted))
        matched = pc.is_in(ids, value_set=present.combine_chunks())
        return pc.if_else(matched, ids, pa.scalar(None, pa.string())).combine_chunks(), matched
    bio_types = pc.unique(base["bio_type"]).to_pylist()
    if len(bio_types) > 1:
        raise SchemaError("Attach by sequence requires dataset with a single bio_type.")
    base_seq = pc.utf8_trim_whitespace(base["sequence"])
    if key == "sequence_ci":
        alphabets = set(pc.unique(base["alphabet"]).to_pylist())
        if alphabets - {"dna_4"}:
            raise SchemaError("sequence_ci is only valid for dna_4 datasets.")
        base_seq = pc.utf8_upper(base_seq)
    if pc.count_distinct(base_seq).as_py() != len(base_seq):
        raise SchemaError(f"Attach key requires unique base keys; duplicate base keys detected for '{key}'.")
    position = pc.index_in(keys, value_set=base_seq.combine_chunks())
    ids = pc.take(base["id"], position)
    return ids.combine_chunks(), pc.is_valid(position)


def _table_key(table: pa.Table) -> str:
    meta = S.read_metadata(table.schema)
    return meta.get(S.META_OVERLAY_KEY) or ("id" if "id" in table.column_names else "sequence")


def _overlay_metadata(
    namespace: str, spec: NamespaceSpec, registry: Registry, created_at: str, key: str
) -> dict[bytes, bytes]:
    return {
        S.META_OVERLAY_NAMESPACE.encode(): namespace.encode(),
        S.META_OVERLAY_KEY.encode(): key.encode(),
        S.META_OVERLAY_CREATED_AT.encode(): created_at.encode(),
        S.META_REGISTRY_HASH.encode(): registry.hash.encode(),
        S.META_NAMESPACE_CONTRACT_HASH.encode(): spec.contract_hash.encode(),
    }


def _ordered_schema(spec: NamespaceSpec, names: Iterable[str], key: str = "id") -> pa.Schema:
    present = set(names)
    return pa.schema(
        [(key, pa.string())] + [(c.name, parse_type(c.type)) for c in spec.columns if c.name in present]
    )


def _merge_compact(existing: pa.Table, incoming: pa.Table, spec: NamespaceSpec, key: str) -> pa.Table:
    """Incoming values win for its rows and columns; every other existing cell is kept (joined
    on the key column, `key`, which both tables are keyed by)."""
    names = [n for n in existing.column_names if n != key] + [
        n for n in incoming.column_names if n != key and n not in existing.column_names
    ]
    schema = _ordered_schema(spec, names, key)
    existing_keys = existing[key].cast(pa.string()).combine_chunks()
    in_incoming = pc.is_in(existing_keys, value_set=incoming[key].combine_chunks())
    rest = existing.filter(pc.invert(in_incoming))
    position = pc.index_in(incoming[key], value_set=existing_keys)
    arrays_rest, arrays_new = [], []
    for fld in schema:
        if fld.name in rest.column_names:
            arrays_rest.append(rest[fld.name].cast(fld.type))
        else:
            arrays_rest.append(pa.nulls(rest.num_rows, fld.type))
        if fld.name in incoming.column_names:
            arrays_new.append(incoming[fld.name].cast(fld.type))
        elif fld.name in existing.column_names:
            arrays_new.append(pc.take(existing[fld.name], position).cast(fld.type))
        else:
            arrays_new.append(pa.nulls(incoming.num_rows, fld.type))
    return pa.concat_tables(
        [pa.Table.from_arrays(arrays_rest, schema=schema), pa.Table.from_arrays(arrays_new, schema=schema)]
    )


def _part_name() -> str:
    stamp = S.iso_utc(S.utc_now()).replace(":", "").replace("-", "").replace(".", "")
    return f"part-{stamp}-{uuid.uuid4().hex}.parquet"


def _move_compact_into_parts(ref: DatasetRef, namespace: str) -> Path | None:
    """Move a compact `_derived/<ns>.parquet` into the part dir; returns the part it became."""
    compact = compact_path(ref, namespace)
    if not compact.is_file():
        return None
    target_dir = parts_dir(ref, namespace)
    target_dir.mkdir(parents=True, exist_ok=True)
    created = S.read_metadata(read_overlay_schema(compact)).get(S.META_OVERLAY_CREATED_AT, "")
    stamp = created.replace(":", "").replace("-", "").replace(".", "") or "00000000T000000000000Z"
    part = target_dir / f"part-{stamp}-{uuid.uuid4().hex}.parquet"
    os.replace(compact, part)
    fsync_dir(target_dir)
    fsync_dir(compact.parent)
    return part


# ---------------------------------------------------------------------------------------------
# The one write path behind attach and write_overlay_part


def _write_overlay(
    dataset: DatasetRef | Path | str,
    namespace: str,
    table: pa.Table,
    *,
    key: str,
    key_col: str | None,
    columns: list[str] | None,
    allow_missing: bool,
    allow_overwrite: bool,
    origin: str,
    parse_json: bool,
    mode: str,
    event_args: Mapping[str, Any],
    note: str | None,
    lock_timeout: float | None,
) -> OverlayWriteResult:
    ref = as_dataset(dataset).require()
    check_namespace_name(namespace)
    if key not in JOIN_KEYS:
        raise SchemaError(
            f"Unsupported join key '{key}'.", hint="Use --key id|sequence|sequence_norm|sequence_ci."
        )
    duplicate = (
        "Duplicate keys in attachment input: {n} key(s) repeated. Sample: {key} (rows {rows})."
        if mode == "attach"
        else "Overlay part has duplicate keys for '{key}'. ({n} key(s) repeated in {origin}, rows {rows})."
    )
    incoming = _incoming(
        table,
        namespace,
        key=key,
        key_col=key_col,
        columns=columns,
        origin=origin,
        parse_json=parse_json,
        duplicate_message=duplicate,
    )
    rows_incoming = table.num_rows
    with dataset_lock(ref.dir, timeout=lock_timeout):
        refuse_if_pending(ref.dir, "attach" if mode == "attach" else "write_overlay_part")
        ref.require_mutable()  # torn event log or non-text core columns: refuse before writing
        ids, matched = _map_keys(ref, key, incoming.keys)
        rows_matched = int(pc.sum(matched).as_py() or 0)
        rows_missing = rows_incoming - rows_matched
        if rows_missing and not allow_missing:
            missing_rows = row_indices(pc.invert(matched))
            sample = ", ".join(str(incoming.keys[i].as_py()) for i in missing_rows[:3])
            raise SchemaError(
                f"{rows_missing} row(s) reference keys not present in the dataset (sample: {sample}).",
                hint=f"Rows of {origin}: {rows_text(missing_rows, sep=',')}. Import those sequences first, or pass --allow-missing to skip them.",
            )
        compact = compact_path(ref, namespace)
        as_part = mode == "part" or parts_dir(ref, namespace).is_dir()
        existing: pa.Table | None = None
        if not as_part and compact.is_file():
            existing = read_overlay_table(compact)
            existing_key = _table_key(existing)
            if existing_key != key:
                raise SchemaError(
                    f"Overlay key mismatch for namespace '{namespace}': existing={existing_key} new={key}",
                    hint=f"{compact} is keyed by '{existing_key}': attach with --key {existing_key}.",
                )
            overlap = [c for c in incoming.columns if c in existing.column_names]
            if overlap and not allow_overwrite:
                raise SchemaError(f"Columns already exist: {', '.join(overlap)}. Use --allow-overwrite.")
        registry = load_registry(ref.root, required=True)
        assert registry is not None
        spec = registry.require(namespace)
        for name in incoming.columns:
            if spec.column(name) is None:
                raise SchemaError(
                    f"Overlay column '{name}' not registered under namespace '{namespace}'.",
                    hint=f"Registered: {', '.join(c.name for c in spec.columns)}. Add it with "
                    f"`usr namespace register {namespace} --overwrite --columns ...`.",
                )
        typed = {n: _typed(n, spec, col, incoming.parsed.get(n)) for n, col in incoming.columns.items()}
        if existing is not None:
            for fld in existing.schema:
                registered = spec.column(fld.name)
                if fld.name != key and (
                    registered is None or not _compatible(fld.type, parse_type(registered.type))
                ):
                    raise SchemaError(
                        f"Overlay type mismatch under namespace '{namespace}': existing column '{fld.name}' in "
                        f"{compact} is {render_type(fld.type)}, not registered as that. Fix the registry or the overlay."
                    )
        schema = _ordered_schema(spec, typed, key)
        keep = pc.is_valid(ids)
        keys = ids if key == "id" else incoming.keys  # the public tool stores the normalized key
        new = pa.Table.from_arrays(
            [pc.filter(keys, keep).cast(pa.string())]
            + [pc.filter(typed[f.name], keep) for f in list(schema)[1:]],
            schema=schema,
        )
        # Everything is validated: from here on we write.
        created_at = S.iso_utc(S.utc_now())
        freeze_registry(ref, registry)
        moved = None
        if as_part:
            moved = _move_compact_into_parts(ref, namespace)
            target = parts_dir(ref, namespace) / _part_name()
            parts_dir(ref, namespace).mkdir(parents=True, exist_ok=True)
            body = new
        else:
            target = compact
            body = _merge_compact(existing, new, spec, key) if existing is not None else new
        body = body.replace_schema_metadata(_overlay_metadata(namespace, spec, registry, created_at, key))
        atomic_write_parquet(target, body)
        if as_part:
            update_digest_ledger(parts_dir(ref, namespace), [p for p in (moved, target) if p is not None])
        rel = target.relative_to(ref.dir).as_posix()
        action = "attach" if mode == "attach" else "write_overlay_part"
        args = {
            "namespace": namespace,
            "key": key,
            "columns": list(schema.names[1:]),
            "rows_incoming": rows_incoming,
            "rows_matched": rows_matched,
            "rows_written": new.num_rows,
            "rows_missing": rows_missing,
            "allow_missing": allow_missing,
            **dict(event_args),
        }
        metrics = {"rows_incoming": rows_incoming, "rows_missing": rows_missing}
        metrics["rows_matched" if action == "attach" else "rows_written"] = (
            rows_matched if action == "attach" else new.num_rows
        )
        append_event(
            ref.dir,
            action,
            args=args,
            metrics=metrics,
            artifacts={"overlay": {"namespace": namespace, "path": rel}},
            target=target,
            root=ref.root,
            dataset_name=ref.dataset_id,
            registry_hash=registry.hash,
        )
        if mode == "attach":
            append_meta_note(
                ref.dir,
                f"Attached columns under '{namespace}' ({rows_matched} row match)",
                note,
            )
    return OverlayWriteResult(
        ref,
        namespace,
        target,
        tuple(schema.names[1:]),
        rows_incoming,
        rows_matched,
        new.num_rows,
        rows_missing,
        as_part,
    )


def attach(
    dataset: DatasetRef | Path | str,
    path: Path | str,
    namespace: str,
    *,
    key: str = "id",
    key_col: str | None = None,
    columns: list[str] | None = None,
    allow_overwrite: bool = False,
    allow_missing: bool = False,
    parse_json: bool = True,
    fmt: str | None = None,
    command: str | None = None,
    lock_timeout: float | None = None,
) -> OverlayWriteResult:
    """`usr attach`: validate a csv/parquet/jsonl/json file against the registry and write the overlay.

    Validation order and messages follow the public tool (§12), plus a SchemaError naming the
    column and the file when a --columns entry is absent from the input. Nothing is written
    (no overlay, event or meta note) unless every check passes.
    """
    ref = as_dataset(dataset).require()
    check_namespace_name(namespace)
    if key not in JOIN_KEYS:
        raise SchemaError(
            f"Unsupported join key '{key}'.", hint="Use --key id|sequence|sequence_norm|sequence_ci."
        )
    source = Path(path)
    kind = detect_format(source, fmt)
    if kind == "fasta":
        raise SchemaError("Unsupported input format. Use parquet|csv|jsonl.")
    key_name = key_col or key
    table = read_table(source, kind, string_columns=(key_name,))
    return _write_overlay(
        ref,
        namespace,
        table,
        key=key,
        key_col=key_col,
        columns=columns,
        allow_missing=allow_missing,
        allow_overwrite=allow_overwrite,
        origin=str(source),
        parse_json=parse_json,
        mode="attach",
        event_args={"path": str(source.absolute()), "allow_overwrite": allow_overwrite},
        note=command,
        lock_timeout=lock_timeout,
    )


def write_overlay_part(
    dataset: DatasetRef | Path | str,
    namespace: str,
    table_or_rows: pa.Table | Iterable[Mapping[str, Any]],
    *,
    key: str = "id",
    key_col: str | None = None,
    allow_missing: bool = False,
    lock_timeout: float | None = None,
) -> OverlayWriteResult:
    """Write `_derived/<ns>/part-<YYYYMMDDTHHMMSSffffffZ>-<uuid4hex>.parquet` (the DenseGen/Infer path).

    Columns are `<ns>__*` (bare names are prefixed) and must be registered with compatible types;
    keys must be unique and present in the dataset unless `allow_missing` (missing rows are then
    skipped). An existing compact `_derived/<ns>.parquet` is first moved into the dir as a part.
    Records a `write_overlay_part` event. Raises SchemaError/NamespaceError/DatasetError.
    """
    table = (
        table_or_rows if isinstance(table_or_rows, pa.Table) else pa.Table.from_pylist(list(table_or_rows))
    )
    return _write_overlay(
        dataset,
        namespace,
        table,
        key=key,
        key_col=key_col,
        columns=None,
        allow_missing=allow_missing,
        allow_overwrite=True,
        origin="overlay part input",
        parse_json=False,
        mode="part",
        event_args={},
        note=None,
        lock_timeout=lock_timeout,
    )
