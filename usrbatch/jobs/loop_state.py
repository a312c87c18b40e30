"""The loop state file `<loop dir>/state.json`: every job's key, scheduler id and submit status
(JobRecord, LoopState). It is rewritten atomically before and after each submit so a re-run
resumes instead of duplicating.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from usrbatch.errors import JobError
from usrbatch.files import atomic_target


@dataclass
class JobRecord:
    """One job of a loop, as the state file records it."""

    key: str
    step: str
    kind: str
    iteration: int
    index: int
    name: str
    after: list[str]  # predecessor job keys
    status: str = "planned"  # planned | submitting | submitted
    scheduler_id: str | None = None
    submitted_at: str | None = None
    previous_ids: list[str] = field(default_factory=list)
    shards: int = 1
    attempt: int = 1  # 2, 3, ... after a resubmit (walltime, node failure)

    def record_keys(self) -> list[str]:
        """The keys its run records under `<loop dir>/jobs/` (one per shard: `<key>.s<n>`)."""
        return [self.key] if self.shards <= 1 else [shard_key(self.key, n) for n in range(1, self.shards + 1)]


def shard_key(key: str, shard: int | str) -> str:
    return f"{key}.s{shard}"


@dataclass
class LoopState:
    loop_id: str
    config: str
    scheduler: str
    dataset: str
    root: str
    created_at: str
    jobs: list[JobRecord]
    version: int = 1

    def job(self, key: str) -> JobRecord:
        for job in self.jobs:
            if job.key == key:
                return job
        raise KeyError(key)


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def state_path(loop_dir: Path) -> Path:
    return Path(loop_dir) / "state.json"


def save_state(loop_dir: Path, state: LoopState) -> None:
    """Write state.json atomically (temp file + fsync + rename); never world-readable."""
    # Group-readable as the umask allows, never world-readable (like the job scripts): the temp
    # is created 0660 minus the umask; atomic_target fsyncs it and renames it into place.
    with (
        atomic_target(state_path(loop_dir)) as tmp,
        os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660), "w", encoding="utf-8") as fh,
    ):
        json.dump(asdict(state), fh, indent=1)


def load_state(loop_dir: Path) -> LoopState | None:
    """The loop state in `loop_dir`, or None when the loop was never submitted."""
    path = state_path(loop_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise JobError(f"loop state is corrupt: {path}: {exc}") from None
    jobs = [JobRecord(**j) for j in data.pop("jobs")]
    return LoopState(jobs=jobs, **data)
