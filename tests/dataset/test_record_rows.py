"""The pure row checks of dataset/record_rows.py that import and attach share."""

from __future__ import annotations

import pyarrow as pa

from usrbatch.dataset.record_rows import first_repeat, row_indices, rows_text


def test_rows_text_names_five_rows_one_based_then_the_total() -> None:
    assert rows_text([0, 2]) == "1, 3"
    assert rows_text(range(7)) == "1, 2, 3, 4, 5, … (7 in total)"
    assert rows_text(range(7), sep=",") == "1,2,3,4,5,… (7 in total)"  # attach's wording


def test_row_indices_treats_nulls_as_false() -> None:
    assert row_indices(pa.array([True, None, False, True])) == [0, 3]


def test_first_repeat_gives_the_count_the_first_repeated_value_and_its_rows() -> None:
    assert first_repeat(pa.array(["a", "b", "c"])) is None
    values = pa.chunked_array([["x", "b", "a"], ["b", "a", "b"]])
    assert first_repeat(values) == (2, "b", [1, 3, 5])
