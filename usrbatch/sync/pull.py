"""pull: make the local dataset equal to the remote one: stage only the changed files, verify the
staged view against the remote inventory, then promote by rename under the local event lock,
guided by a journal (a crash mid-promotion rolls forward on the next run)."""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from pathlib import Path

from usrbatch.auditlog import get_logger
from usrbatch.dataset.event_revision import (
    EventRevision,
    capture_validated_revision,
    prove_pull_extends,
)
from usrbatch.dataset.layout import (
    EVENTS,
    RECORDS,
    dataset_dir,
    is_runtime,
)
from usrbatch.errors import TransferError, UsrError, VerificationError
from usrbatch.files import prune_empty
from usrbatch.sync import payload as pl
from usrbatch.sync import stages
from usrbatch.sync import staging as stg
from usrbatch.sync.inventory import (
    sections,
)
from usrbatch.sync.options import SyncOptions
from usrbatch.sync.plan import SyncPlan
from usrbatch.sync.result import (
    Meter,
    PlanHook,
    ProgressFactory,
    SyncResult,
    primary_of_inventory,
)
from usrbatch.sync.stages import (
    KEPT_LOCAL,
    LOCAL_CHANGED,
    PENDING_NOTE,
    Observation,
)
from usrbatch.sync.verify import (
    SidecarState,
    check_sidecars,
    local_parquet_shape,
    verify_primary,
)
from usrbatch.transport.base import FileEntry, Inventory, Transfer, Transport


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
    start = stages.begin("pull", root, dataset_id, opts)
    opts, ds, local_dir, notes = start.opts, start.ds, start.local_dir, start.notes
    obs = stages.first_look(start, transport, on_plan)
    if opts.full:
        capture_validated_revision(local_dir / EVENTS)
    if not obs.plan.has_change:
        return start.done(obs.plan.summary)
    if opts.dry_run:
        if stg.pending_journals(start.root, ds, local_dir):
            notes.append(PENDING_NOTE)
        return start.done(obs.plan.summary)

    created = not local_dir.exists()
    try:
        with stages.locked(start, transport) as held:
            lease, obs, local_rev = held.lease, held.obs, held.local_rev
            plan = obs.plan
            if not plan.has_change:
                return start.done(plan.summary, locked=True)

            staging, resumable = stg.prepare_staging(start.root, ds, plan.send)
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
                with stages.local_event_lock(local_dir, ds, opts) if opts.full else ExitStack():
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
            _drop_if_only_runtime(start.root, local_dir)
        raise
    return start.done_transferred(plan)


def _verify_staged(
    ds: str,
    staging: Path,
    obs: Observation,
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
