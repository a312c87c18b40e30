"""Scheduler calls that a shared cluster can bear (fakes for speed; the real schedulers are counted in
tests/integration/test_jobs_scheduler_calls.py): a status poll asks for this user's jobs only, in one
call for all ids; accounting is asked by job id, once per finished job."""

from __future__ import annotations

import subprocess

import pytest

from usrbatch.jobs import sge, slurm
from usrbatch.jobs.scheduler import COMPLETED, FAILED, RUNNING, make_scheduler

QSTAT = """<?xml version='1.0'?>
<job_info><queue_info><job_list state="running"><JB_job_number>11</JB_job_number><JB_name>a</JB_name>
<state>r</state></job_list></queue_info><job_info></job_info></job_info>"""
QACCT = {
    "10": "==============\njobnumber 10\nexit_status 0\nfailed 0\n",
    "12": "==============\njobnumber 12\nexit_status 3\nfailed 0\n",
}


class Calls:
    def __init__(self, answer) -> None:
        self.argv: list[list[str]] = []
        self.answer = answer

    def __call__(self, argv: list[str], **_kw) -> subprocess.CompletedProcess:
        self.argv.append(list(argv))
        out, rc = self.answer(argv)
        return subprocess.CompletedProcess(argv, rc, out, "")


def test_sge_poll_is_one_qstat_for_this_user_and_qacct_by_id_once(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("USER", "alice")
    calls = Calls(
        lambda a: (QSTAT, 0) if a[0] == "qstat" else (QACCT.get(a[-1], ""), 0 if a[-1] in QACCT else 1)
    )
    monkeypatch.setattr(sge, "run_command", calls)
    s = make_scheduler("sge", loop_dir=tmp_path)
    first = s.status(["10", "11", "12"])
    assert (first["10"].state, first["11"].state, first["12"].state) == (COMPLETED, RUNNING, FAILED)
    assert calls.argv == [["qstat", "-u", "alice", "-xml"], ["qacct", "-j", "10"], ["qacct", "-j", "12"]]
    calls.argv.clear()
    s.status(["10", "11", "12"])
    assert calls.argv == [["qstat", "-u", "alice", "-xml"]]  # finished jobs are remembered
    calls.argv.clear()
    s.status(["10", "12"])
    assert calls.argv == []  # nothing left to ask


def test_sge_lagging_qacct_is_asked_again_not_remembered(monkeypatch, tmp_path) -> None:
    calls = Calls(lambda a: ("", 0) if a[0] == "qstat" else ("", 1))
    monkeypatch.setattr(sge, "run_command", calls)
    s = make_scheduler("sge", loop_dir=tmp_path)
    assert s.status(["7"])["7"].state == "unknown"
    assert s.status(["7"])["7"].state == "unknown"
    assert [a[0] for a in calls.argv] == ["qstat", "qacct", "qstat", "qacct"]


def test_slurm_poll_is_one_squeue_me_and_sacct_by_ids(monkeypatch, tmp_path) -> None:
    def answer(argv):
        if argv[0] == "squeue":
            return "5|a|RUNNING|None\n6|b|COMPLETED|None\n", 0
        return "6|b|COMPLETED|0:0\n6.batch|batch|COMPLETED|0:0\n", 0

    calls = Calls(answer)
    monkeypatch.setattr(slurm, "run_command", calls)
    s = make_scheduler("slurm", loop_dir=tmp_path)
    out = s.status(["5", "6"])
    assert out["6"].exit_code == 0 and out["5"].state == RUNNING
    assert calls.argv[0] == ["squeue", "--me", "-h", "-t", "all", "-o", "%i|%j|%T|%r"]
    assert calls.argv[1][0] == "sacct" and calls.argv[1][-2:] == ["-j", "6"]
    calls.argv.clear()
    s.status(["5", "6"])
    assert calls.argv == [["squeue", "--me", "-h", "-t", "all", "-o", "%i|%j|%T|%r"]]


@pytest.mark.parametrize(("name", "code"), [("sge", 100), ("slurm", 1), ("local", 1)])
def test_fail_exit_comes_from_the_scheduler_module(name: str, code: int, tmp_path) -> None:
    from usrbatch.jobs.scheduler import fail_exit

    assert fail_exit(name) == code == make_scheduler(name, loop_dir=tmp_path).fail_exit
