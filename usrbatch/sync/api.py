"""One entry for every sync: `run(action, target, transport, options, hooks) -> SyncResult`.

`diff`, `pull` and `push` of a dataset (sync/engine.py) and of one file (sync/filemode.py) go
through `run`; `run_opened` also opens the target's transport and always closes it. Callers (the
CLI, a job's sync step) resolve the target, build typed `SyncOptions`, pass the hooks that talk to
a person (plan shown / confirmation, progress), and render the `SyncResult` they get back.

FILE mode takes only `verify` and `dry_run` from the options; a caller that was given
dataset-only flags for a file refuses them with `refuse_dataset_only_flags`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from usrbatch.errors import VerificationError
from usrbatch.remotes import RemoteConfig
from usrbatch.sync import engine, filemode
from usrbatch.sync.filemode import FileTarget
from usrbatch.sync.options import SyncOptions
from usrbatch.sync.result import PlanHook, ProgressFactory, SyncResult
from usrbatch.transport.base import Transport

Action = Literal["diff", "pull", "push"]


@dataclass(frozen=True)
class DatasetTarget:
    """A dataset under a local datasets root, and the remote whose base_dir holds its twin."""

    root: Path
    dataset_id: str
    remote: RemoteConfig


SyncTarget = DatasetTarget | FileTarget


@dataclass(frozen=True)
class SyncHooks:
    """What a sync tells its caller while it runs: the plan before any change (may raise
    UserAbort to stop), and a progress factory (total bytes -> per-chunk callback)."""

    on_plan: PlanHook | None = None
    progress: ProgressFactory | None = None


def refuse_dataset_only_flags(given_flags: list[str]) -> None:
    """FILE mode takes none of the dataset-only flags (§3.5): `given_flags` are their CLI words."""
    if given_flags:
        verb = "is a dataset-only flag" if len(given_flags) == 1 else "are dataset-only flags"
        raise VerificationError(
            f"{'/'.join(given_flags)} {verb} (not valid in FILE mode).",
            hint="FILE mode verifies the one file with --verify hash|size|parquet|auto; drop the flag.",
        )


def run(
    action: Action,
    target: SyncTarget,
    transport: Transport,
    options: SyncOptions,
    hooks: SyncHooks | None = None,
) -> SyncResult:
    """Run `action` on `target` over an open `transport`; raises what the engine raises."""
    hooks = hooks or SyncHooks()
    if isinstance(target, FileTarget):
        if action == "diff":
            return filemode.diff_file(target, transport, verify=options.verify)
        transfer = filemode.pull_file if action == "pull" else filemode.push_file
        return transfer(
            target,
            transport,
            verify=options.verify,
            dry_run=options.dry_run,
            progress=hooks.progress,
            on_plan=hooks.on_plan,
        )
    if action == "diff":
        return engine.plan_diff(target.root, target.dataset_id, transport, options)
    sync = engine.pull if action == "pull" else engine.push
    return sync(
        target.root, target.dataset_id, transport, options, progress=hooks.progress, on_plan=hooks.on_plan
    )


def run_opened(
    action: Action,
    target: SyncTarget,
    open_transport: Callable[[RemoteConfig], Transport],
    options: SyncOptions,
    hooks: SyncHooks | None = None,
) -> SyncResult:
    """`run` with the transport opened from the target's remote and always closed."""
    transport = open_transport(target.remote)
    try:
        return run(action, target, transport, options, hooks)
    finally:
        transport.close()
