from __future__ import annotations

from usrbatch.terminal import printable


def test_control_characters_are_shown_escaped_and_text_stays_one_line() -> None:
    assert printable("plain text, naïve ✓") == "plain text, naïve ✓"
    assert printable("a\x1b[31mb\nc\td\r\x00\x7f") == "a\\x1b[31mb\\nc\\td\\r\\x00\\x7f"
    assert printable("x\u202ey\u2028z\ufeff") == "x\\u202ey\\u2028z\\ufeff"


def test_iec_size_units_and_non_ints():
    from usrbatch.terminal import iec_size

    sizes = [0, 1023, 1024, 1536, 5 * 1024**2, 3 * 1024**3, 2 * 1024**4]
    assert [iec_size(n) for n in sizes] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
        "2.0 TiB",
    ]
    assert iec_size(None) == "?" and iec_size("12") == "?" and iec_size(True) == "?"
