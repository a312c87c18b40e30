"""Parsing Slurm client output: squeue states/reasons and sacct -c exit codes; the sbatch argv."""

from __future__ import annotations

from usrbatch.jobs.scheduler import CANCELLED, FAILED, HELD, PENDING, SubmitRequest
from usrbatch.jobs.slurm import SlurmScheduler, parse_sacct, parse_squeue


def test_squeue_and_sacct() -> None:
    q = parse_squeue(
        "10|a|FAILED|NonZeroExitCode\n11|b|CANCELLED|DependencyNeverSatisfied\n12|c|PENDING|Dependency\n13|d|PENDING|JobHeldUser\n"
    )
    assert {k: v.state for k, v in q.items()} == {"10": FAILED, "11": CANCELLED, "12": PENDING, "13": HELD}
    assert q["11"].reason == "DependencyNeverSatisfied"
    a = parse_sacct("10|a|FAILED|3:0\n10.batch|batch|FAILED|3:0\n11|b|CANCELLED|0:0\n")
    assert set(a) == {"10", "11"} and a["10"].exit_code == 3


def test_sbatch_argv_chains_with_afterok(tmp_path) -> None:
    req = SubmitRequest(tmp_path / "s.sh", "ub.l.b", tmp_path / "b.log", after=("10", "11"), env={"A": "1"})
    argv = SlurmScheduler().submit_command(req)
    assert "--dependency=afterok:10:11" in argv and "--kill-on-invalid-dep=yes" in argv
    assert "--export=ALL,A=1" in argv and argv[:2] == ["sbatch", "--parsable"]
