"""Following a log: resume at the cursor, leave a half-written line, notice truncation and rotation."""

from __future__ import annotations

import json
import os
from pathlib import Path

from usrbatch.monitor.cursor import ROTATED, TRUNCATED, Cursor, read_lines, start_offset


def _append(path: Path, *objs: dict, raw: str = "") -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for obj in objs:
            fh.write(json.dumps(obj) + "\n")
        fh.write(raw)


def _read(path: Path, cursor: Cursor | None) -> tuple[list[dict], Cursor | None, str | None]:
    offset, reset = start_offset(path, cursor)
    out, last = [], cursor if reset is None else None
    for line in read_lines(path, offset):
        out.append(line.data)
        last = line.cursor
    return out, last, reset


def test_resumes_after_the_last_full_line_and_waits_for_a_partial_one(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    _append(log, {"n": 1}, {"n": 2}, raw='{"n": 3')
    got, cur, reset = _read(log, None)
    assert got == [{"n": 1}, {"n": 2}] and reset is None
    assert cur is not None and cur.offset == len(b'{"n": 1}\n{"n": 2}\n')
    _append(log, raw='}\n{"n": 4}\nnot json\n')
    got, cur2, _ = _read(log, cur)
    assert got == [{"n": 3}, {"n": 4}, {}]  # an unparseable line is passed over, not fatal
    assert _read(log, cur2)[0] == []
    assert Cursor.from_json(cur2.to_json()) == cur2


def test_truncation_restarts_from_the_top(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    _append(log, {"n": 1}, {"n": 2})
    _, cur, _ = _read(log, None)
    log.write_text(json.dumps({"n": "fresh"}) + "\n")  # same inode, shorter
    got, _, reset = _read(log, cur)
    assert reset == TRUNCATED and got == [{"n": "fresh"}]


def test_truncated_and_refilled_past_the_offset_is_noticed(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    _append(log, {"n": 1})
    _, cur, _ = _read(log, None)
    with open(log, "w", encoding="utf-8") as fh:  # copytruncate, then more lines than before
        fh.write(json.dumps({"m": "a" * 40}) + "\n" + json.dumps({"m": "b"}) + "\n")
    got, _, reset = _read(log, cur)
    assert reset == TRUNCATED and [g["m"] for g in got] == ["a" * 40, "b"]


def test_rotation_reads_the_new_file_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    _append(log, {"n": 1}, {"n": 2})
    _, cur, _ = _read(log, None)
    os.rename(log, tmp_path / "audit.jsonl.1")
    _append(log, {"n": "new"})
    got, cur2, reset = _read(log, cur)
    assert reset == ROTATED and got == [{"n": "new"}]
    assert cur2 is not None and cur2.inode == os.stat(log).st_ino


def test_a_missing_log_yields_nothing(tmp_path: Path) -> None:
    assert _read(tmp_path / "absent.jsonl", None) == ([], None, None)
