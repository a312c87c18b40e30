"""GPU resources, set-up lines, env, extra directives and mail in the loop spec: rendered into the
SGE and Slurm scripts (loop-wide defaults, per-step overrides), and bad values refused by key."""

from __future__ import annotations

import subprocess

import pytest

from usrbatch.errors import JobError
from usrbatch.jobs.loop import load_spec, plan_jobs
from usrbatch.jobs.submit import render_job

STEP = {"kind": "shell", "name": "gpu", "command": "nvidia-smi"}
LOOP_WIDE = {
    "setup": ["module load cuda/12.5", "source /proj/venv/bin/activate"],
    "env": {"MODEL": "evo2_7b", "OMP_PLACES": "cores"},
    "mail": "me@bu.edu",
}


def _render(write_spec, scheduler: str, step: dict, **top) -> str:
    spec = load_spec(write_spec(scheduler=scheduler, steps=[step], **top))
    return render_job(spec, plan_jobs(spec, 1)[0])


def test_sge_gpu_job_like_the_labs_evo2_job(write_spec, tmp_path) -> None:
    step = {
        **STEP,
        "resources": {"cpus": 4, "mem_per_core": "8G", "gpus": 1, "gpu_capability": "8.9"},
        "directives": {"sge": ["-l h_vmem=4G"], "slurm": ["--qos=gpu"]},
        "env": {"MODEL": "evo2_40b"},
    }
    text = _render(write_spec, "sge", step, **LOOP_WIDE)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash -l"
    for want in (
        "#$ -S /bin/bash",
        "#$ -pe omp 4",
        "#$ -l mem_per_core=8G",
        "#$ -l gpus=1",
        "#$ -l gpu_c=8.9",
    ):
        assert want in lines, want
    assert [ln for ln in lines if ln.startswith(("#$ -m", "#$ -M"))] == ["#$ -m ea", "#$ -M me@bu.edu"]
    assert "#$ -l h_vmem=4G" in lines and "--qos=gpu" not in text  # only this scheduler's directives
    assert "export MODEL=evo2_40b" in lines and "export OMP_PLACES=cores" in lines  # env merges by name
    # set-up runs after cd, before the step, with set -u off meanwhile
    start = lines.index("set +u")
    assert lines[start + 1 : start + 4] == [
        "module load cuda/12.5",
        "source /proj/venv/bin/activate",
        "set -u",
    ]
    assert lines.index("nvidia-smi") > start
    path = tmp_path / "job.sh"
    path.write_text(text)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_slurm_gpu_job_and_step_overrides(write_spec) -> None:
    step = {
        **STEP,
        "resources": {"gpus": 2, "gpu_type": "a100"},
        "setup": ["module load cuda"],
        "mail": "x@y.org",
    }
    lines = _render(write_spec, "slurm", step, **LOOP_WIDE, directives={"slurm": ["--qos=gpu"]}).splitlines()
    assert lines[0] == "#!/bin/bash -l"
    assert "#SBATCH --gres=gpu:a100:2" in lines
    assert "#SBATCH --mail-type=END,FAIL" in lines and "#SBATCH --mail-user=x@y.org" in lines
    assert "#SBATCH --qos=gpu" in lines  # loop-wide directives apply to every step
    assert "module load cuda" in lines and "source /proj/venv/bin/activate" not in lines  # setup replaces


def test_local_scripts_stay_plain_and_cpu_steps_ask_no_gpu(write_spec) -> None:
    text = _render(write_spec, "local", STEP)
    assert text.splitlines()[0] == "#!/bin/bash" and "set +u" not in text
    sge = _render(write_spec, "sge", STEP)
    assert "gpus" not in sge and "-m ea" not in sge


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ({"resources": {"gpus": -1}}, "resources.gpus: expected an integer >= 0"),
        (
            {"resources": {"gpu_capability": "8.9"}},
            "resources.gpus: required (>= 1) when gpu_type or gpu_capability",
        ),
        (
            {"resources": {"gpus": 1, "gpu_capability": "ampere"}},
            "resources.gpu_capability: invalid value 'ampere'",
        ),
        ({"env": {"1X": "a"}}, "env.1X: invalid variable name"),
        (
            {"env": {"USRBATCH_STEP": "a"}},
            "env.USRBATCH_STEP: USRBATCH_* and USR_ACTOR_* are set by usrbatch",
        ),
        ({"env": {"HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz123456"}}, "env.HF_TOKEN: looks like a secret"),
        ({"setup": [1]}, "setup: expected a list of shell lines"),
        ({"directives": {"pbs": ["-q x"]}}, "directives.pbs: unknown scheduler"),
        ({"directives": {"sge": ["-l a\n-l b"]}}, "directives.sge: expected a list of one-line directives"),
        ({"mail": "not-an-address"}, "mail: invalid value 'not-an-address'"),
        (
            {"scheduler": "slurm", "resources": {"gpus": 1, "gpu_capability": "8.9"}},
            "steps[0].resources.gpu_capability: Slurm has no compute-capability request",
        ),
    ],
)
def test_bad_values_are_refused_by_key(write_spec, top: dict, message: str) -> None:
    with pytest.raises(JobError) as info:
        load_spec(write_spec(steps=[STEP], **top))
    assert message in info.value.message
    assert "hf_abcdef" not in info.value.message


def test_step_level_keys_are_named_with_the_step(write_spec) -> None:
    with pytest.raises(JobError, match=r"steps\[0\]\.env\.bad-name: invalid variable name"):
        load_spec(write_spec(steps=[{**STEP, "env": {"bad-name": "x"}}]))
