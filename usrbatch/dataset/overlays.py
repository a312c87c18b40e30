"""Overlays under `_derived/`: the public names of the overlay modules, re-exported in one place.

The code lives by responsibility: overlay_write.py (attach, write_overlay_part: the validated
write pipeline), overlay_merge.py (overlay files, sources and the last-writer-wins merge),
tombstones.py (the `usr` namespace deletion rule), overlay_read.py (read_dataset).

Write paths validate in the public tool's order with its messages (usr-contract §12) and check
everything before the first write. Decisions (see the module's tests):
* `attach` writes the compact `_derived/<ns>.parquet` like the public tool (merged: incoming values
  win on overlap, other cells are kept). When a part dir `_derived/<ns>/` exists the public tool
  refuses; here attach writes a new part instead, which is what sync prefers (an added file,
  nothing rewritten) and reads resolve the same way. A part dir's `digest_ledger.json` is kept
  current after every part we write, as the public `write_overlay_part` keeps it.
* Overlays are keyed as the public tool keys them: the key column is named after `--key`
  (`id`, `sequence`, `sequence_norm`, `sequence_ci`) and holds the normalized key (trimmed;
  upper-cased for `sequence_ci`), `usr:overlay_key` names it. A write into a compact overlay
  keyed differently is refused (`Overlay key mismatch ...: existing=<k> new=<k>`).
* Reads merge the compact file and every part per (id, column), ordered by `usr:overlay_created_at`
  then filename; the newest writer wins. `read_dataset` loads every file; `read_overlay_rows`
  applies the same merge (`_merge_sources`) to the rows of chosen ids only, scanning each file
  batch-wise, which is what `usr head` uses.
* Tombstones are the public tool's: rows of the reserved `usr` namespace (`_derived/usr.parquet`,
  columns usr__deleted/_at/_reason). A row is deleted when its newest `usr__deleted` is true
  (`restore` writes false). `usr_state__masked` is record state, not a deletion.
"""

from usrbatch.dataset.overlay_merge import (
    OverlaySource,
    compact_path,
    derived_dir,
    overlay_sources,
    overlay_unreadable,
    parts_dir,
    read_overlay,
    read_overlay_rows,
    source_columns,
    source_key,
)
from usrbatch.dataset.overlay_read import read_dataset
from usrbatch.dataset.overlay_write import JOIN_KEYS, OverlayWriteResult, attach, write_overlay_part
from usrbatch.dataset.tombstones import TOMBSTONE_COLUMNS, TOMBSTONE_NAMESPACE, TOMBSTONE_TYPES, deleted_mask

__all__ = [
    "JOIN_KEYS",
    "TOMBSTONE_COLUMNS",
    "TOMBSTONE_NAMESPACE",
    "TOMBSTONE_TYPES",
    "OverlaySource",
    "OverlayWriteResult",
    "attach",
    "compact_path",
    "deleted_mask",
    "derived_dir",
    "overlay_sources",
    "overlay_unreadable",
    "parts_dir",
    "read_dataset",
    "read_overlay",
    "read_overlay_rows",
    "source_columns",
    "source_key",
    "write_overlay_part",
]
