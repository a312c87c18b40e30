"""Parsing SGE client output: qstat -xml states (Eqw, hqw, r) and qacct records (last one wins)."""

from __future__ import annotations

from usrbatch.jobs.scheduler import COMPLETED, ERROR_HELD, FAILED, HELD, PENDING, RUNNING, SubmitRequest
from usrbatch.jobs.sge import (
    SgeScheduler,
    parse_qacct,
    parse_qstat_names,
    parse_qstat_xml,
    parse_script_files,
)

QSTAT = """<?xml version='1.0'?>
<job_info>
  <queue_info>
    <job_list state="running"><JB_job_number>7</JB_job_number><JB_name>ub.l.a</JB_name><state>r</state></job_list>
  </queue_info>
  <job_info>
    <job_list state="pending"><JB_job_number>8</JB_job_number><JB_name>ub.l.b</JB_name><state>hqw</state></job_list>
    <job_list state="pending"><JB_job_number>9</JB_job_number><JB_name>ub.l.c</JB_name><state>Eqw</state></job_list>
    <job_list state="pending"><JB_job_number>10</JB_job_number><JB_name>ub.l.c</JB_name><state>qw</state></job_list>
  </job_info>
</job_info>
"""

QACCT = """==============================================================
jobname      ub.l.a
jobnumber    7
failed       0
exit_status  100
==============================================================
jobname      ub.l.a
jobnumber    7
failed       0
exit_status  0
==============================================================
jobname      ub.l.b
jobnumber    8
failed       0
exit_status  3
"""


def test_qstat_states_and_names() -> None:
    states = {k: v.state for k, v in parse_qstat_xml(QSTAT).items()}
    assert states == {"7": RUNNING, "8": HELD, "9": ERROR_HELD, "10": PENDING}
    assert parse_qstat_names(QSTAT)["ub.l.c"] == ["9", "10"]


def test_qacct_last_record_wins() -> None:
    info = parse_qacct(QACCT)
    assert (info["7"].state, info["7"].exit_code) == (COMPLETED, 0)  # requeued, then succeeded
    assert (info["8"].state, info["8"].exit_code) == (FAILED, 3)


def test_submit_command_holds_on_predecessors(tmp_path) -> None:
    req = SubmitRequest(tmp_path / "s.sh", "ub.l.b", tmp_path / "b.log", after=("7", "8"), workdir=tmp_path)
    argv = SgeScheduler().submit_command(req)
    assert argv[:4] == ["qsub", "-terse", "-S", "/bin/bash"]
    assert argv[argv.index("-hold_jid") + 1] == "7,8" and argv[-1] == str(tmp_path / "s.sh")


def test_parse_script_files_from_qstat_j_xml() -> None:
    text = """<?xml version='1.0'?>
<detailed_job_info>
  <djob_info>
    <element><JB_job_number>152</JB_job_number><JB_script_file>/a/scripts/x.sh</JB_script_file></element>
    <element><JB_job_number>153</JB_job_number><JB_script_file>/b/scripts/x.sh</JB_script_file></element>
  </djob_info>
</detailed_job_info>"""
    assert parse_script_files(text) == {"152": "/a/scripts/x.sh", "153": "/b/scripts/x.sh"}
    assert parse_script_files("") == {}
