"""Every template renders for every step kind on every scheduler; StrictUndefined; quoting."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from usrbatch.errors import JobError
from usrbatch.jobs import templates
from usrbatch.jobs.loop import load_spec, plan_jobs
from usrbatch.jobs.submit import render_context, render_job

ALL_STEPS = [
    {"kind": "densegen"},
    {"kind": "sync", "action": "push"},
    {"kind": "infer"},
    {"kind": "shell", "command": "echo hi"},
]


def _spec(write_spec, scheduler: str, **extra):
    path = write_spec(scheduler=scheduler, remote="cluster", project="usrbatch", steps=ALL_STEPS, **extra)
    return load_spec(path)


@pytest.mark.parametrize("scheduler", ["local", "sge", "slurm"])
def test_every_kind_renders_and_parses_with_bash(write_spec, scheduler: str, tmp_path: Path) -> None:
    spec = _spec(write_spec, scheduler)
    for job in plan_jobs(spec, 1):
        script = render_job(spec, job)
        # a login shell on the clusters (site profiles define `module`); SGE also needs -S
        shebang = "#!/bin/bash\n" if scheduler == "local" else "#!/bin/bash -l\n"
        assert script.startswith(shebang + ("#$ -S /bin/bash\n" if scheduler == "sge" else ""))
        assert "set -euo pipefail" in script
        assert "export USR_ACTOR_TOOL=" in script and "export USR_ACTOR_RUN_ID=" in script
        assert "-m usrbatch.jobs.record" in script and "_ub_record start" in script
        assert "_ub_record finished --exit-code" in script
        path = tmp_path / f"{scheduler}-{job.kind}.sh"
        path.write_text(script)
        check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_scheduler_directives(write_spec) -> None:
    sge = _spec(write_spec, "sge", resources={"time": "02:00:00", "cpus": 2, "mem_per_core": "4G"})
    jobs = {j.kind: j for j in plan_jobs(sge, 1)}
    dense = render_job(sge, jobs["densegen"])
    for line in ("#$ -P usrbatch", "#$ -l h_rt=02:00:00", "#$ -pe omp 2", "#$ -l mem_per_core=4G", "#$ -j y"):
        assert line in dense
    assert "#$ -l download" in render_job(sge, jobs["sync"])
    assert "#$ -l download" not in dense
    assert "exit 100" in dense  # a failure puts the job in Eqw
    slurm = load_spec(
        write_spec(
            file_name="s",
            scheduler="slurm",
            remote="cluster",
            account="acct1",
            partition="main",
            resources={"mem": "2G", "cpus": 3},
        )
    )
    script = render_job(slurm, plan_jobs(slurm, 1)[0])
    for line in ("#SBATCH --time=01:00:00", "#SBATCH --cpus-per-task=3", "#SBATCH --mem=2G"):
        assert line in script
    assert "#SBATCH --partition=main" in script and "#SBATCH --account=acct1" in script
    assert "exit 100" not in script


def test_missing_variable_is_an_error_naming_it(write_spec) -> None:
    spec = _spec(write_spec, "sge")
    context = render_context(spec, plan_jobs(spec, 1)[0])
    del context["python"]
    with pytest.raises(JobError, match="missing variable: 'python' is undefined"):
        templates.render("sge", "densegen", context)
    context = render_context(spec, plan_jobs(spec, 1)[0])
    del context["args"]["seed"]
    with pytest.raises(JobError, match="seed"):
        templates.render("sge", "densegen", context)


def test_unknown_kind_and_scheduler_are_refused() -> None:
    with pytest.raises(JobError, match="unknown step kind 'infr'"):
        templates.template_name("sge", "infr")
    with pytest.raises(JobError, match="unknown scheduler 'pbs'"):
        templates.template_name("pbs", "shell")


def test_directive_refuses_whitespace(write_spec, tmp_path: Path) -> None:
    spec = load_spec(write_spec(scheduler="sge", root=str(tmp_path / "a root"), steps=[ALL_STEPS[3]]))
    with pytest.raises(JobError, match="scheduler directive"):
        render_job(spec, plan_jobs(spec, 1)[0])


def test_values_with_spaces_and_quotes_survive_real_bash(write_spec, tmp_path: Path) -> None:
    odd_root = tmp_path / 'it\'s a "root" $UB_UNSET_VAR `x`'
    spec = load_spec(
        write_spec(
            scheduler="local",
            root=str(odd_root),
            loops_dir=str(odd_root / "loops"),
            dataset="ns/demo",
            steps=[
                {
                    "kind": "shell",
                    "command": 'printf "%s\\n" "$USR_ROOT" "$USRBATCH_DATASET" > "$USRBATCH_LOOP_DIR/out.txt"',
                }
            ],
        )
    )
    job = plan_jobs(spec, 1)[0]
    script = render_job(spec, job)
    spec.loop_dir.mkdir(parents=True)
    path = spec.loop_dir / "job.sh"
    path.write_text(script)
    env = dict(os.environ, USRBATCH_LOCAL_JOB_ID="7")
    proc = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (spec.loop_dir / "out.txt").read_text().splitlines() == [str(odd_root), "ns/demo"]
    outcome = (spec.loop_dir / "jobs" / f"{job.key}.outcome.json").read_text()
    assert '"exit_code": 0' in outcome


def test_user_template_dir_overrides_one_file(write_spec, tmp_path: Path) -> None:
    user = tmp_path / "mytemplates" / "_common"
    user.mkdir(parents=True)
    (user / "shell.j2").write_text(
        '{% extends "_common/job.j2" %}{% block body %}echo custom {{ job.key | shquote }}\n{% endblock %}'
    )
    spec = load_spec(
        write_spec(scheduler="local", templates_dir=str(tmp_path / "mytemplates"), steps=[ALL_STEPS[3]])
    )
    script = render_job(spec, plan_jobs(spec, 1)[0])
    assert "echo custom i001-01-shell" in script
    assert "set -euo pipefail" in script  # the shipped skeleton is still found


def test_builtin_templates_dir_resolves_in_a_checkout() -> None:
    found = templates.builtin_templates_dir()
    assert (found / "qsub" / "densegen.j2").is_file() and (found / "slurm" / "sync.j2").is_file()


def test_cli_templates_dir_option(write_spec, tmp_path: Path, capsys) -> None:
    from usrbatch.cli.usrbatch_main import main

    user = tmp_path / "tpl" / "slurm"
    user.mkdir(parents=True)
    (user / "shell.j2").write_text("#!/bin/bash\necho mine {{ job.name | shquote }}\n")
    path = write_spec(scheduler="slurm", steps=[ALL_STEPS[3]])
    with pytest.raises(SystemExit) as info:
        main(["render", "shell", "--config", str(path), "--templates-dir", str(tmp_path / "tpl")])
    assert info.value.code == 0
    assert capsys.readouterr().out == "#!/bin/bash\necho mine ub.loop.i001-01-shell\n"


SECRET = "ghp_" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp9Oo8"


def test_secret_in_a_command_stays_out_of_the_script_and_still_reaches_the_job(
    write_spec, tmp_path: Path
) -> None:
    from usrbatch.jobs.control import wait_loop
    from usrbatch.jobs.submit import script_path, submit_loop

    out = tmp_path / "seen.txt"
    command = f"printf '%s' 'Bearer {SECRET}' > {out}"
    spec = load_spec(write_spec(steps=[{"kind": "shell", "name": "s", "command": command}]))
    job = plan_jobs(spec, 1)[0]
    public = render_job(spec, job)
    secret_file = templates.secret_path_for(script_path(spec.loop_dir, job.key))
    assert SECRET not in public
    assert f". {secret_file}" in public.splitlines()
    assert f"#   printf '%s' 'Bearer ***REDACTED***' > {out}" in public.splitlines()
    old = os.umask(0o002)  # even a group-writable umask gives no bit to others
    try:
        submit_loop(spec, emit=lambda _m: None)
    finally:
        os.umask(old)
    assert wait_loop(spec.loop_dir, timeout=60, poll=0.2).state == "completed"
    assert out.read_text() == f"Bearer {SECRET}"  # the job ran with the real value
    script = script_path(spec.loop_dir, job.key)
    assert SECRET not in script.read_text()
    assert script.stat().st_mode & 0o777 == 0o770
    assert secret_file.stat().st_mode & 0o777 == 0o600 and SECRET in secret_file.read_text()
    assert (spec.loop_dir / "state.json").stat().st_mode & 0o777 == 0o660
    for path in spec.loop_dir.rglob("*"):
        if path.is_file() and path != secret_file:
            assert SECRET not in path.read_text(errors="replace"), path


def test_job_files_under_umask_022_are_not_world_readable(write_spec) -> None:
    from usrbatch.jobs.control import wait_loop
    from usrbatch.jobs.submit import script_path, submit_loop

    spec = load_spec(write_spec(steps=[{"kind": "shell", "name": "s", "command": "true"}]))
    old = os.umask(0o022)
    try:
        submit_loop(spec, emit=lambda _m: None)
    finally:
        os.umask(old)
    assert wait_loop(spec.loop_dir, timeout=60, poll=0.2).state == "completed"
    job = plan_jobs(spec, 1)[0]
    assert script_path(spec.loop_dir, job.key).stat().st_mode & 0o777 == 0o750
    assert not templates.secret_path_for(script_path(spec.loop_dir, job.key)).exists()
    assert (spec.loop_dir / "state.json").stat().st_mode & 0o777 == 0o640
    assert (spec.loop_dir / "audit.jsonl").stat().st_mode & 0o777 == 0o640


def test_secret_outside_the_command_is_refused(write_spec, tmp_path: Path) -> None:
    spec = load_spec(write_spec(steps=[{"kind": "shell", "name": "s", "command": "true"}]))
    job = plan_jobs(spec, 1)[0]
    context = render_context(spec, job)
    context["loop"]["workdir"] = f"/data/{SECRET}"
    with pytest.raises(JobError, match="would contain a secret-looking value outside the step's command"):
        templates.render_script("local", "shell", context)
