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

Round trips, whatever the file count: a no-op pull or push is ONE exec (the inventory); a
transfer adds the lease, whose exec also answers the locked remote's inventory, and a push ONE
`apply` (plus the SFTP bytes).

Modules: stages.py (start and recovery, observe, plan, locks with the lease's inventory, finish),
pull.py, push.py; this module is the dataset-mode entry (`plan_diff`, `pull`, `push`);
sync/api.py is the entry for both modes.
"""

from __future__ import annotations

import time
from pathlib import Path

from usrbatch.dataset.layout import (
    dataset_dir,
    normalize_dataset_id,
)
from usrbatch.sync import staging as stg
from usrbatch.sync.inventory import (
    local_inventory,
)
from usrbatch.sync.options import SyncOptions
from usrbatch.sync.pull import pull
from usrbatch.sync.push import push
from usrbatch.sync.result import (
    SyncResult,
)
from usrbatch.sync.stages import (
    DRY_RUN_PUSH_NOTE,
    KEPT_LOCAL,
    KEPT_REMOTE,
    LOCAL_CHANGED,
    PENDING_NOTE,
    done,
    observe,
)
from usrbatch.transport.base import Transport

__all__ = [
    "DRY_RUN_PUSH_NOTE",
    "KEPT_LOCAL",
    "KEPT_REMOTE",
    "LOCAL_CHANGED",
    "PENDING_NOTE",
    "SyncResult",
    "local_inventory",
    "plan_diff",
    "pull",
    "push",
]


def plan_diff(
    root: Path, dataset_id: str, transport: Transport, opts: SyncOptions | None = None
) -> SyncResult:
    """Compare local and remote without locks or writes (`DIFF-ONLY`)."""
    started = time.monotonic()
    opts = opts or SyncOptions(sidecars=False, content_hashes=False)
    ds = normalize_dataset_id(dataset_id)
    obs = observe(Path(root), ds, transport, opts, "diff")
    notes = [PENDING_NOTE] if stg.pending_journals(Path(root), ds, dataset_dir(root, ds)) else []
    return done("diff", ds, obs.plan.summary, opts, started, notes=notes)
