"""What every sync returns and logs, for both modes: `SyncResult`, the byte meter behind
`sync.file.sent`, the `sync.done` line, and the primary stat that verification compares."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from usrbatch.auditlog import get_logger
from usrbatch.dataset.layout import RECORDS
from usrbatch.sync.audit import transfer_state
from usrbatch.sync.plan import DiffSummary, PrimaryStat
from usrbatch.transport.base import FileStat, Inventory, ProgressFn, Transfer

ProgressFactory = Callable[[int], ProgressFn | None]  # total bytes → per-chunk callback
PlanHook = Callable[[DiffSummary], None]  # sees the preliminary plan; may raise UserAbort


@dataclass(frozen=True)
class SyncResult:
    """What a diff, pull or push did. `summary` is the post-execution (definitive) summary."""

    action: str  # diff | pull | push
    transfer_state: str  # DIFF-ONLY | DRY-RUN | TRANSFERRED | NO-OP
    summary: DiffSummary
    files_sent: int = 0
    bytes_sent: int = 0
    files_deleted: int = 0
    locked: bool = False  # whether any lock or lease was taken
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def finish(
    action: str, dataset: str, summary: DiffSummary, *, dry_run: bool, started: float, **kw
) -> SyncResult:
    """The SyncResult of a finished sync, logged as one `sync.done` line."""
    state = transfer_state(action, dry_run=dry_run, has_change=summary.has_change)
    result = SyncResult(action, state, summary, duration_s=round(time.monotonic() - started, 6), **kw)
    get_logger().info(
        "sync.done",
        dataset=dataset,
        action=action,
        transfer_state=state,
        files=result.files_sent,
        deleted=result.files_deleted,
        bytes=result.bytes_sent,
        duration_s=result.duration_s,
    )
    return result


class Meter:
    """Wraps the caller's progress callback; logs one `sync.file.sent` per file afterwards, the
    same for every transport (bytes actually moved, so a resumed file counts only its rest)."""

    def __init__(self, inner: ProgressFn | None) -> None:
        self.inner = inner
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.moved: dict[str, int] = {}

    def __call__(self, path: str, n: int) -> None:
        now = time.monotonic()
        self.first.setdefault(path, now)
        self.last[path] = now
        self.moved[path] = self.moved.get(path, 0) + n
        if self.inner is not None:
            self.inner(path, n)

    def log(self, dataset: str, items: list[Transfer], names: dict[str, str]) -> None:
        log = get_logger()
        for item in items:
            t0 = self.first.get(item.remote, 0.0)
            log.info(
                "sync.file.sent",
                dataset=dataset,
                path=names.get(item.remote, item.remote),
                bytes=self.moved.get(item.remote, 0),
                size=item.size,
                duration_s=round(self.last.get(item.remote, t0) - t0, 6),
            )


def primary_of_inventory(inv: Inventory) -> PrimaryStat:
    """records.parquet of a dataset inventory, as verification compares it."""
    e = inv.files.get(RECORDS)
    if e is None:
        return PrimaryStat(exists=False)
    rows, cols = inv.primary_shape if inv.primary_shape else (None, None)
    return PrimaryStat(True, e.size, e.sha256, rows, cols, str(e.mtime_ns // 1_000_000_000))


def primary_of_file(st: FileStat) -> PrimaryStat:
    """The one file of FILE mode, as verification compares it."""
    if st.kind != "file":
        return PrimaryStat(exists=False)
    rows, cols = st.shape if st.shape else (None, None)
    mtime = str(st.mtime_ns // 1_000_000_000) if st.mtime_ns is not None else None
    return PrimaryStat(True, st.size, st.sha256, rows, cols, mtime)
