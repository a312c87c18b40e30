"""The structured audit log: one JSON line per event, schema + ts on every line, no secrets."""

from __future__ import annotations

import json
from pathlib import Path

from usrbatch import auditlog


def test_lines_have_schema_ts_event_and_bound_context(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    auditlog.configure(path)
    try:
        auditlog.bind_context(loop_id="L1", step="sync")
        auditlog.get_logger().info("sync.done", bytes=12, duration_s=0.5)
    finally:
        auditlog.clear_context()
        auditlog.configure(None)
    (line,) = path.read_text().splitlines()
    data = json.loads(line)
    assert data["event"] == "sync.done" and data["schema"] == auditlog.SCHEMA_VERSION
    assert data["ts"].endswith("Z") and data["loop_id"] == "L1" and data["step"] == "sync"
    assert data["bytes"] == 12


def test_secrets_never_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    auditlog.configure(path)
    try:
        auditlog.get_logger().info(
            "remote.connect",
            password="hunter2",
            ssh_private_key="-----BEGIN",
            nested={"api_key": "k-123", "host": "scc1"},
            argv=["usr", "--token", "t-456", "--webhook=https://hook/x", "pull"],
        )
    finally:
        auditlog.configure(None)
    text = path.read_text()
    for secret in ("hunter2", "-----BEGIN", "k-123", "t-456", "https://hook/x"):
        assert secret not in text
    data = json.loads(text)
    assert data["nested"]["host"] == "scc1"
    assert data["argv"] == ["usr", "--token", "***REDACTED***", "--webhook=***REDACTED***", "pull"]
