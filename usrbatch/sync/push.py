"""push: make the remote dataset equal to the local one: upload to content-named temps beside their
targets, then ONE remote `apply` checks their sha256 and payload, renames them into place and
returns the post-apply inventory, against which primary, event log and sidecars are verified."""

from __future__ import annotations

import secrets
from pathlib import Path

from usrbatch.auditlog import get_logger
from usrbatch.dataset.event_revision import (
    EventRevision,
    capture_validated_revision,
    prove_push_prefix,
)
from usrbatch.dataset.layout import (
    EVENTS,
    RECORDS,
)
from usrbatch.errors import TransferError, VerificationError
from usrbatch.sync import payload as pl
from usrbatch.sync import stages
from usrbatch.sync.inventory import (
    reject_unsafe,
    remote_inventory,
    sections,
)
from usrbatch.sync.options import SyncOptions
from usrbatch.sync.result import (
    Meter,
    PlanHook,
    ProgressFactory,
    SyncResult,
    primary_of_inventory,
)
from usrbatch.sync.stages import (
    DRY_RUN_PUSH_NOTE,
    KEPT_REMOTE,
    Observation,
    remote_revision,
)
from usrbatch.sync.temps import cleanup_remote, upload_temp
from usrbatch.sync.verify import (
    SidecarState,
    check_sidecars,
    verify_primary,
)
from usrbatch.transport.base import Inventory, Transfer, Transport


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
    start = stages.begin("push", root, dataset_id, opts)
    opts, ds, local_dir, notes = start.opts, start.ds, start.local_dir, start.notes
    obs = stages.first_look(start, transport, on_plan)
    if opts.full:
        local_rev = capture_validated_revision(local_dir / EVENTS)
        if opts.dry_run or obs.plan.has_change:
            prove_push_prefix(local_dir / EVENTS, local_rev, remote_revision(obs.remote))
    if not obs.plan.has_change:
        return start.done(obs.plan.summary)
    if opts.dry_run:
        if opts.full:
            notes.append(DRY_RUN_PUSH_NOTE)
        return start.done(obs.plan.summary)

    with stages.locked(start, transport) as held:
        lease, obs, local_rev = held.lease, held.obs, held.local_rev
        plan = obs.plan
        if opts.full:
            prove_push_prefix(local_dir / EVENTS, local_rev, remote_revision(obs.remote))
        if not plan.has_change:
            return start.done(plan.summary, locked=True)
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
    return start.done_transferred(plan)


def _verify_pushed(
    ds: str,
    obs: Observation,
    after: Inventory,
    local_rev: EventRevision,
    local_state: SidecarState,
    opts: SyncOptions,
) -> None:
    """post-push primary, event revision equality, post-push-sidecars, full content equality."""
    reject_unsafe(after, side="Remote", where=ds)
    mode = obs.plan.summary.verify_mode
    verify_primary("post-push", mode, primary_of_inventory(obs.local), primary_of_inventory(after))
    if opts.full and not remote_revision(after).same_content(local_rev):
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
