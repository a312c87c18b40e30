"""Every branch of the job verdict in usrbatch/jobs/status.py (`job_views`, `_overall`): what the
scheduler says, joined with what the job recorded (`<loop dir>/jobs/<key>.outcome.json`) and the
loop's audit log. The scheduler here is a stub that answers `status(ids)` from a table (a fast
unit test; tests/jobs/test_status.py and the SGE/Slurm integration tests run real schedulers)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from usrbatch.jobs.loop import JobRecord, LoopState
from usrbatch.jobs.record import outcome_path
from usrbatch.jobs.scheduler import (
    CANCELLED,
    COMPLETED,
    ERROR_HELD,
    FAILED,
    PENDING,
    RUNNING,
    UNKNOWN,
    JobInfo,
)
from usrbatch.jobs.status import NOT_SUBMITTED, _overall, job_views


class TableScheduler:
    """Answers `status(ids)` from a fixed table; records every call."""

    def __init__(self, table: dict[str, JobInfo]) -> None:
        self.table = table
        self.calls: list[list[str]] = []

    def status(self, ids):
        self.calls.append(list(ids))
        return {i: self.table[i] for i in ids if i in self.table}


def _job(key: str, job_id: str | None) -> JobRecord:
    job = JobRecord(key=key, step=key, kind="shell", iteration=1, index=1, name=f"ub.l.{key}", after=[])
    if job_id:
        job.status, job.scheduler_id = "submitted", job_id
    return job


def _state(*jobs: JobRecord) -> LoopState:
    return LoopState(
        loop_id="l",
        config="loop.yaml",
        scheduler="sge",
        dataset="demo",
        root="/r",
        created_at="t",
        jobs=list(jobs),
    )


def _outcome(loop_dir: Path, key: str, exit_code: int | None, outcome: str) -> None:
    path = outcome_path(loop_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "exit_code": exit_code, "outcome": outcome, "duration_s": 1.5}))


def _view(tmp_path: Path, job: JobRecord, info: JobInfo | None, audit: list[dict] | None = None):
    if audit:
        (tmp_path / "audit.jsonl").write_text("".join(json.dumps(a) + "\n" for a in audit))
    table = {info.job_id: info} if info else {}
    sched = TableScheduler(table)
    (view,) = job_views(_state(job), tmp_path, sched)
    return view, sched


def test_never_submitted(tmp_path: Path) -> None:
    view, sched = _view(tmp_path, _job("a", None), None)
    assert (view.state, view.exit_code, view.job_id) == (NOT_SUBMITTED, None, None)
    assert sched.calls == []  # nothing to ask the scheduler about


def test_cancelled_before_it_ran_has_no_exit_code_whatever_sacct_says(tmp_path: Path) -> None:
    view, _ = _view(tmp_path, _job("a", "7"), JobInfo("7", CANCELLED, "CANCELLED", exit_code=0))
    assert (view.state, view.exit_code, view.sched_state) == (CANCELLED, None, CANCELLED)


def test_refused_after_a_failed_predecessor_is_cancelled_with_the_reason(tmp_path: Path) -> None:
    _outcome(tmp_path, "a", None, "refused")
    view, _ = _view(tmp_path, _job("a", "7"), JobInfo("7", COMPLETED, "COMPLETED", exit_code=0))
    assert view.state == CANCELLED
    assert view.reason == "predecessor did not succeed; refused to run"


def test_killed_while_running_the_schedulers_word_wins(tmp_path: Path) -> None:
    _outcome(tmp_path, "a", 143, "failed")
    view, _ = _view(tmp_path, _job("a", "7"), JobInfo("7", CANCELLED, "CANCELLED", reason="by user"))
    assert (view.state, view.exit_code, view.reason) == (CANCELLED, 143, "by user")


@pytest.mark.parametrize(
    ("exit_code", "info_reason", "state", "reason"),
    [
        (0, "", COMPLETED, ""),
        (3, "", FAILED, "exit 3"),  # no word from the scheduler: the exit code says why
        (3, "Eqw: job error", FAILED, "Eqw: job error"),  # the scheduler's word kept
    ],
)
def test_the_recorded_outcome_decides_completed_or_failed(
    tmp_path: Path, exit_code: int, info_reason: str, state: str, reason: str
) -> None:
    _outcome(tmp_path, "a", exit_code, "succeeded" if exit_code == 0 else "failed")
    info = JobInfo("7", COMPLETED if exit_code == 0 else FAILED, "", exit_code=None, reason=info_reason)
    view, _ = _view(tmp_path, _job("a", "7"), info)
    assert (view.state, view.exit_code, view.reason, view.duration_s) == (state, exit_code, reason, 1.5)


@pytest.mark.parametrize("sched_state", [PENDING, RUNNING, ERROR_HELD, FAILED])
def test_without_an_outcome_the_scheduler_state_stands(tmp_path: Path, sched_state: str) -> None:
    view, _ = _view(tmp_path, _job("a", "7"), JobInfo("7", sched_state, "x", exit_code=9))
    assert (view.state, view.exit_code) == (sched_state, 9)


def test_unknown_to_the_scheduler_is_unknown_unless_usrbatch_cancelled_it(tmp_path: Path) -> None:
    view, _ = _view(tmp_path, _job("a", "7"), None)
    assert view.state == UNKNOWN
    view, _ = _view(tmp_path, _job("a", "7"), None, audit=[{"event": "loop.cancelled", "job_ids": ["7"]}])
    assert (view.state, view.reason) == (CANCELLED, "cancelled by usrbatch cancel")


def test_one_scheduler_call_for_all_jobs(tmp_path: Path) -> None:
    sched = TableScheduler({"1": JobInfo("1", RUNNING), "2": JobInfo("2", PENDING)})
    views = job_views(_state(_job("a", "1"), _job("b", "2"), _job("c", None)), tmp_path, sched)
    assert sched.calls == [["1", "2"]]
    assert [v.state for v in views] == [RUNNING, PENDING, NOT_SUBMITTED]


@pytest.mark.parametrize(
    ("states", "overall"),
    [
        ([], NOT_SUBMITTED),
        ([NOT_SUBMITTED, NOT_SUBMITTED], NOT_SUBMITTED),
        ([COMPLETED, FAILED, RUNNING], FAILED),
        ([COMPLETED, ERROR_HELD], FAILED),
        ([COMPLETED, COMPLETED], COMPLETED),
        ([COMPLETED, CANCELLED], CANCELLED),
        ([COMPLETED, UNKNOWN], CANCELLED),
        ([COMPLETED, RUNNING], "running"),
        ([COMPLETED, NOT_SUBMITTED], "running"),
        ([PENDING], "running"),
    ],
)
def test_loop_verdict_from_its_jobs(tmp_path: Path, states: list[str], overall: str) -> None:
    jobs = [_job(f"j{i}", str(i)) for i in range(len(states))]
    views = job_views(_state(*jobs), tmp_path, TableScheduler({}))
    views = [dataclasses.replace(v, state=s) for v, s in zip(views, states, strict=True)]
    assert _overall(views) == overall
