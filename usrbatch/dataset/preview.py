"""`usr head`: the first visible rows of a dataset, read in bounded memory, and their rendering.

`head_dataset` reads records.parquet batch-wise from the start (only the columns it shows, plus
id) until it holds n rows that are not tombstoned, then reads overlay values for those ids only:
every overlay file is scanned batch-wise and filtered on its key, and merged with the same
last-writer-wins rule as `read_dataset`. Memory is O(n + one batch), whatever the dataset size.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from usrbatch.dataset.overlay_merge import (
    OverlaySource,
    overlay_sources,
    read_overlay_rows,
    source_columns,
    source_key,
)
from usrbatch.dataset.ref import DatasetRef, as_dataset, restore_hint
from usrbatch.dataset.scan import MIN_SCAN_ROWS, SCAN_BATCH_ROWS, iter_parquet_batches
from usrbatch.dataset.tombstones import TOMBSTONE_NAMESPACE, deleted_mask
from usrbatch.errors import DatasetError, SchemaError

MAX_LIST_ITEMS = 6
MAX_COLWIDTH = 80
WIDE_LIMIT = 6  # without --columns, head shows this many columns (ranked)


def rank_columns(names: list[str]) -> list[str]:
    """id, usr_label__primary, *__primary, *__label, sequence, then the rest alphabetically."""

    def rank(name: str) -> tuple[int, str]:
        if name == "id":
            return (0, "")
        if name == "usr_label__primary":
            return (1, "")
        if name.endswith("__primary"):
            return (2, name)
        if name.endswith("__label"):
            return (3, name)
        if name == "sequence":
            return (4, "")
        return (5, name)

    return sorted(names, key=rank)


def _number(value: float, precision: int) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    magnitude = abs(value)
    if magnitude and (magnitude < 1e-4 or magnitude >= 1e6):
        return f"{value:.{precision}g}"
    text = f"{value:.{precision}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_cell(value: Any, *, precision: int = 4, max_items: int = MAX_LIST_ITEMS) -> str:
    """null ∅, bools true/false, numbers with `precision` trimmed, lists `vec[n] [a, b, …]`, dicts `{ k: v }`."""
    if value is None:
        return "∅"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number(value, precision)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        shown = [format_cell(v, precision=precision, max_items=max_items) for v in value[:max_items]]
        more = ", …" if len(value) > max_items else ""
        return f"vec[{len(value)}] [{', '.join(shown)}{more}]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {format_cell(v, precision=precision)}" for k, v in value.items())
        return f"{{ {inner} }}"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def ellipsize(text: str, width: int = MAX_COLWIDTH) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def _tzinfo(tz: str) -> dt.tzinfo:
    """The tzinfo of an Arrow time zone; UTC when the zone is unknown here (no time-zone database):
    the instant is still right, shown in UTC instead of a traceback."""
    if tz == "UTC":
        return dt.UTC
    if m := re.fullmatch(r"([+-])(\d{2}):(\d{2})", tz):
        offset = dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return dt.timezone(-offset if m.group(1) == "-" else offset)
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    """`table.to_pylist()`, except that top-level tz-aware timestamp columns become aware datetimes
    without pyarrow's time-zone lookup, which imports pandas (~0.5 s, ~50 MB) on first use and
    raises where the machine has no time-zone database."""
    zones = {f.name: _tzinfo(f.type.tz) for f in table.schema if pa.types.is_timestamp(f.type) and f.type.tz}
    naive = table
    for name in zones:
        unit = pa.timestamp(table.schema.field(name).type.unit)
        column = pa.chunked_array([chunk.view(unit) for chunk in table[name].chunks], type=unit)
        naive = naive.set_column(naive.schema.get_field_index(name), name, column)
    rows = naive.to_pylist()
    for row in rows:
        for name, zone in zones.items():
            if row[name] is not None:
                row[name] = row[name].replace(tzinfo=dt.UTC).astimezone(zone)
    return rows


def render_table(columns: list[str], rows: list[list[str]]) -> str:
    """A plain left-aligned table without index, trailing whitespace stripped."""
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Reading the rows to show


@dataclass(frozen=True)
class HeadResult:
    columns: list[str]  # shown, in display order
    table: pa.Table  # those columns; at most n rows, tombstoned rows left out unless asked for
    base_rows_read: int  # rows of records.parquet decoded to find them


def _overlay_columns(
    sources: dict[str, list[OverlaySource]], taken: list[str], include_deleted: bool
) -> tuple[dict[str, str], list[str]]:
    """({overlay column: namespace} in read_dataset's order, tombstone columns held back)."""
    provider: dict[str, str] = {}
    held_back: list[str] = []
    for namespace, group in sorted(sources.items()):
        for source in group:
            assert source.schema is not None
            for name in source_columns(source.schema):
                if namespace == TOMBSTONE_NAMESPACE and not include_deleted:
                    held_back.append(name)
                elif name not in taken and name not in provider:
                    provider[name] = namespace
    return provider, held_back


def _keyed_by_sequence(groups: list[list[OverlaySource]]) -> bool:
    return any(source_key(s.schema)[1] != "id" for group in groups for s in group if s.schema is not None)


def _visible_rows(
    records: Path, names: list[str], n: int, tombstones: list[OverlaySource]
) -> tuple[list[pa.Table], int]:
    """The first n base rows (columns `names`) that are not tombstoned, and the rows read.

    Without tombstones this reads ~n rows. With them, each run of batches is checked against the
    tombstone overlay in one filtered scan; a run that comes up short makes the next one twice as
    long (up to SCAN_BATCH_ROWS), so a long deleted prefix costs few scans.
    """
    step = min(max(n, MIN_SCAN_ROWS), SCAN_BATCH_ROWS)  # smaller batches cost more than they save
    target = step
    kept: list[pa.Table] = []
    have = read = 0
    pending: list[pa.RecordBatch] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal have, pending_rows
        chunk = pa.Table.from_batches(pending)
        pending.clear()
        pending_rows = 0
        if tombstones:
            chunk = chunk.filter(pc.invert(deleted_mask(tombstones, chunk)))
        chunk = chunk.slice(0, n - have)
        if chunk.num_rows:
            kept.append(chunk)
            have += chunk.num_rows

    for batch in iter_parquet_batches(records, names, step):
        pending.append(batch)
        pending_rows += batch.num_rows
        read += batch.num_rows
        if pending_rows >= max(n - have, target):
            flush()
            if have >= n:
                break
            target = min(target * 2, SCAN_BATCH_ROWS)
    if pending and have < n:
        flush()
    return kept, read


def head_dataset(
    dataset: DatasetRef | Path | str,
    n: int,
    columns: list[str] | None = None,
    *,
    include_deleted: bool = False,
    max_columns: int = WIDE_LIMIT,
) -> HeadResult:
    """The first `n` rows of base + overlays, as `usr head` shows them (usr-contract §13).

    `columns` picks the columns (id first); without it the `max_columns` best-ranked columns are
    shown. Rows tombstoned in the reserved `usr` overlay (`usr__deleted` true after last-writer-wins)
    are hidden and the `usr__*` columns held back, unless `include_deleted`. An unknown column is a
    SchemaError listing what exists; so is a tombstone column without `include_deleted`.
    """
    ref = as_dataset(dataset).require()
    if n < 0:
        raise DatasetError("head row count must be >= 0.")
    base_schema = pq.read_schema(ref.records)
    base_names = list(base_schema.names)
    if "id" not in base_names:
        raise DatasetError(
            f"{ref.records} has no 'id' column.", hint=f"Run `usr validate {ref.dataset_id}` for details."
        )
    sources = overlay_sources(ref)
    provider, held_back = _overlay_columns(sources, base_names, include_deleted)
    available = base_names + list(provider)
    if columns:
        hidden = [c for c in columns if c in held_back and c not in available]
        if hidden:
            raise SchemaError(
                f"Tombstone column(s) {', '.join(hidden)} are shown only with --include-deleted "
                "(tombstoned rows are hidden otherwise)."
            )
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise SchemaError(
                f"Unknown column(s) {', '.join(unknown)} in dataset '{ref.dataset_id}'. "
                f"Available: {', '.join(available)}."
            )
        shown = list(dict.fromkeys(["id", *columns]))
    else:
        shown = rank_columns(available)[:max_columns]
    namespaces = sorted({provider[c] for c in shown if c in provider})
    tombstones = [] if include_deleted else sources.get(TOMBSTONE_NAMESPACE, [])
    joined = [sources[ns] for ns in namespaces] + [tombstones]
    read_names = ["id"] + [c for c in shown if c in base_names and c != "id"]
    if _keyed_by_sequence(joined) and "sequence" in base_names and "sequence" not in read_names:
        read_names.append("sequence")
    try:
        kept, rows_read = _visible_rows(ref.records, read_names, n, tombstones) if n else ([], 0)
    except (pa.ArrowInvalid, OSError) as exc:  # a damaged data page behind a readable footer
        raise DatasetError(
            f"{ref.records} is not a readable parquet file ({exc}).",
            hint=restore_hint(ref.dir) or "`usr pull` the dataset from a remote copy.",
        ) from exc
    empty = pa.schema([base_schema.field(c) for c in read_names])
    base = pa.Table.from_batches([], schema=empty) if not kept else pa.concat_tables(kept)
    values: dict[str, pa.Array | pa.ChunkedArray] = {c: base[c] for c in read_names}
    for namespace in namespaces:
        wanted = [c for c in shown if provider.get(c) == namespace]
        merged = read_overlay_rows(namespace, sources[namespace], base, wanted)
        position = pc.index_in(base["id"].cast(pa.string()), value_set=merged["id"].combine_chunks())
        for name in wanted:
            values[name] = pc.take(merged[name], position)
    table = pa.table({name: values[name] for name in shown})
    return HeadResult(shown, table, rows_read)
