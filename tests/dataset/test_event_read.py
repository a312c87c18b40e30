"""Reading .events.log (dataset/event_read.py): tail, render, follow, and the line-by-line check."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from usrbatch.dataset import event_append, event_read
from usrbatch.dataset.ref import DatasetRef
from usrbatch.errors import EventLogError


def _lines(ref: DatasetRef) -> list[dict]:
    return [json.loads(line) for line in (ref.dir / ".events.log").read_text().splitlines()]


def test_tail_reads_last_lines_and_renders(dataset: DatasetRef) -> None:
    for i in range(30):
        event_append.append_event(dataset.dir, "step", args={"i": i})
    last = event_read.tail_lines(dataset.dir, 3)
    assert [json.loads(line)["args"]["i"] for line in last] == [27, 28, 29]
    assert len(event_read.tail_lines(dataset.dir, 0)) == len(_lines(dataset))
    assert event_read.render_line(last[-1], "json") == json.dumps(json.loads(last[-1]), separators=(",", ":"))
    with pytest.raises(EventLogError, match="format must be one of: json, raw."):
        event_read.render_line(last[-1], "yaml")
    with pytest.raises(EventLogError, match="Invalid JSONL event line"):
        event_read.render_line(b"{nope", "json")


def test_check_event_log_reports_problems(tmp_path: Path) -> None:
    log = tmp_path / ".events.log"
    log.write_bytes(b'{"a":1}\n\n[1]\n{bad\n\xff\xfe\n{"tail":')
    assert event_read.check_event_log(log) == [
        "Event log contains a blank JSONL record at line 2",
        "Event log record 3 is not a JSON object",
        "Event log contains malformed JSON at line 4",
        "Event log is not valid UTF-8 at line 5",
        "Event log ends with a partial JSONL record",
    ]


def test_follow_yields_lines_appended_later(dataset: DatasetRef) -> None:
    import threading

    seen: list[bytes] = []
    stream = event_read.follow_lines(dataset.dir, poll_s=0.02)

    def consume() -> None:
        seen.append(next(stream))

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    time.sleep(0.2)  # the follower has seeked to EOF: earlier events are not replayed
    event_append.append_event(dataset.dir, "later", args={"n": 1})
    worker.join(10)
    assert [json.loads(line)["action"] for line in seen] == ["later"]


def test_tail_reads_only_the_end_of_a_large_log(dataset: DatasetRef) -> None:
    log = dataset.dir / ".events.log"
    last = log.read_bytes().splitlines()[-1] + b"\n"
    with open(log, "r+b") as fh:  # a head that is not JSON at all: tail must never reach it
        fh.write(b"\xff" * 64)
    with open(log, "ab") as fh:
        fh.write(last * 20_000 + b"\n\n" + b'{"k":1}\n')
    lines = event_read.tail_lines(dataset.dir, 10)
    assert len(lines) == 10 and lines[-1] == b'{"k":1}' and lines[0] == last.rstrip(b"\n")
    assert all(event_read.render_line(line, "json") for line in lines)
