"""`usrbatch status` exit codes on the local scheduler: 0 completed, 1 failed, 3 running, 4 unknown."""

from __future__ import annotations

from pathlib import Path

import pytest

from usrbatch.cli.common import run_cli
from usrbatch.cli.usrbatch_main import usrbatch
from usrbatch.jobs.control import cancel_loop, wait_loop
from usrbatch.jobs.loop import JobRecord, LoopState, load_spec, save_state
from usrbatch.jobs.status import loop_status
from usrbatch.jobs.submit import submit_loop


def _status(capsys: pytest.CaptureFixture[str], loop_dir: Path) -> tuple[int, str]:
    code = run_cli(usrbatch, ["status", str(loop_dir)])
    return code, capsys.readouterr().out


def test_completed_is_0_and_failed_is_1(write_spec, capsys: pytest.CaptureFixture[str]) -> None:
    ok = load_spec(write_spec("ok", steps=[{"kind": "shell", "name": "a", "command": "true"}]))
    submit_loop(ok, emit=lambda _m: None)
    assert wait_loop(ok.loop_dir, timeout=60, poll=0.2).state == "completed"
    code, out = _status(capsys, ok.loop_dir)
    assert code == 0 and "state=completed" in out
    steps = [
        {"kind": "shell", "name": "a", "command": "exit 3"},
        {"kind": "shell", "name": "b", "command": "true"},
    ]
    bad = load_spec(write_spec("bad", steps=steps))
    submit_loop(bad, emit=lambda _m: None)
    assert wait_loop(bad.loop_dir, timeout=60, poll=0.2).state == "failed"
    code, out = _status(capsys, bad.loop_dir)
    assert code == 1 and "state=failed" in out
    assert run_cli(usrbatch, ["status", str(bad.loop_dir), "--json"]) == 1  # same code with --json


def test_running_is_3(write_spec, capsys: pytest.CaptureFixture[str]) -> None:
    spec = load_spec(write_spec(steps=[{"kind": "shell", "name": "s", "command": "sleep 60"}]))
    submit_loop(spec, emit=lambda _m: None)
    try:
        code, out = _status(capsys, spec.loop_dir)
        assert code == 3 and "state=running" in out
    finally:
        cancel_loop(spec.loop_dir)


def test_unreachable_scheduler_is_4(
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
            loop_id="sgeloop",
            config=str(tmp_path / "loop.yaml"),
            scheduler="sge",
            dataset="demo",
            root=str(tmp_path),
            created_at="2026-01-01T00:00:00Z",
            jobs=[job],
        ),
    )
    empty = tmp_path / "no-scheduler-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # qstat/qacct cannot be run: the scheduler is unreachable
    code, out = _status(capsys, loop_dir)
    assert code == 4
    assert out.startswith("ERROR: loop sgeloop: state unknown, the sge scheduler did not answer: ")
    with pytest.raises(Exception, match="state unknown"):
        loop_status(loop_dir)
