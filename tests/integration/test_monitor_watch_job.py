"""The shipped watcher job scripts (templates/watch/) run on the REAL SGE and Slurm: submitted with
WATCH_MODE=--once, the job reads a finished loop and its alert reaches a local HTTP receiver."""

from __future__ import annotations

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

from usrbatch.jobs.control import wait_loop  # noqa: E402
from usrbatch.jobs.loop import load_spec  # noqa: E402
from usrbatch.jobs.submit import submit_loop  # noqa: E402

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "watch"
TIMEOUT = 120


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with running_http_receiver() as rec:
        yield rec


@pytest.mark.parametrize("scheduler", ["sge", "slurm"])
def test_watch_job_template_delivers_from_a_batch_job(
    scheduler: str, request: pytest.FixtureRequest, tmp_path: Path, receiver: HttpReceiver
) -> None:
    request.getfixturevalue(scheduler)  # skip (or fail under CI=true) when unavailable
    ws = tmp_path / "ws"
    spec = load_spec(
        write_loop_spec(
            ws, "local", f"tmpl-{scheduler}", [{"kind": "shell", "name": "work", "command": "true"}]
        )
    )
    submit_loop(spec, emit=lambda _m: None)
    assert wait_loop(spec.loop_dir, timeout=TIMEOUT).state == "completed"
    cfg = tmp_path / "watch.yaml"
    cfg.write_text(yaml.safe_dump({"targets": {"hook": {"type": "webhook", "url": f"{receiver.url}/hook"}}}))
    cfg.chmod(0o600)
    env = {
        "USR_ROOT": str(ws / "local"),
        "WATCH_CONFIG": str(cfg),
        "WATCH_MODE": "--once",
        "USRBATCH": str(Path(sys.executable).with_name("usrbatch")),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    log = tmp_path / "watch-job.log"
    if scheduler == "sge":
        argv = [
            "qsub",
            "-P",
            "usrbatch",
            "-o",
            str(log),
            "-v",
            ",".join(f"{k}={v}" for k, v in env.items()),
            str(TEMPLATES / "usrbatch-watch.qsub"),
        ]
    else:
        argv = [
            "sbatch",
            f"--output={log}",
            # Longer than the template's `--signal=B:USR1@300`: with a 5-minute limit Slurm may
            # signal the watcher to stop as soon as it starts, before its one pass delivers.
            "--time=00:15:00",
            "--export=ALL," + ",".join(f"{k}={v}" for k, v in env.items()),
            str(TEMPLATES / "usrbatch-watch.sbatch"),
        ]
    subprocess.run(
        argv,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PATH": os.environ["PATH"]},
    )
    deadline = time.monotonic() + TIMEOUT
    while not receiver.bodies() and time.monotonic() < deadline:
        time.sleep(1)
    bodies = receiver.bodies()
    assert [b["event"] for b in bodies] == ["loop.completed"], (
        bodies,
        log.read_text() if log.exists() else "no log",
    )
    assert bodies[0]["loop_id"] == spec.loop_id
