"""Streaming reads of parquet files, and Arrow values built without importing pandas.

`iter_parquet_batches` reads a file batch by batch with its pages streamed (pre-buffering off), so
memory follows the batch, not the row group or the file.

pyarrow passes every Python value it is handed (`pa.array(list)`, `pa.scalar`, a Python scalar
given to a compute function) through a pandas check that imports pandas when it is installed:
~0.5 s and ~50 MB per process here. The read paths of `usr head` and `usr validate` build their
arrays from buffers with the helpers below instead, and compare arrays with arrays.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SCAN_BATCH_ROWS = 16_384  # at most, per batch; fewer when rows are wide (SCAN_BATCH_BYTES)
SCAN_BATCH_BYTES = 1 << 20  # decoded bytes per batch to aim for (~16k short rows, ~1k 1-kb sequences)
MIN_SCAN_ROWS = 256
SCAN_BUFFER_BYTES = 1 << 20  # with pre_buffer off, pages are read as needed, not whole column chunks
SAMPLE = 3

KeyBatches = Callable[[], Iterator[pa.Array | pa.ChunkedArray]]


def batch_rows(meta: pq.FileMetaData, columns: list[str] | None) -> int:
    """Rows per batch so that one batch of `columns` decodes to ~SCAN_BATCH_BYTES (footer only)."""
    if not meta.num_rows or not meta.num_row_groups:
        return SCAN_BATCH_ROWS
    wanted = None if columns is None else set(columns)
    size = 0
    for r in range(meta.num_row_groups):
        group = meta.row_group(r)
        for i in range(group.num_columns):
            chunk = group.column(i)
            if wanted is None or chunk.path_in_schema.split(".", 1)[0] in wanted:
                size += chunk.total_uncompressed_size
    per_row = max(size / meta.num_rows, 1.0)
    return int(min(SCAN_BATCH_ROWS, max(MIN_SCAN_ROWS, SCAN_BATCH_BYTES // per_row)))


def iter_parquet_batches(
    path: Path, columns: list[str] | None = None, batch_size: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of a parquet file, `columns` only, pages streamed: memory ~ one batch.

    Without `batch_size` the batch is sized from the footer to ~SCAN_BATCH_BYTES of those columns.
    """
    with pq.ParquetFile(path, buffer_size=SCAN_BUFFER_BYTES, pre_buffer=False) as handle:
        rows = batch_size or batch_rows(handle.metadata, columns)
        yield from handle.iter_batches(batch_size=rows, columns=columns, use_threads=False)


def int64_array(values: Iterable[int]) -> pa.Array:
    """An int64 array from Python ints, built from a buffer."""
    data = array.array("q", values)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def all_false(length: int) -> pa.Array:
    """A boolean array of `length` false values."""
    return pc.is_valid(pa.nulls(length, pa.bool_()))


def null_as_false(mask: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """`mask` with nulls read as false (pc.fill_null(mask, False) without a Python scalar)."""
    return pc.and_kleene(pc.is_valid(mask), mask)


def null_as_true(mask: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """`mask` with nulls read as true."""
    return pc.or_kleene(pc.is_null(mask), mask)


def first_true(mask: pa.Array | pa.ChunkedArray) -> int | None:
    """0-based position of the first true value, or None."""
    hits = pc.indices_nonzero(null_as_false(mask))
    return hits[0].as_py() if len(hits) else None


def key_hashes(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A 64-bit hash per non-null key (Python's hash of the text: fixed within one process)."""
    values = keys.drop_null().to_pylist()
    return int64_array(map(hash, values))


class DuplicateCounter:
    """Exact count of repeated text keys over a stream, holding 8 bytes per key.

    `add` keeps a 64-bit hash per key. `count` sorts the hashes (no hash table: ~24 bytes per key
    at the peak) to find those that repeat; only when one does does it read the keys again
    (`again()`) and compare in full just the keys with those hashes: the duplicates, and in
    theory a rare 64-bit collision.
    """

    def __init__(self) -> None:
        self._hashes: list[pa.Array] = []

    def add(self, keys: pa.Array | pa.ChunkedArray) -> None:
        self._hashes.append(key_hashes(keys))

    def count(self, again: KeyBatches) -> tuple[int, list[str]]:
        """(keys minus distinct keys, up to SAMPLE repeated keys); nulls are not keys."""
        hashes = pa.chunked_array(self._hashes, type=pa.int64()).combine_chunks()
        self._hashes = []
        if len(hashes) < 2:
            return 0, []
        ordered = pc.take(hashes, pc.array_sort_indices(hashes))
        del hashes
        repeated = pc.unique(_repeats(ordered))
        del ordered
        if not len(repeated):
            return 0, []
        suspects: list[pa.Array] = []
        for keys in again():
            flat = (keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys).drop_null()
            suspects.append(flat.filter(pc.is_in(key_hashes(flat), value_set=repeated)).cast(pa.string()))
        together = pa.chunked_array(suspects, type=pa.string()).combine_chunks()
        extra = _repeats(pc.take(together, pc.array_sort_indices(together)))
        return len(extra), pc.unique(extra).to_pylist()[:SAMPLE]


def _repeats(ordered: pa.Array) -> pa.Array:
    """The values of a sorted array that equal their predecessor (one per extra occurrence)."""
    later, earlier = ordered.slice(1), ordered.slice(0, max(len(ordered) - 1, 0))
    return later.filter(pc.equal(later, earlier))


def count_duplicates(batches: KeyBatches) -> tuple[int, list[str]]:
    """DuplicateCounter over `batches()` (called once, or twice when some key hash repeats)."""
    counter = DuplicateCounter()
    for keys in batches():
        counter.add(keys)
    return counter.count(batches)
