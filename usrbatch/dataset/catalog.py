"""Read-only views of datasets: list a root, describe one dataset, validate one dataset.

`dataset_info` reads parquet footers only. `validate_dataset` streams: records.parquet and every
overlay file are read batch-wise (projected columns); uniqueness is checked with 8 bytes per key
(a 64-bit hash per key, then an exact second pass over the keys whose hash repeats), so memory
stays far below the table size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from usrbatch.dataset import schema as S
from usrbatch.dataset.event_read import check_event_log, count_events
from usrbatch.dataset.layout import EVENTS, is_runtime
from usrbatch.dataset.layout import list_datasets as list_datasets  # its home is layout (no pyarrow)
from usrbatch.dataset.overlay_merge import OverlaySource, overlay_sources, overlay_unreadable, source_key
from usrbatch.dataset.pending import pending_problems
from usrbatch.dataset.ref import DatasetRef
from usrbatch.dataset.registry_modes import (
    DEFAULT_REGISTRY_MODE,
    check_materialized_columns,
    check_overlay_registry,
    normalize_registry_mode,
)
from usrbatch.dataset.registry_types import render_type
from usrbatch.dataset.scan import (
    DuplicateCounter,
    count_duplicates,
    first_true,
    iter_parquet_batches,
    null_as_true,
)
from usrbatch.dataset.tombstones import TOMBSTONE_NAMESPACE, TOMBSTONE_TYPES
from usrbatch.errors import UsrError


@dataclass(frozen=True)
class OverlayInfo:
    namespace: str
    columns: list[str]
    compact: bool
    parts: int


@dataclass(frozen=True)
class DatasetInfo:
    dataset_id: str
    path: str
    rows: int
    base_columns: list[str]
    overlay_columns: list[str]
    overlays: list[OverlayInfo]
    size_bytes: int
    events: int
    metadata: dict[str, str]


def _dir_size(directory: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), directory)
            if not is_runtime(rel.replace(os.sep, "/")):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def dataset_info(ref: DatasetRef) -> DatasetInfo:
    """Rows, columns (base + overlay), overlays with their parts, size on disk and event count."""
    ref.require()
    with pq.ParquetFile(ref.records) as handle:  # the footer: row count and schema, no data pages
        meta = handle.metadata
        base_schema = handle.schema_arrow
    overlays: list[OverlayInfo] = []
    overlay_columns: list[str] = []
    for namespace, sources in sorted(overlay_sources(ref).items()):
        cols: list[str] = []
        for source in sources:
            assert source.schema is not None  # overlay_sources read every footer
            cols.extend(n for n in source.schema.names if n not in ("id", "sequence") and n not in cols)
        overlays.append(
            OverlayInfo(namespace, cols, any(not s.is_part for s in sources), sum(s.is_part for s in sources))
        )
        overlay_columns.extend(c for c in cols if c not in overlay_columns)
    return DatasetInfo(
        dataset_id=ref.dataset_id,
        path=str(ref.dir),
        rows=int(meta.num_rows),
        base_columns=list(base_schema.names),
        overlay_columns=overlay_columns,
        overlays=overlays,
        size_bytes=_dir_size(ref.dir),
        events=count_events(ref.dir),
        metadata=S.read_metadata(base_schema),
    )


@dataclass
class ValidationReport:
    dataset_id: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def ok(self, strict: bool) -> bool:
        return not self.errors and not (strict and self.warnings)


_BASE_ROW_COLUMNS = ["id", "bio_type", "sequence", "alphabet", "length"]


@dataclass
class _RowChecks:
    """The per-row checks over records.parquet, fed batch by batch (rows are 1-based in messages)."""

    nulls: dict[str, int] = field(default_factory=lambda: {"id": 0, "bio_type": 0, "sequence": 0})
    ids: DuplicateCounter = field(default_factory=DuplicateCounter)
    wrong_ids: int = 0
    bad_alphabet: int = 0
    bad_alphabet_first: str = ""
    bad_symbols: int = 0
    bad_symbols_first: str = ""
    bad_length: int = 0
    bad_length_first: int = 0
    rows: int = 0

    def add(self, batch: pa.RecordBatch) -> None:
        for name in self.nulls:
            self.nulls[name] += batch.column(name).null_count
        offset, self.rows = self.rows, self.rows + batch.num_rows
        if any(self.nulls.values()):
            return  # then only the null counts are reported
        ids, bio_types, alphabets = batch.column("id"), batch.column("bio_type"), batch.column("alphabet")
        sequences = pc.utf8_trim_whitespace(batch.column("sequence"))
        self.ids.add(ids)
        self.wrong_ids += S.count_wrong_ids(bio_types, sequences, ids)
        lengths = pc.cast(pc.utf8_length(sequences), pa.int64())
        wrong_length = null_as_true(pc.not_equal(pc.cast(batch.column("length"), pa.int64()), lengths))
        first = first_true(wrong_length)
        if first is not None:
            self.bad_length += pc.sum(wrong_length).as_py()
            self.bad_length_first = self.bad_length_first or offset + first + 1
        kinds, names = pc.unique(bio_types), pc.unique(alphabets)
        for i in range(len(kinds)):
            of_kind = pc.is_in(bio_types, value_set=kinds.slice(i, 1))
            for j in range(len(names)):
                chosen = pc.and_(of_kind, pc.is_in(alphabets, value_set=names.slice(j, 1)))
                first = first_true(chosen)
                if first is None:
                    continue
                kind, name = kinds[i].as_py(), names[j].as_py()
                if name not in S.ALPHABETS_BY_BIO_TYPE.get(kind, ()):
                    self.bad_alphabet += pc.sum(chosen).as_py()
                    where = f"row {offset + first + 1}: bio_type '{kind}', alphabet '{name}'"
                    self.bad_alphabet_first = self.bad_alphabet_first or where
                    continue
                bad = pc.and_(chosen, S.invalid_alphabet_mask(sequences, name))
                first = first_true(bad)
                if first is not None:
                    self.bad_symbols += pc.sum(bad).as_py()
                    where = f"row {offset + first + 1}, alphabet {name}"
                    self.bad_symbols_first = self.bad_symbols_first or where

    def problems(self, duplicates: int) -> list[str]:
        out = [
            f"records.parquet: {count} null value(s) in '{name}'."
            for name, count in self.nulls.items()
            if count
        ]
        if out:
            return out
        if self.wrong_ids:
            out.append(f"records.parquet: {self.wrong_ids} id(s) are not sha1('<bio_type>|<sequence>').")
        if duplicates:
            out.append(f"records.parquet: {duplicates} duplicate id(s).")
        if self.bad_alphabet:
            known = "; ".join(f"{b}: {', '.join(a)}" for b, a in S.ALPHABETS_BY_BIO_TYPE.items())
            out.append(
                f"records.parquet: {self.bad_alphabet} row(s) have an unknown bio_type or an alphabet that "
                f"does not fit it (first: {self.bad_alphabet_first}). Known: {known}."
            )
        if self.bad_symbols:
            out.append(
                f"records.parquet: {self.bad_symbols} sequence(s) contain symbols outside their alphabet "
                f"(first: {self.bad_symbols_first})."
            )
        if self.bad_length:
            out.append(
                f"records.parquet: {self.bad_length} row(s) have a 'length' that is not the sequence length "
                f"(first: row {self.bad_length_first})."
            )
        return out


def _check_records(ref: DatasetRef, report: ValidationReport) -> None:
    """The row checks over records.parquet in one streamed pass (a second one over the id column
    only when an id hash repeats): nulls, sha1 ids, unique ids, alphabets, lengths."""
    checks = _RowChecks()
    try:
        for batch in iter_parquet_batches(ref.records, _BASE_ROW_COLUMNS):
            checks.add(batch)
        duplicates = 0
        if not any(checks.nulls.values()):
            duplicates, _sample = checks.ids.count(
                lambda: (b.column(0) for b in iter_parquet_batches(ref.records, ["id"]))
            )
    except (pa.ArrowInvalid, OSError) as exc:
        report.errors.append(f"{ref.records}: not a readable parquet file ({exc}).")
        return
    report.errors.extend(checks.problems(duplicates))


def _check_tombstones(rel: str, schema: pa.Schema, report: ValidationReport) -> None:
    """The reserved `usr` (tombstone) overlay: the public tool's fixed schema, not the registry."""
    for name, expected in TOMBSTONE_TYPES.items():
        if name not in schema.names:
            report.errors.append(f"{rel}: tombstone overlay is missing the '{name}' column.")
        elif schema.field(name).type != expected:
            report.errors.append(
                f"{rel}: tombstone column '{name}' is {render_type(schema.field(name).type)}, "
                f"expected {render_type(expected)}."
            )


def _check_overlay_rows(source: OverlaySource, rel: str, report: ValidationReport) -> None:
    """Key column present, no null and no repeated key in this file (streamed, key column only)."""
    assert source.schema is not None
    try:
        _key, column = source_key(source.schema)
    except UsrError as exc:
        report.errors.append(f"{rel}: {exc}")
        return
    nulls = 0

    def keys() -> Iterator[pa.Array | pa.ChunkedArray]:
        nonlocal nulls
        nulls = 0
        for batch in iter_parquet_batches(source.path, [column]):
            nulls += batch.column(0).null_count
            yield batch.column(0).cast(pa.string())

    try:
        dupes, sample = count_duplicates(keys)
    except (pa.ArrowInvalid, OSError) as exc:
        report.errors.append(str(overlay_unreadable(source.path, exc)))
        return
    if nulls:
        report.errors.append(f"{rel}: {nulls} row(s) have no key ('{column}' is null).")
    if dupes:
        report.errors.append(
            f"{rel}: {dupes} repeated key(s) in '{column}' (sample: {', '.join(sample)}). "
            "Each overlay file holds one row per key; rewrite it."
        )


def validate_dataset(
    ref: DatasetRef, registry_mode: str = DEFAULT_REGISTRY_MODE, *, strict: bool = False
) -> ValidationReport:
    """Check records schema + metadata, rows (sha1 ids, unique, alphabets, lengths), overlays
    (stamps and columns against the registry `registry_mode` picks, as the public tool does; the
    tombstone schema; key column; no repeated keys) and the event log.
    Streams every parquet file: memory stays O(batch) plus 8 bytes per id. `strict` adds the public
    `--strict` check of materialized base columns. SchemaError for an unknown `registry_mode`."""
    registry_mode = normalize_registry_mode(registry_mode)
    ref.require(readable=False)
    report = ValidationReport(ref.dataset_id)
    report.errors.extend(pending_problems(ref.dir))
    try:
        schema = pq.read_schema(ref.records)
    except (pa.ArrowInvalid, OSError) as exc:
        report.errors.append(f"{ref.records}: not a readable parquet file ({exc}).")
        return report
    for fld in S.CORE_SCHEMA:
        if fld.name not in schema.names:
            report.errors.append(f"records.parquet: missing core column '{fld.name}'.")
        elif schema.field(fld.name).type != fld.type:
            report.errors.append(
                f"records.parquet: column '{fld.name}' is {schema.field(fld.name).type}, expected {fld.type}."
            )
    loose = [c for c in schema.names if c not in S.CORE_COLUMNS and ("__" not in c or c.startswith("__"))]
    if loose:  # the public tool's rule for columns beyond the core ones (materialized overlays)
        report.errors.append(
            "Derived columns must be namespaced as '<tool>__<field>'. "
            f"Offending columns: {', '.join(sorted(loose))}"
        )
    meta = S.read_metadata(schema)
    for key in (S.META_SCHEMA_VERSION, S.META_DATASET_CREATED_AT, S.META_ID_HASH):
        if key not in meta:
            report.warnings.append(f"records.parquet: metadata key '{key}' is missing.")
    if not report.errors:
        _check_records(ref, report)
    try:
        overlays = overlay_sources(ref)
    except UsrError as exc:
        report.errors.append(str(exc))
        overlays = {}
    report.errors.extend(check_overlay_registry(ref, overlays, registry_mode).errors)
    if strict:
        report.errors.extend(check_materialized_columns(ref, schema, registry_mode))
    for namespace, sources in sorted(overlays.items()):
        for source in sources:
            rel = source.path.relative_to(ref.dir).as_posix()
            assert source.schema is not None  # overlay_sources read every footer
            if namespace == TOMBSTONE_NAMESPACE:
                _check_tombstones(rel, source.schema, report)
            if S.META_OVERLAY_NAMESPACE not in S.read_metadata(source.schema):
                report.warnings.append(f"{rel}: overlay metadata (usr:overlay_*) is missing.")
            _check_overlay_rows(source, rel, report)
    for problem in check_event_log(ref.dir / EVENTS):
        report.errors.append(problem)
    if not (ref.dir / EVENTS).exists():
        report.warnings.append(".events.log is missing.")
    return report
