"""Scheduler calls counted on the REAL SGE and Slurm while a loop runs: every status poll is at most
one listing call for this user's jobs (`qstat -u $USER`, `squeue --me`), never every user's; the
accounting (`qacct -j ID`, `sacct -j IDS`) is asked by job id, and each job's record only once."""

from __future__ import annotations

import getpass
import os
import time
from pathlib import Path

import pytest
import yaml

from usrbatch.jobs import scheduler as scheduler_mod
from usrbatch.jobs import sge, slurm
from usrbatch.jobs.loop import load_spec, load_state
from usrbatch.jobs.status import loop_status, scheduler_for
from usrbatch.jobs.submit import submit_loop


@pytest.fixture(params=["sge", "slurm"])
def scheduler(request: pytest.FixtureRequest) -> str:
    request.getfixturevalue(request.param)  # skip (or fail under CI=true) when unavailable
    return request.param


def test_each_poll_is_one_call_for_all_jobs(scheduler: str, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "root").mkdir()
    steps = [
        {"kind": "shell", "name": "a", "command": "sleep 1"},
        {"kind": "shell", "name": "b", "command": "true"},
    ]
    data = {"name": f"calls-{scheduler}", "dataset": "ns/demo", "root": "root", "scheduler": scheduler}
    data |= {"iterations": 2, "resources": {"time": "00:05:00"}, "steps": steps}
    if scheduler == "sge":
        data["project"] = "usrbatch"
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_spec(path)
    submit_loop(spec, emit=lambda _m: None)

    calls: list[list[str]] = []
    answered: list[str] = []  # ids whose qacct record was found (qacct may lag a moment)

    def counting(argv, **kw):
        calls.append(list(argv))
        proc = scheduler_mod.run_command(argv, **kw)
        if argv[0] == "qacct":
            assert argv[2] not in answered, f"qacct asked again for finished job {argv[2]}"
            if argv[2] in sge.parse_qacct(proc.stdout):
                answered.append(argv[2])
        return proc

    module = sge if scheduler == "sge" else slurm
    monkeypatch.setattr(module, "run_command", counting)
    state = load_state(spec.loop_dir)
    ids = {j.scheduler_id for j in state.jobs}
    sched = scheduler_for(state, spec.loop_dir)
    listing = "qstat" if scheduler == "sge" else "squeue"
    user = os.environ.get("USER") or getpass.getuser()
    polls = 0
    deadline = time.monotonic() + 120
    while True:
        before = len(calls)
        status = loop_status(spec.loop_dir, sched)
        polls += 1
        this_poll = calls[before:]
        assert sum(1 for a in this_poll if a[0] == listing) <= 1, this_poll
        if status.state == "completed" and all(v.sched_state == "completed" for v in status.jobs):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.3)
    assert polls > 1
    for argv in calls:
        if argv[0] == "qstat":
            assert argv == ["qstat", "-u", user, "-xml"]
        elif argv[0] == "squeue":
            assert "--me" in argv and "-j" not in argv
        elif argv[0] == "qacct":
            assert argv[:2] == ["qacct", "-j"] and argv[2] in ids, argv  # one job id, never a pattern
        else:
            assert argv[0] == "sacct" and set(argv[argv.index("-j") + 1].split(",")) <= ids, argv
    if scheduler == "sge":
        assert sorted(answered) == sorted(ids)  # each finished job's record was read exactly once
    # Once everything ended and is known, a poll asks the scheduler nothing more.
    before = len(calls)
    loop_status(spec.loop_dir, sched)
    assert calls[before:] == []
