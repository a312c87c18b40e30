"""Inventories of both sides of a sync, and the per-section view the planner compares.

The local inventory runs the same agent code as the remote one, in-process (hash cache included),
so both sides are described identically: relpath → size, mtime_ns, sha256, category.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from usrbatch.agent import client
from usrbatch.dataset.layout import (
    EVENTS,
    META,
    RECORDS,
    SNAPSHOT_NAME,
    TEMP_PREFIX,
    Category,
    classify,
    is_reserved,
)
from usrbatch.errors import TransferError
from usrbatch.transport.base import FileEntry, Inventory, Transport, validate_relpath


def local_inventory(dataset_dir: Path, *, parquet_stats: bool = False) -> Inventory:
    """Inventory of a local dataset dir (exists=False when absent), every file hashed."""
    return client.local_inventory(str(Path(dataset_dir).absolute()), parquet_stats=parquet_stats)


def remote_inventory(transport: Transport, dataset_id: str, *, parquet_stats: bool = False) -> Inventory:
    """Inventory of the remote dataset dir: ONE transport round trip, every file hashed."""
    return transport.inventory(dataset_id, hashes=True, parquet_stats=parquet_stats)


def reject_unsafe(inv: Inventory, *, side: str, where: str) -> None:
    """Fail before any write when an inventory holds symlinks, special files or unreadable dirs."""
    if not inv.rejected:
        return
    rel, kind = sorted(inv.rejected)[0]
    more = f" (and {len(inv.rejected) - 1} more)" if len(inv.rejected) > 1 else ""
    raise TransferError(
        f"{side} dataset contains an unsupported entry ({kind}): {rel}{more} in {where}.",
        hint="Sync moves regular files only; replace the entry with a regular file or remove it.",
    )


def _clean(rel: str) -> bool:
    try:
        return validate_relpath(rel) == rel
    except TransferError:
        return False


def reject_reserved(inv: Inventory, *, side: str, where: str) -> None:
    """Fail before any write when an inventory names an unsafe path or a file that collides with
    one of our runtime/control names (locks, leases, temps, pull staging, promotion journals):
    such a file is never payload, whichever transport listed it. Upload temps (which a push
    removes) must be clean paths with our temp prefix."""
    bad = [rel for rel in inv.files if not _clean(rel) or is_reserved(rel)]
    bad += [r for r in inv.temps if not _clean(r) or not r.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)]
    if not bad:
        return
    bad.sort()
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    raise TransferError(
        f"{side} dataset file {bad[0]!r}{more} in {where} uses a name reserved for usrbatch's own "
        "control files (locks, leases, temps, `.usr-pull-*` staging, `.usr-promotion*` journals) "
        "or an unsafe path; refusing to sync it.",
        hint="It is not dataset data: rename or remove it on that side, then run the command again.",
    )


@dataclass(frozen=True)
class Sections:
    """One side's files grouped by sync category (runtime files are never present)."""

    primary: FileEntry | None
    meta: FileEntry | None
    events: FileEntry | None
    events_lines: int
    snapshots: dict[str, FileEntry]  # keyed by path relative to the dataset dir
    derived: dict[str, FileEntry]  # keyed by path relative to `_derived/`
    auxiliary: dict[str, FileEntry]  # keyed by path relative to the dataset dir
    primary_shape: tuple[int, int] | None

    @property
    def snapshot_names(self) -> list[str]:
        """Public-style snapshot inventory: regex-matching names only, sorted."""
        names = {p.split("/", 1)[1] for p in self.snapshots if "/" in p}
        return sorted(n for n in names if SNAPSHOT_NAME.match(n))


def sections(inv: Inventory) -> Sections:
    """Group an inventory's files by `layout.classify`."""
    files = inv.files
    snapshots: dict[str, FileEntry] = {}
    derived: dict[str, FileEntry] = {}
    aux: dict[str, FileEntry] = {}
    for rel, entry in files.items():
        cat = classify(rel)
        if cat is Category.SNAPSHOTS:
            snapshots[rel] = entry
        elif cat is Category.DERIVED:
            derived[rel.split("/", 1)[1]] = entry
        elif cat is Category.AUXILIARY:
            aux[rel] = entry
    return Sections(
        primary=files.get(RECORDS),
        meta=files.get(META),
        events=files.get(EVENTS),
        events_lines=int(inv.events_lines or 0) if EVENTS in files else 0,
        snapshots=snapshots,
        derived=derived,
        auxiliary=aux,
        primary_shape=inv.primary_shape,
    )


def hash_pairs(entries: dict[str, FileEntry]) -> list[tuple[str, str | None]]:
    """(relpath, sha256) pairs sorted by path: the public content-hash list."""
    return sorted((rel, e.sha256) for rel, e in entries.items())
