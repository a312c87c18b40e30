"""Reading user input files (csv, parquet, jsonl, json, fasta) into Arrow tables, with actionable errors.

Text inputs are checked to be UTF-8 first (one streamed pass) because pyarrow's CSV reader reports
bad bytes as a conversion error without a position and its JSON reader accepts them silently.
A UTF-8 byte-order mark is accepted in every text format. A field longer than pyarrow's parse
block (a genome in one CSV cell or JSONL line) is read by retrying with a block that holds it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

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
_LABELS = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSONL", "json": "JSON", "fasta": "FASTA"}
_CHUNK = 1 << 20
_BLOCK_MIN = 16 << 20  # first retry block for a field over pyarrow's default 1 MiB block
_BLOCK_MAX = (1 << 31) - 1  # pyarrow's block_size is an int32
_DETAIL_MAX = 200  # characters of a pyarrow message quoted (it may quote a whole genome)


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The declared format, else the one the suffix names; SchemaError if neither is supported."""
    chosen = (fmt or _SUFFIXES.get(path.suffix.lower(), "")).lower()
    if chosen not in FORMATS:
        raise SchemaError(
            f"Unsupported input format for {path}. Use parquet|csv|jsonl"
            + (" (or fasta for import)." if fmt is None else ".")
        )
    return chosen


def first_invalid_utf8(path: Path) -> tuple[int, int, int] | None:
    """(byte offset, 1-based line, byte value) of the first byte that is not UTF-8, else None. Streamed."""
    base, line, carry = 0, 1, b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            data = carry + chunk
            if not data:
                return None
            try:
                data.decode("utf-8")
                good = len(data)
            except UnicodeDecodeError as exc:
                # a multi-byte character cut by the chunk boundary: carry it into the next chunk
                if chunk and exc.reason == "unexpected end of data":
                    good = exc.start
                else:
                    return base + exc.start, line + data.count(b"\n", 0, exc.start), data[exc.start]
            line += data.count(b"\n", 0, good)
            base += good
            carry = data[good:]


def _require_utf8(path: Path, label: str) -> None:
    found = first_invalid_utf8(path)
    if found is None:
        return
    offset, line, value = found
    converted = path.with_name(f"{path.stem}.utf8{path.suffix}")
    raise SchemaError(
        f"{label} input {path} is not UTF-8 text: byte 0x{value:02X} at byte offset {offset} (line {line}) "
        "is not valid UTF-8.",
        hint="Convert the file to UTF-8 and import the copy, e.g. "
        f"`iconv -f latin1 -t utf-8 {shlex.quote(str(path))} > {shlex.quote(str(converted))}` "
        "(name the file's real encoding after -f).",
    )


def _read_fasta(path: Path) -> pa.Table:
    names: list[str] = []
    sequences: list[str] = []
    current: list[str] | None = None
    with open(path, encoding="utf-8-sig") as fh:  # -sig: a leading byte-order mark is not data
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
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except ValueError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: " if isinstance(exc, json.JSONDecodeError) else ""
        raise SchemaError(
            f"Malformed JSON {path}: {where}{getattr(exc, 'msg', exc)}. Fix the file and retry."
        ) from None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise SchemaError(
            f"JSON input {path} must be an array of objects (or use .jsonl, one object per line)."
        )
    return pa.Table.from_pylist(data)


def _longest_line(path: Path) -> int:
    longest = current = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            pieces = chunk.split(b"\n")
            current += len(pieces[0])
            for piece in pieces[1:]:
                longest = max(longest, current)
                current = len(piece)
    return max(longest, current)


def _with_block_retry(path: Path, read: Any) -> pa.Table:
    """`read(block_size)`; on pyarrow's "straddling object" error, retry with a block that holds the
    longest line (doubling while a quoted multi-line CSV field is still longer)."""
    try:
        return read(None)
    except pa.ArrowInvalid as exc:
        if "straddling" not in str(exc):
            raise
    block = max(_BLOCK_MIN, 2 * _longest_line(path) + 1)
    while True:
        block = min(block, _BLOCK_MAX)
        try:
            return read(block)
        except pa.ArrowInvalid as exc:
            if "straddling" not in str(exc) or block >= _BLOCK_MAX:
                raise
        block *= 2


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _jsonl_problem(path: Path, arrow_message: str) -> str:
    """Where a JSONL file breaks, as `line N: ...` (1-based file lines; pyarrow's row numbers count
    from 0 within one parse block and skip blank lines, so they cannot be shown)."""
    changed = re.search(r"Column\(/([^/)]*)[^)]*\) changed from (\w+) to (\w+)", arrow_message)
    first_kind: tuple[str, int] | None = None
    with open(path, encoding="utf-8-sig") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.rstrip("\r\n"))
            except ValueError as exc:
                return f"line {number}: {getattr(exc, 'msg', exc)} (column {getattr(exc, 'colno', '?')})"
            if not isinstance(row, dict):
                return f"line {number} is a JSON {_json_kind(row)}, not an object"
            if changed and changed.group(1) in row:
                kind = _json_kind(row[changed.group(1)])
                if kind == "null":
                    continue
                if first_kind is None:
                    first_kind = (kind, number)
                elif kind != first_kind[0]:
                    return (
                        f"line {number}: field '{changed.group(1)}' is a {kind}, but a {first_kind[0]} "
                        f"on line {first_kind[1]} (one type per field)"
                    )
    return re.sub(r"\s*in row \d+\s*$", "", arrow_message)


_COLUMN_COUNT = re.compile(r"Expected \d+ columns, got \d+")


def _csv_row_problem(path: Path, read_csv: Any, exc: BaseException) -> str:
    """The column-count error with its file line: only a single-threaded read numbers the rows."""
    try:
        _with_block_retry(path, lambda block: read_csv(block, threads=False))
    except pa.ArrowInvalid as numbered:
        found = re.search(r"Row #(\d+): (.*)", _detail(numbered))
        if found:
            return f"line {found.group(1)}: {found.group(2)}"
    return _detail(exc).removeprefix("CSV parse error: ")


def _detail(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= _DETAIL_MAX else first[:_DETAIL_MAX] + "…"


def read_table(path: Path | str, fmt: str | None = None, *, string_columns: tuple[str, ...] = ()) -> pa.Table:
    """Read an input file. `string_columns` are read as text in CSV (no type inference for keys).

    Raises SchemaError naming the file and where it breaks (1-based lines) for a missing,
    non-UTF-8, malformed or unsupported file.
    """
    source = Path(path)
    kind = detect_format(source, fmt)
    label = _LABELS[kind]
    if not source.is_file():
        raise SchemaError(f"Input file not found: {source}. Check --path.")
    try:
        if kind != "parquet":
            _require_utf8(source, label)
        if kind == "csv":
            if source.stat().st_size == 0:
                raise SchemaError(f"Malformed CSV {source}: the file is empty. Add a header row.")
            convert = pacsv.ConvertOptions(
                column_types={c: pa.string() for c in string_columns}, strings_can_be_null=True
            )

            def read_csv(block: int | None, threads: bool = True) -> pa.Table:
                options = pacsv.ReadOptions(use_threads=threads, **({"block_size": block} if block else {}))
                return pacsv.read_csv(source, read_options=options, convert_options=convert)

            try:
                return _with_block_retry(source, read_csv)
            except pa.ArrowInvalid as exc:
                if not _COLUMN_COUNT.search(str(exc)):
                    raise
                raise SchemaError(
                    f"Malformed CSV {source}: {_csv_row_problem(source, read_csv, exc)}. "
                    "Every row needs the header's column count: quote fields that contain commas."
                ) from None
        if kind == "parquet":
            return pq.read_table(source)
        if kind == "jsonl":
            try:
                return _with_block_retry(
                    source,
                    lambda block: pajson.read_json(
                        source, read_options=pajson.ReadOptions(block_size=block) if block else None
                    ),
                )
            except pa.ArrowInvalid as exc:
                raise SchemaError(
                    f"Malformed JSONL {source}: {_jsonl_problem(source, _detail(exc))}. "
                    "Each line must be one JSON object; fix the file and retry."
                ) from None
        if kind == "json":
            return _read_json_array(source)
        return _read_fasta(source)
    except SchemaError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, UnicodeDecodeError, OSError) as exc:
        raise SchemaError(f"Malformed {label} {source}: {_detail(exc)}. Fix the file and retry.") from None
