"""Shards and `after:` in the loop spec: the dependency graph, array submit flags, array states
merged per job, and the refusals (fast unit tests; the real schedulers: tests/integration/test_jobs_shards.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from usrbatch.errors import JobError
from usrbatch.jobs.loop import load_spec, plan_jobs
from usrbatch.jobs.scheduler import COMPLETED, ERROR_HELD, FAILED, RUNNING, SubmitRequest
from usrbatch.jobs.sge import SgeScheduler, parse_qacct, parse_qstat_xml
from usrbatch.jobs.slurm import SlurmScheduler, parse_sacct, parse_squeue
from usrbatch.jobs.submit import render_job


def sh(name: str, **extra) -> dict:
    return {"kind": "shell", "name": name, "command": "true", **extra}


def test_after_names_make_a_graph_and_iterations_wait_for_the_last_steps(write_spec) -> None:
    steps = [
        sh("gen", shards=3),
        sh("a", after=["gen"]),
        sh("b", after=["gen"]),
        sh("join", after=["a", "b"]),
    ]
    spec = load_spec(write_spec(iterations=2, steps=steps))
    jobs = {j.key: j for j in plan_jobs(spec, 2)}
    assert jobs["i001-02-a"].after == ["i001-01-gen"] and jobs["i001-03-b"].after == ["i001-01-gen"]
    assert jobs["i001-04-join"].after == ["i001-02-a", "i001-03-b"]
    assert jobs["i002-01-gen"].after == ["i001-04-join"] and jobs["i001-01-gen"].shards == 3
    parallel = load_spec(
        write_spec(iterations=2, steps=[sh("x"), sh("y", after=["x"]), sh("z", after=["x"])])
    )
    assert plan_jobs(parallel, 2)[3].after == ["i001-02-y", "i001-03-z"]  # both tails of iteration 1


def test_a_dependent_checks_every_shard_of_its_predecessor(write_spec) -> None:
    spec = load_spec(write_spec(scheduler="sge", steps=[sh("gen", shards=3), sh("next")]))
    gen, nxt = plan_jobs(spec, 1)
    text = render_job(spec, nxt)
    assert "_ub_record start i001-01-gen.s1 i001-01-gen.s2 i001-01-gen.s3" in text
    gen_text = render_job(spec, gen)
    assert 'export USRBATCH_JOB_KEY="$USRBATCH_JOB_KEY.s$USRBATCH_SHARD"' in gen_text
    assert "#$ -o " + str(spec.loop_dir / "logs" / "i001-01-gen.s$TASK_ID.log") in gen_text


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"kind": "sync", "action": "push", "shards": 2}], "steps[0].shards: a sync step runs once"),
        ([sh("a", shards=0)], "steps[0].shards: expected an integer >= 1"),
        ([sh("a", after=["b"]), sh("b")], "steps[0].after: 'b' is not an earlier step"),
        ([sh("a", after=[1])], "steps[0].after: expected a list of earlier step names"),
    ],
)
def test_bad_shards_and_after_are_refused(write_spec, steps: list[dict], message: str) -> None:
    with pytest.raises(JobError) as info:
        load_spec(write_spec(remote="r", steps=steps))
    assert message in info.value.message


def test_array_submit_flags(tmp_path: Path) -> None:
    req = SubmitRequest(script=tmp_path / "s.sh", name="n", log=tmp_path / "l.log", after=("5",), array=3)
    assert "-t" in (argv := SgeScheduler().submit_command(req)) and argv[argv.index("-t") + 1] == "1-3"
    assert "--array=1-3" in SlurmScheduler().submit_command(req)
    single = SubmitRequest(script=tmp_path / "s.sh", name="n", log=tmp_path / "l.log")
    assert "-t" not in SgeScheduler().submit_command(single)


def test_array_task_states_are_merged_per_job() -> None:
    qstat = (
        "<job_info><queue_info>"
        "<job_list><JB_job_number>9</JB_job_number><state>Eqw</state><tasks>2</tasks></job_list>"
        "<job_list><JB_job_number>9</JB_job_number><state>r</state><tasks>3</tasks></job_list>"
        "</queue_info></job_info>"
    )
    assert parse_qstat_xml(qstat)["9"].state == RUNNING  # still moving: not settled yet
    only_eqw = qstat.replace("<state>r</state>", "<state>Eqw</state>")
    assert parse_qstat_xml(only_eqw)["9"].state == ERROR_HELD
    qacct = "".join(
        f"==============\njobnumber 9\ntaskid {t}\nexit_status {c}\nfailed 0\n"
        for t, c in ((1, 0), (2, 100), (3, 0))
    )
    info = parse_qacct(qacct)["9"]
    assert (info.state, info.exit_code) == (FAILED, 100)
    assert parse_qacct(qacct.replace("exit_status 100", "exit_status 0"))["9"].state == COMPLETED
    assert parse_squeue("7_1|n|COMPLETED|None\n7_[2-3]|n|PENDING|Dependency\n")["7"].state == "pending"
    acct = parse_sacct(
        "7_1|n|COMPLETED|0:0\n7_2|n|FAILED|1:0\n7_2.batch|batch|FAILED|1:0\n7_3|n|COMPLETED|0:0\n"
    )
    assert (acct["7"].state, acct["7"].exit_code) == (FAILED, 1)
