"""Walltime recovery on the REAL SGE (h_rt enforced: accounting `failed 37`) and Slurm (TIMEOUT): a
DenseGen step with a short time limit is killed, submitted again under the same job key with its
`resubmit.args` (--resume) appended, its dependent re-submitted after the new id, and the loop completes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from usrbatch.jobs.control import cancel_loop, wait_loop
from usrbatch.jobs.loop import load_spec, load_state
from usrbatch.jobs.status import format_status
from usrbatch.jobs.submit import submit_loop

# Without --resume it outlives any time limit; with it, it finishes at once.
DENSE = (
    'dense() { if [ "${1:-}" = --resume ]; then echo "resumed $USRBATCH_ATTEMPT" > "$USRBATCH_LOOP_DIR/resumed"; '
    "else sleep 300; fi; }; dense"
)


@pytest.fixture(params=["sge", "slurm"])
def scheduler(request: pytest.FixtureRequest) -> str:
    request.getfixturevalue(request.param)  # skip (or fail under CI=true) when unavailable
    return request.param


def test_walltime_kill_is_resubmitted_with_resume_and_the_loop_completes(
    scheduler: str, tmp_path: Path
) -> None:
    (tmp_path / "root").mkdir()
    data = {
        "name": f"walltime-{scheduler}",
        "dataset": "ns/demo",
        "root": "root",
        "scheduler": scheduler,
        "steps": [
            {
                "kind": "densegen",
                "command": DENSE,
                "resources": {"time": "00:00:05"},
                "resubmit": {"on": ["walltime"], "max": 2, "args": "--resume"},
            },
            {"kind": "shell", "name": "after", "command": 'touch "$USRBATCH_LOOP_DIR/after-ran"'},
        ],
    }
    if scheduler == "sge":
        data["project"] = "usrbatch"
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_spec(path)
    submit_loop(spec, emit=lambda _m: None)
    first_ids = [j.scheduler_id for j in load_state(spec.loop_dir).jobs]
    messages: list[str] = []
    try:
        status = wait_loop(spec.loop_dir, timeout=400, poll=1.0, emit=messages.append)
        assert status.state == "completed", (
            format_status(status),
            [(v.key, v.state, v.native_state, v.killed_by) for v in status.jobs],
            messages,
        )
    finally:
        cancel_loop(spec.loop_dir)
    dense, after = load_state(spec.loop_dir).jobs
    assert (dense.attempt, dense.previous_ids) == (2, [first_ids[0]])  # same key, a new id
    assert after.previous_ids == [first_ids[1]] and after.scheduler_id != first_ids[1]
    assert (spec.loop_dir / "resumed").read_text().strip() == "resumed 2"
    assert (spec.loop_dir / "after-ran").exists()
    audit = [json.loads(x) for x in (spec.loop_dir / "audit.jsonl").read_text().splitlines() if x.strip()]
    resub = [e for e in audit if e["event"] == "job.resubmitted"]
    assert len(resub) == 1 and resub[0]["job_key"] == dense.key
    assert (resub[0]["attempt"], resub[0]["cause"], resub[0]["previous_job_id"]) == (
        2,
        "walltime",
        first_ids[0],
    )
    submitted_after = [e for e in audit if e["event"] == "job.submitted" and e["job_key"] == after.key]
    assert submitted_after[-1]["after"] == [dense.scheduler_id]  # the dependent waits for the new id
