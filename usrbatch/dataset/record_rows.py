"""Input rows → core-schema base records: the columns import reads, and every check (sequence,
bio_type, alphabet, ids, duplicates) with the rows it fails on and the fix. Pure: writes nothing,
so an import is validated completely before the first byte is written (records.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from usrbatch.dataset import schema as S
from usrbatch.errors import SchemaError

_SAMPLE = 5


def rows_text(indices: Iterable[int], sep: str = ", ") -> str:
    """1-based row numbers for a message: the first five, then `… (<n> in total)`."""
    items = list(indices)
    shown = sep.join(str(i + 1) for i in items[:_SAMPLE])
    return shown + (f"{sep}… ({len(items)} in total)" if len(items) > _SAMPLE else "")


def row_indices(mask: pa.Array | pa.ChunkedArray) -> list[int]:
    """The positions where `mask` is true (nulls count as false)."""
    return pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()


def first_repeat(values: pa.Array | pa.ChunkedArray) -> tuple[int, Any, list[int]] | None:
    """(how many values occur more than once, the first of them, its rows), or None when every
    value is unique."""
    counts = pa.table({"v": values}).group_by("v").aggregate([("v", "count")])
    repeated = counts.filter(pc.greater(counts["v_count"], 1))
    if not repeated.num_rows:
        return None
    sample = repeated["v"][0].as_py()
    return repeated.num_rows, sample, row_indices(pc.equal(values, sample))


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
        rows = row_indices(empty)
        raise SchemaError(
            f"{origin}: {len(rows)} row(s) have an empty sequence (rows: {rows_text(rows)}). "
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
            rows = row_indices(bad)
            example = sequences[rows[0]].as_py()
            raise SchemaError(
                f"{origin}: {len(rows)} sequence(s) contain symbols outside alphabet {name} "
                f"({S.ALPHABETS[name]}, any case) (rows: {rows_text(rows)}; e.g. '{example[:40]}'). "
                "Fix the sequences or declare the right --alphabet."
            )
    ids = S.compute_ids(bio_types, sequences)
    if "id" in table.column_names:
        given = pc.utf8_trim_whitespace(_string_column(table, "id", origin))
        wrong = pc.and_(pc.invert(pc.is_null(given)), pc.not_equal(given, ids))
        if pc.any(wrong).as_py():
            rows = row_indices(wrong)
            raise SchemaError(
                f"{origin}: {len(rows)} id(s) are not sha1('<bio_type>|<sequence>') (rows: {rows_text(rows)}). "
                "Drop the id column and let usr compute ids."
            )
    repeat = first_repeat(ids)
    if repeat is not None:
        n_repeated, sample, rows = repeat
        raise SchemaError(
            f"{origin}: duplicate sequences: {n_repeated} id(s) repeated. Sample: {sample} "
            f"(rows {rows_text(rows)}). Remove the duplicate rows."
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
