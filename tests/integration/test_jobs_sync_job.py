"""`usrbatch submit sync` on the REAL schedulers (SGE, Slurm) and the embedded local one.

Each scheduler runs a push job (local root -> a `local` remote) and then a pull job into a second,
empty root; both complete, `usrbatch status` reports them completed (exit 0), the data arrived,
and every audit line matches docs/audit-log.md.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from usrbatch.cli.usrbatch_main import main
from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.jobs.control import cancel_loop, wait_loop
from usrbatch.jobs.loop import load_state

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
    root = tmp_path / "local"
    init_dataset(root, "ns/demo")
    import_records(root / "ns" / "demo", [{"sequence": s} for s in ("ACGTACGTAA", "GGGCCCTTTA")])
    (tmp_path / "cluster").mkdir()
    (tmp_path / "other").mkdir()
    remotes = tmp_path / "remotes.yaml"
    remotes.write_text(
        yaml.safe_dump({"remotes": {"hpc": {"type": "local", "base_dir": str(tmp_path / "cluster")}}})
    )
    remotes.chmod(0o600)
    yield tmp_path


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out + err


def _submit_and_wait(
    ws: Path, scheduler: str, action: str, root: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> Path:
    argv = ["submit", "sync", action, "ns/demo", "hpc", "--scheduler", scheduler, "--root", str(root)]
    argv += ["--remotes-config", str(ws / "remotes.yaml"), "--name", name, "--time", "00:05:00"]
    argv += ["--retries", "2", "--retry-delay", "1"]
    if scheduler == "sge":
        argv += ["--project", "usrbatch"]
    code, out = _cli(argv, capsys)
    assert code == 0, out
    loop_dir = root / ".usrbatch" / "loops" / name
    assert f"loop {name}: {loop_dir}" in out
    try:
        status = wait_loop(loop_dir, timeout=TIMEOUT)
    finally:
        cancel_loop(loop_dir)  # no-op once it ended; never leaves a job queued on failure
    assert status.state == "completed", status
    assert [(v.kind, v.exit_code) for v in status.jobs] == [("sync", 0)]
    code, out = _cli(["status", name, "--root", str(root)], capsys)
    assert code == 0, out
    assert "completed" in out
    return loop_dir


def test_push_then_pull_jobs_complete(scheduler: str, workspace: Path, capsys) -> None:
    push_dir = _submit_and_wait(
        workspace, scheduler, "push", workspace / "local", f"push-{scheduler}", capsys
    )
    pushed = workspace / "cluster" / "ns" / "demo" / "records.parquet"
    assert pushed.read_bytes() == (workspace / "local" / "ns" / "demo" / "records.parquet").read_bytes()
    script = (push_dir / "scripts" / "i001-01-sync-push.sh").read_text()
    if scheduler == "sge":
        assert "#$ -l download" in script.splitlines()  # on the transfer node
    assert (push_dir / "spec.yaml").is_file()  # what `submit-loop --resume` and resubmits reload
    pull_dir = _submit_and_wait(
        workspace, scheduler, "pull", workspace / "other", f"pull-{scheduler}", capsys
    )
    pulled = workspace / "other" / "ns" / "demo" / "records.parquet"
    assert pulled.read_bytes() == pushed.read_bytes()
    for loop_dir, action in ((push_dir, "push"), (pull_dir, "pull")):
        events = [json.loads(x) for x in (loop_dir / "audit.jsonl").read_text().splitlines() if x.strip()]
        assert [p for e in events for p in audit_schema.validate_line(e)] == []
        names = [e["event"] for e in events]
        assert "job.submitted" in names and "job.started" in names and "job.finished" in names
        job_id = load_state(loop_dir).jobs[0].scheduler_id
        sync_lines = [e for e in events if e["event"].startswith("sync.")]
        assert sync_lines and all(e["job_id"] == job_id for e in sync_lines)
        assert any(e.get("action") == action for e in sync_lines)
