"""Alert derivation from a joined status (fast, no scheduler): pending too long, stalled, Eqw
before an outcome, killed suspects, dependents not blamed, and the audit line's view combined."""

from __future__ import annotations

from usrbatch.jobs.status import JobView, LoopStatus
from usrbatch.monitor.alerts import combine
from usrbatch.monitor.audit_alerts import alerts_from_audit
from usrbatch.monitor.status_alerts import StatusFacts, Thresholds, alerts_from_status

NOW = 1_800_000_000.0


def _view(key: str, job_id: str, state: str, sched: str, native: str = "", **kw: object) -> JobView:
    base = dict(
        key=key,
        step=key.split("-", 2)[2],
        kind="shell",
        iteration=1,
        job_id=job_id,
        state=state,
        sched_state=sched,
        native_state=native,
        exit_code=None,
        duration_s=None,
        bytes=None,
        started_at=None,
        finished_at=None,
        reason="",
    )
    base.update(kw)
    return JobView(**base)  # type: ignore[arg-type]


def _status(jobs: list[JobView], state: str = "running") -> LoopStatus:
    return LoopStatus("demo", "/tmp/demo", "sge", "ns/demo", state, jobs)


def _facts(
    after: dict[str, tuple[str, ...]],
    submitted: str = "2027-01-15T06:00:00Z",
    progress: float | None = None,
    cancelled: frozenset[str] = frozenset(),
) -> StatusFacts:
    return StatusFacts(
        after=after,
        submitted_at=dict.fromkeys(after, submitted),
        cancelled_ids=cancelled,
        last_progress=progress,
    )


def test_pending_long_only_when_ready_to_run() -> None:
    jobs = [
        _view("i001-01-a", "1", "pending", "pending", "qw"),
        _view("i001-02-b", "2", "held", "held", "hqw"),
    ]
    facts = _facts({"i001-01-a": (), "i001-02-b": ("i001-01-a",)}, submitted="2027-01-15T07:00:00Z")
    alerts, suspects = alerts_from_status(_status(jobs), facts, NOW, Thresholds(pending_after_s=600))
    assert [a.event for a in alerts] == ["job.pending_long"] and suspects == []
    assert (
        alerts[0].id == "demo/1/pending-long" and alerts[0].fields["pending_since"] == "2027-01-15T07:00:00Z"
    )
    quiet, _ = alerts_from_status(_status(jobs), facts, NOW, Thresholds(pending_after_s=10**9))
    assert quiet == []


def test_stalled_loop_once_per_stall() -> None:
    jobs = [_view("i001-01-a", "1", "running", "running", "r", started_at="2027-01-15T07:00:00Z")]
    facts = _facts({"i001-01-a": ()}, progress=NOW - 7200)
    alerts, _ = alerts_from_status(_status(jobs), facts, NOW, Thresholds(stall_after_s=3600))
    assert [a.event for a in alerts] == ["loop.stalled"] and alerts[0].id == f"demo/stalled/{int(NOW - 7200)}"
    later, _ = alerts_from_status(_status(jobs), facts, NOW + 600, Thresholds(stall_after_s=3600))
    assert [a.id for a in later] == [alerts[0].id]  # same stall, same id: the ledger sends it once


def test_eqw_before_an_outcome_and_killed_suspects() -> None:
    jobs = [
        _view("i001-01-a", "1", "error-held", "error-held", "Eqw"),
        _view("i001-02-b", "2", "held", "held", "hqw"),
    ]
    alerts, suspects = alerts_from_status(
        _status(jobs), _facts({"i001-01-a": (), "i001-02-b": ("i001-01-a",)}), NOW, Thresholds()
    )
    assert [(a.event, a.id) for a in alerts] == [("job.error_held", "demo/1/failed")] and suspects == []
    gone = [
        _view("i001-01-a", "1", "completed", "completed", finished_at="2027-01-15T07:00:00Z"),
        _view(
            "i001-02-b", "2", "unknown", "unknown", "not in qstat/qacct", started_at="2027-01-15T07:01:00Z"
        ),
        _view("i001-03-c", "3", "cancelled", "cancelled", "CANCELLED"),
    ]
    after = {"i001-01-a": (), "i001-02-b": ("i001-01-a",), "i001-03-c": ("i001-02-b",)}
    alerts, suspects = alerts_from_status(_status(gone), _facts(after), NOW, Thresholds())
    # b vanished while running; c was only cancelled because b never succeeded: not blamed.
    assert alerts == [] and [s.id for s in suspects] == ["demo/2/killed"]
    _, none = alerts_from_status(_status(gone), _facts(after, cancelled=frozenset({"2"})), NOW, Thresholds())
    assert none == []  # `usrbatch cancel` did it


def test_audit_and_scheduler_views_of_one_failure_combine() -> None:
    line = {
        "event": "job.finished",
        "outcome": "failed",
        "exit_code": 3,
        "loop_id": "demo",
        "job_key": "i001-01-a",
        "job_id": "1",
        "step": "a",
        "host": "node7",
        "ts": "2027-01-15T07:00:00Z",
    }
    from_audit = alerts_from_audit(line, {})[0]
    view = _view(
        "i001-01-a", "1", "failed", "error-held", "Eqw", exit_code=3, finished_at="2027-01-15T07:00:00Z"
    )
    from_status, _ = alerts_from_status(
        _status([view], "failed"), _facts({"i001-01-a": ()}), NOW, Thresholds()
    )
    both = combine(from_audit, from_status[0])
    assert both.id == from_audit.id == from_status[0].id == "demo/1/failed"
    assert "node7" in both.text and both.text.endswith("The scheduler says Eqw.") and "Eqw" in both.title
    assert both.fields["native_state"] == "Eqw" and both.fields["exit_code"] == 3
