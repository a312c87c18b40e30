"""Loops on the REAL schedulers (SGE, Slurm) and the embedded local one.

Each scheduler runs: a 2-iteration loop of shell + sync push (to a `local` remote) in order; a
failing first step whose dependents never run (SGE: Eqw + hold + hint; Slurm: afterok dependents
cancelled; local: cancelled); a re-run of submit-loop that submits nothing; --dry-run's dependency
flags; and every audit line checked against docs/audit-log.md.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.jobs.control import cancel_loop, wait_loop
from usrbatch.jobs.loop import load_spec, load_state, save_state
from usrbatch.jobs.scheduler import make_scheduler
from usrbatch.jobs.status import loop_status
from usrbatch.jobs.submit import submit_loop

SCHEDULERS = ["local", "sge", "slurm"]
TIMEOUT = 120

_spec = importlib.util.spec_from_file_location(
    "audit_schema", Path(__file__).resolve().parents[1] / "jobs" / "audit_schema.py"
)
audit_schema = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(audit_schema)  # type: ignore[union-attr]


pytestmark = pytest.mark.usefixtures("bytecode_cache")


@pytest.fixture(params=SCHEDULERS)
def scheduler(request: pytest.FixtureRequest) -> str:
    if request.param != "local":
        request.getfixturevalue(request.param)  # skip (or fail under CI=true) when unavailable
    return request.param


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    """A datasets root with a small dataset, a `local` remote (a second directory) and its remotes.yaml."""
    root = tmp_path / "local"
    init_dataset(root, "ns/demo")
    import_records(root / "ns" / "demo", [{"sequence": s} for s in ("ACGTACGTAA", "GGGCCCTTTA")])
    (tmp_path / "cluster").mkdir()
    (tmp_path / "remotes.yaml").write_text(
        yaml.safe_dump({"remotes": {"hpc": {"type": "local", "base_dir": str(tmp_path / "cluster")}}})
    )
    yield tmp_path


def _write(ws: Path, scheduler: str, name: str, steps: list[dict], iterations: int = 2) -> Path:
    spec = {
        "name": f"{name}-{scheduler}",
        "dataset": "ns/demo",
        "root": "local",
        "remote": "hpc",
        "remotes_config": "remotes.yaml",
        "scheduler": scheduler,
        "iterations": iterations,
        "resources": {"time": "00:05:00"},
        "steps": steps,
    }
    if scheduler == "sge":
        spec["project"] = "usrbatch"
    path = ws / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _audit(loop_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (loop_dir / "audit.jsonl").read_text().splitlines() if line.strip()]


def test_two_iteration_loop_completes_in_order(scheduler: str, workspace: Path) -> None:
    steps = [
        {
            "kind": "shell",
            "name": "work",
            "command": 'echo "work $USRBATCH_ITERATION $USRBATCH_JOB_ID" >> "$USRBATCH_LOOP_DIR/order.txt"',
        },
        {"kind": "sync", "action": "push", "retries": 2, "retry_delay": 1},
    ]
    spec = load_spec(_write(workspace, scheduler, "ok", steps))
    started = time.monotonic()
    result = submit_loop(spec, emit=lambda _m: None)
    assert len(result.submitted) == 4
    status = wait_loop(spec.loop_dir, timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    print(f"\n{scheduler}: 2-iteration shell+sync loop wall time {elapsed:.1f}s")
    assert status.state == "completed", status
    assert [v.exit_code for v in status.jobs] == [0, 0, 0, 0]
    lines = (spec.loop_dir / "order.txt").read_text().splitlines()
    ids = [j.scheduler_id for j in load_state(spec.loop_dir).jobs]
    assert lines == [f"work 1 {ids[0]}", f"work 2 {ids[2]}"]
    sync_views = [v for v in status.jobs if v.kind == "sync"]
    assert sync_views[0].bytes and sync_views[0].bytes > 0  # the first push moved the dataset
    assert (workspace / "cluster" / "ns" / "demo" / "records.parquet").is_file()
    # Job runs never overlap: each starts after its predecessor finished.
    events = _audit(spec.loop_dir)
    started_ts = {e["job_key"]: e["ts"] for e in events if e["event"] == "job.started"}
    finished_ts = {e["job_key"]: e["ts"] for e in events if e["event"] == "job.finished"}
    keys = [j.key for j in load_state(spec.loop_dir).jobs]
    for prev, nxt in zip(keys, keys[1:], strict=False):
        assert finished_ts[prev] <= started_ts[nxt]
    # Every line matches the documented schema; sync lines carry the job context too.
    problems = [p for e in events for p in audit_schema.validate_line(e)]
    assert problems == []
    sync_lines = [e for e in events if e["event"].startswith("sync.")]
    assert sync_lines and all(e["job_id"] in ids and e["loop_id"] == spec.loop_id for e in sync_lines)
    # A second submit-loop on the finished loop submits nothing.
    again = submit_loop(spec, emit=lambda _m: None)
    assert again.submitted == [] and again.recovered == []
    assert [j.scheduler_id for j in load_state(spec.loop_dir).jobs] == ids


def test_failing_first_step_stops_the_chain(scheduler: str, workspace: Path) -> None:
    steps = [
        {"kind": "shell", "name": "boom", "command": "echo failing >&2; exit 3"},
        {"kind": "shell", "name": "after", "command": 'touch "$USRBATCH_LOOP_DIR/after-ran"'},
        {"kind": "sync", "action": "push"},
    ]
    spec = load_spec(_write(workspace, scheduler, "fail", steps, iterations=1))
    submit_loop(spec, emit=lambda _m: None)
    try:
        status = wait_loop(spec.loop_dir, timeout=TIMEOUT)
        first, rest = status.jobs[0], status.jobs[1:]
        assert status.state == "failed"
        assert first.state == "failed" and first.exit_code == 3
        assert not (spec.loop_dir / "after-ran").exists()
        assert not any(
            e["event"] == "job.started" and e["job_key"] != first.key for e in _audit(spec.loop_dir)
        )
        if scheduler == "sge":
            assert first.native_state == "Eqw"
            assert [v.native_state for v in rest] == ["hqw", "hqw"]
            assert any("Eqw" in h and "usrbatch cancel" in h and "qmod -cj" in h for h in status.hints)
        else:
            assert [v.state for v in rest] == ["cancelled", "cancelled"]
            assert any("--resume" in h for h in status.hints)
        # A re-run on the stopped loop submits nothing new either.
        assert submit_loop(spec, emit=lambda _m: None).submitted == []
    finally:
        cancel_loop(spec.loop_dir)
    if scheduler == "sge":
        after = loop_status(spec.loop_dir)
        assert all(v.sched_state not in ("held", "error-held") for v in after.jobs)
        assert not (spec.loop_dir / "after-ran").exists()


def test_rerun_on_a_live_loop_submits_nothing(scheduler: str, workspace: Path) -> None:
    steps = [
        {"kind": "shell", "name": "slow", "command": "sleep 2"},
        {"kind": "shell", "name": "next", "command": "true"},
    ]
    spec = load_spec(_write(workspace, scheduler, "live", steps, iterations=1))
    first = submit_loop(spec, emit=lambda _m: None)
    again = submit_loop(spec, emit=lambda _m: None)
    assert len(first.submitted) == 2 and again.submitted == [] and len(again.skipped) == 2
    assert wait_loop(spec.loop_dir, timeout=TIMEOUT).state == "completed"


@pytest.mark.parametrize(("sched", "flag"), [("sge", "-hold_jid id@"), ("slurm", "--dependency=afterok:id@")])
def test_dry_run_shows_dependencies(sched: str, flag: str, workspace: Path) -> None:
    steps = [{"kind": "shell", "name": "a", "command": "true"}, {"kind": "sync", "action": "push"}]
    spec = load_spec(_write(workspace, sched, "dry", steps))
    out: list[str] = []
    result = submit_loop(spec, dry_run=True, emit=out.append)
    text = "\n".join(out)
    assert len(result.submitted) == 4
    assert f"{flag}i001-01-a " in text and f"{flag}i001-02-sync-push " in text and f"{flag}i002-01-a " in text
    assert not spec.loop_dir.exists()


class _CrashOnSubmit:
    """The real scheduler, except that submit dies first (the submitter was killed mid-submit)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def submit(self, _req: object) -> str:
        raise KeyboardInterrupt("killed mid-submit")


def test_recovery_by_name_ignores_a_same_named_loop_elsewhere(scheduler: str, tmp_path: Path) -> None:
    """Two loops with the same name under two roots: loop B's lost submit must not adopt loop
    A's queued job of the same name; B's job is submitted afresh."""
    specs = []
    for side in ("a", "b"):
        ws = tmp_path / side
        init_dataset(ws / "local", "ns/demo")
        (ws / "cluster").mkdir()
        (ws / "remotes.yaml").write_text(
            yaml.safe_dump({"remotes": {"hpc": {"type": "local", "base_dir": str(ws / "cluster")}}})
        )
        steps = [{"kind": "shell", "name": "work", "command": "sleep 30" if side == "a" else "true"}]
        specs.append(load_spec(_write(ws, scheduler, "same", steps, iterations=1)))
    loop_a, loop_b = specs
    assert loop_a.loop_id == loop_b.loop_id and loop_a.loop_dir != loop_b.loop_dir
    try:
        submit_loop(loop_a, emit=lambda _m: None)
        a_id = load_state(loop_a.loop_dir).jobs[0].scheduler_id
        crashing = _CrashOnSubmit(make_scheduler(scheduler, loop_dir=loop_b.loop_dir))
        with pytest.raises(KeyboardInterrupt):
            submit_loop(loop_b, emit=lambda _m: None, scheduler=crashing)  # type: ignore[arg-type]
        assert load_state(loop_b.loop_dir).jobs[0].status == "submitting"
        result = submit_loop(loop_b, emit=lambda _m: None)
        assert result.recovered == [] and result.submitted == ["i001-01-work"]
        if scheduler != "local":  # local ids count per loop dir, so both loops have job "1"
            assert load_state(loop_b.loop_dir).jobs[0].scheduler_id != a_id
        assert wait_loop(loop_b.loop_dir, timeout=TIMEOUT).state == "completed"
        # A re-run of loop A still recognises its own queued job: nothing new is submitted.
        state = load_state(loop_a.loop_dir)
        state.jobs[0].status, state.jobs[0].scheduler_id = "submitting", None
        save_state(loop_a.loop_dir, state)
        again = submit_loop(loop_a, emit=lambda _m: None)
        assert again.recovered == ["i001-01-work"] and again.submitted == []
        assert load_state(loop_a.loop_dir).jobs[0].scheduler_id == a_id
    finally:
        cancel_loop(loop_a.loop_dir)
        cancel_loop(loop_b.loop_dir)


def test_resume_after_a_fixed_failure_completes_the_loop(scheduler: str, workspace: Path) -> None:
    """`submit-loop --resume` on the real schedulers: the failed job and its dependents are
    submitted again (the stopped ones first cleared from the queue) and the loop completes."""
    marker = workspace / "fixed"
    steps = [
        {"kind": "shell", "name": "first", "command": 'echo first >> "$USRBATCH_LOOP_DIR/order.txt"'},
        {"kind": "shell", "name": "flaky", "command": f"test -f {marker}"},
        {"kind": "shell", "name": "last", "command": 'echo last >> "$USRBATCH_LOOP_DIR/order.txt"'},
    ]
    spec = load_spec(_write(workspace, scheduler, "resume", steps, iterations=1))
    submit_loop(spec, emit=lambda _m: None)
    try:
        status = wait_loop(spec.loop_dir, timeout=TIMEOUT)
        assert status.state == "failed"
        assert [v.state for v in status.jobs][:2] == ["completed", "failed"]
        failed_id = load_state(spec.loop_dir).jobs[1].scheduler_id
        marker.touch()
        result = submit_loop(spec, resume=True, emit=lambda _m: None)
        assert result.submitted == ["i001-02-flaky", "i001-03-last"]
        status = wait_loop(spec.loop_dir, timeout=TIMEOUT)
        assert status.state == "completed", status
        state = load_state(spec.loop_dir)
        assert failed_id in state.jobs[1].previous_ids
        assert (spec.loop_dir / "order.txt").read_text().splitlines() == ["first", "last"]
    finally:
        cancel_loop(spec.loop_dir)
