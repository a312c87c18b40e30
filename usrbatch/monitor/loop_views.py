"""The joined status of many loops with one scheduler call per scheduler (per loop for `local`,
whose state lives in the loop dir): what the watcher and `usrbatch metrics` both need."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from usrbatch.errors import JobError
from usrbatch.jobs.loop import LoopState, load_state, state_path
from usrbatch.jobs.record import read_outcome
from usrbatch.jobs.scheduler import JobInfo, Scheduler
from usrbatch.jobs.status import LoopStatus, loop_status, scheduler_for


class _Answered:
    """The loop's own scheduler, except that `status` answers from one earlier batched call (no new
    scheduler call); everything else (failure hints, names) is the real scheduler's."""

    def __init__(self, inner: Scheduler, infos: dict[str, JobInfo]) -> None:
        self.inner = inner
        self.infos = infos

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def status(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        return {i: self.infos[i] for i in ids if i in self.infos}


@dataclass(frozen=True)
class LoopView:
    """A loop, its saved state, and its joined status (None with `error` when the scheduler did not answer)."""

    loop_dir: Path
    state: LoopState
    status: LoopStatus | None
    error: str = ""


def loop_views(loops: Sequence[tuple[Path, LoopState]]) -> list[LoopView]:
    """Every loop's status with one scheduler call per scheduler, asking only about jobs without a
    recorded outcome; a scheduler that does not answer leaves its loops' status None."""
    groups: dict[str, list[tuple[Path, LoopState]]] = {}
    for loop_dir, state in loops:
        key = f"local:{loop_dir}" if state.scheduler == "local" else state.scheduler
        groups.setdefault(key, []).append((loop_dir, state))
    views: list[LoopView] = []
    for members in groups.values():
        # Jobs that recorded an outcome are decided by it (status.py lets the outcome win), so only
        # the others are asked about: a finished loop costs the scheduler nothing, and SGE's
        # per-job qacct look-ups stay few however many old loops are watched.
        asks = {
            d: [j.scheduler_id for j in s.jobs if j.scheduler_id and read_outcome(d, j.key) is None]
            for d, s in members
        }
        ids = [i for d, _s in members for i in asks[d]]
        infos: dict[str, JobInfo] = {}
        error = ""
        if ids:
            first_dir, first_state = members[0]
            try:
                infos = scheduler_for(first_state, first_dir).status(ids)
            except JobError as exc:
                error = f"{first_state.scheduler} scheduler unreachable: {exc.message}"
        for d, s in members:
            if error and asks[d]:
                views.append(LoopView(d, s, None, error))
                continue
            answered = cast(Scheduler, _Answered(scheduler_for(s, d), infos))
            views.append(LoopView(d, s, loop_status(d, answered)))
    return views


def loop_bases(root: Path | None, loops_dir: Path | None) -> list[Path]:
    """Where loop dirs live: --loops-dir, then <root>/.usrbatch/loops (root: $USR_ROOT, else cwd)."""
    bases = [Path(loops_dir)] if loops_dir is not None else []
    bases.append(Path(root or os.environ.get("USR_ROOT") or os.getcwd()) / ".usrbatch" / "loops")
    return bases


def all_loop_dirs(bases: Sequence[Path]) -> list[Path]:
    """Every submitted loop (a dir with state.json) under `bases`, sorted, found afresh each call
    (a --follow watcher picks up loops submitted after it started)."""
    found: dict[Path, None] = {}
    for base in bases:
        if base.is_dir():
            for child in sorted(base.iterdir()):
                if state_path(child).is_file():
                    found[child.absolute()] = None
    return list(found)


def load_loops(dirs: Sequence[Path]) -> list[tuple[Path, LoopState]]:
    """(dir, state) of each loop dir that has a state file."""
    out = []
    for d in dirs:
        state = load_state(d)
        if state is not None:
            out.append((d, state))
    return out
