"""The event record (dataset/event_record.py): key order, defaults, actor, redaction, fingerprint,
and the encoding rules (one line, the 1 MiB cap) enforced before anything is written."""

from __future__ import annotations

import json
import os

import pytest

from usrbatch.dataset import event_append, event_record
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
    event_append.append_event(
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
    payload = event_append.append_event(dataset.dir, "custom_action")
    assert payload["actor"]["tool"] == "usr"
    assert payload["actor"]["run_id"] == f"usr-pid-{os.getpid()}"
    assert payload["metrics"] == {} and payload["artifacts"] == {}
    assert len(payload["fingerprint"]["sha256"]) == 64


def _padded_record(size: int) -> bytes:
    payload = event_record.build_event("pad", dataset_name="d", root=None, args={"pad": ""})
    base = len(event_record.encode_event(payload)) if size > 2000 else 0
    payload["args"]["pad"] = "x" * (size - base)
    data = (json.dumps(payload, separators=(",", ":"), ensure_ascii=True) + "\n").encode()
    assert len(data) == size
    return data


def test_record_exactly_one_mib_is_accepted_and_one_more_byte_is_rejected(dataset: DatasetRef, tree) -> None:
    log = dataset.dir / ".events.log"
    event_append.append_encoded(dataset.dir, _padded_record(event_record.MAX_RECORD_BYTES))
    assert log.read_bytes().endswith(b"\n")
    assert len(log.read_bytes().splitlines()[-1]) + 1 == event_record.MAX_RECORD_BYTES
    before = tree(dataset.root)
    with pytest.raises(EventLogError, match="over the 1048576-byte encoded-record limit"):
        event_append.append_encoded(dataset.dir, _padded_record(event_record.MAX_RECORD_BYTES + 1))
    assert tree(dataset.root) == before


def test_oversize_append_event_writes_nothing(dataset: DatasetRef, tree) -> None:
    before = tree(dataset.root)
    with pytest.raises(ValueError, match="encoded-record limit"):
        event_append.append_event(dataset.dir, "attach", args={"blob": "y" * event_record.MAX_RECORD_BYTES})
    assert tree(dataset.root) == before


@pytest.mark.parametrize("data", [b"\n", b"", b'{"a":1}\n{"b":2}\n', b'{"a":"\r"}\n'])
def test_empty_or_multiline_records_are_rejected(dataset: DatasetRef, data: bytes) -> None:
    with pytest.raises(EventLogError):
        event_append.append_encoded(dataset.dir, data)
