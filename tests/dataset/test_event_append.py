"""Appending to .events.log (dataset/event_append.py): complete lines under concurrency, the event
lock's checks, a failed write rolled back, a torn last line refused with its fix, file modes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from usrbatch.dataset import event_append, event_read
from usrbatch.dataset.ref import DatasetRef
from usrbatch.errors import EventLogError


def _lines(ref: DatasetRef) -> list[dict]:
    return [json.loads(line) for line in (ref.dir / ".events.log").read_text().splitlines()]


def _append_many(directory: str, worker: int, count: int) -> None:
    for i in range(count):
        event_append.append_event(
            Path(directory), "stress", args={"worker": worker, "i": i, "pad": "z" * 5000}
        )


def test_concurrent_appends_from_two_processes_produce_complete_lines(dataset: DatasetRef) -> None:
    before = len(_lines(dataset))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(dataset.dir), w, 60)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    lines = _lines(dataset)  # every line parses: no interleaving, no partial record
    stress = [line for line in lines[before:] if line["action"] == "stress"]
    assert len(stress) == 120
    for worker in (1, 2):
        assert [e["args"]["i"] for e in stress if e["args"]["worker"] == worker] == list(range(60))
    assert event_read.check_event_log(dataset.dir / ".events.log") == []


def test_symlinked_or_hardlinked_event_lock_is_rejected(dataset: DatasetRef, tmp_path: Path) -> None:
    lock = dataset.dir / ".events.lock"
    lock.unlink()
    other = tmp_path / "elsewhere"
    other.write_text("")
    lock.symlink_to(other)
    with pytest.raises(EventLogError, match="symlink"):
        event_append.append_event(dataset.dir, "x")
    lock.unlink()
    os.link(other, lock)
    with pytest.raises(EventLogError, match="single link"):
        event_append.append_event(dataset.dir, "x")


def test_failed_write_truncates_back_and_reports_restored(
    dataset: DatasetRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = dataset.dir / ".events.log"
    before = log.read_bytes()
    real_write = os.write

    def half_then_fail(fd: int, data) -> int:
        if fd > 2 and len(data) > 100:
            real_write(fd, bytes(data[:50]))  # a partial record reaches the file ...
            raise OSError(28, "No space left on device")  # ... then the disk fills up
        return real_write(fd, data)

    monkeypatch.setattr(event_append.os, "write", half_then_fail)
    with pytest.raises(EventLogError, match=r"^Event log append restored: .*\.events\.log"):
        event_append.append_event(dataset.dir, "attach", args={"x": 1})
    monkeypatch.undo()
    assert log.read_bytes() == before


def _append_small(directory: str, worker: int, count: int) -> None:
    for i in range(count):
        event_append.append_event(Path(directory), "stress", args={"worker": worker, "i": i})


def test_four_processes_times_200_appends_give_800_complete_lines(dataset: DatasetRef) -> None:
    before = len(_lines(dataset))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_small, args=(str(dataset.dir), w, 200)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    stress = [line for line in _lines(dataset)[before:] if line["action"] == "stress"]
    assert len(stress) == 800
    for worker in range(4):
        assert [e["args"]["i"] for e in stress if e["args"]["worker"] == worker] == list(range(200))
    assert event_read.check_event_log(dataset.dir / ".events.log") == []


def _tear(log: Path, fragment: bytes = b'{"event_version":1,"timestamp_utc":"2026-') -> tuple[bytes, int]:
    before = log.read_bytes()
    with open(log, "ab") as fh:
        fh.write(fragment)
    return before, len(before)


def test_append_onto_a_torn_last_line_is_refused_with_the_truncate_fix(dataset: DatasetRef, tree) -> None:
    log = dataset.dir / ".events.log"
    _before, keep = _tear(log)
    state = tree(dataset.root)
    with pytest.raises(EventLogError) as info:
        event_append.append_event(dataset.dir, "attach", args={"x": 1})
    assert info.value.message.startswith("Event log ends with a partial JSONL record: ")
    assert f"after its last complete line (which ends at byte {keep})" in info.value.message
    assert f"truncate -s {keep} {log}" in (info.value.hint or "")
    assert tree(dataset.root) == state  # nothing fused, nothing written
    os.truncate(log, keep)  # the fix the hint names
    event_append.append_event(dataset.dir, "attach", args={"x": 1})
    assert event_read.check_event_log(log) == []


def test_a_log_that_is_one_fragment_keeps_zero_bytes(dataset: DatasetRef) -> None:
    log = dataset.dir / ".events.log"
    log.write_bytes(b"x" * 70_000)  # longer than one backwards read block, no newline at all
    with pytest.raises(EventLogError) as info:
        event_append.require_complete_log(dataset.dir)
    assert "70000 byte(s) after its last complete line (which ends at byte 0)" in info.value.message


def test_event_log_mode_follows_the_umask(root: Path) -> None:
    from usrbatch.dataset.records import import_records, init_dataset

    previous = os.umask(0o002)
    try:
        ref = init_dataset(root, "shared").dataset
        import_records(ref, [{"sequence": "ACGT"}])
    finally:
        os.umask(previous)
    files = [p for p in ref.dir.rglob("*") if p.is_file()]
    modes = {p.relative_to(ref.dir).as_posix(): p.stat().st_mode & 0o777 for p in files}
    assert set(modes.values()) == {0o664}, modes
    assert {".events.log", ".events.lock", ".usr.lock", "records.parquet", "meta.md"} <= set(modes)
