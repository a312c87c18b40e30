"""Output formats of §10 built from a real plan."""

from __future__ import annotations

import json

from usrbatch.sync import audit
from usrbatch.sync.plan import build_plan
from usrbatch.transport.base import FileEntry, Inventory


def inv(files, lines):
    return Inventory(
        True,
        {p: FileEntry(p, size, 1_767_225_600_000_000_000, sha) for p, (size, sha) in files.items()},
        events_lines=lines,
    )


def test_human_size():
    assert [audit.human_size(n) for n in (None, 0, 1023, 12 * 1024, 5 * 1024**3)] == [
        "?",
        "0B",
        "1023B",
        "12KB",
        "5GB",
    ]


def test_transfer_states():
    assert audit.transfer_state("diff", dry_run=True, has_change=True) == "DIFF-ONLY"
    assert audit.transfer_state("pull", dry_run=True, has_change=False) == "DRY-RUN"
    assert audit.transfer_state("push", dry_run=False, has_change=True) == "TRANSFERRED"
    assert audit.transfer_state("push", dry_run=False, has_change=False) == "NO-OP"


def test_payload_lines_and_json():
    local = inv({"records.parquet": (12 * 1024, "aa"), ".events.log": (10, "e1"), "_x/a": (1, "a")}, 2)
    remote = inv(
        {"records.parquet": (12 * 1024, "bb"), ".events.log": (20, "e2"), "_derived/n/p": (1, "p")}, 4
    )
    summary = build_plan("demo", local, remote, direction="push", verify_mode="hash").summary
    payload = audit.audit_payload(
        summary, action="push", state="TRANSFERRED", sidecars=True, content_hashes=False
    )
    assert payload["_derived"] == {
        "changed": True,
        "local_files": 0,
        "remote_files": 1,
        "local_only": [],
        "remote_only": ["n/p"],
    }
    assert payload["_auxiliary"]["local_only"] == ["_x/a"]
    text = audit.audit_json_text(payload)
    assert text.endswith("\n") and json.loads(text)["usr_output_version"] == 1
    lines = audit.audit_lines(payload)
    assert lines[0] == "PUSH audit: TRANSFERRED"
    assert lines[2] == "Verify     : primary=hash sidecars=strict content_hashes=off"
    diff = audit.diff_lines(summary)
    assert diff[1] == "Local  : aa  size=12KB  rows=?  cols=?"
    assert diff[3] == "Primary sha: aa ≠ bb"
    assert diff[5] == ".events.log changed lines: local=2  remote=4  (+2 on remote)"
