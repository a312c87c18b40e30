"""Loops that cannot refuse themselves: the default step list completes, and a step order that must
fail (a pull after a step that wrote the root) is refused at submit-loop and --dry-run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from usrbatch.cli.usrbatch_main import main
from usrbatch.errors import JobError
from usrbatch.jobs.control import wait_loop
from usrbatch.jobs.demo import DATASET, write_workspace
from usrbatch.jobs.loop import load_spec
from usrbatch.jobs.submit import submit_loop
from usrbatch.jobs.topology import check_step_order

PUSH = {"kind": "sync", "action": "push"}
PULL = {"kind": "sync", "action": "pull"}


def _spec(write_spec, steps: list[dict], iterations: int = 1):
    return load_spec(write_spec(remote="r", iterations=iterations, steps=steps))


def test_pull_after_a_writer_is_refused_naming_both_steps_and_the_fix(write_spec) -> None:
    spec = _spec(write_spec, [{"kind": "densegen"}, PUSH, {"kind": "infer"}, PULL])
    with pytest.raises(JobError) as info:
        check_step_order(spec, 1)
    msg = info.value.message
    assert msg.startswith("loop.yaml: steps: 'sync-pull' (steps[3], sync pull) must fail")
    assert "after 'infer' (steps[2], infer)" in msg
    assert "Add `- {kind: sync, action: push}` after 'infer'" in (info.value.hint or "")
    assert "move the pull before 'densegen'" in (info.value.hint or "")


def test_pull_refused_across_the_iteration_boundary(write_spec) -> None:
    steps = [PULL, {"kind": "densegen"}]
    check_step_order(_spec(write_spec, steps), 1)  # one iteration: the pull runs first, fine
    with pytest.raises(
        JobError, match=r"in iteration 2 it runs after 'densegen' \(steps\[1\], densegen\) of iteration 1"
    ):
        check_step_order(_spec(write_spec, steps, iterations=2), 2)


@pytest.mark.parametrize(
    "steps",
    [
        [{"kind": "densegen"}, PUSH, {"kind": "infer"}, {**PUSH, "name": "push2"}],  # write here, push there
        [PULL, {"kind": "densegen"}, {"kind": "infer"}, PUSH],  # pull, compute, push
        [{"kind": "densegen"}, PUSH, PULL],  # a pull right after a push is a no-op, not a refusal
        [{"kind": "shell", "command": "true"}, PULL],  # shell steps are not assumed to write
        [{"kind": "infer", "writes": False}, PULL],  # an infer writing another root
    ],
)
def test_coherent_orders_pass(write_spec, steps: list[dict]) -> None:
    check_step_order(_spec(write_spec, steps, iterations=3), 3)


def test_writes_must_be_a_bool_and_sync_never_writes(write_spec) -> None:
    with pytest.raises(JobError, match=r"steps\[0\]\.writes: expected true or false"):
        _spec(write_spec, [{"kind": "shell", "command": "x", "writes": "yes"}])
    with pytest.raises(JobError, match=r"steps\[0\]\.writes: a sync step cannot be marked as writing"):
        _spec(write_spec, [{**PUSH, "writes": True}])


@pytest.mark.parametrize("dry_run", [["--dry-run"], []], ids=["dry-run", "submit"])
def test_cli_refuses_before_anything_is_written(write_spec, capsys, dry_run: list[str]) -> None:
    path = write_spec(remote="r", steps=[{"kind": "densegen"}, PUSH, {"kind": "infer"}, PULL])
    spec = load_spec(path)
    with pytest.raises(SystemExit) as info:
        main(["submit-loop", str(path), *dry_run])
    assert info.value.code == 2
    out = capsys.readouterr().out
    assert "ERROR: loop.yaml: steps: 'sync-pull' (steps[3], sync pull) must fail" in out
    assert "Hint: Add `- {kind: sync, action: push}` after 'infer'" in out
    assert not spec.loop_dir.exists()


def test_default_loop_completes_two_iterations_with_infer_writing(tmp_path: Path) -> None:
    spec_path = write_workspace(tmp_path / "ws", iterations=2)
    data = yaml.safe_load(spec_path.read_text())
    del data["steps"]  # the default step list
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_spec(spec_path)
    assert [s.name for s in spec.steps] == ["densegen", "sync-push", "infer", "sync-push-infer"]
    submit_loop(spec, emit=lambda _m: None)
    status = wait_loop(spec.loop_dir, timeout=600, poll=0.3)
    assert status.state == "completed", [(v.key, v.state, v.reason) for v in status.jobs]
    assert len(status.jobs) == 8 and {v.iteration for v in status.jobs} == {1, 2}
    for side in (spec.root, tmp_path / "ws" / "cluster"):
        infer_parts = list((side / DATASET / "_derived" / "infer").glob("part-*.parquet"))
        assert len(infer_parts) >= 2, side  # infer wrote in both iterations, and both reached the remote
