"""diff / pull / push: observe → plan → lock → re-plan → transfer → verify → promote → audit.

The engine talks to a `Transport` and never knows which one. Invariants:
* nothing is written anywhere before both inventories are clean and the plan says "change";
  a no-change run takes no lock (`NO-OP`), a dry run writes nothing on either side;
* sync never appends to `.events.log`; event histories are only proven (prefix / extends);
* a pull stages only changed files, verifies the staged view against the remote inventory,
  then promotes by rename under the local event lock, guided by a journal (roll-forward);
* a push uploads to temporary names beside their targets, then ONE `apply` checks the temp
  files' remote sha256, renames them into place and returns the post-apply inventory, against
  which primary, event log and sidecars are verified;
  a failed upload leaves both sides as they were.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from usrbatch.auditlog import get_logger
from usrbatch.dataset.event_revision import (
    ABSENT,
    EventRevision,
    capture_validated_revision,
    prove_pull_extends,
    prove_push_prefix,
)
from usrbatch.dataset.layout import (
    EVENTS,
    RECORDS,
    dataset_dir,
    is_runtime,
    normalize_dataset_id,
)
from usrbatch.dataset.locks import dataset_lock, event_lock
from usrbatch.errors import DatasetError, TransferError, UsrError, VerificationError
from usrbatch.files import prune_empty
from usrbatch.sync import payload as pl
from usrbatch.sync import staging as stg
from usrbatch.sync.inventory import (
    local_inventory,
    reject_reserved,
    reject_unsafe,
    remote_inventory,
    sections,
)
from usrbatch.sync.options import SyncOptions
from usrbatch.sync.plan import DiffSummary, SyncPlan, build_plan
from usrbatch.sync.result import (
    Meter,
    PlanHook,
    ProgressFactory,
    SyncResult,
    finish,
    primary_of_inventory,
)
from usrbatch.sync.temps import cleanup_remote, upload_temp
from usrbatch.sync.verify import (
    SidecarState,
    check_sidecars,
    local_parquet_shape,
    resolve_verify_mode,
    verify_primary,
)
from usrbatch.transport.base import FileEntry, Inventory, Transfer, Transport

LOCAL_CHANGED = "Local event log changed while the full pull was staged; refusing destination promotion."
DRY_RUN_PUSH_NOTE = (
    "Dry-run observed a valid remote event-log prefix without mutation; an actual push rechecks it "
    "under transaction locks."
)
PENDING_NOTE = "An interrupted pull promotion is pending; the next pull or push completes it first."
KEPT_LOCAL = "The local records.parquet this pull replaced (no snapshot held it) is kept as"
KEPT_REMOTE = "The remote records.parquet this push replaced (no snapshot held it) is kept as"


@dataclass(frozen=True)
class _Observation:
    local: Inventory
    remote: Inventory
    plan: SyncPlan


def _remote_revision(inv: Inventory) -> EventRevision:
    entry = inv.files.get(EVENTS)
    if entry is None:
        return ABSENT
    return EventRevision(True, entry.size, entry.sha256, int(inv.events_lines or 0))


def _observe(root: Path, ds: str, transport: Transport, opts: SyncOptions, direction: str) -> _Observation:
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
    return _Observation(local, remote, plan)


def _done(action: str, ds: str, summary: DiffSummary, opts: SyncOptions, started: float, **kw) -> SyncResult:
    return finish(action, ds, summary, dry_run=opts.dry_run, started=started, **kw)


def _done_transferred(
    action: str, ds: str, plan: SyncPlan, opts: SyncOptions, started: float, notes: list[str]
) -> SyncResult:
    """_done for a pull or push that moved `plan` under its locks."""
    return _done(
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
def _local_lock(local_dir: Path, ds: str, opts: SyncOptions) -> Iterator[None]:
    local_dir.mkdir(parents=True, exist_ok=True)
    with dataset_lock(local_dir, timeout=opts.lock_timeout):
        yield


def _local_event_lock(local_dir: Path, ds: str, opts: SyncOptions):
    return event_lock(local_dir, timeout=opts.lock_timeout)


def _recover_interrupted(root: Path, ds: str, local_dir: Path, opts: SyncOptions) -> list[str]:
    """Roll forward interrupted promotions (under the local dataset and event locks). Staging dirs
    without a journal are left for the next download to resume (see staging.prepare_staging)."""
    if not stg.pending_journals(root, ds, local_dir):
        return []
    notes: list[str] = []
    with _local_lock(local_dir, ds, opts), _local_event_lock(local_dir, ds, opts):
        for staging in stg.pending_journals(root, ds, local_dir):
            installed, deleted = stg.roll_forward(staging, local_dir)
            get_logger().info(
                "sync.promotion.rolled_forward", dataset=ds, installed=installed, deleted=deleted
            )
            notes.append(
                f"Completed an interrupted pull promotion ({installed} file(s) installed, {deleted} removed)."
            )
    return notes


def _drop_if_only_runtime(root: Path, local_dir: Path) -> None:
    """A failed bootstrap pull leaves no empty dataset dir behind (only our lock files were there)."""
    try:
        entries = list(local_dir.iterdir())
    except OSError:
        return
    if any(not is_runtime(e.name) or e.is_dir() for e in entries):
        return
    for entry in entries:
        entry.unlink(missing_ok=True)
    prune_empty(local_dir, root)


def _check_flags(opts: SyncOptions) -> None:
    opts.validate()


def plan_diff(
    root: Path, dataset_id: str, transport: Transport, opts: SyncOptions | None = None
) -> SyncResult:
    """Compare local and remote without locks or writes (`DIFF-ONLY`)."""
    started = time.monotonic()
    opts = opts or SyncOptions(sidecars=False, content_hashes=False)
    ds = normalize_dataset_id(dataset_id)
    obs = _observe(Path(root), ds, transport, opts, "diff")
    notes = [PENDING_NOTE] if stg.pending_journals(Path(root), ds, dataset_dir(root, ds)) else []
    return _done("diff", ds, obs.plan.summary, opts, started, notes=notes)


# -- pull ------------------------------------------------------------------------------------


def _staged_view(
    local: Inventory, plan: SyncPlan, staged: dict[str, FileEntry], events_lines: int | None
) -> Inventory:
    """What the local dataset will hold after promotion: local files − deletions + staged files."""
    files = {k: v for k, v in local.files.items() if k not in set(plan.delete)}
    files.update(staged)
    lines = events_lines if events_lines is not None else local.events_lines
    return Inventory(exists=True, files=files, events_lines=lines if EVENTS in files else None)


def pull(
    root: Path,
    dataset_id: str,
    transport: Transport,
    opts: SyncOptions | None = None,
    *,
    progress: ProgressFactory | None = None,
    on_plan: PlanHook | None = None,
) -> SyncResult:
    """Make the local dataset equal to the remote one (mirror; runtime files kept).

    Raises DatasetError when the remote primary is missing, VerificationError (`post-pull`,
    `post-pull-sidecars`, event-history messages) before any local write, TransferError for
    transport and lock failures. The local dataset is untouched unless promotion starts; an
    interrupted promotion is completed by the next pull or push.
    """
    started = time.monotonic()
    opts = opts or SyncOptions()
    _check_flags(opts)
    root = Path(root)
    ds = normalize_dataset_id(dataset_id)
    local_dir = dataset_dir(root, ds)
    notes = [] if opts.dry_run else _recover_interrupted(root, ds, local_dir, opts)

    obs = _observe(root, ds, transport, opts, "pull")
    if RECORDS not in obs.remote.files:
        raise DatasetError(f"Refusing pull for dataset '{ds}': remote records.parquet is missing.")
    if on_plan is not None:
        on_plan(obs.plan.summary)
    if opts.full:
        capture_validated_revision(local_dir / EVENTS)
    if not obs.plan.has_change:
        return _done("pull", ds, obs.plan.summary, opts, started, notes=notes)
    if opts.dry_run:
        if stg.pending_journals(root, ds, local_dir):
            notes.append(PENDING_NOTE)
        return _done("pull", ds, obs.plan.summary, opts, started, notes=notes)

    events_mode = "exclusive" if opts.full else "none"
    created = not local_dir.exists()
    try:
        with (
            _local_lock(local_dir, ds, opts),
            transport.lease(ds, timeout=opts.lock_timeout, events=events_mode) as lease,
        ):
            local_rev = ABSENT
            if opts.full:
                with _local_event_lock(local_dir, ds, opts):
                    local_rev = capture_validated_revision(local_dir / EVENTS)
            obs = _observe(root, ds, transport, opts, "pull")
            plan = obs.plan
            if RECORDS not in obs.remote.files:
                raise DatasetError(f"Refusing pull for dataset '{ds}': remote records.parquet is missing.")
            if opts.full:
                entry = obs.local.files.get(EVENTS)
                if (entry.sha256 if entry else None) != local_rev.sha256:
                    raise VerificationError(LOCAL_CHANGED)
            if not plan.has_change:
                return _done("pull", ds, plan.summary, opts, started, locked=True, notes=notes)

            staging, resumable = stg.prepare_staging(root, ds, plan.send)
            if resumable:
                get_logger().info("sync.resume", dataset=ds, bytes=resumable, staging=staging.name)
            promotion_started = keep_for_resume = False
            try:
                items = [
                    Transfer(
                        remote=f"{ds}/{e.path}", local=staging / e.path, size=e.size, sha256=e.sha256 or ""
                    )
                    for e in plan.send
                ]
                meter = Meter(progress(plan.bytes_to_send) if progress else None)
                try:
                    transport.download(items, progress=meter)
                except VerificationError:
                    raise
                except BaseException:
                    keep_for_resume = True  # a dropped transfer: the next pull resumes these files
                    raise
                meter.log(ds, items, {i.remote: e.path for i, e in zip(items, plan.send, strict=True)})
                if not lease.alive():
                    raise TransferError(f"Remote dataset lease for '{ds}' was lost on {transport.label}")
                stg.stamp_mtimes(staging, plan.send)  # keep the remote mtimes, whatever the transport
                # download() checked every sha256 (Transport contract): the walk re-reads only
                # files whose stat no longer matches what was downloaded and stamped
                inodes: dict[str, int] = {}
                staged = stg.walk_staged(staging, {e.path: e for e in plan.send}, inodes)
                _verify_staged(ds, staging, obs, staged, local_rev, opts)
                pl.check_staged(ds, staging, plan.send, transport.label)  # post-pull-payload
                with _local_event_lock(local_dir, ds, opts) if opts.full else ExitStack():
                    if opts.full:
                        now = capture_validated_revision(local_dir / EVENTS)
                        if now != local_rev:
                            raise VerificationError(LOCAL_CHANGED)
                    kept = pl.keep_replaced_local(ds, local_dir, obs.local, plan.send, plan.delete)
                    if kept:
                        notes.append(f"{KEPT_LOCAL} {kept}.")
                    stg.write_journal(
                        staging,
                        local_dir,
                        [e.path for e in plan.send],
                        plan.delete,
                        dataset_id=ds,
                        remote=transport.label,
                        known=obs.local.files,
                        staged=staged,
                    )
                    promotion_started = True
                    stg.roll_forward(staging, local_dir)
                stg.remember_promoted(local_dir, staged, inodes)
            except UsrError:
                raise
            except OSError as exc:
                if promotion_started:
                    raise TransferError(
                        f"Pull promotion for '{ds}' was interrupted: {exc}",
                        hint="Run the same pull again: it completes the interrupted promotion first.",
                    ) from exc
                raise TransferError(f"Pull of '{ds}' failed: {exc}") from exc
            finally:
                if not promotion_started and not keep_for_resume:
                    stg.remove_staging(staging)
            if not lease.alive():
                raise TransferError(f"Remote dataset lease for '{ds}' was lost on {transport.label}")
    except BaseException:
        if created:
            _drop_if_only_runtime(root, local_dir)
        raise
    return _done_transferred("pull", ds, plan, opts, started, notes)


def _verify_staged(
    ds: str,
    staging: Path,
    obs: _Observation,
    staged: dict[str, FileEntry],
    local_rev: EventRevision,
    opts: SyncOptions,
) -> None:
    """post-pull, post-pull-sidecars, staged completeness, and the event history proof."""
    plan = obs.plan
    mode = plan.summary.verify_mode
    events_lines: int | None = None
    events_touched = EVENTS in {e.path for e in plan.send} or EVENTS in plan.delete
    if opts.full and events_touched:
        staged_rev = prove_pull_extends(
            local_rev, staging / EVENTS, local_path=dataset_dir(staging.parent, ds) / EVENTS
        )
        events_lines = staged_rev.lines if staged_rev.exists else None
    view = _staged_view(obs.local, plan, staged, events_lines)
    if mode == "parquet" and RECORDS in view.files:
        src = staging / RECORDS if RECORDS in staged else dataset_dir(staging.parent, ds) / RECORDS
        view = dataclasses.replace(view, primary_shape=local_parquet_shape(src))
    verify_primary("post-pull", mode, primary_of_inventory(view), primary_of_inventory(obs.remote))
    if opts.sidecars:
        check_sidecars(
            "post-pull-sidecars",
            SidecarState.of(sections(view)),
            SidecarState.of(sections(obs.remote)),
            content_hashes=opts.content_hashes,
        )
    missing = [e.path for e in plan.send if e.path not in staged or staged[e.path].sha256 != e.sha256]
    extra = sorted(set(staged) - {e.path for e in plan.send})
    if missing or extra:
        raise VerificationError(
            f"post-pull: staged payload differs from the remote inventory: {(missing + extra)[:10]}"
        )
    get_logger().info("sync.verified", dataset=ds, context="post-pull", files=len(staged))


# -- push ------------------------------------------------------------------------------------


def push(
    root: Path,
    dataset_id: str,
    transport: Transport,
    opts: SyncOptions | None = None,
    *,
    progress: ProgressFactory | None = None,
    on_plan: PlanHook | None = None,
) -> SyncResult:
    """Make the remote dataset equal to the local one (mirror; remote runtime files kept).

    Raises DatasetError when the local primary is missing, VerificationError for a remote log
    that is not a prefix of the local one and for `post-push`/`post-push-sidecars` mismatches,
    TransferError for transport and lock failures. A failed upload leaves both sides unchanged.
    """
    started = time.monotonic()
    opts = opts or SyncOptions()
    _check_flags(opts)
    root = Path(root)
    ds = normalize_dataset_id(dataset_id)
    local_dir = dataset_dir(root, ds)
    if not (local_dir / RECORDS).is_file():
        raise DatasetError(f"Refusing push for dataset '{ds}': local records.parquet is missing.")
    notes = [] if opts.dry_run else _recover_interrupted(root, ds, local_dir, opts)

    obs = _observe(root, ds, transport, opts, "push")
    if RECORDS not in obs.local.files:
        raise DatasetError(f"Refusing push for dataset '{ds}': local records.parquet is missing.")
    if on_plan is not None:
        on_plan(obs.plan.summary)
    if opts.full:
        local_rev = capture_validated_revision(local_dir / EVENTS)
        if opts.dry_run or obs.plan.has_change:
            prove_push_prefix(local_dir / EVENTS, local_rev, _remote_revision(obs.remote))
    if not obs.plan.has_change:
        return _done("push", ds, obs.plan.summary, opts, started, notes=notes)
    if opts.dry_run:
        if opts.full:
            notes.append(DRY_RUN_PUSH_NOTE)
        return _done("push", ds, obs.plan.summary, opts, started, notes=notes)

    events_mode = "shared" if opts.full else "none"
    with ExitStack() as locks:
        locks.enter_context(_local_lock(local_dir, ds, opts))
        lease = locks.enter_context(transport.lease(ds, timeout=opts.lock_timeout, events=events_mode))
        local_rev = ABSENT
        if opts.full:
            # Held through remote verification: local appenders wait until the push is proven.
            locks.enter_context(_local_event_lock(local_dir, ds, opts))
            local_rev = capture_validated_revision(local_dir / EVENTS)
        obs = _observe(root, ds, transport, opts, "push")
        plan = obs.plan
        if opts.full:
            entry = obs.local.files.get(EVENTS)
            if (entry.sha256 if entry else None) != local_rev.sha256:
                raise VerificationError("Event log changed during validation")
            prove_push_prefix(local_dir / EVENTS, local_rev, _remote_revision(obs.remote))
        if not plan.has_change:
            return _done("push", ds, plan.summary, opts, started, locked=True, notes=notes)
        local_state = SidecarState.of(sections(obs.local))
        pl.check_local(ds, local_dir, plan.send)  # pre-push-payload

        token = secrets.token_hex(6)
        # Content-addressed temp names: a push cut off mid-file leaves its temp, and the next
        # push of the same bytes resumes it from its size (the final sha256 decides). Every
        # other temp in the dataset is a dead push's leftover (we hold the lease): removed below.
        temps = {e.path: upload_temp(e.path, e.sha256 or token) for e in plan.send}
        planned = {f"{ds}/{t}" for t in temps.values()}
        stale = sorted(f"{ds}/{rel}" for rel in obs.remote.temps if f"{ds}/{rel}" not in planned)
        items = [
            Transfer(
                remote=f"{ds}/{temps[e.path]}", local=local_dir / e.path, size=e.size, sha256=e.sha256 or ""
            )
            for e in plan.send
        ]
        meter = Meter(progress(plan.bytes_to_send) if progress else None)
        try:
            transport.upload(items, progress=meter)
            meter.log(ds, items, {i.remote: e.path for i, e in zip(items, plan.send, strict=True)})
            if not lease.alive():
                raise TransferError(f"Remote dataset lease for '{ds}' was lost on {transport.label}")
        except BaseException:
            # Best effort: when the link is down this fails, the partial temps stay, and the
            # next push of the same bytes resumes them (and removes any it no longer needs).
            cleanup_remote(transport, [f"{ds}/{t}" for t in temps.values()])
            raise
        renames = [(f"{ds}/{temps[e.path]}", f"{ds}/{e.path}") for e in plan.send]
        snapshot = pl.remote_snapshot_plan(ds, obs.remote, plan.send, plan.delete)
        try:
            # ONE round trip: remote sha256 and payload checks of every temp file, the snapshot
            # of a replaced primary, renames, removals, re-inventory.
            after = transport.apply(
                renames,
                [f"{ds}/{rel}" for rel in plan.delete] + stale,
                verify={i.remote: i.sha256 for i in items},
                inventory=ds,
                parquet_stats=opts.verify == "parquet",
                payload=pl.upload_kinds({e.path: f"{ds}/{temps[e.path]}" for e in plan.send}),
                snapshot=snapshot,
            )
            if after is None:
                after = remote_inventory(transport, ds, parquet_stats=opts.verify == "parquet")
            if snapshot is not None:
                replaced = obs.remote.files[RECORDS].sha256
                after, kept = pl.set_aside_snapshot(ds, after, snapshot, replaced)
                notes.append(f"{KEPT_REMOTE} {kept} on {transport.label}.")
            _verify_pushed(ds, obs, after, local_rev, local_state, opts)
        except BaseException:
            cleanup_remote(transport, [f"{ds}/{t}" for t in temps.values()])
            raise
        if not lease.alive():
            raise TransferError(f"Remote dataset lease for '{ds}' was lost on {transport.label}")
    return _done_transferred("push", ds, plan, opts, started, notes)


def _verify_pushed(
    ds: str,
    obs: _Observation,
    after: Inventory,
    local_rev: EventRevision,
    local_state: SidecarState,
    opts: SyncOptions,
) -> None:
    """post-push primary, event revision equality, post-push-sidecars, full content equality."""
    reject_unsafe(after, side="Remote", where=ds)
    mode = obs.plan.summary.verify_mode
    verify_primary("post-push", mode, primary_of_inventory(obs.local), primary_of_inventory(after))
    if opts.full and not _remote_revision(after).same_content(local_rev):
        raise VerificationError("Remote event log does not match the transferred local event revision")
    if opts.sidecars:
        check_sidecars(
            "post-push-sidecars",
            local_state,
            SidecarState.of(sections(after)),
            content_hashes=opts.content_hashes,
        )
    scope = {e.path for e in obs.plan.send} | set(obs.plan.delete)
    wrong = sorted(
        rel
        for rel in scope
        if (obs.local.files.get(rel).sha256 if rel in obs.local.files else None)
        != (after.files.get(rel).sha256 if rel in after.files else None)
    )
    if wrong:
        raise VerificationError(f"post-push: remote differs from local after transfer: {wrong[:10]}")
    get_logger().info("sync.verified", dataset=ds, context="post-push", files=len(obs.plan.send))
