"""`usr head` rendering helpers: column ranking and prettified cells (plain text)."""

from __future__ import annotations

import math
from typing import Any

MAX_LIST_ITEMS = 6
MAX_COLWIDTH = 80


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


def render_table(columns: list[str], rows: list[list[str]]) -> str:
    """A plain left-aligned table without index, trailing whitespace stripped."""
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
