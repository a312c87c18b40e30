"""Read-only views of datasets: list a root, describe one dataset, validate one dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from usrbatch.dataset import schema as S
from usrbatch.dataset.events import check_event_log, count_events
from usrbatch.dataset.layout import EVENTS, RECORDS, is_runtime, normalize_dataset_id
from usrbatch.dataset.overlays import overlay_sources
from usrbatch.dataset.ref import DatasetRef
from usrbatch.dataset.registry import load_registry, parse_type, render_type
from usrbatch.errors import DatasetError, UsrError


def list_datasets(root: Path | str) -> list[str]:
    """Ids of datasets under `root`: dirs holding records.parquet, flat or `namespace/name`."""
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(f"Datasets root not found: {base}. Pass --root or set USR_ROOT.")
    found: list[str] = []
    for first in sorted(base.iterdir()):
        if not first.is_dir() or first.name.startswith((".", "_")) or first.name == "archived":
            continue
        if (first / RECORDS).is_file():
            found.append(first.name)
            continue
        for second in sorted(first.iterdir()):
            if second.is_dir() and not second.name.startswith((".", "_")) and (second / RECORDS).is_file():
                found.append(f"{first.name}/{second.name}")
    return [i for i in found if _valid_id(i)]


def _valid_id(dataset_id: str) -> bool:
    try:
        normalize_dataset_id(dataset_id)
    except DatasetError:
        return False
    return True


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
    meta = pq.ParquetFile(ref.records).metadata
    base_schema = pq.read_schema(ref.records)
    overlays: list[OverlayInfo] = []
    overlay_columns: list[str] = []
    for namespace, sources in sorted(overlay_sources(ref).items()):
        cols: list[str] = []
        for source in sources:
            cols.extend(
                n for n in pq.read_schema(source.path).names if n not in ("id", "sequence") and n not in cols
            )
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


def validate_dataset(ref: DatasetRef) -> ValidationReport:
    """Check records schema + metadata, ids (sha1 rule, unique), overlays (registered, typed), event log."""
    ref.require(readable=False)
    report = ValidationReport(ref.dataset_id)
    try:
        table = S.read_parquet(ref.records)
    except (pa.ArrowInvalid, OSError) as exc:
        report.errors.append(f"{ref.records}: not a readable parquet file ({exc}).")
        return report
    for fld in S.CORE_SCHEMA:
        if fld.name not in table.column_names:
            report.errors.append(f"records.parquet: missing core column '{fld.name}'.")
        elif table.schema.field(fld.name).type != fld.type:
            report.errors.append(
                f"records.parquet: column '{fld.name}' is {table.schema.field(fld.name).type}, expected {fld.type}."
            )
    meta = S.read_metadata(table.schema)
    for key in (S.META_SCHEMA_VERSION, S.META_DATASET_CREATED_AT, S.META_ID_HASH):
        if key not in meta:
            report.warnings.append(f"records.parquet: metadata key '{key}' is missing.")
    registry = None
    try:
        registry = load_registry(ref.root, required=True)
    except UsrError as exc:
        report.errors.append(str(exc))
    if registry is not None and meta.get(S.META_REGISTRY_HASH) not in (None, registry.hash):
        report.warnings.append(
            "records.parquet: usr:registry_hash differs from the current registry (it is re-stamped on the next mutation)."
        )
    if not report.errors:
        for name in ("id", "bio_type", "sequence"):
            if table[name].null_count:
                report.errors.append(f"records.parquet: {table[name].null_count} null value(s) in '{name}'.")
        if not report.errors and table.num_rows:
            expected = S.compute_ids(table["bio_type"], pc.utf8_trim_whitespace(table["sequence"]))
            wrong = pc.sum(pc.not_equal(table["id"], expected)).as_py() or 0
            if wrong:
                report.errors.append(f"records.parquet: {wrong} id(s) are not sha1('<bio_type>|<sequence>').")
            dupes = table.num_rows - len(pc.unique(table["id"]))
            if dupes:
                report.errors.append(f"records.parquet: {dupes} duplicate id(s).")
    try:
        overlays = overlay_sources(ref)
    except UsrError as exc:
        report.errors.append(str(exc))
        overlays = {}
    for namespace, sources in sorted(overlays.items()):
        spec = registry.namespaces.get(namespace) if registry else None
        if registry is not None and spec is None:
            report.errors.append(f"_derived/{namespace}: namespace '{namespace}' is not registered.")
            continue
        for source in sources:
            rel = source.path.relative_to(ref.dir).as_posix()
            for fld in pq.read_schema(source.path):
                if fld.name in ("id", "sequence") or spec is None:
                    continue
                registered = spec.column(fld.name)
                if registered is None:
                    report.errors.append(f"{rel}: column '{fld.name}' is not registered under '{namespace}'.")
                elif render_type(fld.type) != render_type(parse_type(registered.type)):
                    report.errors.append(
                        f"{rel}: column '{fld.name}' is {render_type(fld.type)}, registered as {registered.type}."
                    )
            omd = S.read_metadata(pq.read_schema(source.path))
            if S.META_OVERLAY_NAMESPACE not in omd:
                report.warnings.append(f"{rel}: overlay metadata (usr:overlay_*) is missing.")
    for problem in check_event_log(ref.dir / EVENTS):
        report.errors.append(problem)
    if not (ref.dir / EVENTS).exists():
        report.warnings.append(".events.log is missing.")
    return report
