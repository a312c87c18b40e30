"""What a running job records about itself: `python -m usrbatch.jobs.record check|started|finished|retry`.

Rendered job scripts call this (also reachable as `usrbatch job-event ...`), so the audit-log
schema (docs/audit-log.md) is produced in one place, by structlog. The job context comes from the
environment the script exports ($USRBATCH_LOOP_DIR, $USRBATCH_JOB_KEY, $USRBATCH_AUDIT_LOG and the
fields bound by `bind_job_context_from_env`). Besides the audit line, each job leaves small files
under `<loop dir>/jobs/` that its dependents read at start (`<key>.outcome.json`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import sys
import time
from pathlib import Path

from usrbatch import auditlog
from usrbatch.files import atomic_write_text


def _write_atomic(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data))


def jobs_dir(loop_dir: Path) -> Path:
    return Path(loop_dir) / "jobs"


def outcome_path(loop_dir: Path, key: str) -> Path:
    return jobs_dir(loop_dir) / f"{key}.outcome.json"


def read_outcome(loop_dir: Path, key: str) -> dict | None:
    """The recorded outcome of job `key` ({exit_code, outcome, duration_s, ...}) or None."""
    try:
        return json.loads(outcome_path(loop_dir, key).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def combined_outcome(loop_dir: Path, keys: list[str]) -> dict | None:
    """One job's outcome from its record keys (one per shard): the first failed or refused shard's,
    else, once every shard succeeded, a success with the longest shard's duration; else None."""
    if len(keys) == 1:
        return read_outcome(loop_dir, keys[0])
    outcomes = [read_outcome(loop_dir, k) for k in keys]
    for outcome in outcomes:
        if outcome is not None and outcome.get("exit_code") != 0:
            return outcome
    if any(o is None for o in outcomes):
        return None
    durations = [o.get("duration_s") for o in outcomes if isinstance(o.get("duration_s"), int | float)]
    return {
        "key": keys[0].rsplit(".s", 1)[0],
        "exit_code": 0,
        "outcome": "succeeded",
        "duration_s": max(durations) if durations else None,
        "shards": len(keys),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _context() -> tuple[Path, str]:
    try:
        return Path(os.environ["USRBATCH_LOOP_DIR"]), os.environ["USRBATCH_JOB_KEY"]
    except KeyError as exc:
        raise SystemExit(
            f"usrbatch job-event: ${exc.args[0]} is not set (run inside a usrbatch job)"
        ) from exc


def cmd_check(after: list[str]) -> int:
    """Exit 0 when every predecessor finished with exit 0; else log job.refused and exit 1."""
    loop_dir, key = _context()
    bad = []
    for pred in after:
        outcome = read_outcome(loop_dir, pred)
        if outcome is None or outcome.get("exit_code") != 0:
            bad.append({"key": pred, "outcome": (outcome or {}).get("outcome", "missing")})
    if not bad:
        return 0
    log = auditlog.get_logger()
    log.info("job.refused", job_key=key, predecessors=bad, host=socket.gethostname())
    _write_atomic(
        outcome_path(loop_dir, key),
        {"key": key, "exit_code": None, "outcome": "refused", "ts": _now(), "predecessors": bad},
    )
    print(f"usrbatch: not running {key}: predecessor(s) did not succeed: {bad}", file=sys.stderr)
    return 1


def cmd_started() -> int:
    loop_dir, key = _context()
    # A rerun (SGE `qmod -cj`, --resume) starts afresh: forget the previous outcome.
    outcome_path(loop_dir, key).unlink(missing_ok=True)
    _write_atomic(
        jobs_dir(loop_dir) / f"{key}.started.json", {"key": key, "ts": _now(), "epoch": time.time()}
    )
    auditlog.get_logger().info("job.started", job_key=key, host=socket.gethostname(), pid=os.getppid())
    return 0


def cmd_finished(exit_code: int, started_epoch: float | None = None, ended_epoch: float | None = None) -> int:
    """Record the outcome; duration from the script's own clock readings when given."""
    loop_dir, key = _context()
    duration = None
    if started_epoch is None:
        try:
            started = json.loads((jobs_dir(loop_dir) / f"{key}.started.json").read_text())
            started_epoch = float(started["epoch"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError, ValueError):
            started_epoch = None
    if started_epoch is not None:
        duration = round((ended_epoch or time.time()) - started_epoch, 3)
    outcome = "succeeded" if exit_code == 0 else "failed"
    _write_atomic(
        outcome_path(loop_dir, key),
        {"key": key, "exit_code": exit_code, "outcome": outcome, "duration_s": duration, "ts": _now()},
    )
    auditlog.get_logger().info(
        "job.finished", job_key=key, exit_code=exit_code, outcome=outcome, duration_s=duration
    )
    return 0


def cmd_retry(attempt: int, exit_code: int, delay: float) -> int:
    _loop_dir, key = _context()
    auditlog.get_logger().info("job.retry", job_key=key, attempt=attempt, exit_code=exit_code, delay_s=delay)
    return 0


def _epoch(text: str) -> float | None:
    # `date +%s.%N` on a system without %N prints a literal "N": keep what parses.
    try:
        return float(text.rstrip("N").rstrip("."))
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="usrbatch job-event", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    check = sub.add_parser("check", help="refuse (exit 1) unless every predecessor succeeded")
    check.add_argument("after", nargs="*", help="predecessor job keys")
    sub.add_parser("started", help="record job.started")
    start = sub.add_parser("start", help="check, then record job.started (one process instead of two)")
    start.add_argument("after", nargs="*", help="predecessor job keys")
    fin = sub.add_parser("finished", help="record job.finished")
    fin.add_argument("--exit-code", type=int, required=True)
    fin.add_argument("--started-epoch", type=_epoch, default=None, help="job start (date +%%s.%%N)")
    fin.add_argument("--ended-epoch", type=_epoch, default=None, help="job end (date +%%s.%%N)")
    retry = sub.add_parser("retry", help="record job.retry")
    retry.add_argument("--attempt", type=int, required=True)
    retry.add_argument("--exit-code", type=int, required=True)
    retry.add_argument("--delay", type=float, required=True)
    args = parser.parse_args(argv)
    auditlog.configure(os.environ.get("USRBATCH_AUDIT_LOG") or None)
    auditlog.bind_job_context_from_env()
    if args.what == "check":
        return cmd_check(args.after)
    if args.what == "started":
        return cmd_started()
    if args.what == "start":
        return cmd_check(args.after) or cmd_started()
    if args.what == "finished":
        return cmd_finished(args.exit_code, args.started_epoch, args.ended_epoch)
    return cmd_retry(args.attempt, args.exit_code, args.delay)


if __name__ == "__main__":
    sys.exit(main())
