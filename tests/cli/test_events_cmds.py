"""`usr events tail` through the real entry point."""

from __future__ import annotations


def test_events_tail_missing_log(populated) -> None:
    cli, root, _ = populated
    (root / "ns" / "demo" / ".events.log").unlink()
    code, out = cli("events", "tail", "ns/demo")
    assert code == 2 and out.startswith("ERROR: Events log not found: ")


def test_events_tail_partial_last_line_names_the_log(tree, populated) -> None:
    cli, root, _ = populated
    log = root / "ns" / "demo" / ".events.log"
    with open(log, "ab") as fh:
        fh.write(b'{"action":"cut')
    before = tree(root)
    code, out = cli("events", "tail", "ns/demo", "-n", "2")
    assert code == 2
    assert out.startswith("ERROR: Invalid JSONL event line: ")
    assert f"Hint: {log}" in out and "usr validate" in out
    code, out = cli("events", "tail", "ns/demo", "-n", "1", "--format", "raw")
    assert (code, out) == (0, '{"action":"cut\n')
    assert tree(root) == before


def test_events_tail_all_streams_and_checks_every_line_first(populated) -> None:
    cli, root, _ = populated
    log = root / "ns" / "demo" / ".events.log"
    count = len(log.read_bytes().splitlines())
    code, out = cli("events", "tail", "ns/demo")
    assert code == 0 and len(out.splitlines()) == count
    with open(log, "ab") as fh:
        fh.write(b"not json\n")
    code, out = cli("events", "tail", "ns/demo")
    assert code == 2 and out.startswith("ERROR: Invalid JSONL event line: "), out  # nothing printed first
    code, out = cli("events", "tail", "ns/demo", "-n", "-1")
    assert (code, out) == (2, "ERROR: --n must be >= 0 (0 = all lines).\n")


def test_an_unknown_format_is_an_error_and_changes_nothing(populated, tree) -> None:
    cli, root, _ = populated
    before = tree(root)
    code, out = cli("events", "tail", "ns/demo", "--format", "yaml")
    assert (code, out) == (2, "ERROR: format must be one of: json, raw.\n")
    assert tree(root) == before
