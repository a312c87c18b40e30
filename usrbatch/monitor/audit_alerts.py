"""Alerts read from log lines: a loop's audit log (docs/audit-log.md: failed and refused jobs,
syncs done) and a dataset's new `.events.log` lines, summarised by action."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from usrbatch.monitor.alerts import (
    DATASET_EVENTS,
    JOB_FAILED,
    JOB_REFUSED,
    SYNC_FAILED,
    SYNC_TRANSFERRED,
    Alert,
    utc_iso,
)
from usrbatch.terminal import iec_size


def alerts_from_audit(line: Mapping[str, Any], kinds: Mapping[str, str]) -> list[Alert]:
    """Alerts for one audit line (docs/audit-log.md); `kinds` maps job keys to step kinds."""
    name = line.get("event")
    loop = str(line.get("loop_id") or "?")
    key = str(line.get("job_key") or "")
    job_id = str(line.get("job_id") or key or "?")
    ts = str(line.get("ts") or "")
    base = {
        "step": line.get("step"),
        "iteration": line.get("iteration"),
        "job_id": line.get("job_id"),
        "job_key": key,
    }

    def make(suffix: str, event: str, title: str, text: str, **extra: Any) -> list[Alert]:
        return [
            Alert(f"{loop}/{job_id}/{suffix}", event, loop, f"{loop}: {title}", text, ts, {**base, **extra})
        ]

    if name == "job.finished" and line.get("outcome") == "failed":
        event = SYNC_FAILED if kinds.get(key) == "sync" else JOB_FAILED
        code = line.get("exit_code")
        what = "sync" if event == SYNC_FAILED else "job"
        return make(
            "failed",
            event,
            f"{what} {key} failed (exit {code})",
            f"{what} {key} (job {job_id}) of loop {loop} exited with {code} on {line.get('host', 'its node')}."
            f" See `usrbatch logs {loop} {line.get('step') or key}`.",
            exit_code=code,
            duration_s=line.get("duration_s"),
        )
    if name == "job.refused":
        preds = ", ".join(f"{p.get('key')} ({p.get('outcome')})" for p in line.get("predecessors") or [])
        return make(
            "refused",
            JOB_REFUSED,
            f"job {key} refused to run",
            f"job {key} (job {job_id}) of loop {loop} did not run: predecessor(s) did not succeed: {preds}.",
            predecessors=line.get("predecessors") or [],
        )
    if name == "sync.done":
        files, size, action = line.get("files"), line.get("bytes"), line.get("action")
        return make(
            f"sync/{ts}",
            SYNC_TRANSFERRED,
            f"sync {action} moved {files} file(s), {iec_size(size)}",
            f"{action} of {line.get('dataset')} by job {job_id} ({line.get('step')}): {files} file(s), {size} bytes, "
            f"{line.get('deleted', 0)} deleted, state {line.get('transfer_state')}, {line.get('duration_s')} s.",
            **{
                k: line.get(k)
                for k in ("action", "files", "bytes", "deleted", "duration_s", "transfer_state", "dataset")
            },
        )
    return []


def dataset_events_alert(dataset: str, lines: list[Mapping[str, Any]], now: float) -> Alert:
    actions: dict[str, int] = {}
    for line in lines:
        action = str(line.get("action") or "?")
        actions[action] = actions.get(action, 0) + 1
    summary = ", ".join(f"{a} x{n}" for a, n in sorted(actions.items()))
    last = lines[-1]
    return Alert(
        id=f"dataset/{dataset}/{last.get('timestamp_utc') or last.get('ts') or now}/{len(lines)}",
        event=DATASET_EVENTS,
        loop_id="",
        title=f"{dataset}: {len(lines)} new event(s)",
        text=f"dataset {dataset}: {summary}",
        ts=utc_iso(now),
        fields={"dataset": dataset, "actions": actions},
    )
