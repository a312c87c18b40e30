"""Fan-out and fan-in on the REAL SGE (`-t 1-N`) and Slurm (`--array=1-N`) and the local scheduler
(N processes): a 3-shard DenseGen writes three overlay parts (one per shard) and ONE sync push runs
after all of them; a failing shard stops the dependents; status shows the shards."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from usrbatch.dataset.records import init_dataset
from usrbatch.jobs.control import cancel_loop, loop_logs, wait_loop
from usrbatch.jobs.loop import load_spec, load_state
from usrbatch.jobs.status import format_status
from usrbatch.jobs.submit import submit_loop

TIMEOUT = 300


pytestmark = pytest.mark.usefixtures("bytecode_cache")


@pytest.fixture(params=["local", "sge", "slurm"])
def scheduler(request: pytest.FixtureRequest) -> str:
    if request.param != "local":
        request.getfixturevalue(request.param)  # skip (or fail under CI=true) when unavailable
    return request.param


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    init_dataset(tmp_path / "local", "ns/demo")
    (tmp_path / "cluster").mkdir()
    (tmp_path / "remotes.yaml").write_text(
        yaml.safe_dump({"remotes": {"hpc": {"type": "local", "base_dir": str(tmp_path / "cluster")}}})
    )
    yield tmp_path


def _spec(ws: Path, scheduler: str, name: str, steps: list[dict]):
    data = {
        "name": f"{name}-{scheduler}",
        "dataset": "ns/demo",
        "root": "local",
        "remote": "hpc",
        "remotes_config": "remotes.yaml",
        "scheduler": scheduler,
        "resources": {"time": "00:10:00"},
        "steps": steps,
    }
    if scheduler == "sge":
        data["project"] = "usrbatch"
    path = ws / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_spec(path)


def test_three_densegen_shards_fan_in_to_one_sync(scheduler: str, workspace: Path) -> None:
    steps = [
        {"kind": "densegen", "shards": 3, "count": 3, "length": 60, "time_limit": 5},
        {"kind": "sync", "action": "push", "retries": 2, "retry_delay": 1},
    ]
    spec = _spec(workspace, scheduler, "fan", steps)
    submit_loop(spec, emit=lambda _m: None)
    status = wait_loop(spec.loop_dir, timeout=TIMEOUT)
    assert status.state == "completed", format_status(status)
    dense, sync = status.jobs
    assert [s["state"] for s in dense.shards] == ["completed"] * 3
    assert "shards of i001-01-densegen: 3/3 completed" in format_status(status)
    state = load_state(spec.loop_dir)
    assert len(state.jobs) == 2 and state.jobs[1].after == [state.jobs[0].key]  # one sync, after the array
    audit = [json.loads(x) for x in (spec.loop_dir / "audit.jsonl").read_text().splitlines() if x.strip()]
    submitted = {e["job_key"]: e for e in audit if e["event"] == "job.submitted"}
    assert submitted[sync.key]["after"] == [dense.job_id]
    # Each shard recorded itself and wrote its own overlay part; the sync started after all finished.
    started = {e["job_key"]: e["ts"] for e in audit if e["event"] == "job.started"}
    finished = {e["job_key"]: e["ts"] for e in audit if e["event"] == "job.finished"}
    shard_keys = [f"{dense.key}.s{n}" for n in (1, 2, 3)]
    assert all(finished[k] <= started[sync.key] for k in shard_keys)
    for side in (spec.root, workspace / "cluster"):
        parts = sorted((side / "ns" / "demo" / "_derived" / "densegen").glob("part-*.parquet"))
        assert len(parts) == 3, (side, parts)
    logs = dict(loop_logs(spec.loop_dir))
    assert all(logs[k].is_file() for k in shard_keys)
    if scheduler == "sge":
        record = subprocess.run(["qacct", "-j", dense.job_id], capture_output=True, text=True).stdout
        assert sorted(line.split()[1] for line in record.splitlines() if line.startswith("taskid")) == [
            "1",
            "2",
            "3",
        ]


def test_a_failing_shard_stops_the_dependents(scheduler: str, workspace: Path) -> None:
    steps = [
        {"kind": "shell", "name": "fan", "shards": 3, "command": '[ "$USRBATCH_SHARD" != 2 ]'},
        {"kind": "shell", "name": "after", "command": 'touch "$USRBATCH_LOOP_DIR/after-ran"'},
    ]
    spec = _spec(workspace, scheduler, "shardfail", steps)
    submit_loop(spec, emit=lambda _m: None)
    try:
        status = wait_loop(spec.loop_dir, timeout=TIMEOUT)
        fan, after = status.jobs
        assert status.state == "failed", format_status(status)
        assert fan.state == "failed" and fan.exit_code == 1
        assert {s["shard"]: s["state"] for s in fan.shards} == {1: "completed", 2: "failed", 3: "completed"}
        assert after.state in ("cancelled", "pending", "held") and not (spec.loop_dir / "after-ran").exists()
        if scheduler == "sge":
            assert after.native_state == "hqw"  # the Eqw task holds it
    finally:
        cancel_loop(spec.loop_dir)
    assert not (spec.loop_dir / "after-ran").exists()
