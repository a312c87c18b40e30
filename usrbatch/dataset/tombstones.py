"""Tombstones, as the public tool keeps them: rows of the reserved `usr` namespace
(`_derived/usr.parquet`, columns usr__deleted/_at/_reason). A row is deleted when its newest
`usr__deleted` is true (`restore` writes false); no entry means live. `usr_state__masked` is
record state, not a deletion.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from usrbatch.dataset.overlay_merge import OverlaySource, read_overlay_rows
from usrbatch.dataset.scan import all_false, null_as_false
from usrbatch.errors import SchemaError

TOMBSTONE_NAMESPACE = "usr"
TOMBSTONE_COLUMNS = ("usr__deleted", "usr__deleted_at", "usr__deleted_reason")
TOMBSTONE_TYPES = {
    "id": pa.string(),
    "usr__deleted": pa.bool_(),
    "usr__deleted_at": pa.timestamp("us", tz="UTC"),
    "usr__deleted_reason": pa.string(),
}


def deleted_mask(sources: list[OverlaySource], base: pa.Table) -> pa.Array:
    """True for the rows of `base` whose resolved `usr__deleted` is true (the public tombstone
    rule: tombstone writes true, restore writes false, the newest writer wins, no entry = live)."""
    merged = read_overlay_rows(TOMBSTONE_NAMESPACE, sources, base, ["usr__deleted"])
    if "usr__deleted" not in merged.column_names or not merged.num_rows:
        return all_false(base.num_rows)
    try:
        flags = merged["usr__deleted"].cast(pa.bool_())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(
            f"Tombstone overlay 'usr__deleted' must be bool, got {merged['usr__deleted'].type}. "
            f"Rewrite {sources[-1].path}."
        ) from exc
    position = pc.index_in(base["id"].cast(pa.string()), value_set=merged["id"].combine_chunks())
    return null_as_false(pc.take(flags, position)).combine_chunks()
