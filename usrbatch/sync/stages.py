"""The stages pull and push share: observe both sides and plan, lock, recover an interrupted
promotion, finish with the `sync.done` line; and the notes they print. See sync/engine.py for
the invariants every sync keeps."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from usrbatch.auditlog import get_logger
from usrbatch.dataset.event_revision import (
    ABSENT,
    EventRevision,
)
from usrbatch.dataset.layout import (
    EVENTS,
    RECORDS,
    dataset_dir,
)
from usrbatch.dataset.locks import dataset_lock, event_lock
from usrbatch.sync import staging as stg
from usrbatch.sync.inventory import (
    local_inventory,
    reject_reserved,
    reject_unsafe,
    remote_inventory,
)
from usrbatch.sync.options import SyncOptions
from usrbatch.sync.plan import DiffSummary, SyncPlan, build_plan
from usrbatch.sync.result import (
    SyncResult,
    finish,
    primary_of_inventory,
)
from usrbatch.sync.verify import (
    local_parquet_shape,
    resolve_verify_mode,
)
from usrbatch.transport.base import Inventory, Transport

LOCAL_CHANGED = "Local event log changed while the full pull was staged; refusing destination promotion."
DRY_RUN_PUSH_NOTE = (
    "Dry-run observed a valid remote event-log prefix without mutation; an actual push rechecks it "
    "under transaction locks."
)
PENDING_NOTE = "An interrupted pull promotion is pending; the next pull or push completes it first."
KEPT_LOCAL = "The local records.parquet this pull replaced (no snapshot held it) is kept as"
KEPT_REMOTE = "The remote records.parquet this push replaced (no snapshot held it) is kept as"


@dataclass(frozen=True)
class Observation:
    local: Inventory
    remote: Inventory
    plan: SyncPlan


def remote_revision(inv: Inventory) -> EventRevision:
    entry = inv.files.get(EVENTS)
    if entry is None:
        return ABSENT
    return EventRevision(True, entry.size, entry.sha256, int(inv.events_lines or 0))


def observe(root: Path, ds: str, transport: Transport, opts: SyncOptions, direction: str) -> Observation:
    """Both inventories (one transport round trip), unsafe entries rejected, then the plan."""
    parquet = opts.verify == "parquet"
    remote = remote_inventory(transport, ds, parquet_stats=parquet)
    reject_unsafe(remote, side="Remote", where=f"{transport.label}/{ds}")
    reject_reserved(remote, side="Remote", where=f"{transport.label}/{ds}")
    local_dir = dataset_dir(root, ds)
    local = local_inventory(local_dir)
    reject_unsafe(local, side="Local", where=str(local_dir))
    reject_reserved(local, side="Local", where=str(local_dir))
    if parquet and RECORDS in local.files:
        local = dataclasses.replace(local, primary_shape=local_parquet_shape(local_dir / RECORDS))
    mode, notes = resolve_verify_mode(opts.verify, primary_of_inventory(remote))
    plan = build_plan(
        ds,
        local,
        remote,
        direction=direction,  # type: ignore[arg-type]
        verify_mode=mode,
        verify_notes=notes,
        primary_only=opts.primary_only,
        skip_snapshots=opts.skip_snapshots,
    )
    if direction != "diff":
        plan = dataclasses.replace(
            plan, summary=dataclasses.replace(plan.summary, has_change=plan.has_change)
        )
    get_logger().info(
        "sync.plan",
        dataset=ds,
        action=direction,
        files_to_send=len(plan.send),
        files_to_delete=len(plan.delete),
        bytes=plan.bytes_to_send,
        has_change=plan.summary.has_change,
        local_files=len(local.files),
        remote_files=len(remote.files),
        local_hashed_bytes=local.hashed_bytes,  # 0 when every hash came from the cache
        remote_hashed_bytes=remote.hashed_bytes,
    )
    return Observation(local, remote, plan)


def done(action: str, ds: str, summary: DiffSummary, opts: SyncOptions, started: float, **kw) -> SyncResult:
    return finish(action, ds, summary, dry_run=opts.dry_run, started=started, **kw)


def done_transferred(
    action: str, ds: str, plan: SyncPlan, opts: SyncOptions, started: float, notes: list[str]
) -> SyncResult:
    """done for a pull or push that moved `plan` under its locks."""
    return done(
        action,
        ds,
        plan.summary,
        opts,
        started,
        files_sent=len(plan.send),
        bytes_sent=plan.bytes_to_send,
        files_deleted=len(plan.delete),
        locked=True,
        notes=notes,
    )


@contextmanager
def local_lock(local_dir: Path, ds: str, opts: SyncOptions) -> Iterator[None]:
    local_dir.mkdir(parents=True, exist_ok=True)
    with dataset_lock(local_dir, timeout=opts.lock_timeout):
        yield


def local_event_lock(local_dir: Path, ds: str, opts: SyncOptions):
    return event_lock(local_dir, timeout=opts.lock_timeout)


def recover_interrupted(root: Path, ds: str, local_dir: Path, opts: SyncOptions) -> list[str]:
    """Roll forward interrupted promotions (under the local dataset and event locks). Staging dirs
    without a journal are left for the next download to resume (see staging.prepare_staging)."""
    if not stg.pending_journals(root, ds, local_dir):
        return []
    notes: list[str] = []
    with local_lock(local_dir, ds, opts), local_event_lock(local_dir, ds, opts):
        for staging in stg.pending_journals(root, ds, local_dir):
            installed, deleted = stg.roll_forward(staging, local_dir)
            get_logger().info(
                "sync.promotion.rolled_forward", dataset=ds, installed=installed, deleted=deleted
            )
            notes.append(
                f"Completed an interrupted pull promotion ({installed} file(s) installed, {deleted} removed)."
            )
    return notes


def check_flags(opts: SyncOptions) -> None:
    opts.validate()
