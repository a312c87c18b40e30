from __future__ import annotations

from usrbatch.terminal import printable


def test_control_characters_are_shown_escaped_and_text_stays_one_line() -> None:
    assert printable("plain text, naïve ✓") == "plain text, naïve ✓"
    assert printable("a\x1b[31mb\nc\td\r\x00\x7f") == "a\\x1b[31mb\\nc\\td\\r\\x00\\x7f"
    assert printable("x\u202ey\u2028z\ufeff") == "x\\u202ey\\u2028z\\ufeff"
