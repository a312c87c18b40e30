from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from usrbatch.dataset import events as ev
from usrbatch.dataset.ref import DatasetRef
from usrbatch.errors import EventLogError

KEY_ORDER = [
    "event_version",
    "timestamp_utc",
    "action",
    "dataset",
    "args",
    "metrics",
    "artifacts",
    "maintenance",
    "fingerprint",
    "registry_hash",
    "actor",
    "version",
]


def _lines(ref: DatasetRef) -> list[dict]:
    return [json.loads(line) for line in (ref.dir / ".events.log").read_text().splitlines()]


def test_payload_order_defaults_actor_and_redaction(
    dataset: DatasetRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USR_ACTOR_TOOL", "densegen")
    monkeypatch.setenv("USR_ACTOR_RUN_ID", "123.4")
    ev.append_event(
        dataset.dir,
        "attach",
        args={
            "namespace": "infer",
            "api_token": "s3cret",
            "nested": {"Password": "p"},
            "argv": ["--token=t", "--auth", "a", "-n", "3"],
        },
        metrics={"rows_matched": 2},
    )
    last = _lines(dataset)[-1]
    assert list(last) == KEY_ORDER
    assert last["event_version"] == 1
    assert last["timestamp_utc"].endswith("Z") and len(last["timestamp_utc"]) == 27
    assert last["dataset"] == {"name": "ns/demo", "root": str(dataset.root)}
    assert last["args"]["api_token"] == "***REDACTED***"
    assert last["args"]["nested"] == {"Password": "***REDACTED***"}
    assert last["args"]["argv"] == ["--token=***REDACTED***", "--auth", "***REDACTED***", "-n", "3"]
    assert last["metrics"] == {"rows_incoming": 0, "rows_matched": 2, "rows_missing": 0}
    assert last["artifacts"] == {"overlay": {}}
    assert last["maintenance"] == {}
    assert last["fingerprint"]["rows"] == 4 and last["fingerprint"]["cols"] == 7
    assert "sha256" not in last["fingerprint"]
    assert last["actor"]["tool"] == "densegen" and last["actor"]["run_id"] == "123.4"
    assert last["actor"]["pid"] == os.getpid()
    assert "s3cret" not in (dataset.dir / ".events.log").read_text()


def test_default_actor_and_sha_fingerprint(dataset: DatasetRef, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USR_ACTOR_TOOL", raising=False)
    monkeypatch.delenv("USR_ACTOR_RUN_ID", raising=False)
    monkeypatch.setenv("USR_EVENT_SHA256", "1")
    payload = ev.append_event(dataset.dir, "custom_action")
    assert payload["actor"]["tool"] == "usr"
    assert payload["actor"]["run_id"] == f"usr-pid-{os.getpid()}"
    assert payload["metrics"] == {} and payload["artifacts"] == {}
    assert len(payload["fingerprint"]["sha256"]) == 64


def _padded_record(size: int) -> bytes:
    payload = ev.build_event("pad", dataset_name="d", root=None, args={"pad": ""})
    base = len(ev.encode_event(payload)) if size > 2000 else 0
    payload["args"]["pad"] = "x" * (size - base)
    data = (json.dumps(payload, separators=(",", ":"), ensure_ascii=True) + "\n").encode()
    assert len(data) == size
    return data


def test_record_exactly_one_mib_is_accepted_and_one_more_byte_is_rejected(dataset: DatasetRef, tree) -> None:
    log = dataset.dir / ".events.log"
    ev.append_encoded(dataset.dir, _padded_record(ev.MAX_RECORD_BYTES))
    assert log.read_bytes().endswith(b"\n")
    assert len(log.read_bytes().splitlines()[-1]) + 1 == ev.MAX_RECORD_BYTES
    before = tree(dataset.root)
    with pytest.raises(EventLogError, match="over the 1048576-byte encoded-record limit"):
        ev.append_encoded(dataset.dir, _padded_record(ev.MAX_RECORD_BYTES + 1))
    assert tree(dataset.root) == before


def test_oversize_append_event_writes_nothing(dataset: DatasetRef, tree) -> None:
    before = tree(dataset.root)
    with pytest.raises(ValueError, match="encoded-record limit"):
        ev.append_event(dataset.dir, "attach", args={"blob": "y" * ev.MAX_RECORD_BYTES})
    assert tree(dataset.root) == before


@pytest.mark.parametrize("data", [b"\n", b"", b'{"a":1}\n{"b":2}\n', b'{"a":"\r"}\n'])
def test_empty_or_multiline_records_are_rejected(dataset: DatasetRef, data: bytes) -> None:
    with pytest.raises(EventLogError):
        ev.append_encoded(dataset.dir, data)


def _append_many(directory: str, worker: int, count: int) -> None:
    for i in range(count):
        ev.append_event(Path(directory), "stress", args={"worker": worker, "i": i, "pad": "z" * 5000})


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
    assert ev.check_event_log(dataset.dir / ".events.log") == []


def test_symlinked_or_hardlinked_event_lock_is_rejected(dataset: DatasetRef, tmp_path: Path) -> None:
    lock = dataset.dir / ".events.lock"
    lock.unlink()
    other = tmp_path / "elsewhere"
    other.write_text("")
    lock.symlink_to(other)
    with pytest.raises(EventLogError, match="symlink"):
        ev.append_event(dataset.dir, "x")
    lock.unlink()
    os.link(other, lock)
    with pytest.raises(EventLogError, match="single link"):
        ev.append_event(dataset.dir, "x")


def test_tail_reads_last_lines_and_renders(dataset: DatasetRef) -> None:
    for i in range(30):
        ev.append_event(dataset.dir, "step", args={"i": i})
    last = ev.tail_lines(dataset.dir, 3)
    assert [json.loads(line)["args"]["i"] for line in last] == [27, 28, 29]
    assert len(ev.tail_lines(dataset.dir, 0)) == len(_lines(dataset))
    assert ev.render_line(last[-1], "json") == json.dumps(json.loads(last[-1]), separators=(",", ":"))
    with pytest.raises(EventLogError, match="format must be one of: json, raw."):
        ev.render_line(last[-1], "yaml")
    with pytest.raises(EventLogError, match="Invalid JSONL event line"):
        ev.render_line(b"{nope", "json")


def test_check_event_log_reports_problems(tmp_path: Path) -> None:
    log = tmp_path / ".events.log"
    log.write_bytes(b'{"a":1}\n\n[1]\n{bad\n\xff\xfe\n{"tail":')
    assert ev.check_event_log(log) == [
        "Event log contains a blank JSONL record at line 2",
        "Event log record 3 is not a JSON object",
        "Event log contains malformed JSON at line 4",
        "Event log is not valid UTF-8 at line 5",
        "Event log ends with a partial JSONL record",
    ]


def test_follow_yields_lines_appended_later(dataset: DatasetRef) -> None:
    import threading

    seen: list[bytes] = []
    stream = ev.follow_lines(dataset.dir, poll_s=0.02)

    def consume() -> None:
        seen.append(next(stream))

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    time.sleep(0.2)  # the follower has seeked to EOF: earlier events are not replayed
    ev.append_event(dataset.dir, "later", args={"n": 1})
    worker.join(10)
    assert [json.loads(line)["action"] for line in seen] == ["later"]


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

    monkeypatch.setattr(ev.os, "write", half_then_fail)
    with pytest.raises(EventLogError, match=r"^Event log append restored: .*\.events\.log"):
        ev.append_event(dataset.dir, "attach", args={"x": 1})
    monkeypatch.undo()
    assert log.read_bytes() == before


def _append_small(directory: str, worker: int, count: int) -> None:
    for i in range(count):
        ev.append_event(Path(directory), "stress", args={"worker": worker, "i": i})


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
    assert ev.check_event_log(dataset.dir / ".events.log") == []


def test_tail_reads_only_the_end_of_a_large_log(dataset: DatasetRef) -> None:
    log = dataset.dir / ".events.log"
    last = log.read_bytes().splitlines()[-1] + b"\n"
    with open(log, "r+b") as fh:  # a head that is not JSON at all: tail must never reach it
        fh.write(b"\xff" * 64)
    with open(log, "ab") as fh:
        fh.write(last * 20_000 + b"\n\n" + b'{"k":1}\n')
    lines = ev.tail_lines(dataset.dir, 10)
    assert len(lines) == 10 and lines[-1] == b'{"k":1}' and lines[0] == last.rstrip(b"\n")
    assert all(ev.render_line(line, "json") for line in lines)


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
        ev.append_event(dataset.dir, "attach", args={"x": 1})
    assert info.value.message.startswith("Event log ends with a partial JSONL record: ")
    assert f"after its last complete line (which ends at byte {keep})" in info.value.message
    assert f"truncate -s {keep} {log}" in (info.value.hint or "")
    assert tree(dataset.root) == state  # nothing fused, nothing written
    os.truncate(log, keep)  # the fix the hint names
    ev.append_event(dataset.dir, "attach", args={"x": 1})
    assert ev.check_event_log(log) == []


def test_a_log_that_is_one_fragment_keeps_zero_bytes(dataset: DatasetRef) -> None:
    log = dataset.dir / ".events.log"
    log.write_bytes(b"x" * 70_000)  # longer than one backwards read block, no newline at all
    with pytest.raises(EventLogError) as info:
        ev.require_complete_log(dataset.dir)
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
