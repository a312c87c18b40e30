"""The stages pull and push share: start (flags, dataset id, recovery of an interrupted
promotion), observe both sides and plan, lock both sides and observe again under the locks,
finish with the `sync.done` line; and the notes they print. See sync/engine.py for the
invariants every sync keeps."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from usrbatch.auditlog import get_logger
from usrbatch.dataset.event_revision import (
    ABSENT,
    EventRevision,
    capture_validated_revision,
)
from usrbatch.dataset.layout import (
    EVENTS,
    RECORDS,
    dataset_dir,
    normalize_dataset_id,
)
from usrbatch.dataset.locks import dataset_lock, event_lock
from usrbatch.errors import DatasetError, VerificationError
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
    PlanHook,
    SyncResult,
    finish,
    primary_of_inventory,
)
from usrbatch.sync.verify import (
    local_parquet_shape,
    resolve_verify_mode,
)
from usrbatch.transport.base import Inventory, Lease, Transport

SyncAction = Literal["pull", "push"]
LOCAL_CHANGED = "Local event log changed while the full pull was staged; refusing destination promotion."
PUSH_LOCAL_CHANGED = "Event log changed during validation"
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


def observe(
    root: Path,
    ds: str,
    transport: Transport,
    opts: SyncOptions,
    direction: str,
    remote: Inventory | None = None,
) -> Observation:
    """Both inventories (one transport round trip, none when `remote` is given: the lease's),
    unsafe entries rejected, then the plan."""
    parquet = opts.verify == "parquet"
    if remote is None:
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


@dataclass(frozen=True)
class Start:
    """A pull or push whose flags are checked and whose interrupted promotion (if any) is done."""

    action: SyncAction
    started: float
    opts: SyncOptions
    root: Path
    ds: str
    local_dir: Path
    notes: list[str]  # appended to as the sync runs; printed with the result

    def done(self, summary: DiffSummary, **kw) -> SyncResult:
        return done(self.action, self.ds, summary, self.opts, self.started, notes=self.notes, **kw)

    def done_transferred(self, plan: SyncPlan) -> SyncResult:
        """done for a sync that moved `plan` under its locks."""
        return self.done(
            plan.summary,
            files_sent=len(plan.send),
            bytes_sent=plan.bytes_to_send,
            files_deleted=len(plan.delete),
            locked=True,
        )


@dataclass(frozen=True)
class Locked:
    """Both sides locked and observed again under the locks; `local_rev` is the local event
    revision captured under the local event lock (ABSENT unless `opts.full`)."""

    lease: Lease
    obs: Observation
    local_rev: EventRevision


def begin(action: SyncAction, root: Path, dataset_id: str, opts: SyncOptions | None) -> Start:
    """Check the flags and the dataset id, then (unless a dry run) roll forward an interrupted
    pull promotion. Raises DatasetError when a push has no local primary."""
    started = time.monotonic()
    opts = opts or SyncOptions()
    opts.validate()
    root = Path(root)
    ds = normalize_dataset_id(dataset_id)
    local_dir = dataset_dir(root, ds)
    if action == "push" and not (local_dir / RECORDS).is_file():
        raise DatasetError(f"Refusing push for dataset '{ds}': local records.parquet is missing.")
    notes = [] if opts.dry_run else recover_interrupted(root, ds, local_dir, opts)
    return Start(action, started, opts, root, ds, local_dir, notes)


def require_primary(start: Start, obs: Observation) -> None:
    """The source side of the transfer must hold records.parquet."""
    side, inv = ("remote", obs.remote) if start.action == "pull" else ("local", obs.local)
    if RECORDS not in inv.files:
        raise DatasetError(
            f"Refusing {start.action} for dataset '{start.ds}': {side} records.parquet is missing."
        )


def first_look(start: Start, transport: Transport, on_plan: PlanHook | None) -> Observation:
    """Observe and plan without locks, then show the plan (the hook may stop the sync)."""
    obs = observe(start.root, start.ds, transport, start.opts, start.action)
    require_primary(start, obs)
    if on_plan is not None:
        on_plan(obs.plan.summary)
    return obs


@contextmanager
def locked(start: Start, transport: Transport) -> Iterator[Locked]:
    """The local dataset lock and the remote lease (with the remote event-log lock in full mode:
    exclusive for a pull, shared for a push), the local event revision captured, both sides
    observed again (the remote inventory comes in the lease's own round trip). A pull holds the
    local event lock only while capturing (it takes it again to promote); a push holds it
    through remote verification, so local appenders wait until the push is proven. Raises
    VerificationError when the local log changed since the capture."""
    opts, ds, local_dir = start.opts, start.ds, start.local_dir
    events_mode = ("exclusive" if start.action == "pull" else "shared") if opts.full else "none"
    with ExitStack() as stack:
        stack.enter_context(local_lock(local_dir, ds, opts))
        lease = stack.enter_context(
            transport.lease(
                ds,
                timeout=opts.lock_timeout,
                events=events_mode,
                inventory=True,
                parquet_stats=opts.verify == "parquet",
            )
        )
        local_rev = ABSENT
        if opts.full:
            with ExitStack() as capture:
                events = local_event_lock(local_dir, ds, opts)
                (stack if start.action == "push" else capture).enter_context(events)
                local_rev = capture_validated_revision(local_dir / EVENTS)
        obs = observe(start.root, ds, transport, opts, start.action, lease.inventory)
        require_primary(start, obs)
        if opts.full:
            entry = obs.local.files.get(EVENTS)
            if (entry.sha256 if entry else None) != local_rev.sha256:
                raise VerificationError(LOCAL_CHANGED if start.action == "pull" else PUSH_LOCAL_CHANGED)
        yield Locked(lease, obs, local_rev)
