"""Verification: verify-mode resolution (§3.1), post-transfer primary checks (§3.2), sidecar
state and content hashes (§3.3, §3.4), with the public messages and error contexts
(`post-pull`, `post-push`, `post-pull-sidecars`, `post-push-sidecars`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from usrbatch.errors import VerificationError
from usrbatch.sync.inventory import Sections, hash_pairs
from usrbatch.sync.plan import PrimaryStat

VERIFY_MODES = ("hash", "size", "parquet", "auto")


def resolve_verify_mode(requested: str, remote: PrimaryStat) -> tuple[str, list[str]]:
    """The mode actually used and the notes to print as `WARNING: <note>` (§3.1)."""
    if requested not in VERIFY_MODES:
        raise VerificationError(f"Unsupported verify mode '{requested}'.")
    if not remote.exists:
        return ("hash" if requested == "auto" else requested), []
    has_sha = bool(remote.sha256)
    has_size = remote.size is not None
    has_shape = remote.rows is not None and remote.cols is not None
    if requested == "hash":
        if not has_sha:
            raise VerificationError("verify=hash requires remote sha256 (sha256sum/shasum).")
        return "hash", []
    if requested == "size":
        if not has_size:
            raise VerificationError("verify=size requires remote file size.")
        return "size", []
    if requested == "parquet":
        if not has_shape:
            raise VerificationError("verify=parquet requires remote parquet row/col stats.")
        return "parquet", []
    if has_sha:
        return "hash", []
    if has_size:
        return "size", ["Falling back from hash to size because remote sha256 is unavailable."]
    if has_shape:
        return "parquet", ["Falling back from hash/size to parquet because remote size is unavailable."]
    raise VerificationError("No available verification method for remote file.")


def local_parquet_shape(path: Path) -> tuple[int, int]:
    """(rows, cols) from the parquet footer; `Failed to read local parquet file: <path>`."""
    import pyarrow.parquet as pq

    try:
        md = pq.ParquetFile(path).metadata
    except Exception:
        raise VerificationError(f"Failed to read local parquet file: {path}") from None
    return md.num_rows, md.num_columns


def verify_primary(context: str, mode: str, local: PrimaryStat, remote: PrimaryStat) -> None:
    """Raise VerificationError `<context>: ...` unless the primary matches per `mode` (§3.2)."""
    if not (local.exists and remote.exists):
        raise VerificationError(
            f"{context}: missing file on one side (local={local.exists}, remote={remote.exists})."
        )
    if mode == "hash":
        if not (local.sha256 and remote.sha256):
            raise VerificationError(f"{context}: verify=hash requires sha256 on both sides.")
        if local.sha256 != remote.sha256:
            raise VerificationError(f"{context}: SHA mismatch local={local.sha256} remote={remote.sha256}")
    elif mode == "size":
        if local.size is None or remote.size is None:
            raise VerificationError(f"{context}: verify=size requires size on both sides.")
        if local.size != remote.size:
            raise VerificationError(f"{context}: size mismatch local={local.size} remote={remote.size}")
    elif mode == "parquet":
        if None in (local.rows, local.cols, remote.rows, remote.cols):
            raise VerificationError(f"{context}: verify=parquet requires row/col stats on both sides.")
        if local.rows != remote.rows:
            raise VerificationError(f"{context}: row mismatch local={local.rows} remote={remote.rows}")
        if local.cols != remote.cols:
            raise VerificationError(f"{context}: col mismatch local={local.cols} remote={remote.cols}")
    else:
        raise VerificationError(f"{context}: unsupported verify mode '{mode}'.")


@dataclass(frozen=True)
class SidecarState:
    """Everything but the primary, as compared after a transfer (§3.3). meta.md is compared by
    content (sha256) rather than the public whole-second mtime; its mtime is kept for display."""

    meta_sha256: str | None
    meta_mtime: str | None
    events_lines: int
    snapshot_names: list[str]
    snapshot_hashes: list[tuple[str, str | None]]
    derived_files: list[str]
    derived_hashes: list[tuple[str, str | None]]
    aux_files: list[str]
    aux_hashes: list[tuple[str, str | None]]

    @classmethod
    def of(cls, side: Sections) -> SidecarState:
        meta = side.meta
        return cls(
            meta_sha256=meta.sha256 if meta else None,
            meta_mtime=str(meta.mtime_ns // 1_000_000_000) if meta else None,
            events_lines=side.events_lines,
            snapshot_names=side.snapshot_names,
            snapshot_hashes=hash_pairs(side.snapshots),
            derived_files=sorted(side.derived),
            derived_hashes=hash_pairs(side.derived),
            aux_files=sorted(side.auxiliary),
            aux_hashes=hash_pairs(side.auxiliary),
        )


def _hash_diff(a: list[tuple[str, str | None]], b: list[tuple[str, str | None]]) -> tuple[list, list]:
    """Only the pairs that differ, so a 200-part dataset gives a readable message."""
    sa, sb = set(a), set(b)
    return sorted(sa - sb), sorted(sb - sa)


def check_sidecars(context: str, local: SidecarState, remote: SidecarState, *, content_hashes: bool) -> None:
    """Raise `<context>: sidecar mismatch; <part>; <part>` in the public order (§3.3)."""
    parts: list[str] = []
    if local.meta_sha256 != remote.meta_sha256:
        lm = local.meta_sha256 or "-"
        rm = remote.meta_sha256 or "-"
        parts.append(f"meta.md sha256 local={lm} remote={rm}")
    if local.events_lines != remote.events_lines:
        parts.append(f".events.log lines local={local.events_lines} remote={remote.events_lines}")
    if local.snapshot_names != remote.snapshot_names:
        parts.append(f"_snapshots names local={local.snapshot_names!r} remote={remote.snapshot_names!r}")
    if content_hashes and local.snapshot_hashes != remote.snapshot_hashes:
        lo, ro = _hash_diff(local.snapshot_hashes, remote.snapshot_hashes)
        parts.append(f"_snapshots hashes local={lo!r} remote={ro!r}")
    if local.derived_files != remote.derived_files:
        parts.append(f"_derived files local={local.derived_files!r} remote={remote.derived_files!r}")
    if content_hashes and local.derived_hashes != remote.derived_hashes:
        lo, ro = _hash_diff(local.derived_hashes, remote.derived_hashes)
        parts.append(f"_derived hashes local={lo!r} remote={ro!r}")
    if local.aux_files != remote.aux_files:
        parts.append(f"auxiliary files local={local.aux_files!r} remote={remote.aux_files!r}")
    if content_hashes and local.aux_hashes != remote.aux_hashes:
        lo, ro = _hash_diff(local.aux_hashes, remote.aux_hashes)
        parts.append(f"auxiliary hashes local={lo!r} remote={ro!r}")
    if parts:
        raise VerificationError(f"{context}: sidecar mismatch; " + "; ".join(parts))
