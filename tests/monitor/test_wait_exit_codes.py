"""`usrbatch wait` ends with `usrbatch status`'s codes: 0 completed, 1 failed, 3 still running when
--timeout passes, 4 scheduler unreachable (local scheduler; a PATH without qstat for 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from receivers import write_loop_spec

from usrbatch.cli.common import run_cli
from usrbatch.cli.usrbatch_main import usrbatch
from usrbatch.jobs.control import cancel_loop
from usrbatch.jobs.loop import JobRecord, LoopState, load_spec, save_state
from usrbatch.jobs.submit import submit_loop


def _wait(loop_dir: Path, timeout: float) -> int:
    return run_cli(usrbatch, ["wait", str(loop_dir), "--timeout", str(timeout)])


def test_wait_codes_completed_failed_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = load_spec(
        write_loop_spec(tmp_path / "ws", "local", "w-ok", [{"kind": "shell", "name": "a", "command": "true"}])
    )
    bad = load_spec(
        write_loop_spec(
            tmp_path / "ws",
            "local",
            "w-bad",
            [
                {"kind": "shell", "name": "a", "command": "exit 3"},
                {"kind": "shell", "name": "b", "command": "true"},
            ],
        )
    )
    slow = load_spec(
        write_loop_spec(
            tmp_path / "ws", "local", "w-slow", [{"kind": "shell", "name": "s", "command": "sleep 60"}]
        )
    )
    for spec in (ok, bad, slow):
        submit_loop(spec, emit=lambda _m: None)
    try:
        assert _wait(ok.loop_dir, 120) == 0
        assert _wait(bad.loop_dir, 120) == 1
        capsys.readouterr()
        assert _wait(slow.loop_dir, 0) == 3
        captured = capsys.readouterr()
        assert "state=running" in captured.out and "still running after 0s" in captured.err
    finally:
        cancel_loop(slow.loop_dir)


def test_wait_on_an_unreachable_scheduler_is_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loop_dir = tmp_path / "loops" / "sgeloop"
    job = JobRecord(
        key="i001-01-a", step="a", kind="shell", iteration=1, index=1, name="ub.sgeloop.a", after=[]
    )
    job.status, job.scheduler_id = "submitted", "4242"
    save_state(
        loop_dir,
        LoopState(
            "sgeloop", str(tmp_path / "l.yaml"), "sge", "demo", str(tmp_path), "2026-01-01T00:00:00Z", [job]
        ),
    )
    empty = tmp_path / "no-scheduler-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert _wait(loop_dir, 5) == 4
    assert capsys.readouterr().out.startswith("ERROR: loop sgeloop: state unknown")
