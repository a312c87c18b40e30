from __future__ import annotations

from usrbatch.dataset.preview import ellipsize, format_cell, rank_columns, render_table


def test_rank_columns_follows_the_public_order() -> None:
    names = ["zeta", "sequence", "id", "a__label", "b__primary", "usr_label__primary", "alpha"]
    assert rank_columns(names) == [
        "id",
        "usr_label__primary",
        "b__primary",
        "a__label",
        "sequence",
        "alpha",
        "zeta",
    ]


def test_cells_are_prettified() -> None:
    assert format_cell(None) == "∅"
    assert format_cell(True) == "true"
    assert format_cell(1.234567) == "1.2346"
    assert format_cell(2.5) == "2.5"
    assert format_cell(3.0) == "3"
    assert format_cell(0.00001234) == "1.234e-05"
    assert format_cell(12345678.0) == "1.235e+07"
    assert format_cell([1.0, 2.5, 3.0], max_items=2) == "vec[3] [1, 2.5, …]"
    assert format_cell({"a": 1, "b": None}) == "{ a: 1, b: ∅ }"
    assert ellipsize("x" * 10, 5) == "xxxx…"


def test_render_table_strips_trailing_whitespace() -> None:
    out = render_table(["id", "v"], [["a", ""], ["bb", "1"]])
    assert out.splitlines() == ["id  v", "a", "bb  1"]
