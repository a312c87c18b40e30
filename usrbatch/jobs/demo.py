"""`usrbatch demo`: the whole loop on the embedded defaults, on this machine, in about a minute.

A workspace holds a local datasets root (`local/`), a second directory acting as the cluster
(`cluster/`, a `local` remote in `remotes.yaml`), a dataset `densegen/demo` and a loop spec. The
loop runs on the local scheduler: DenseGen (writes the local copy) -> sync push -> Infer (scores the
local copy) -> sync push, for N iterations. Then `usrbatch status` and a final `usr diff` (expected
`up-to-date`) are printed. Returns True only if every job succeeded and the diff is up to date.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from usrbatch.jobs.control import wait_loop
from usrbatch.jobs.loop import default_tfbs, load_spec
from usrbatch.jobs.status import format_status
from usrbatch.jobs.submit import submit_loop

DATASET = "densegen/demo"
REMOTE = "cluster"


def write_workspace(ws: Path, iterations: int) -> Path:
    """Create (or reuse) the demo workspace; returns the loop spec path."""
    from usrbatch.dataset.records import init_dataset
    from usrbatch.dataset.ref import open_dataset
    from usrbatch.steps.namespaces import ensure_loop_namespaces

    local_root, cluster = ws / "local", ws / "cluster"
    local_root.mkdir(parents=True, exist_ok=True)
    cluster.mkdir(parents=True, exist_ok=True)
    remotes = ws / "remotes.yaml"
    remotes.write_text(
        yaml.safe_dump({"remotes": {REMOTE: {"type": "local", "base_dir": str(cluster)}}}, sort_keys=False)
    )
    if not open_dataset(local_root, DATASET).records.exists():
        init_dataset(local_root, DATASET, source="usrbatch demo")
    tfbs = default_tfbs()
    spec = {
        "name": "demo",
        "dataset": DATASET,
        "root": "local",
        "remote": REMOTE,
        "remotes_config": "remotes.yaml",
        "scheduler": "local",
        "iterations": iterations,
        "resources": {"time": "00:10:00", "cpus": 1},
        "steps": [
            {"kind": "densegen", "count": 6, "length": 60, "library_size": 6, "time_limit": 10}
            | ({"tfbs": str(tfbs)} if tfbs else {}),
            {"kind": "sync", "action": "push", "retries": 2, "retry_delay": 1},
            {"kind": "infer"},
            {"kind": "sync", "action": "push", "name": "sync-push-infer", "retries": 2, "retry_delay": 1},
        ],
    }
    # Every namespace the loop writes, registered before its first write (submit_loop would too);
    # the cluster root gets the same registry.yaml, so the public `usr validate` passes on both.
    ensure_loop_namespaces(local_root, [step["kind"] for step in spec["steps"]])
    shutil.copyfile(local_root / "registry.yaml", cluster / "registry.yaml")
    path = ws / "loop.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _fast_imports(ws: Path) -> None:
    # With PYTHONDONTWRITEBYTECODE every job process recompiles pyarrow & co (~3 s each); keep
    # bytecode in the workspace instead (PYTHONPYCACHEPREFIX), never in the installed package.
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        os.environ.setdefault("PYTHONPYCACHEPREFIX", str(ws / ".pycache"))


def run_demo(
    *, workdir: Path | None, iterations: int, timeout: float, emit: Callable[[str], None] = print
) -> bool:
    started = time.monotonic()
    ws = Path(workdir).absolute() if workdir else Path(tempfile.mkdtemp(prefix="usrbatch-demo-"))
    ws.mkdir(parents=True, exist_ok=True)
    _fast_imports(ws)
    emit(f"demo workspace: {ws}")
    spec_path = write_workspace(ws, iterations)
    spec = load_spec(spec_path)
    emit(f"loop spec: {spec_path} ({len(spec.steps)} steps x {iterations} iterations on the local scheduler)")
    result = submit_loop(spec, emit=emit)
    status = wait_loop(result.loop_dir, timeout=timeout, poll=0.3)
    emit("")
    emit(f"$ usrbatch status {result.loop_dir}")
    emit(format_status(status))
    emit("")
    usr = [sys.executable, "-m", "usrbatch.cli.usr_main", "--root", str(spec.root)]
    usr += ["--remotes-config", str(spec.remotes_config), "diff", DATASET, REMOTE]
    emit(f"$ usr --root {spec.root} --remotes-config {spec.remotes_config} diff {DATASET} {REMOTE}")
    diff = subprocess.run(usr, capture_output=True, text=True, timeout=120)
    emit((diff.stdout + diff.stderr).rstrip())
    up_to_date = diff.returncode == 0 and "up-to-date" in diff.stdout
    ok = status.state == "completed" and up_to_date
    emit("")
    emit(
        f"demo {'OK' if ok else 'FAILED'}: loop {status.state}, remote "
        f"{'up-to-date' if up_to_date else 'NOT up-to-date'}, {time.monotonic() - started:.1f}s "
        f"(logs: usrbatch logs {result.loop_dir})"
    )
    return ok
