"""The watcher on real loops (the embedded local scheduler) with a real HTTP receiver: one alert
per failure, no storms, the spool replays a failed delivery, a restart sends nothing twice, and a
job killed without job.finished is reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from receivers import HttpReceiver, write_loop_spec

from usrbatch.jobs.control import cancel_loop, wait_loop
from usrbatch.jobs.loop import load_spec
from usrbatch.jobs.submit import submit_loop
from usrbatch.monitor import ledger as ledger_mod
from usrbatch.monitor import spool
from usrbatch.monitor.config import load_config
from usrbatch.monitor.watcher import Watcher

TIMEOUT = 120


def _watcher(cfg_path: Path, state: Path, loop_dirs: list[Path], **kw: object) -> Watcher:
    return Watcher(config=load_config(cfg_path), state_dir=state, find_loops=lambda: loop_dirs, **kw)  # type: ignore[arg-type]


def _hook_config(write_config, rec: HttpReceiver, **watch: object) -> Path:  # noqa: ANN001
    return write_config(
        {
            "targets": {"hook": {"type": "webhook", "url": f"{rec.url}/hook"}},
            "watch": {"status_interval_s": 0, **watch},
        }
    )


def _alert_ids(rec: HttpReceiver) -> list[str]:
    return [a["id"] for body in rec.bodies() for a in body["alerts"]]


def _until(predicate, timeout: float = TIMEOUT, step: float = 0.5) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(step)


def test_a_failing_30_job_loop_sends_one_alert_and_a_restart_sends_nothing(
    tmp_path: Path, http_receiver: HttpReceiver, write_config
) -> None:  # noqa: ANN001
    steps = [
        {"kind": "shell", "name": "boom", "command": "echo failing >&2; exit 3"},
        {"kind": "shell", "name": "after", "command": "true"},
        {"kind": "shell", "name": "more", "command": "true"},
    ]
    spec = load_spec(write_loop_spec(tmp_path / "ws", "local", "storm", steps, iterations=10))
    submit_loop(spec, emit=lambda _m: None)
    cfg = _hook_config(write_config, http_receiver)
    state = tmp_path / "watch-state"
    watcher = _watcher(cfg, state, [spec.loop_dir])
    try:
        status = wait_loop(spec.loop_dir, timeout=TIMEOUT)
        assert status.state == "failed" and len(status.jobs) == 30
        for _ in range(3):
            watcher.poll(force_status=True)
    finally:
        cancel_loop(spec.loop_dir)
    bodies = http_receiver.bodies()
    assert len(bodies) == 1, bodies
    assert bodies[0]["event"] == "job.failed" and bodies[0]["loop_id"] == spec.loop_id
    assert bodies[0]["alerts"][0]["fields"]["exit_code"] == 3
    # A new watcher process on the same state dir: nothing again.
    again = _watcher(cfg, state, [spec.loop_dir])
    result = again.poll(force_status=True)
    assert result.alerts == () and len(http_receiver.bodies()) == 1


def test_killed_between_queue_and_ledger_the_restart_sends_once(
    tmp_path: Path, http_receiver: HttpReceiver, write_config, monkeypatch
) -> None:  # noqa: ANN001
    spec = load_spec(
        write_loop_spec(
            tmp_path / "ws", "local", "crash", [{"kind": "shell", "name": "boom", "command": "exit 5"}]
        )
    )
    submit_loop(spec, emit=lambda _m: None)
    assert wait_loop(spec.loop_dir, timeout=TIMEOUT).state == "failed"
    cfg = _hook_config(write_config, http_receiver)
    state = tmp_path / "watch-state"

    def killed(*_a: object) -> None:
        raise KeyboardInterrupt("watcher killed after queuing, before saving its ledger")

    monkeypatch.setattr("usrbatch.monitor.watcher.save_ledger", killed)
    with pytest.raises(KeyboardInterrupt):
        _watcher(cfg, state, [spec.loop_dir]).poll(force_status=True)
    assert http_receiver.bodies() == [] and len(list(spool.entries(spool.spool_dir(state)))) == 1
    monkeypatch.setattr("usrbatch.monitor.watcher.save_ledger", ledger_mod.save_ledger)
    for _ in range(2):
        _watcher(cfg, state, [spec.loop_dir]).poll(force_status=True)
    assert _alert_ids(http_receiver) == [
        f"{spec.loop_id}/{json.loads((spec.loop_dir / 'state.json').read_text())['jobs'][0]['scheduler_id']}/failed"
    ]


def test_a_failed_delivery_lands_from_the_spool_later(
    tmp_path: Path, http_receiver: HttpReceiver, write_config
) -> None:  # noqa: ANN001
    spec = load_spec(
        write_loop_spec(
            tmp_path / "ws",
            "local",
            "ok",
            [{"kind": "shell", "name": "work", "command": "true"}, {"kind": "sync", "action": "push"}],
        )
    )
    submit_loop(spec, emit=lambda _m: None)
    assert wait_loop(spec.loop_dir, timeout=TIMEOUT).state == "completed"
    cfg = _hook_config(write_config, http_receiver)
    state = tmp_path / "watch-state"
    clock = [time.time()]
    watcher = _watcher(cfg, state, [spec.loop_dir], clock=lambda: clock[0])
    http_receiver.fail_next = 10  # the receiver is down
    first = watcher.poll(force_status=True)
    assert first.delivered == 0 and first.failed == 2 and all("HTTP 503" in e for e in first.errors)
    queued = list(spool.entries(spool.spool_dir(state)))
    assert sorted(e.message.event for e in queued) == ["loop.completed", "sync.transferred"]
    assert all(e.attempts == 1 and e.next_try > clock[0] for e in queued)
    http_receiver.fail_next = 0  # back up, but the backoff is not over yet
    assert watcher.poll().waiting == 2 and http_receiver.bodies() == []
    clock[0] += 3600
    later = watcher.poll()
    assert later.delivered == 2 and later.alerts == ()
    assert sorted(b["event"] for b in http_receiver.bodies()) == ["loop.completed", "sync.transferred"]
    sync = next(b for b in http_receiver.bodies() if b["event"] == "sync.transferred")
    assert sync["alerts"][0]["fields"]["bytes"] > 0 and sync["alerts"][0]["fields"]["action"] == "push"
    assert list(spool.entries(spool.spool_dir(state))) == []
    clock[0] += 3600
    assert watcher.poll().delivered == 0 and len(http_receiver.bodies()) == 2


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            out.extend([int(child), *_descendants(int(child))])
    return out


def test_a_job_killed_without_job_finished_is_reported(
    tmp_path: Path, http_receiver: HttpReceiver, write_config
) -> None:  # noqa: ANN001
    spec = load_spec(
        write_loop_spec(
            tmp_path / "ws", "local", "kill", [{"kind": "shell", "name": "long", "command": "sleep 120"}]
        )
    )
    submit_loop(spec, emit=lambda _m: None)
    audit = spec.loop_dir / "audit.jsonl"
    cfg = _hook_config(write_config, http_receiver)
    watcher = _watcher(cfg, tmp_path / "watch-state", [spec.loop_dir])
    try:
        _until(lambda: audit.exists() and '"job.started"' in audit.read_text())
        pid = next(json.loads(x)["pid"] for x in audit.read_text().splitlines() if '"job.started"' in x)
        victims = [pid, *_descendants(pid)]
        for p in victims:  # SIGKILL: no trap runs, so no job.finished (like a node failure)
            os.kill(p, signal.SIGKILL)
        _until(lambda: wait_loop(spec.loop_dir, timeout=0).jobs[0].sched_state == "failed")
        first = watcher.poll(force_status=True)
        assert first.alerts == ()  # one status call is not enough to call it killed
        watcher.poll(force_status=True)
    finally:
        cancel_loop(spec.loop_dir)
    bodies = http_receiver.bodies()
    assert [b["event"] for b in bodies] == ["job.killed"]
    assert "while running" in bodies[0]["title"] and '"job.finished"' not in audit.read_text()


def test_watch_follow_killed_and_restarted_sends_each_alert_once(
    tmp_path: Path, http_receiver: HttpReceiver, write_config
) -> None:  # noqa: ANN001
    steps = [{"kind": "shell", "name": "work", "command": "sleep 1"}, {"kind": "sync", "action": "push"}]
    spec = load_spec(write_loop_spec(tmp_path / "ws", "local", "follow", steps, iterations=3))
    cfg = write_config(
        {
            "targets": {"hook": {"type": "webhook", "url": f"{http_receiver.url}/hook"}},
            "watch": {"poll_s": 0.3, "status_interval_s": 1},
        }
    )
    argv = [
        sys.executable,
        "-m",
        "usrbatch.cli.usrbatch_main",
        "watch",
        spec.loop_id,
        "--loops-dir",
        str(spec.loop_dir.parent),
        "--follow",
        "--config",
        str(cfg),
        "--state-dir",
        str(tmp_path / "watch-state"),
    ]
    submit_loop(spec, emit=lambda _m: None)
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _until(lambda: len(http_receiver.bodies()) >= 1)
        first.kill()  # SIGKILL: no clean-up at all
        first.wait()
        killed_at = len(http_receiver.bodies())
        assert wait_loop(spec.loop_dir, timeout=TIMEOUT).state == "completed"
        second = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _until(lambda: any(b["event"] == "loop.completed" for b in http_receiver.bodies()))
            time.sleep(2)  # a few more polls: nothing more may arrive
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    ids = _alert_ids(http_receiver)
    assert len(ids) == len(set(ids)), ids
    # Alerts of one poll share a message per loop and kind, so count alerts, not messages.
    events = sorted(a["event"] for b in http_receiver.bodies() for a in b["alerts"])
    assert events == ["loop.completed", "sync.transferred", "sync.transferred", "sync.transferred"], (
        events,
        killed_at,
    )


def test_heartbeat_goes_only_where_asked_once_per_period(
    tmp_path: Path, http_receiver: HttpReceiver, write_config
) -> None:  # noqa: ANN001
    cfg = write_config(
        {
            "targets": {
                "beat": {
                    "type": "webhook",
                    "url": f"{http_receiver.url}/beat",
                    "events": ["watch.heartbeat"],
                },
                "all": {"type": "webhook", "url": f"{http_receiver.url}/all"},
            },
            "watch": {"heartbeat_s": 600},
        }
    )
    clock = [1_800_000_000.0]
    watcher = _watcher(cfg, tmp_path / "state", [], heartbeat=True, clock=lambda: clock[0])
    watcher.poll()
    clock[0] += 60
    watcher.poll()  # same period: no second heartbeat
    clock[0] += 600
    watcher.poll()
    assert [b["event"] for b in http_receiver.bodies("/beat")] == ["watch.heartbeat", "watch.heartbeat"]
    assert http_receiver.bodies("/all") == []


def test_dataset_events_are_summarised(tmp_path: Path, http_receiver: HttpReceiver, write_config) -> None:  # noqa: ANN001
    from usrbatch.dataset.records import import_records

    spec = load_spec(
        write_loop_spec(tmp_path / "ws", "local", "ds", [{"kind": "shell", "name": "a", "command": "true"}])
    )
    submit_loop(spec, emit=lambda _m: None)
    assert wait_loop(spec.loop_dir, timeout=TIMEOUT).state == "completed"
    cfg = write_config(
        {
            "targets": {
                "hook": {"type": "webhook", "url": f"{http_receiver.url}/hook", "events": ["dataset.events"]}
            }
        }
    )
    watcher = _watcher(cfg, tmp_path / "state", [spec.loop_dir], dataset_events=True)
    watcher.poll(force_status=True)
    first = http_receiver.bodies()
    assert len(first) == 1 and first[0]["alerts"][0]["fields"]["actions"] == {"import_rows": 1, "init": 1}
    import_records(tmp_path / "ws" / "local" / "ns" / "demo", [{"sequence": "TTTTAAAACC"}])
    watcher.poll(force_status=True)
    assert [b["alerts"][0]["fields"]["actions"] for b in http_receiver.bodies()[1:]] == [{"import_rows": 1}]


def test_two_watchers_cannot_share_a_state_dir(tmp_path: Path) -> None:
    from usrbatch.errors import UsrError

    busy = pytest.raises(UsrError, match=f"another usrbatch watch \\(pid {os.getpid()}\\)")
    with ledger_mod.exclusive(tmp_path / "state"), busy, ledger_mod.exclusive(tmp_path / "state"):
        pass
    with ledger_mod.exclusive(tmp_path / "state"):  # released: usable again
        pass


def test_cli_once_and_test(tmp_path: Path, http_receiver: HttpReceiver, write_config, capsys) -> None:  # noqa: ANN001
    from usrbatch.cli.common import run_cli
    from usrbatch.cli.usrbatch_main import usrbatch

    spec = load_spec(
        write_loop_spec(
            tmp_path / "ws", "local", "cli", [{"kind": "shell", "name": "a", "command": "exit 4"}]
        )
    )
    submit_loop(spec, emit=lambda _m: None)
    assert wait_loop(spec.loop_dir, timeout=TIMEOUT).state == "failed"
    cfg = _hook_config(write_config, http_receiver)
    common = [
        "--config",
        str(cfg),
        "--state-dir",
        str(tmp_path / "state"),
        "--loops-dir",
        str(spec.loop_dir.parent),
    ]
    assert run_cli(usrbatch, ["watch", "--all", "--once", *common]) == 0
    out = capsys.readouterr().out
    assert (
        f"job.failed: {spec.loop_id}: job i001-01-a failed (exit 4)" in out and "queued 1, delivered 1" in out
    )
    assert run_cli(usrbatch, ["watch", spec.loop_id, "--once", *common]) == 0
    assert capsys.readouterr().out == ""  # nothing new
    assert run_cli(usrbatch, ["watch", "--test", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out == "hook: sent\n"
    assert [b["event"] for b in http_receiver.bodies()] == ["job.failed", "watch.test"]
    assert run_cli(usrbatch, ["watch", "--once", *common]) == 2
    assert capsys.readouterr().out.startswith("ERROR: no loop to watch")


def test_problems_after_a_problem_message_wait_for_one_summary(
    tmp_path: Path, http_receiver: HttpReceiver, write_config
) -> None:  # noqa: ANN001
    spec = load_spec(
        write_loop_spec(
            tmp_path / "ws", "local", "again", [{"kind": "shell", "name": "a", "command": "exit 3"}]
        )
    )
    cfg = _hook_config(write_config, http_receiver, group_window_s=300)
    clock = [time.time()]
    state = tmp_path / "state"
    submit_loop(spec, emit=lambda _m: None)
    assert wait_loop(spec.loop_dir, timeout=TIMEOUT).state == "failed"
    _watcher(cfg, state, [spec.loop_dir], clock=lambda: clock[0]).poll(force_status=True)
    assert [len(b["alerts"]) for b in http_receiver.bodies()] == [1]
    for _ in range(2):  # the user resubmits twice within minutes; both fail again
        submit_loop(spec, resume=True, emit=lambda _m: None)
        assert wait_loop(spec.loop_dir, timeout=TIMEOUT).state == "failed"
        clock[0] += 60
        held = _watcher(cfg, state, [spec.loop_dir], clock=lambda: clock[0]).poll(
            force_status=True
        )  # a restart too
        assert held.alerts == () and any("held" in n for n in held.notes)
    assert len(http_receiver.bodies()) == 1
    clock[0] += 300
    _watcher(cfg, state, [spec.loop_dir], clock=lambda: clock[0]).poll(force_status=True)
    bodies = http_receiver.bodies()
    assert [len(b["alerts"]) for b in bodies] == [1, 2] and bodies[1]["event"] == "job.failed"
    assert len({a["id"] for b in bodies for a in b["alerts"]}) == 3


def test_a_corrupt_loop_does_not_blind_the_watcher(
    tmp_path: Path, http_receiver: HttpReceiver, write_config
) -> None:  # noqa: ANN001
    spec = load_spec(
        write_loop_spec(
            tmp_path / "ws", "local", "fine", [{"kind": "shell", "name": "a", "command": "exit 2"}]
        )
    )
    submit_loop(spec, emit=lambda _m: None)
    assert wait_loop(spec.loop_dir, timeout=TIMEOUT).state == "failed"
    broken = tmp_path / "loops" / "broken"
    broken.mkdir(parents=True)
    (broken / "state.json").write_text("{not json")
    result = _watcher(
        _hook_config(write_config, http_receiver), tmp_path / "state", [broken, spec.loop_dir]
    ).poll()
    assert any(n.startswith(f"{broken}: skipped: loop state is corrupt") for n in result.notes)
    assert [b["event"] for b in http_receiver.bodies()] == ["job.failed"]


def test_finished_jobs_cost_the_scheduler_nothing(
    tmp_path: Path, http_receiver: HttpReceiver, write_config, monkeypatch
) -> None:  # noqa: ANN001
    """An SGE loop whose jobs all recorded an outcome is judged without qstat/qacct (none on PATH
    here); a loop with a job still out there needs the scheduler, and says it is unreachable."""
    from usrbatch.jobs.loop import JobRecord, LoopState, save_state

    def sge_loop(name: str, outcomes: int) -> Path:
        loop_dir = tmp_path / "loops" / name
        jobs = []
        for i in range(2):
            job = JobRecord(
                key=f"i001-0{i + 1}-s{i}",
                step=f"s{i}",
                kind="shell",
                iteration=1,
                index=i,
                name=f"ub.{name}.{i}",
                after=[],
            )
            job.status, job.scheduler_id = "submitted", str(9000 + i + (10 if outcomes < 2 else 0))
            jobs.append(job)
            if i < outcomes:
                (loop_dir / "jobs").mkdir(parents=True, exist_ok=True)
                (loop_dir / "jobs" / f"{job.key}.outcome.json").write_text(
                    json.dumps(
                        {
                            "key": job.key,
                            "exit_code": 0,
                            "outcome": "succeeded",
                            "duration_s": 1.0,
                            "ts": "2026-11-26T10:00:00Z",
                        }
                    )
                )
        save_state(
            loop_dir,
            LoopState(
                name, str(tmp_path / "l.yaml"), "sge", "ns/demo", str(tmp_path), "2026-11-26T09:00:00Z", jobs
            ),
        )
        return loop_dir

    done, busy = sge_loop("done", 2), sge_loop("busy", 1)
    empty = tmp_path / "no-scheduler-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = _watcher(_hook_config(write_config, http_receiver), tmp_path / "state", [done, busy]).poll(
        force_status=True
    )
    assert [b["event"] for b in http_receiver.bodies()] == ["loop.completed"]
    assert http_receiver.bodies()[0]["loop_id"] == "done"
    assert [n.split(":")[0] for n in result.notes] == ["busy"] and "scheduler unreachable" in result.notes[0]


def test_secrets_stay_out_of_the_spool_the_log_and_the_output(
    tmp_path: Path, http_receiver: HttpReceiver, write_config, capsys
) -> None:  # noqa: ANN001
    from receivers import secret_file

    from usrbatch.cli.common import run_cli
    from usrbatch.cli.usrbatch_main import usrbatch

    spec = load_spec(
        write_loop_spec(
            tmp_path / "ws", "local", "sec", [{"kind": "shell", "name": "a", "command": "exit 6"}]
        )
    )
    submit_loop(spec, emit=lambda _m: None)
    assert wait_loop(spec.loop_dir, timeout=TIMEOUT).state == "failed"
    secret = "T0SECRET/B0SECRET/xoxbLikeSecretPath9"
    url_file = secret_file(tmp_path, "slack-url", f"{http_receiver.url}/services/{secret}")
    cfg = write_config({"targets": {"team": {"type": "slack", "url_file": str(url_file)}}})
    state = tmp_path / "state"
    http_receiver.fail_next = 1
    argv = [
        "watch",
        "--all",
        "--once",
        "--config",
        str(cfg),
        "--state-dir",
        str(state),
        "--loops-dir",
        str(spec.loop_dir.parent),
    ]
    assert run_cli(usrbatch, argv) == 0
    out = capsys.readouterr().out
    assert "delivery failed: team: HTTP 503" in out
    written = [p for p in state.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"ledger.json", "watch.jsonl"} and any(
        p.parent.name == "spool" for p in written
    )
    for text in [out, *(p.read_text() for p in written)]:
        assert "SECRET" not in text and "xoxbLikeSecretPath9" not in text
    assert "watch.delivery_failed" in (state / "watch.jsonl").read_text()
