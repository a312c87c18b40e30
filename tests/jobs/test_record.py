"""What a job records about itself: outcome files, predecessor refusal, schema-valid audit lines."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from usrbatch.auditlog import job_context_from_env
from usrbatch.jobs.record import read_outcome

_spec = importlib.util.spec_from_file_location("audit_schema", Path(__file__).with_name("audit_schema.py"))
audit_schema = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(audit_schema)  # type: ignore[union-attr]


def _record(loop_dir: Path, key: str, *args: str, job_id: str = "11") -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        USRBATCH_LOOP_DIR=str(loop_dir),
        USRBATCH_JOB_KEY=key,
        USRBATCH_AUDIT_LOG=str(loop_dir / "audit.jsonl"),
        USRBATCH_LOOP_ID="L",
        USRBATCH_STEP=key.split("-", 2)[-1],
        USRBATCH_ITERATION="1",
        USRBATCH_JOB_ID=job_id,
        USRBATCH_SCHEDULER="local",
        USRBATCH_DATASET="ns/demo",
    )
    return subprocess.run(
        [sys.executable, "-m", "usrbatch.jobs.record", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_start_finish_and_refusal(tmp_path: Path) -> None:
    assert _record(tmp_path, "i001-01-a", "start").returncode == 0
    assert (
        _record(
            tmp_path,
            "i001-01-a",
            "finished",
            "--exit-code",
            "4",
            "--started-epoch",
            "100.5",
            "--ended-epoch",
            "103.0",
        ).returncode
        == 0
    )
    outcome = read_outcome(tmp_path, "i001-01-a")
    assert outcome["exit_code"] == 4 and outcome["outcome"] == "failed" and outcome["duration_s"] == 2.5
    refused = _record(tmp_path, "i001-02-b", "start", "i001-01-a", job_id="12")
    assert refused.returncode == 1 and "did not succeed" in refused.stderr
    assert read_outcome(tmp_path, "i001-02-b")["outcome"] == "refused"
    # The refusal propagates: a job after a refused one refuses too.
    assert _record(tmp_path, "i001-03-c", "start", "i001-02-b", job_id="13").returncode == 1
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["event"] for e in lines] == ["job.started", "job.finished", "job.refused", "job.refused"]
    assert [e["job_id"] for e in lines] == ["11", "11", "12", "13"]
    assert all(e["iteration"] == 1 and e["loop_id"] == "L" for e in lines)
    assert [p for e in lines for p in audit_schema.validate_line(e)] == []


def test_success_unlocks_dependents(tmp_path: Path) -> None:
    _record(tmp_path, "i001-01-a", "start")
    _record(tmp_path, "i001-01-a", "finished", "--exit-code", "0")
    assert _record(tmp_path, "i001-02-b", "start", "i001-01-a").returncode == 0
    assert read_outcome(tmp_path, "i001-02-b") is None  # started, not finished


def test_job_context_from_env_binds_every_field() -> None:
    ctx = job_context_from_env({"USRBATCH_LOOP_ID": "L", "USRBATCH_ITERATION": "3"})
    assert ctx == {
        "loop_id": "L",
        "step": None,
        "iteration": 3,
        "job_id": None,
        "scheduler": None,
        "dataset": None,
    }
