"""`usrbatch metrics`: a Prometheus textfile (text exposition format 0.0.4) for node_exporter's
textfile collector, written atomically so a scrape never sees half a file."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from usrbatch.files import atomic_target
from usrbatch.jobs.loop import LoopState
from usrbatch.jobs.status import iter_audit
from usrbatch.monitor.alerts import parse_ts
from usrbatch.monitor.ledger import load_ledger
from usrbatch.monitor.loop_views import LoopView, loop_views

TEXTFILE_NAME = "usrbatch.prom"
JOB_STATES = (
    "completed",
    "failed",
    "cancelled",
    "running",
    "pending",
    "held",
    "error-held",
    "unknown",
    "not-submitted",
)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


_FAMILIES = {
    "usrbatch_job_state": (
        "gauge",
        "State of each job of a loop: 1 for its current state, 0 for the others.",
    ),
    "usrbatch_loop_last_success_timestamp_seconds": (
        "gauge",
        "When a job of the loop last finished successfully (seconds since the epoch).",
    ),
    "usrbatch_loop_up": ("gauge", "1 when the loop's scheduler answered the status query, 0 when not."),
    "usrbatch_sync_bytes_total": ("counter", "Bytes moved by the loop's sync jobs (sum of sync.done bytes)."),
    "usrbatch_sync_duration_seconds": ("gauge", "Duration of the loop's last sync of each step and action."),
    "usrbatch_watch_heartbeat_timestamp_seconds": (
        "gauge",
        "When usrbatch watch last polled (seconds since the epoch).",
    ),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(samples: Iterable[Sample]) -> str:
    """The exposition text: HELP and TYPE once per family, samples grouped by family."""
    by_family: dict[str, list[Sample]] = {}
    for s in samples:
        by_family.setdefault(s.name, []).append(s)
    out: list[str] = []
    for name, (kind, help_text) in _FAMILIES.items():
        items = by_family.get(name)
        if not items:
            continue
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for s in items:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels)
            out.append(
                f"{name}{{{labels}}} {_format_value(s.value)}"
                if labels
                else f"{name} {_format_value(s.value)}"
            )
    return "\n".join(out) + "\n" if out else ""


def loop_samples(view: LoopView) -> list[Sample]:
    """Samples of one loop: job states, last success, sync bytes and durations."""
    state: LoopState = view.state
    base = (("loop", state.loop_id), ("dataset", state.dataset))
    samples = [Sample("usrbatch_loop_up", base, 0.0 if view.status is None else 1.0)]
    if view.status is not None:
        for job in view.status.jobs:
            labels = (*base, ("step", job.step), ("iteration", str(job.iteration)), ("job", job.key))
            for st in JOB_STATES:
                samples.append(
                    Sample("usrbatch_job_state", (*labels, ("state", st)), 1.0 if job.state == st else 0.0)
                )
    last_ok: float | None = None
    sync_bytes: dict[tuple[str, str], int] = {}
    sync_duration: dict[tuple[str, str], float] = {}
    for ev in iter_audit(view.loop_dir):
        name = ev.get("event")
        if name == "job.finished" and ev.get("outcome") == "succeeded":
            t = parse_ts(ev.get("ts"))
            if t is not None and (last_ok is None or t > last_ok):
                last_ok = t
        elif name == "sync.done":
            key = (str(ev.get("step") or ""), str(ev.get("action") or ""))
            if isinstance(ev.get("bytes"), int):
                sync_bytes[key] = sync_bytes.get(key, 0) + ev["bytes"]
            if isinstance(ev.get("duration_s"), int | float):
                sync_duration[key] = float(ev["duration_s"])
    if last_ok is not None:
        samples.append(Sample("usrbatch_loop_last_success_timestamp_seconds", base, last_ok))
    for (step, action), total in sorted(sync_bytes.items()):
        samples.append(
            Sample("usrbatch_sync_bytes_total", (*base, ("step", step), ("action", action)), float(total))
        )
    for (step, action), seconds in sorted(sync_duration.items()):
        samples.append(
            Sample("usrbatch_sync_duration_seconds", (*base, ("step", step), ("action", action)), seconds)
        )
    return samples


def collect(loops: Sequence[tuple[Path, LoopState]], watch_state_dir: Path | None = None) -> list[Sample]:
    """Samples of every loop (one scheduler call per scheduler) plus the watcher's heartbeat."""
    samples: list[Sample] = []
    for view in loop_views(loops):
        samples.extend(loop_samples(view))
    if watch_state_dir is not None:
        ledger = load_ledger(watch_state_dir)
        if ledger.polled_at:
            samples.append(Sample("usrbatch_watch_heartbeat_timestamp_seconds", (), ledger.polled_at))
    return samples


def write_textfile(directory: Path, text: str) -> Path:
    """Replace DIR/usrbatch.prom atomically (the temp name does not end in .prom, so the collector
    never reads it); readable by the node_exporter user (metrics hold no secrets)."""
    target = Path(directory) / TEXTFILE_NAME
    with atomic_target(target) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
    return target
