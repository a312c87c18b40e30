from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from usrbatch.dataset.scan import (
    DuplicateCounter,
    all_false,
    count_duplicates,
    first_true,
    int64_array,
    iter_parquet_batches,
    key_hashes,
    null_as_false,
    null_as_true,
)


def test_iter_parquet_batches_projects_and_streams(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": list(range(1_000)), "b": ["x"] * 1_000}), path, row_group_size=300)
    batches = list(iter_parquet_batches(path, ["a"], batch_size=128))
    assert all(b.schema.names == ["a"] for b in batches)
    assert max(b.num_rows for b in batches) <= 128
    assert [v for b in batches for v in b.column(0).to_pylist()] == list(range(1_000))


def test_arrow_values_without_python_conversion() -> None:
    assert int64_array([3, -1, 2**62]).to_pylist() == [3, -1, 2**62]
    assert all_false(3).to_pylist() == [False, False, False]
    mask = pa.array([True, None, False])
    assert null_as_false(mask).to_pylist() == [True, False, False]
    assert null_as_true(mask).to_pylist() == [True, True, False]
    assert first_true(pa.array([None, False, True, True])) == 2
    assert first_true(pa.array([None, False])) is None
    assert len(key_hashes(pa.array(["a", None, "b"]))) == 2


def test_count_duplicates_across_batches_is_exact() -> None:
    batches = [pa.array(["a", "b", None]), pa.array(["c", "a"]), pa.array(["a", "b", "d"])]
    reads = []

    def again():
        reads.append(1)
        return iter(batches)

    assert count_duplicates(again) == (3, ["a", "b"])  # a three times, b twice; nulls are no keys
    assert len(reads) == 2  # the second read only because hashes repeat
    reads.clear()
    assert count_duplicates(lambda: (reads.append(1), iter([pa.array(["x", "y"])]))[1]) == (0, [])
    assert len(reads) == 1
    assert count_duplicates(lambda: iter([])) == (0, [])


def test_duplicate_counter_compares_colliding_hashes_in_full() -> None:
    """Equal hashes alone never count: keys whose hash repeats are compared as text."""
    counter = DuplicateCounter()
    counter.add(pa.array(["p", "q"]))
    counter.add(pa.array(["p", "q"]))  # the second pass reads r, s here: as if their hashes collided
    assert counter.count(lambda: iter([pa.array(["p", "q"]), pa.array(["r", "s"])])) == (0, [])
