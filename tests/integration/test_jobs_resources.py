"""A GPU step with set-up lines and env on the REAL SGE and Slurm: the job is scheduled against the
GPU resource scripts/sge-up and slurm-up configure (SGE consumable `gpus` + `gpu_c`; a Slurm count-only
GRES gpu), runs its set-up and env, and the scheduler's own record shows the GPU request."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from usrbatch.jobs.control import wait_loop
from usrbatch.jobs.loop import load_spec, load_state
from usrbatch.jobs.submit import submit_loop


@pytest.fixture(params=["sge", "slurm"])
def scheduler(request: pytest.FixtureRequest) -> str:
    request.getfixturevalue(request.param)  # skip (or fail under CI=true) when unavailable
    return request.param


def test_gpu_step_is_scheduled_with_its_gpu_request(scheduler: str, tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "venv-activate.sh").write_text("export FROM_SETUP=activated\n")
    gpu = {"gpus": 1, "gpu_capability": "8.9"} if scheduler == "sge" else {"gpus": 1}
    spec_data = {
        "name": f"gpu-{scheduler}",
        "dataset": "ns/demo",
        "root": "root",
        "scheduler": scheduler,
        "resources": {"time": "00:05:00", **gpu},
        "setup": [f"source {tmp_path / 'venv-activate.sh'}"],
        "env": {"MODEL": "evo2_7b"},
        "steps": [
            {
                "kind": "shell",
                "name": "infer-gpu",
                "command": 'echo "$FROM_SETUP $MODEL $0" > "$USRBATCH_LOOP_DIR/ran.txt"',
            }
        ],
    }
    if scheduler == "sge":
        spec_data["project"] = "usrbatch"
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(spec_data, sort_keys=False))
    spec = load_spec(path)
    submit_loop(spec, emit=lambda _m: None)
    status = wait_loop(spec.loop_dir, timeout=120)
    assert status.state == "completed", status
    assert (spec.loop_dir / "ran.txt").read_text().split()[:2] == ["activated", "evo2_7b"]
    job_id = load_state(spec.loop_dir).jobs[0].scheduler_id
    assert job_id
    if scheduler == "sge":
        record = subprocess.run(["qacct", "-j", job_id], capture_output=True, text=True, check=True).stdout
        category = next(line for line in record.splitlines() if line.startswith("category"))
        assert "gpus=1" in category and "gpu_c=8.9" in category, category
    else:
        record = subprocess.run(
            ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
        ).stdout
        assert "gres:gpu:1" in record or "gres/gpu=1" in record, record
