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


def test_console_renderer_writes_a_readable_line_beside_the_same_json_line(tmp_path: Path) -> None:
    import io

    path = tmp_path / "audit.jsonl"
    console = io.StringIO()
    auditlog.configure(path, console=console)
    try:
        auditlog.bind_context(loop_id="L1")
        auditlog.get_logger().info("sync.file.sent", path="a b/c.parquet", bytes=12, token="t-1", error=None)
    finally:
        auditlog.clear_context()
        auditlog.configure(None)
    data = json.loads(path.read_text())
    assert data["event"] == "sync.file.sent" and data["bytes"] == 12 and data["token"] == "***REDACTED***"
    (line,) = console.getvalue().splitlines()
    clock, rest = line.split(" ", 1)
    assert clock == data["ts"][11:19]
    assert rest == "sync.file.sent path='a b/c.parquet' bytes=12 token=***REDACTED*** loop_id=L1"


def test_console_only_and_env_switch(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("USRBATCH_LOG_CONSOLE", "1")
    monkeypatch.delenv("USRBATCH_AUDIT_LOG", raising=False)
    monkeypatch.delenv("USRBATCH_LOOP_ID", raising=False)
    auditlog.configure_from_env()
    try:
        auditlog.get_logger().info("sync.plan", files_to_send=3)
    finally:
        auditlog.configure(None)
    assert auditlog.configured_path() is None
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(" sync.plan files_to_send=3")


def test_file_logger_writes_its_own_file_and_leaves_the_configuration_alone(tmp_path: Path) -> None:
    """Library code (submit, cancel, resubmit) records into a loop's audit log through
    `file_logger`; the caller's configured log keeps receiving the caller's events."""
    main_log, loop_log = tmp_path / "main.jsonl", tmp_path / "loop" / "audit.jsonl"
    auditlog.configure(main_log)
    try:
        loop = auditlog.file_logger(loop_log, loop_id="L1", step=None)
        loop.info("loop.submitted", token="password=hunter2")
        auditlog.get_logger().info("cli.done")
        assert auditlog.configured_path() == main_log.absolute()
        [line] = [json.loads(x) for x in loop_log.read_text().splitlines()]
        assert line["event"] == "loop.submitted" and line["loop_id"] == "L1"
        assert line["schema"] == auditlog.SCHEMA_VERSION and line["ts"].endswith("Z")
        assert "hunter2" not in loop_log.read_text()
        assert [json.loads(x)["event"] for x in main_log.read_text().splitlines()] == ["cli.done"]
    finally:
        auditlog.configure(None)


def test_structlog_loads_without_rich_and_rich_stays_importable(tmp_path: Path) -> None:
    """configure() hides rich from structlog.dev only while structlog is imported: a fresh process
    that configures a file sink has no rich loaded, and can still import rich itself afterwards."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from usrbatch import auditlog\n"
        f"auditlog.configure({str(tmp_path / 'a.jsonl')!r})\n"
        "auditlog.get_logger().info('t.one', n=1)\n"
        "print('rich' in sys.modules, sys.modules['structlog'].dev.rich is None)\n"
        "import rich\n"
        "print(rich.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "rich"]
    assert json.loads((tmp_path / "a.jsonl").read_text())["event"] == "t.one"


def test_a_logger_taken_early_writes_where_the_configuration_says_at_each_call(tmp_path: Path) -> None:
    log = auditlog.get_logger().bind(step="s1")
    auditlog.configure(None)
    log.info("dropped.event")  # no sink: nothing written anywhere
    path = tmp_path / "a.jsonl"
    auditlog.configure(path)
    try:
        log.info("kept.event", n=2)
    finally:
        auditlog.configure(None)
    log.info("dropped.again")
    (line,) = path.read_text().splitlines()
    data = json.loads(line)
    assert (data["event"], data["step"], data["n"]) == ("kept.event", "s1", 2)
