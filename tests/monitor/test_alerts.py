"""Alerts into messages: many alerts of one loop make one summary per target."""

from __future__ import annotations

from usrbatch.monitor.alerts import Alert
from usrbatch.monitor.audit_alerts import alerts_from_audit
from usrbatch.monitor.config import Target
from usrbatch.monitor.watcher import messages_for


def test_thirty_failures_make_one_summary_per_target() -> None:
    failures = [
        alerts_from_audit(
            {
                "event": "job.finished",
                "outcome": "failed",
                "exit_code": 1,
                "loop_id": "big",
                "job_key": f"i{i:03d}-01-x",
                "job_id": str(100 + i),
                "step": "x",
                "ts": "t",
            },
            {},
        )[0]
        for i in range(30)
    ]
    done = Alert("big/completed/1", "loop.completed", "big", "t", "x", "ts")
    other = alerts_from_audit({"event": "job.refused", "loop_id": "small", "job_key": "k", "job_id": "9"}, {})
    target = Target(name="hook", type="webhook", events=(), loops=())
    messages = messages_for(target, [*failures, done, *other])
    assert sorted((m.loop_id, m.event, len(m.alerts)) for m in messages) == [
        ("big", "job.failed", 30),
        ("big", "loop.completed", 1),
        ("small", "job.refused", 1),
    ]
    summary = next(m for m in messages if len(m.alerts) == 30)
    assert summary.title == "big: 30 alerts (30 job.failed)" and summary.text.endswith("... and 10 more")
    only_small = Target(name="t", type="webhook", events=("job.refused",), loops=("sm*",))
    assert [m.loop_id for m in messages_for(only_small, [*failures, *other])] == ["small"]
