"""The embedded local scheduler: dependency order, failure cancels dependents, cancel, lookup by name."""

from __future__ import annotations

import time
from pathlib import Path

from usrbatch.jobs.local import LocalScheduler
from usrbatch.jobs.scheduler import CANCELLED, COMPLETED, FAILED, RUNNING, SubmitRequest


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.sh"
    path.write_text(f"set -euo pipefail\n{body}\n")
    return path


def _submit(s: LocalScheduler, tmp_path: Path, name: str, body: str, after: tuple[str, ...] = ()) -> str:
    return s.submit(SubmitRequest(_script(tmp_path, name, body), name, tmp_path / f"{name}.log", after))


def test_chain_runs_in_order(tmp_path: Path) -> None:
    s = LocalScheduler(tmp_path / "sched")
    order = tmp_path / "order.txt"
    a = _submit(s, tmp_path, "a", f"sleep 0.3; echo a >> {order}")
    b = _submit(s, tmp_path, "b", f"echo b >> {order}", (a,))
    c = _submit(s, tmp_path, "c", f"echo c >> {order}; echo to-log", (b,))
    states = s.wait([a, b, c], timeout=30)
    assert {i: st.state for i, st in states.items()} == {a: COMPLETED, b: COMPLETED, c: COMPLETED}
    assert order.read_text().split() == ["a", "b", "c"]
    assert (tmp_path / "c.log").read_text() == "to-log\n"
    assert states[a].exit_code == 0


def test_failure_cancels_dependents_which_never_run(tmp_path: Path) -> None:
    s = LocalScheduler(tmp_path / "sched")
    a = _submit(s, tmp_path, "a", "exit 3")
    b = _submit(s, tmp_path, "b", f"touch {tmp_path / 'b-ran'}", (a,))
    c = _submit(s, tmp_path, "c", f"touch {tmp_path / 'c-ran'}", (b,))
    states = s.wait([a, b, c], timeout=30)
    assert states[a].state == FAILED and states[a].exit_code == 3
    assert states[b].state == CANCELLED and "predecessor 1 failed" in states[b].reason
    assert states[c].state == CANCELLED
    assert not (tmp_path / "b-ran").exists() and not (tmp_path / "c-ran").exists()


def test_cancel_running_and_waiting_jobs(tmp_path: Path) -> None:
    s = LocalScheduler(tmp_path / "sched")
    a = _submit(s, tmp_path, "a", "sleep 60")
    b = _submit(s, tmp_path, "b", "true", (a,))
    deadline = time.monotonic() + 10
    while s.status([a])[a].state != RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    s.cancel([a, b])
    states = s.wait([a, b], timeout=15)  # `sleep 60` would still be RUNNING here had cancel not worked
    assert states[a].state == CANCELLED and states[b].state == CANCELLED


def test_find_by_name_and_unknown_ids(tmp_path: Path) -> None:
    s = LocalScheduler(tmp_path / "sched")
    a = _submit(s, tmp_path, "named", "true")
    assert s.find_by_name("named", tmp_path / "named.sh") == [a]
    assert s.find_by_name("named", tmp_path / "elsewhere.sh") == []  # same name, another script
    assert s.find_by_name("other", tmp_path / "named.sh") == []
    assert s.status(["999"])["999"].state == "unknown"
    s.wait([a], timeout=30)
