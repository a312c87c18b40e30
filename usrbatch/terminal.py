"""Text for a terminal: control characters from input files shown escaped; byte counts in IEC units.

An error that echoes a cell, a column name, a path or a dataset id must not let ESC sequences
repaint the user's terminal, and a message stays one line: `\\n` is shown as the two characters.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with control, format and line-separator characters as `\\n`, `\\x1b`, `\\u202e`, ..."""
    if text.isprintable():
        return text
    out: list[str] = []
    for ch in text:
        if ch == " " or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"):
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def iec_size(n: object) -> str:
    """A byte count in binary units (`512 B`, `1.5 KiB`, ... `2.0 TiB`); `?` when it is not an int."""
    if not isinstance(n, int) or isinstance(n, bool):
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
