"""`resubmit:` in the loop spec, the kill causes read from the schedulers' records, and the resume
args in the re-rendered script (the real kill and resubmit: tests/integration/test_jobs_resubmit.py)."""

from __future__ import annotations

import pytest

from usrbatch.errors import JobError
from usrbatch.jobs.loop import Resubmit, load_spec, plan_jobs
from usrbatch.jobs.sge import parse_qacct
from usrbatch.jobs.slurm import parse_sacct, parse_squeue
from usrbatch.jobs.submit import render_job

STEP = {"kind": "densegen", "command": "dense run -c c.yaml"}


def test_bare_on_key_in_yaml_is_the_on_key(tmp_path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(
        "dataset: demo\nroot: r\nsteps:\n  - kind: shell\n    command: x\n"
        "    resubmit: {on: [node_failure], max: 2}\n"
    )
    assert load_spec(path).steps[0].resubmit == Resubmit(on=("node_failure",), max=2, args="")


def test_policy_parsed_and_resume_args_only_on_a_resubmit(write_spec) -> None:
    policy = {"on": ["walltime", "node_failure"], "max": 3, "args": "--resume"}
    spec = load_spec(write_spec(scheduler="sge", steps=[{**STEP, "resubmit": policy}]))
    assert spec.steps[0].resubmit == Resubmit(on=("walltime", "node_failure"), max=3, args="--resume")
    job = plan_jobs(spec, 1)[0]
    assert "\ndense run -c c.yaml\n" in render_job(spec, job)
    job.attempt = 2
    text = render_job(spec, job)
    assert "dense run -c c.yaml --resume\n" in text and "export USRBATCH_ATTEMPT=2" in text


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("yes", "steps[0].resubmit: expected a mapping"),
        ({"on": ["oom"]}, "steps[0].resubmit.on: expected a list of walltime, node_failure"),
        ({"max": 0}, "steps[0].resubmit.max: expected an integer >= 1"),
        ({"args": "a\nb"}, "steps[0].resubmit.args: expected one line"),
        ({"tries": 2}, "steps[0].resubmit.tries: unknown key"),
    ],
)
def test_bad_policies_are_refused_by_key(write_spec, policy, message: str) -> None:
    with pytest.raises(JobError) as info:
        load_spec(write_spec(steps=[{**STEP, "resubmit": policy}]))
    assert message in info.value.message


def test_kill_causes_from_the_scheduler_records() -> None:
    hrt = "==============\njobnumber 4\nexit_status 137\nfailed 37  : qmaster enforced h_rt, h_cpu, or h_vmem limit\n"
    assert parse_qacct(hrt)["4"].killed_by == "walltime"
    assert parse_qacct(hrt.replace("37  : qmaster", "1  : assumedly"))["4"].killed_by == ""
    assert parse_sacct("5|n|TIMEOUT|0:0\n")["5"].killed_by == "walltime"
    assert parse_sacct("5|n|NODE_FAIL|0:0\n")["5"].killed_by == "node_failure"
    assert parse_squeue("5|n|TIMEOUT|TimeLimit\n")["5"].killed_by == "walltime"
    assert parse_squeue("5|n|FAILED|NonZeroExitCode\n")["5"].killed_by == ""
