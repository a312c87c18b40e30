"""Loop spec validation (errors name the key) and the job plan / state file."""

from __future__ import annotations

from pathlib import Path

import pytest

from usrbatch.cli.usrbatch_main import main
from usrbatch.jobs.loop import (
    DEFAULT_STEPS,
    JobRecord,
    LoopState,
    SpecError,
    load_spec,
    load_state,
    plan_jobs,
    save_state,
    state_path,
)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {
                "steps": [
                    {"kind": "shell", "command": "x"},
                    {"kind": "shell", "command": "y", "name": "b"},
                    {"kind": "infr"},
                ]
            },
            "loop.yaml: steps[2].kind: unknown step kind 'infr' (expected densegen, sync, infer, shell)",
        ),
        ({"scheduler": "pbs"}, "loop.yaml: scheduler: unknown scheduler 'pbs' (expected local, sge, slurm)"),
        ({"iterations": 0}, "loop.yaml: iterations: expected an integer >= 1, got 0"),
        ({"iterations": "2"}, "loop.yaml: iterations: expected an integer >= 1, got '2'"),
        ({"colour": "red"}, "loop.yaml: colour: unknown key 'colour'"),
        ({"resources": {"time": "1h"}}, "loop.yaml: resources.time: invalid value '1h' (use HH:MM:SS)"),
        ({"resources": {"cpus": 0}}, "loop.yaml: resources.cpus: expected an integer >= 1, got 0"),
        (
            {"steps": [{"kind": "sync", "action": "push"}]},
            "loop.yaml: remote: required when the loop has a sync step",
        ),
        (
            {"remote": "r", "steps": [{"kind": "sync"}]},
            "loop.yaml: steps[0].action: required for a sync step",
        ),
        (
            {"remote": "r", "steps": [{"kind": "sync", "action": "fetch"}]},
            "loop.yaml: steps[0].action: unknown sync action 'fetch' (expected push, pull, diff)",
        ),
        ({"steps": [{"kind": "shell"}]}, "loop.yaml: steps[0].command: required for a shell step"),
        (
            {"steps": [{"kind": "shell", "command": "a"}, {"kind": "shell", "command": "b"}]},
            "loop.yaml: steps[1].name: duplicate step name 'shell' (also steps[0])",
        ),
        (
            {"steps": [{"kind": "shell", "command": "a", "cmd": "b"}]},
            "loop.yaml: steps[0].cmd: unknown key 'cmd'",
        ),
        ({"steps": []}, "loop.yaml: steps: expected a non-empty list of steps"),
        ({"dataset": "../x"}, "loop.yaml: dataset: Dataset id '../x'"),
        ({"name": "bad name"}, "loop.yaml: name: invalid value 'bad name'"),
    ],
)
def test_spec_errors_name_the_key(write_spec, keys: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(**keys))
    assert str(info.value).startswith(message)


def test_missing_required_key(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("root: x\n")
    with pytest.raises(SpecError, match=r"^loop.yaml: dataset: required"):
        load_spec(path)


def test_cli_prints_error_and_exits_2_without_touching_disk(write_spec, tmp_path: Path, capsys) -> None:
    path = write_spec(steps=[{"kind": "infr"}])
    with pytest.raises(SystemExit) as info:
        main(["submit-loop", str(path)])
    assert info.value.code == 2
    out = capsys.readouterr().out
    assert out.startswith("ERROR: loop.yaml: steps[0].kind: unknown step kind 'infr'")
    assert not (tmp_path / "root").exists()


def test_defaults_and_relative_paths(write_spec, tmp_path: Path) -> None:
    spec = load_spec(write_spec(root="rel/root", remote="hpc"))
    assert spec.root == tmp_path / "rel" / "root"
    assert spec.scheduler == "local" and spec.iterations == 1 and spec.loop_id == "loop"
    assert [s.kind for s in spec.steps] == [s["kind"] for s in DEFAULT_STEPS]
    assert [s.name for s in spec.steps] == ["densegen", "sync-push", "infer", "sync-push-infer"]
    assert spec.loop_dir == tmp_path / "rel" / "root" / ".usrbatch" / "loops" / "loop"
    assert Path(spec.steps[0].args["tfbs"]).name == "tfbs.csv"


def test_plan_chains_iterations(write_spec) -> None:
    spec = load_spec(
        write_spec(
            steps=[
                {"kind": "shell", "command": "a", "name": "a"},
                {"kind": "shell", "command": "b", "name": "b"},
            ]
        )
    )
    jobs = plan_jobs(spec, 3)
    assert [j.key for j in jobs] == [
        "i001-01-a", "i001-02-b", "i002-01-a", "i002-02-b", "i003-01-a", "i003-02-b",
    ]  # fmt: skip
    assert jobs[0].after == []
    assert all(jobs[i].after == [jobs[i - 1].key] for i in range(1, len(jobs)))
    assert jobs[2].name == "ub.loop.i002-01-a"


def test_state_roundtrip_is_atomic(tmp_path: Path) -> None:
    state = LoopState(
        loop_id="l", config="c", scheduler="local", dataset="d", root="r", created_at="t",
        jobs=[JobRecord("k", "s", "shell", 1, 0, "ub.l.k", [], "submitted", "3", "t")],
    )  # fmt: skip
    save_state(tmp_path, state)
    assert load_state(tmp_path) == state
    assert [p.name for p in tmp_path.iterdir()] == [state_path(tmp_path).name]
    assert load_state(tmp_path / "nope") is None
