"""`usrbatch render sync` / `usrbatch submit sync`: the rendered script and argument checks (fast).
The jobs running on SGE, Slurm and the local scheduler: tests/integration/test_jobs_sync_job.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from usrbatch.cli.usrbatch_main import main


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _text(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    return out + err


def _render(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = _run(["render", "sync", *args, "--root", str(tmp_path / "root")])
    out, err = capsys.readouterr()
    return code, out, err


def test_sge_script_asks_for_the_transfer_node_and_resources(tmp_path: Path, capsys) -> None:
    code, out, _ = _render(
        tmp_path,
        capsys,
        *("pull", "ns/demo", "hpc", "--scheduler", "sge", "--name", "pull1", "--time", "00:30:00"),
        *("--mem", "2G", "--queue", "transfer", "--project", "lab", "--directive", "-l h_vmem=2G"),
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "#!/bin/bash -l"
    for directive in (
        "#$ -l download",
        "#$ -l h_rt=00:30:00",
        "#$ -l mem_per_core=2G",
        "#$ -q transfer",
        "#$ -P lab",
        "#$ -l h_vmem=2G",
        "#$ -N ub.pull1.i001-01-sync-pull",
    ):
        assert directive in lines
    assert "pull ns/demo hpc -y" in out
    loop_dir = tmp_path / "root" / ".usrbatch" / "loops" / "pull1"
    assert f"export USRBATCH_AUDIT_LOG={loop_dir}/audit.jsonl" in lines
    assert not (tmp_path / "root").exists()  # render writes nothing


def test_slurm_script_uses_partition_mem_and_time(tmp_path: Path, capsys) -> None:
    code, out, _ = _render(
        tmp_path,
        capsys,
        *("push", "ns/demo", "hpc", "--scheduler", "slurm", "--name", "push1", "--time", "1-00:00:00"),
        *(
            "--mem",
            "4G",
            "--cpus",
            "2",
            "--partition",
            "xfer",
            "--account",
            "lab",
            "--directive",
            "--qos=low",
        ),
    )
    assert code == 0
    lines = out.splitlines()
    for directive in (
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --mem=4G",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --partition=xfer",
        "#SBATCH --account=lab",
        "#SBATCH --qos=low",
    ):
        assert directive in lines
    assert "#$ -l download" not in out
    assert "push ns/demo hpc -y" in out


def test_default_name_is_unique_per_submit(tmp_path: Path, capsys) -> None:
    code, out, _ = _render(tmp_path, capsys, "pull", "ns/demo", "hpc", "--scheduler", "local")
    assert code == 0
    assert "export USRBATCH_LOOP_ID=sync-pull-ns-demo-2" in out  # ...-<UTC yyyymmddTHHMMSS>


@pytest.mark.parametrize(
    ("args", "option", "fix"),
    [
        (["--scheduler", "slurm", "--time", "2h"], "--time", "HH:MM:SS"),
        (["--scheduler", "slurm", "--mem", "lots"], "--mem", "4G"),
        (["--scheduler", "sge", "--mem", "4G", "--cpus", "4"], "--mem", "--mem-per-core"),
        (["--scheduler", "sge", "--account", "lab"], "--account", "--project"),
        (["--scheduler", "slurm", "--project", "lab"], "--project", "--account"),
        (["--scheduler", "slurm", "--mem-per-core", "2G"], "--mem-per-core", "--mem"),
        (["--scheduler", "local", "--queue", "q"], "--queue/--partition", "--scheduler sge|slurm"),
        (["--scheduler", "local", "--directive", "-l x"], "--directive", "--scheduler sge|slurm"),
        (["--scheduler", "sge", "--queue", "a b"], "--queue/--partition", "Letters"),
        (["--scheduler", "sge", "--name", "../x"], "--name", "Letters"),
        (["--scheduler", "sge", "--mail", "not-an-address"], "--mail", "me@bu.edu"),
    ],
)
def test_bad_arguments_name_the_option_and_the_fix(
    tmp_path: Path, capsys, args: list[str], option: str, fix: str
) -> None:
    code, out, err = _render(tmp_path, capsys, "pull", "ns/demo", "hpc", *args)
    text = out + err  # the CLI's error stream (captured together)
    assert code == 2
    assert "#!/bin/bash" not in text  # no script when an argument is bad
    assert f"usrbatch submit sync: {option}:" in text
    assert fix in text
    assert "Traceback" not in text


def test_unknown_action_and_missing_scheduler_are_usage_errors(tmp_path: Path, capsys) -> None:
    code, out, err = _render(tmp_path, capsys, "diff", "ns/demo", "hpc", "--scheduler", "local")
    assert code == 2 and "'diff' is not one of 'pull', 'push'" in out + err
    code, out, err = _render(tmp_path, capsys, "pull", "ns/demo", "hpc")
    assert code == 2 and "--scheduler" in out + err


def test_submit_refuses_what_cannot_run(tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    base = ["submit", "sync", "push", "ns/demo", "hpc", "--scheduler", "local", "--root", str(root)]
    assert _run(base) == 2
    assert "--root: datasets root not found" in _text(capsys)
    root.mkdir()
    assert _run(base) == 2
    assert "DATASET: no dataset ns/demo under" in _text(capsys)
    (root / "ns" / "demo").mkdir(parents=True)
    (root / "ns" / "demo" / "records.parquet").write_bytes(b"")
    assert _run([*base, "--remotes-config", str(tmp_path / "nope.yaml")]) == 2
    assert "--remotes-config: file not found" in _text(capsys)
    remotes = tmp_path / "remotes.yaml"
    remotes.write_text("remotes:\n  other: {type: local, base_dir: /tmp}\n")
    remotes.chmod(0o600)
    assert _run([*base, "--remotes-config", str(remotes)]) == 2
    assert "Unknown remote 'hpc'" in _text(capsys)
    assert not (root / ".usrbatch" / "loops").exists() or not any((root / ".usrbatch" / "loops").iterdir())


def test_a_step_named_sync_still_renders_from_its_spec(write_spec, capsys) -> None:
    path = write_spec(
        remote="hpc", scheduler="slurm", steps=[{"kind": "sync", "action": "push", "name": "sync"}]
    )
    assert _run(["render", "sync", "--config", str(path)]) == 0
    assert "#SBATCH --job-name=ub.loop.i001-01-sync" in capsys.readouterr().out
