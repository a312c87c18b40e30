"""Reading user input files (csv, parquet, jsonl, json, fasta) into Arrow tables, with actionable errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from usrbatch.errors import SchemaError

FORMATS = ("csv", "parquet", "jsonl", "json", "fasta")
_SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".fasta": "fasta",
    ".fa": "fasta",
    ".fna": "fasta",
}


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The declared format, else the one the suffix names; SchemaError if neither is supported."""
    chosen = (fmt or _SUFFIXES.get(path.suffix.lower(), "")).lower()
    if chosen not in FORMATS:
        raise SchemaError(
            f"Unsupported input format for {path}. Use parquet|csv|jsonl"
            + (" (or fasta for import)." if fmt is None else ".")
        )
    return chosen


def _read_fasta(path: Path) -> pa.Table:
    names: list[str] = []
    sequences: list[str] = []
    current: list[str] | None = None
    with open(path, encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith(">"):
                if current is not None:
                    sequences.append("".join(current))
                names.append(line[1:].strip())
                current = []
            elif current is None:
                raise SchemaError(
                    f"Malformed FASTA {path}: line {number} has sequence data before any '>' header. "
                    "Start each record with a '>name' line."
                )
            else:
                current.append(line)
    if current is not None:
        sequences.append("".join(current))
    return pa.table({"name": pa.array(names, pa.string()), "sequence": pa.array(sequences, pa.string())})


def _read_json_array(path: Path) -> pa.Table:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise SchemaError(
            f"JSON input {path} must be an array of objects (or use .jsonl, one object per line)."
        )
    return pa.Table.from_pylist(data)


def read_table(path: Path | str, fmt: str | None = None, *, string_columns: tuple[str, ...] = ()) -> pa.Table:
    """Read an input file. `string_columns` are read as text in CSV (no type inference for keys).

    Raises SchemaError naming the file (and pyarrow's row/column detail) for a missing,
    malformed or unsupported file.
    """
    source = Path(path)
    kind = detect_format(source, fmt)
    if not source.is_file():
        raise SchemaError(f"Input file not found: {source}. Check --path.")
    try:
        if kind == "csv":
            if source.stat().st_size == 0:
                raise SchemaError(f"Malformed CSV {source}: the file is empty. Add a header row.")
            convert = pacsv.ConvertOptions(
                column_types={c: pa.string() for c in string_columns}, strings_can_be_null=True
            )
            return pacsv.read_csv(source, convert_options=convert)
        if kind == "parquet":
            return pq.read_table(source)
        if kind == "jsonl":
            return pajson.read_json(source)
        if kind == "json":
            return _read_json_array(source)
        return _read_fasta(source)
    except SchemaError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, UnicodeDecodeError, OSError) as exc:
        label = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSONL", "json": "JSON", "fasta": "FASTA"}[kind]
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchemaError(
            f"Malformed {label} {source}: {detail}. Fix the file (every row needs the header's column count)."
            if kind == "csv"
            else f"Malformed {label} {source}: {detail}. Fix the file and retry."
        ) from exc
