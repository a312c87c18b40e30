"""`usrbatch metrics`: the textfile of a real (local-scheduler) loop passes `promtool check metrics`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from receivers import write_loop_spec

from usrbatch.cli.usrbatch_main import main
from usrbatch.jobs.control import wait_loop
from usrbatch.jobs.loop import load_spec
from usrbatch.jobs.submit import submit_loop
from usrbatch.monitor.ledger import Ledger, save_ledger
from usrbatch.monitor.metrics import Sample, render


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        msg = "promtool unavailable. Fix: run scripts/services-install metrics as root (Debian package prometheus)."
        if os.environ.get("CI", "").strip().lower() in {"true", "1"}:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


def _check(promtool: str, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


def test_textfile_of_a_real_loop_passes_promtool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    promtool = _promtool()
    steps = [{"kind": "shell", "name": "work", "command": "true"}, {"kind": "sync", "action": "push"}]
    spec = load_spec(write_loop_spec(tmp_path / "ws", "local", "metrics", steps, iterations=2))
    submit_loop(spec, emit=lambda _m: None)
    assert wait_loop(spec.loop_dir, timeout=120).state == "completed"
    state = tmp_path / "watch-state"
    beat = time.time()
    save_ledger(state, Ledger(polled_at=beat))
    out_dir = tmp_path / "textfiles"
    with pytest.raises(SystemExit) as rc:
        main(
            [
                "metrics",
                "--loops-dir",
                str(spec.loop_dir.parent),
                "--textfile",
                str(out_dir),
                "--state-dir",
                str(state),
            ]
        )
    assert rc.value.code == 0
    assert capsys.readouterr().out.strip() == f"wrote {out_dir / 'usrbatch.prom'}"
    assert sorted(p.name for p in out_dir.iterdir()) == ["usrbatch.prom"]  # no temp file left behind
    text = (out_dir / "usrbatch.prom").read_text()
    checked = _check(promtool, text)
    assert checked.returncode == 0 and checked.stdout == "" and checked.stderr == "", checked
    lines = text.splitlines()
    loop = f'loop="{spec.loop_id}",dataset="ns/demo"'
    done = [x for x in lines if x.startswith("usrbatch_job_state{") and x.endswith(" 1")]
    assert len(done) == 4 and all('state="completed"' in x for x in done)
    assert (
        f'usrbatch_job_state{{{loop},step="sync-push",iteration="2",job="i002-02-sync-push",state="failed"}} 0'
        in lines
    )
    bytes_line = next(x for x in lines if x.startswith("usrbatch_sync_bytes_total{"))
    assert 'step="sync-push",action="push"' in bytes_line and int(bytes_line.split()[-1]) > 0
    assert any(x.startswith(f"usrbatch_sync_duration_seconds{{{loop}") for x in lines)
    assert f"usrbatch_loop_up{{{loop}}} 1" in lines
    success = next(x for x in lines if x.startswith("usrbatch_loop_last_success_timestamp_seconds"))
    assert abs(float(success.split()[-1]) - time.time()) < 3600
    assert f"usrbatch_watch_heartbeat_timestamp_seconds {beat!r}" in lines


def test_label_values_are_escaped_and_promtool_rejects_a_broken_file(tmp_path: Path) -> None:
    promtool = _promtool()
    text = render([Sample("usrbatch_loop_up", (("loop", 'we"ird\\name\nx'), ("dataset", "d")), 1.0)])
    assert 'loop="we\\"ird\\\\name\\nx"' in text
    assert _check(promtool, text).returncode == 0
    broken = text.replace(
        "# TYPE usrbatch_loop_up gauge", "# TYPE usrbatch_loop_up gauge\n# TYPE usrbatch_loop_up counter"
    )
    assert _check(promtool, broken).returncode != 0  # the checker does check
