"""Two inventories → a `SyncPlan` (files to send, files to delete) and the public `DiffSummary`.

Every section is compared by sha256 content hash, so a same-name rewrite (an in-place edit of
`_registry/x.yaml`, a rewritten overlay part, an edited meta.md) is a change and only changed
files travel. The `DiffSummary` keeps the public fields (§2) so diff, audit and JSON output match
the public tool; the `*_files_diff` flags mean "names or contents differ", and the extra
`*_content_diff` keys say when contents alone differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from usrbatch.dataset.layout import EVENTS, RECORDS, Category, classify
from usrbatch.sync.inventory import Sections, sections
from usrbatch.transport.base import FileEntry, Inventory

Direction = Literal["pull", "push", "diff"]


@dataclass(frozen=True)
class PrimaryStat:
    """records.parquet on one side (rows/cols only in parquet mode)."""

    exists: bool
    size: int | None = None
    sha256: str | None = None
    rows: int | None = None
    cols: int | None = None
    mtime: str | None = None


@dataclass(frozen=True)
class SnapshotInfo:
    count: int  # remote snapshot count (regex-matching names)
    newest_ts: str | None  # newest remote stamp
    newer_than_local: int


@dataclass(frozen=True)
class DiffSummary:
    """The public diff model (§2): shared by diff, pull, push and the audit output."""

    dataset: str
    primary_local: PrimaryStat
    primary_remote: PrimaryStat
    meta_local_mtime: str | None
    meta_remote_mtime: str | None
    events_local_lines: int
    events_remote_lines: int
    snapshots: SnapshotInfo
    derived_local_files: list[str]
    derived_remote_files: list[str]
    aux_local_files: list[str]
    aux_remote_files: list[str]
    has_change: bool
    changes: dict[str, bool | int]
    verify_mode: str
    verify_notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SyncPlan:
    """What a pull or push must do: `send` entries come from the source side, `delete` are
    destination-only paths (mirror), both relative to the dataset dir."""

    direction: Direction
    summary: DiffSummary
    send: tuple[FileEntry, ...]
    delete: tuple[str, ...]

    @property
    def bytes_to_send(self) -> int:
        return sum(e.size for e in self.send)

    @property
    def has_change(self) -> bool:
        return bool(self.send or self.delete)


def _stamp(name: str) -> str:
    return name[len("records-") : -len(".parquet")]


def _mtime_s(entry: FileEntry | None) -> str | None:
    return None if entry is None else str(entry.mtime_ns // 1_000_000_000)


def _primary_stat(entry: FileEntry | None, shape: tuple[int, int] | None) -> PrimaryStat:
    if entry is None:
        return PrimaryStat(exists=False)
    rows, cols = shape if shape else (None, None)
    return PrimaryStat(True, entry.size, entry.sha256, rows, cols, _mtime_s(entry))


def _entries_differ(a: dict[str, FileEntry], b: dict[str, FileEntry]) -> bool:
    return set(a) != set(b) or any(a[k].sha256 != b[k].sha256 for k in a)


def _same_names_content_differs(a: dict[str, FileEntry], b: dict[str, FileEntry]) -> bool:
    return any(k in b and a[k].sha256 != b[k].sha256 for k in a)


def _in_scope(rel: str, *, primary_only: bool, skip_snapshots: bool) -> bool:
    if primary_only:
        return rel == RECORDS
    return not (skip_snapshots and classify(rel) is Category.SNAPSHOTS)


def summarize(
    dataset: str,
    local: Sections,
    remote: Sections,
    *,
    verify_mode: str,
    verify_notes: list[str] | None = None,
    full: bool = True,
    skip_snapshots: bool = False,
) -> DiffSummary:
    """The public DiffSummary of two sides, with content-aware change flags."""
    pl = _primary_stat(local.primary, local.primary_shape)
    pr = _primary_stat(remote.primary, remote.primary_shape)
    primary_diff = pl.exists != pr.exists or (pl.exists and pl.sha256 != pr.sha256)

    meta_l, meta_r = _mtime_s(local.meta), _mtime_s(remote.meta)
    meta_content = (local.meta is None) != (remote.meta is None) or (
        local.meta is not None and remote.meta is not None and local.meta.sha256 != remote.meta.sha256
    )

    ev_l, ev_r = local.events, remote.events
    events_content = (ev_l is None) != (ev_r is None) or (
        ev_l is not None and ev_r is not None and (ev_l.size, ev_l.sha256) != (ev_r.size, ev_r.sha256)
    )
    new_remote_lines = max(0, remote.events_lines - local.events_lines)

    names_l, names_r = local.snapshot_names, remote.snapshot_names
    newest_local = max((_stamp(n) for n in names_l), default=None)
    stamps_r = [_stamp(n) for n in names_r]
    newer = len(stamps_r) if newest_local is None else sum(1 for s in stamps_r if s > newest_local)
    snap_info = SnapshotInfo(
        count=len(names_r), newest_ts=max(stamps_r, default=None), newer_than_local=newer
    )
    snap_names_diff = names_l != names_r
    snap_content = _entries_differ(local.snapshots, remote.snapshots)

    derived_diff = _entries_differ(local.derived, remote.derived)
    aux_diff = _entries_differ(local.auxiliary, remote.auxiliary)

    changes: dict[str, bool | int] = {
        "primary_sha_diff": bool(primary_diff),
        "meta_mtime_diff": meta_l != meta_r,
        "meta_content_diff": bool(meta_content) and full,
        "events_new_remote_lines": new_remote_lines if full else 0,
        "snapshots_name_diff": snap_names_diff and full and not skip_snapshots,
        "snapshots_remote_newer": newer if full and not skip_snapshots else 0,
        "snapshots_content_diff": snap_content and full and not skip_snapshots,
        "derived_files_diff": derived_diff and full,
        "derived_content_diff": _same_names_content_differs(local.derived, remote.derived) and full,
        "aux_files_diff": aux_diff and full,
        "aux_content_diff": _same_names_content_differs(local.auxiliary, remote.auxiliary) and full,
    }
    if full:
        changes["events_content_diff"] = bool(events_content)
    has_change = bool(
        changes["primary_sha_diff"]
        or changes["meta_content_diff"]
        or changes.get("events_content_diff")
        or changes["snapshots_content_diff"]
        or changes["derived_files_diff"]
        or changes["aux_files_diff"]
    )
    return DiffSummary(
        dataset=dataset,
        primary_local=pl,
        primary_remote=pr,
        meta_local_mtime=meta_l,
        meta_remote_mtime=meta_r,
        events_local_lines=local.events_lines,
        events_remote_lines=remote.events_lines,
        snapshots=snap_info,
        derived_local_files=sorted(local.derived),
        derived_remote_files=sorted(remote.derived),
        aux_local_files=sorted(local.auxiliary),
        aux_remote_files=sorted(remote.auxiliary),
        has_change=has_change,
        changes=changes,
        verify_mode=verify_mode,
        verify_notes=list(verify_notes or []),
    )


def build_plan(
    dataset: str,
    local: Inventory,
    remote: Inventory,
    *,
    direction: Direction,
    verify_mode: str,
    verify_notes: list[str] | None = None,
    primary_only: bool = False,
    skip_snapshots: bool = False,
) -> SyncPlan:
    """Compare two inventories by content. For pull the source is the remote, for push the local
    side; `diff` plans nothing to send. The event log is sent last (it is promoted last)."""
    summary = summarize(
        dataset,
        sections(local),
        sections(remote),
        verify_mode=verify_mode,
        verify_notes=verify_notes,
        full=not primary_only,
        skip_snapshots=skip_snapshots,
    )
    if direction == "diff":
        return SyncPlan(direction, summary, (), ())
    src, dst = (remote, local) if direction == "pull" else (local, remote)
    send = [
        e
        for rel, e in src.files.items()
        if _in_scope(rel, primary_only=primary_only, skip_snapshots=skip_snapshots)
        and (rel not in dst.files or dst.files[rel].sha256 != e.sha256)
    ]
    delete = [
        rel
        for rel in dst.files
        if rel not in src.files and _in_scope(rel, primary_only=primary_only, skip_snapshots=skip_snapshots)
    ]
    send.sort(key=lambda e: (e.path == EVENTS, e.path))
    delete.sort(key=lambda p: (p == EVENTS, p))
    return SyncPlan(direction, summary, tuple(send), tuple(delete))
