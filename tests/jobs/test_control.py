"""When a loop counts as settled (what `usrbatch wait`, the demo and the tests wait for)."""

from __future__ import annotations

from usrbatch.jobs.control import is_settled
from usrbatch.jobs.status import JobView, LoopStatus


def _view(state: str, sched_state: str) -> JobView:
    return JobView(
        key="i001-01-a",
        step="a",
        kind="shell",
        iteration=1,
        job_id="1",
        state=state,
        sched_state=sched_state,
        native_state=sched_state,
        exit_code=0 if state == "completed" else None,
        duration_s=None,
        bytes=None,
        started_at=None,
        finished_at=None,
        reason="",
    )


def _loop(state: str, *views: JobView) -> LoopStatus:
    return LoopStatus("l", "/tmp/l", "local", "ns/demo", state, list(views))


def test_completed_waits_until_the_scheduler_agrees() -> None:
    # The job's last audit line is written just before its process exits.
    assert not is_settled(_loop("completed", _view("completed", "running")))
    assert is_settled(_loop("completed", _view("completed", "completed")))
    assert is_settled(_loop("completed", _view("completed", "unknown")))  # e.g. SGE before qacct has it


def test_failed_settles_only_when_nothing_moves() -> None:
    assert not is_settled(_loop("failed", _view("failed", "failed"), _view("pending", "pending")))
    assert is_settled(_loop("failed", _view("failed", "failed"), _view("cancelled", "cancelled")))
    assert not is_settled(_loop("running", _view("running", "running")))
