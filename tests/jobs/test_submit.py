"""submit-loop on the local scheduler: idempotent re-runs, recovery by name, dry-run, extension, resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

from usrbatch.cli.usrbatch_main import main
from usrbatch.jobs.control import wait_loop
from usrbatch.jobs.loop import load_spec, load_state, save_state
from usrbatch.jobs.submit import submit_loop

TWO_STEPS = [
    {
        "kind": "shell",
        "name": "a",
        "command": 'echo "a $USRBATCH_ITERATION" >> "$USRBATCH_LOOP_DIR/order.txt"',
    },
    {
        "kind": "shell",
        "name": "b",
        "command": 'echo "b $USRBATCH_ITERATION" >> "$USRBATCH_LOOP_DIR/order.txt"',
    },
]


def _jobs_on_scheduler(loop_dir: Path) -> int:
    return len(list((loop_dir / "local").glob("*/meta.json")))


def test_rerun_submits_nothing_new(write_spec) -> None:
    spec = load_spec(write_spec(iterations=2, steps=TWO_STEPS))
    first = submit_loop(spec, emit=lambda _m: None)
    assert len(first.submitted) == 4
    status = wait_loop(spec.loop_dir, timeout=60, poll=0.2)
    assert status.state == "completed", status
    assert (spec.loop_dir / "order.txt").read_text().splitlines() == ["a 1", "b 1", "a 2", "b 2"]
    ids = [j.scheduler_id for j in load_state(spec.loop_dir).jobs]
    again = submit_loop(spec, emit=lambda _m: None)
    assert again.submitted == [] and len(again.skipped) == 4
    assert [j.scheduler_id for j in load_state(spec.loop_dir).jobs] == ids
    assert _jobs_on_scheduler(spec.loop_dir) == 4


def test_submitting_job_is_recovered_by_name(write_spec) -> None:
    spec = load_spec(write_spec(steps=TWO_STEPS))
    submit_loop(spec, emit=lambda _m: None)
    state = load_state(spec.loop_dir)
    state.jobs[1].status, state.jobs[1].scheduler_id = "submitting", None  # crash after qsub, before save
    save_state(spec.loop_dir, state)
    messages: list[str] = []
    result = submit_loop(spec, emit=messages.append)
    assert result.recovered == ["i001-02-b"] and result.submitted == []
    assert load_state(spec.loop_dir).jobs[1].scheduler_id == "2"
    assert _jobs_on_scheduler(spec.loop_dir) == 2
    assert wait_loop(spec.loop_dir, timeout=60, poll=0.2).state == "completed"


def test_dry_run_prints_and_writes_nothing(write_spec, capsys, tmp_path: Path) -> None:
    path = write_spec(iterations=2, steps=TWO_STEPS, scheduler="slurm")
    try:
        main(["submit-loop", str(path), "--dry-run"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 4
    assert "--dependency=afterok:id@i001-01-a " in out
    assert "--dependency=afterok:id@i001-02-b " in out  # iteration 2 waits for iteration 1
    assert "--kill-on-invalid-dep=yes" in out
    assert "nothing submitted" in out
    assert not (tmp_path / "root").exists()


def test_more_iterations_extend_the_chain(write_spec) -> None:
    spec = load_spec(write_spec(steps=TWO_STEPS))
    submit_loop(spec, emit=lambda _m: None)
    result = submit_loop(spec, iterations=2, emit=lambda _m: None)
    assert result.submitted == ["i002-01-a", "i002-02-b"]
    assert wait_loop(spec.loop_dir, timeout=60, poll=0.2).state == "completed"
    assert (spec.loop_dir / "order.txt").read_text().splitlines() == ["a 1", "b 1", "a 2", "b 2"]


def test_resume_resubmits_from_the_failed_job(write_spec, tmp_path: Path) -> None:
    marker = tmp_path / "fixed"
    steps = [
        TWO_STEPS[0],
        {"kind": "shell", "name": "b", "command": f"test -f {marker}"},
        {**TWO_STEPS[1], "name": "c"},
    ]
    spec = load_spec(write_spec(steps=steps))
    submit_loop(spec, emit=lambda _m: None)
    status = wait_loop(spec.loop_dir, timeout=60, poll=0.2)
    assert [v.state for v in status.jobs] == ["completed", "failed", "cancelled"]
    assert "--resume" in status.hints[0]
    marker.touch()
    result = submit_loop(spec, resume=True, emit=lambda _m: None)
    assert result.submitted == ["i001-02-b", "i001-03-c"]
    status = wait_loop(spec.loop_dir, timeout=60, poll=0.2)
    assert status.state == "completed"
    assert load_state(spec.loop_dir).jobs[1].previous_ids == ["2"]


def test_status_json_and_logs_cli(write_spec, capsys) -> None:
    spec = load_spec(write_spec(steps=TWO_STEPS))
    submit_loop(spec, emit=lambda _m: None)
    wait_loop(spec.loop_dir, timeout=60, poll=0.2)
    for argv in (["status", str(spec.loop_dir), "--json"], ["logs", "loop", "b", "--root", str(spec.root)]):
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 0
    out = capsys.readouterr().out
    data = json.loads(out[: out.index("==>")])
    assert data["state"] == "completed" and [j["exit_code"] for j in data["jobs"]] == [0, 0]
    assert "==> i001-02-b:" in out and "==> i001-01-a" not in out


def test_cancel_loop_stops_running_and_waiting_jobs(write_spec) -> None:
    from usrbatch.jobs.control import cancel_loop
    from usrbatch.jobs.status import loop_status

    steps = [
        {"kind": "shell", "name": "s", "command": "sleep 60"},
        {"kind": "shell", "name": "t", "command": "true"},
    ]
    spec = load_spec(write_spec(steps=steps))
    submit_loop(spec, emit=lambda _m: None)
    for _ in range(200):
        if loop_status(spec.loop_dir).jobs[0].started_at:
            break
        wait_loop(spec.loop_dir, timeout=0.1, poll=0.1)
    assert sorted(cancel_loop(spec.loop_dir)) == ["1", "2"]
    status = wait_loop(spec.loop_dir, timeout=30, poll=0.2)
    for _ in range(100):  # the killed job's EXIT trap records job.finished a moment after the kill
        if status.jobs[0].exit_code is not None:
            break
        time.sleep(0.1)
        status = loop_status(spec.loop_dir)
    assert status.state == "cancelled"
    assert [v.state for v in status.jobs] == ["cancelled", "cancelled"]
    assert status.jobs[0].exit_code == 143  # the TERM trap turns the kill into a recorded failure
    assert any(
        e.get("event") == "loop.cancelled"
        for e in map(json.loads, (spec.loop_dir / "audit.jsonl").read_text().splitlines())
    )


def test_submit_loop_registers_the_loop_namespaces_before_its_first_write(write_spec, tmp_path: Path) -> None:
    """A namespace registered mid-loop would change the registry hash under the overlays already
    written (the public `validate` refuses them): submit registers every step's namespace first."""
    from usrbatch.dataset.registry import load_registry

    root = tmp_path / "root"
    root.mkdir()
    steps = [{"kind": "shell", "name": "a", "command": "true"}, {"kind": "infer"}]
    spec = load_spec(write_spec(steps=steps, iterations=1))
    messages: list[str] = []
    result = submit_loop(spec, emit=messages.append)
    registry = load_registry(root)
    assert registry is not None and set(registry.namespaces) == {"infer", "usr_state"}
    assert any(m.startswith("registered namespace(s) infer in ") for m in messages)
    wait_loop(result.loop_dir, timeout=120, poll=0.2)  # the infer job fails (no dataset): fine here
