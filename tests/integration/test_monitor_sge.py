"""`usrbatch watch` on the REAL Son of Grid Engine (and Slurm), alerts to a real local HTTP receiver:
a failing step yields exactly one failure alert (its Eqw and held or cancelled dependents add none),
and a running SGE job deleted with qdel (SIGKILL: no job.finished) is reported as killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitor"))
from receivers import HttpReceiver, running_http_receiver, write_loop_spec  # noqa: E402

from usrbatch.jobs.control import cancel_loop, wait_loop  # noqa: E402
from usrbatch.jobs.loop import load_spec, load_state  # noqa: E402
from usrbatch.jobs.submit import submit_loop  # noqa: E402
from usrbatch.monitor.config import load_config  # noqa: E402
from usrbatch.monitor.watcher import Watcher  # noqa: E402

TIMEOUT = 180


pytestmark = pytest.mark.usefixtures("bytecode_cache")


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with running_http_receiver() as rec:
        yield rec


def _watcher(tmp_path: Path, rec: HttpReceiver, loop_dir: Path) -> Watcher:
    cfg = tmp_path / "watch.yaml"
    cfg.write_text(yaml.safe_dump({"targets": {"hook": {"type": "webhook", "url": f"{rec.url}/hook"}}}))
    cfg.chmod(0o600)
    return Watcher(config=load_config(cfg), state_dir=tmp_path / "watch-state", find_loops=lambda: [loop_dir])


def _until(predicate, timeout: float = TIMEOUT) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(1)


@pytest.mark.parametrize("scheduler", ["sge", "slurm"])
def test_failing_step_yields_exactly_one_alert(
    scheduler: str, request: pytest.FixtureRequest, tmp_path: Path, receiver: HttpReceiver
) -> None:
    request.getfixturevalue(scheduler)  # skip (or fail under CI=true) when unavailable
    steps = [
        {"kind": "shell", "name": "boom", "command": "echo failing >&2; exit 3"},
        {"kind": "shell", "name": "after", "command": "true"},
        {"kind": "sync", "action": "push"},
    ]
    spec = load_spec(write_loop_spec(tmp_path / "ws", scheduler, "mon-fail", steps))
    submit_loop(spec, emit=lambda _m: None)
    watcher = _watcher(tmp_path, receiver, spec.loop_dir)
    try:

        def settled() -> bool:
            watcher.poll(force_status=True)
            jobs = wait_loop(spec.loop_dir, timeout=0).jobs
            if scheduler == "sge":  # the failed job sits in Eqw, its dependents in hqw
                return jobs[0].native_state == "Eqw"
            return jobs[0].state == "failed" and all(v.state == "cancelled" for v in jobs[1:])

        _until(settled)
        for _ in range(3):
            watcher.poll(force_status=True)
    finally:
        cancel_loop(spec.loop_dir)
    watcher.poll(force_status=True)  # after the cancel: the deleted or cancelled dependents are not news
    bodies = receiver.bodies()
    assert len(bodies) == 1, bodies
    assert bodies[0]["event"] == "job.failed" and len(bodies[0]["alerts"]) == 1
    first_id = load_state(spec.loop_dir).jobs[0].scheduler_id
    assert bodies[0]["alerts"][0]["id"] == f"{spec.loop_id}/{first_id}/failed"
    assert bodies[0]["alerts"][0]["fields"]["exit_code"] == 3


def test_qdel_of_a_running_job_is_reported_as_killed(
    sge: object, tmp_path: Path, receiver: HttpReceiver
) -> None:
    spec = load_spec(
        write_loop_spec(
            tmp_path / "ws", "sge", "mon-kill", [{"kind": "shell", "name": "long", "command": "sleep 300"}]
        )
    )
    submit_loop(spec, emit=lambda _m: None)
    audit = spec.loop_dir / "audit.jsonl"
    job_id = load_state(spec.loop_dir).jobs[0].scheduler_id
    watcher = _watcher(tmp_path, receiver, spec.loop_dir)
    try:
        _until(lambda: audit.exists() and '"job.started"' in audit.read_text())
        subprocess.run(["qdel", str(job_id)], check=True, capture_output=True, timeout=60)
        _until(lambda: wait_loop(spec.loop_dir, timeout=0).jobs[0].sched_state not in ("running", "pending"))

        def reported() -> bool:
            watcher.poll(force_status=True)
            return bool(receiver.bodies())

        _until(reported)
    finally:
        cancel_loop(spec.loop_dir)
    bodies = receiver.bodies()
    assert [b["event"] for b in bodies] == ["job.killed"], bodies
    assert bodies[0]["alerts"][0]["id"] == f"{spec.loop_id}/{job_id}/killed"
    assert not any(json.loads(x)["event"] == "job.finished" for x in audit.read_text().splitlines())


def test_one_qstat_per_status_poll_for_all_loops_and_none_between(
    sge: object, tmp_path: Path, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two live SGE loops, three jobs: a status poll runs `qstat` once (logged by a PATH shim in
    front of the real one); polls inside status_interval_s run none."""
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    calls = tmp_path / "calls.log"
    for tool in ("qstat", "qacct"):
        shim = shim_dir / tool
        real = subprocess.run(["which", tool], capture_output=True, text=True, check=True).stdout.strip()
        shim.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nexec {real} "$@"\n')
        shim.chmod(0o755)
    loops = []
    for name in ("mon-a", "mon-b"):
        steps = [
            {"kind": "shell", "name": "s", "command": "sleep 60"},
            {"kind": "shell", "name": "t", "command": "true"},
        ]
        spec = load_spec(write_loop_spec(tmp_path / name, "sge", name, steps))
        submit_loop(spec, emit=lambda _m: None)
        loops.append(spec.loop_dir)
    cfg = tmp_path / "watch.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "targets": {"hook": {"type": "webhook", "url": f"{receiver.url}/h"}},
                "watch": {"status_interval_s": 3600},
            }
        )
    )
    cfg.chmod(0o600)
    watcher = Watcher(config=load_config(cfg), state_dir=tmp_path / "state", find_loops=lambda: loops)
    monkeypatch.setenv("PATH", f"{shim_dir}:{os.environ['PATH']}")
    try:
        first = watcher.poll()
        assert first.status_checked
        assert [c.split()[0] for c in calls.read_text().splitlines()] == ["qstat"]
        for _ in range(3):
            assert not watcher.poll().status_checked
        assert len(calls.read_text().splitlines()) == 1
    finally:
        for loop_dir in loops:
            cancel_loop(loop_dir)
